/*
 * metrics.h - reactord's metric registry and its Prometheus text rendering
 * (exposition format 0.0.4).  Counters, gauges and histograms with fixed
 * buckets, each with an optional fixed list of label names.  A metric's
 * label combinations are capped (METRICS_MAX_SERIES): values past the cap
 * are counted in one series whose every label is "other", so a client
 * that invents method names cannot grow memory.
 *
 * Hot paths either update a metric through metric_add/metric_observe
 * (a hash lookup of the label values), or bump a plain counter in
 * `metrics_std` (one add; a collector copies it into the registry at
 * scrape time).
 *
 * Collectors run at scrape time: sync ones set gauges from in-memory
 * state; async ones (Redis-backed values) start a query and call
 * metrics_collect_done() when it completes.  metrics_scrape() renders
 * after every collector is done.  Everything runs on the one loop: no
 * locking.  Names must match [a-zA-Z_:][a-zA-Z0-9_:]* and start with
 * "reactor_" by convention.
 */
#ifndef REACTOR_METRICS_H
#define REACTOR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct event_base;

enum metric_type { METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM };

#define METRICS_MAX_LABELS 4
#define METRICS_MAX_SERIES 500 /* label combinations per metric, "other" beyond */

struct metric;

/* Register a metric (at start; the registry owns it until metrics_free).
 * labels: the label names, comma-separated ("method,code"), or NULL for
 * none.  Histograms: bounds are the buckets' upper bounds, ascending, +Inf
 * implied (copied).  Registering a name twice returns the first one. */
struct metric *metric_new(enum metric_type type, const char *name, const char *help,
			  const char *labels);
struct metric *metric_histogram(const char *name, const char *help, const char *labels,
				const double *bounds, size_t nbounds);

/* Update the series for the label values that follow (exactly as many
 * const char * as the metric has label names; NULL reads as "").
 * metric_add: counters and gauges; metric_set: gauges (counters too, for
 * collectors copying a total kept elsewhere); metric_observe: histograms. */
void metric_add(struct metric *m, double v, ...);
void metric_set(struct metric *m, double v, ...);
void metric_observe(struct metric *m, double v, ...);
/* Forget every series of m (a collector about to set them afresh, or
 * leaving them out when its source failed). */
void metric_reset(struct metric *m);

/* ---- collectors ---------------------------------------------------------- */

typedef void (*metrics_sync_fn)(void *arg);
struct metrics_pending;
/* An async collector: start the work, and call metrics_collect_done(p,
 * ok) exactly once (possibly before returning); ok false counts in
 * reactor_scrape_errors. */
typedef void (*metrics_async_fn)(struct metrics_pending *p, void *arg);
void metrics_collector(metrics_sync_fn fn, void *arg);
void metrics_async_collector(metrics_async_fn fn, void *arg);
void metrics_collect_done(struct metrics_pending *p, bool ok);

/* Run the collectors and render every metric; done(text, len, arg) gets
 * the page (valid during the call), always after metrics_scrape has
 * returned.  Needs metrics_init's base. */
typedef void (*metrics_done_fn)(const char *text, size_t len, void *arg);
void metrics_scrape(metrics_done_fn done, void *arg);

/* Render now, without running collectors (tests).  Malloc'd. */
char *metrics_render(size_t *len);

/* ---- the standard metrics ------------------------------------------------ */

/* Plain counters bumped on hot paths; metrics_init's collector publishes
 * them (reactor_http2_*). */
struct metrics_std {
	uint64_t bytes_in, bytes_out; /* HTTP/2 bytes read and written */
	int64_t streams;	      /* HTTP/2 streams open */
};
extern struct metrics_std metrics_std;

/* Set up the registry: the standard metrics (build info, start time,
 * RPCs, Redis round trips, event-loop lag, HTTP/2 counters, action cache)
 * and the loop-lag timer on base. */
void metrics_init(struct event_base *base, const char *version);
/* Stop the timer and free every metric and collector. */
void metrics_free(void);

/* One RPC finished: method (NULL: unknown method), its gRPC status name
 * ("OK", "NOT_FOUND"...), how long it ran. */
void metrics_rpc_done(const char *method, const char *code, int64_t duration_us);
/* One Redis command's round trip. */
void metrics_redis_rtt(int64_t us);
/* One GetActionResult answered from the action cache (hit) or not. */
void metrics_ac_lookup(const char *instance, bool hit);

#endif
