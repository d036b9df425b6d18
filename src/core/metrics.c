/*
 * metrics.c - the metric registry (metrics.h): metrics in registration
 * order, each with its series in a hash map keyed by the label values and
 * a list in creation order (the order they are rendered in); the scrape
 * state machine that runs collectors and renders the Prometheus text
 * format; and the standard metrics every reactord has, with the timer
 * that measures the event loop's lag.
 */
#include "core/metrics.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/list.h"
#include "core/map.h"

struct series {
	struct map_node node; /* in metric.series, by the hash of key */
	struct list link;     /* on metric.order */
	char *key;	      /* the label values, each NUL-terminated */
	size_t key_len;
	const char *values[METRICS_MAX_LABELS]; /* into key */
	double value;				/* counter, gauge; histogram: sum */
	uint64_t count;				/* histogram observations */
	uint64_t *buckets;			/* histogram: per bound, not cumulative */
};

struct metric {
	enum metric_type type;
	char *name, *help;
	char *label_names[METRICS_MAX_LABELS];
	size_t nlabels;
	double *bounds;
	size_t nbounds;
	struct map series;
	struct list order; /* struct series.link */
	size_t nseries;
	struct metric *next;
};

struct collector {
	metrics_sync_fn sync;
	metrics_async_fn async;
	void *arg;
	struct collector *next;
};

/* One scrape in progress: collectors still running, then the reply. */
struct metrics_pending {
	struct scrape *s;
};
struct scrape {
	size_t waiting; /* async collectors not done yet, +1 while starting them */
	size_t errors;
	metrics_done_fn done;
	void *arg;
	struct event *ev; /* renders after metrics_scrape returned */
};

struct metrics_std metrics_std;

static struct {
	struct metric *first, **tail;
	struct collector *collectors, **ctail;
	struct event_base *base;
	struct event *lag_ev;
	int64_t lag_due_us;
	struct metric *rpc_total, *rpc_seconds, *redis_seconds, *lag_seconds, *scrape_errors;
	struct metric *ac_total, *h2_bytes, *h2_streams, *info, *start_time;
} R = {.tail = &R.first, .ctail = &R.collectors};

/* ---- registry ------------------------------------------------------------ */

static struct metric *find(const char *name)
{
	for (struct metric *m = R.first; m; m = m->next)
		if (!strcmp(m->name, name))
			return m;
	return NULL;
}

static struct series *series_new(struct metric *m, const char *key, size_t len, uint64_t h);

struct metric *metric_new(enum metric_type type, const char *name, const char *help,
			  const char *labels)
{
	struct metric *m = find(name);
	if (m)
		return m;
	m = xcalloc(1, sizeof(*m));
	m->type = type;
	m->name = xstrdup(name);
	m->help = xstrdup(help);
	for (const char *p = labels; p && *p;) {
		size_t n = strcspn(p, ",");
		assert(m->nlabels < METRICS_MAX_LABELS);
		m->label_names[m->nlabels++] = xstrndup(p, n);
		p += n + (p[n] == ',');
	}
	map_init(&m->series);
	list_init(&m->order);
	*R.tail = m;
	R.tail = &m->next;
	if (type == METRIC_COUNTER && !m->nlabels)
		series_new(m, "", 0, map_hash_bytes("", 0)); /* 0 until counted */
	return m;
}

struct metric *metric_histogram(const char *name, const char *help, const char *labels,
				const double *bounds, size_t nbounds)
{
	struct metric *m = find(name);
	if (m)
		return m;
	m = metric_new(METRIC_HISTOGRAM, name, help, labels);
	m->bounds = xcalloc(nbounds ? nbounds : 1, sizeof(double));
	memcpy(m->bounds, bounds, nbounds * sizeof(double));
	m->nbounds = nbounds;
	for (size_t i = 1; i < nbounds; i++)
		assert(bounds[i] > bounds[i - 1]);
	/* Without labels its one series exists from the start: a histogram
	 * that has observed nothing yet shows _count 0, not nothing. */
	if (!m->nlabels)
		series_new(m, "", 0, map_hash_bytes("", 0));
	return m;
}

struct key {
	const char *k;
	size_t len;
};

static bool series_eq(const struct map_node *n, const void *key)
{
	const struct series *s = container_of(n, struct series, node);
	const struct key *k = key;
	return s->key_len == k->len && !memcmp(s->key, k->k, k->len);
}

static struct series *series_new(struct metric *m, const char *key, size_t len, uint64_t h)
{
	struct series *s = xcalloc(1, sizeof(*s));
	s->key = xmalloc(len ? len : 1);
	memcpy(s->key, key, len);
	s->key_len = len;
	const char *p = s->key;
	for (size_t i = 0; i < m->nlabels; i++) {
		s->values[i] = p;
		p += strlen(p) + 1;
	}
	if (m->type == METRIC_HISTOGRAM)
		s->buckets = xcalloc(m->nbounds + 1, sizeof(uint64_t));
	map_insert(&m->series, &s->node, h);
	list_add_tail(&m->order, &s->link);
	m->nseries++;
	return s;
}

/* The series for the label values in ap, created when new; past the cap,
 * the "other" series. */
static struct series *series_get(struct metric *m, va_list ap)
{
	char buf[1024];
	size_t len = 0;
	bool fits = true;
	buf[0] = '\0';
	for (size_t i = 0; i < m->nlabels; i++) {
		const char *v = va_arg(ap, const char *);
		if (!v)
			v = "";
		size_t n = strlen(v) + 1;
		if (len + n > sizeof(buf)) {
			fits = false;
			break;
		}
		memcpy(buf + len, v, n);
		len += n;
	}
	struct key k = {buf, len};
	uint64_t h = map_hash_bytes(buf, len);
	if (fits) {
		struct map_node *n = map_find(&m->series, h, series_eq, &k);
		if (n)
			return container_of(n, struct series, node);
		if (m->nseries < METRICS_MAX_SERIES)
			return series_new(m, buf, len, h);
	}
	/* "other" for every label */
	len = 0;
	for (size_t i = 0; i < m->nlabels; i++) {
		memcpy(buf + len, "other", 6);
		len += 6;
	}
	k.len = len;
	h = map_hash_bytes(buf, len);
	struct map_node *n = map_find(&m->series, h, series_eq, &k);
	return n ? container_of(n, struct series, node) : series_new(m, buf, len, h);
}

void metric_add(struct metric *m, double v, ...)
{
	va_list ap;
	va_start(ap, v);
	series_get(m, ap)->value += v;
	va_end(ap);
}

void metric_set(struct metric *m, double v, ...)
{
	va_list ap;
	va_start(ap, v);
	series_get(m, ap)->value = v;
	va_end(ap);
}

void metric_observe(struct metric *m, double v, ...)
{
	assert(m->type == METRIC_HISTOGRAM);
	va_list ap;
	va_start(ap, v);
	struct series *s = series_get(m, ap);
	va_end(ap);
	size_t i = 0;
	while (i < m->nbounds && v > m->bounds[i])
		i++;
	s->buckets[i]++;
	s->count++;
	s->value += v;
}

void metric_reset(struct metric *m)
{
	struct list *pos, *tmp;
	list_for_each_safe (pos, tmp, &m->order) {
		struct series *s = container_of(pos, struct series, link);
		map_remove(&m->series, &s->node);
		list_del(&s->link);
		free(s->key);
		free(s->buckets);
		free(s);
	}
	m->nseries = 0;
}

static void metric_free(struct metric *m)
{
	metric_reset(m);
	map_destroy(&m->series);
	for (size_t i = 0; i < m->nlabels; i++)
		free(m->label_names[i]);
	free(m->bounds);
	free(m->name);
	free(m->help);
	free(m);
}

/* ---- rendering ----------------------------------------------------------- */

struct out {
	char *p;
	size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		o->cap = (o->len + n + 1) * 2 + 4096;
		o->p = xrealloc(o->p, o->cap);
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void puts_(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

PRINTF_LIKE(2, 3) static void putf(struct out *o, const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	assert(n >= 0 && (size_t)n < sizeof(buf));
	put(o, buf, (size_t)n);
}

/* HELP text escapes \ and newline; label values also ". */
static void put_escaped(struct out *o, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			puts_(o, "\\\\");
		else if (*s == '\n')
			puts_(o, "\\n");
		else if (quote && *s == '"')
			puts_(o, "\\\"");
		else
			put(o, s, 1);
	}
}

static void put_value(struct out *o, double v)
{
	if (isnan(v))
		puts_(o, "NaN");
	else if (isinf(v))
		puts_(o, v > 0 ? "+Inf" : "-Inf");
	else if (v == floor(v) && fabs(v) < 1e15)
		putf(o, "%.0f", v);
	else
		putf(o, "%.17g", v);
}

/* {a="x",b="y"[,le="..."]} or nothing. */
static void put_labels(struct out *o, const struct metric *m, const struct series *s,
		       const char *le)
{
	if (m->nlabels == 0 && !le)
		return;
	puts_(o, "{");
	for (size_t i = 0; i < m->nlabels; i++) {
		putf(o, "%s%s=\"", i ? "," : "", m->label_names[i]);
		put_escaped(o, s->values[i], true);
		puts_(o, "\"");
	}
	if (le)
		putf(o, "%sle=\"%s\"", m->nlabels ? "," : "", le);
	puts_(o, "}");
}

static void render_metric(struct out *o, const struct metric *m)
{
	static const char *const types[] = {"counter", "gauge", "histogram"};
	putf(o, "# HELP %s ", m->name);
	put_escaped(o, m->help, false);
	putf(o, "\n# TYPE %s %s\n", m->name, types[m->type]);
	const struct list *pos;
	list_for_each (pos, &m->order) {
		const struct series *s = container_of(pos, struct series, link);
		if (m->type != METRIC_HISTOGRAM) {
			puts_(o, m->name);
			put_labels(o, m, s, NULL);
			puts_(o, " ");
			put_value(o, s->value);
			puts_(o, "\n");
			continue;
		}
		uint64_t cum = 0;
		for (size_t i = 0; i <= m->nbounds; i++) {
			char le[40];
			cum += s->buckets[i];
			if (i < m->nbounds)
				snprintf(le, sizeof(le), "%.17g", m->bounds[i]);
			else
				snprintf(le, sizeof(le), "+Inf");
			putf(o, "%s_bucket", m->name);
			put_labels(o, m, s, le);
			putf(o, " %llu\n", (unsigned long long)cum);
		}
		putf(o, "%s_sum", m->name);
		put_labels(o, m, s, NULL);
		puts_(o, " ");
		put_value(o, s->value);
		putf(o, "\n%s_count", m->name);
		put_labels(o, m, s, NULL);
		putf(o, " %llu\n", (unsigned long long)s->count);
	}
}

char *metrics_render(size_t *len)
{
	struct out o = {0};
	puts_(&o, "");
	for (const struct metric *m = R.first; m; m = m->next)
		render_metric(&o, m);
	*len = o.len;
	return o.p;
}

/* ---- collectors and scrapes ---------------------------------------------- */

static void add_collector(metrics_sync_fn sync, metrics_async_fn async, void *arg)
{
	struct collector *c = xcalloc(1, sizeof(*c));
	c->sync = sync;
	c->async = async;
	c->arg = arg;
	*R.ctail = c;
	R.ctail = &c->next;
}

void metrics_collector(metrics_sync_fn fn, void *arg)
{
	add_collector(fn, NULL, arg);
}

void metrics_async_collector(metrics_async_fn fn, void *arg)
{
	add_collector(NULL, fn, arg);
}

static void scrape_render(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct scrape *s = arg;
	if (R.scrape_errors)
		metric_set(R.scrape_errors, (double)s->errors);
	size_t len;
	char *text = metrics_render(&len);
	s->done(text, len, s->arg);
	free(text);
	event_free(s->ev);
	free(s);
}

static void scrape_step(struct scrape *s)
{
	if (--s->waiting > 0)
		return;
	/* Deferred: done never runs inside metrics_scrape. */
	s->ev = evtimer_new(R.base, scrape_render, s);
	if (!s->ev)
		abort();
	struct timeval tv = {0, 0};
	evtimer_add(s->ev, &tv);
}

void metrics_collect_done(struct metrics_pending *p, bool ok)
{
	struct scrape *s = p->s;
	free(p);
	if (!ok)
		s->errors++;
	scrape_step(s);
}

void metrics_scrape(metrics_done_fn done, void *arg)
{
	struct scrape *s = xcalloc(1, sizeof(*s));
	s->done = done;
	s->arg = arg;
	s->waiting = 1;
	for (struct collector *c = R.collectors; c; c = c->next) {
		if (c->sync) {
			c->sync(c->arg);
			continue;
		}
		struct metrics_pending *p = xcalloc(1, sizeof(*p));
		p->s = s;
		s->waiting++;
		c->async(p, c->arg);
	}
	scrape_step(s);
}

/* ---- the standard metrics ------------------------------------------------ */

#define LAG_PERIOD_US 250000

static void lag_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	int64_t now = mono_us();
	int64_t late = now - R.lag_due_us;
	metric_observe(R.lag_seconds, late > 0 ? (double)late / 1e6 : 0.0);
	R.lag_due_us = now + LAG_PERIOD_US;
	struct timeval tv = {0, LAG_PERIOD_US};
	evtimer_add(R.lag_ev, &tv);
}

static void std_collect(void *arg)
{
	(void)arg;
	metric_set(R.h2_bytes, (double)metrics_std.bytes_in, "in");
	metric_set(R.h2_bytes, (double)metrics_std.bytes_out, "out");
	metric_set(R.h2_streams, (double)metrics_std.streams);
}

void metrics_init(struct event_base *base, const char *version)
{
	/* Seconds: a fast unary call is ~100us, a long Execute minutes. */
	static const double rpc_b[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
				       0.5,    1,     2.5,    5,     10,   30,	  60,	300, 1800};
	static const double redis_b[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
					 0.01,	 0.025,	  0.05,	  0.1,	 0.5,	 1};
	static const double lag_b[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
				       0.1,   0.25,   0.5,   1,	   5};
	R.base = base;
	R.info = metric_new(METRIC_GAUGE, "reactor_build_info",
			    "Always 1; the version label names the running reactord.", "version");
	metric_set(R.info, 1, version);
	R.start_time =
		metric_new(METRIC_GAUGE, "reactor_process_start_time_seconds",
			   "When this reactord started, in seconds since the Unix epoch.", NULL);
	metric_set(R.start_time, (double)(now_us() / 1000000));
	R.rpc_total = metric_new(METRIC_COUNTER, "reactor_rpc_calls_total",
				 "gRPC calls finished, by method and status code.", "method,code");
	R.rpc_seconds =
		metric_histogram("reactor_rpc_duration_seconds",
				 "How long gRPC calls ran, from headers to status, by method.",
				 "method", rpc_b, ARRAY_LEN(rpc_b));
	R.h2_bytes = metric_new(METRIC_COUNTER, "reactor_http2_bytes_total",
				"HTTP/2 bytes read (in) and written (out) on gRPC connections.",
				"direction");
	R.h2_streams =
		metric_new(METRIC_GAUGE, "reactor_http2_streams", "HTTP/2 streams open.", NULL);
	R.redis_seconds = metric_histogram("reactor_redis_roundtrip_seconds",
					   "Redis command round trips, from send to reply.", NULL,
					   redis_b, ARRAY_LEN(redis_b));
	R.ac_total = metric_new(METRIC_COUNTER, "reactor_action_cache_lookups_total",
				"GetActionResult answers by instance and result (hit, miss).",
				"instance,result");
	R.lag_seconds = metric_histogram(
		"reactor_event_loop_lag_seconds",
		"How late a 250ms timer on the event loop fires: time the loop was busy.", NULL,
		lag_b, ARRAY_LEN(lag_b));
	R.scrape_errors = metric_new(METRIC_GAUGE, "reactor_scrape_errors",
				     "Collectors that failed during this scrape (their series "
				     "are left out).",
				     NULL);
	metric_set(R.scrape_errors, 0);
	metrics_collector(std_collect, NULL);
	if (base) {
		R.lag_ev = evtimer_new(base, lag_cb, NULL);
		if (!R.lag_ev)
			abort();
		R.lag_due_us = mono_us() + LAG_PERIOD_US;
		struct timeval tv = {0, LAG_PERIOD_US};
		evtimer_add(R.lag_ev, &tv);
	}
}

void metrics_free(void)
{
	if (R.lag_ev)
		event_free(R.lag_ev);
	while (R.first) {
		struct metric *m = R.first;
		R.first = m->next;
		metric_free(m);
	}
	while (R.collectors) {
		struct collector *c = R.collectors;
		R.collectors = c->next;
		free(c);
	}
	memset(&R, 0, sizeof(R));
	R.tail = &R.first;
	R.ctail = &R.collectors;
}

void metrics_rpc_done(const char *method, const char *code, int64_t duration_us)
{
	if (!R.rpc_total)
		return;
	if (!method)
		method = "unknown";
	metric_add(R.rpc_total, 1, method, code);
	metric_observe(R.rpc_seconds, (double)duration_us / 1e6, method);
}

void metrics_redis_rtt(int64_t us)
{
	if (R.redis_seconds)
		metric_observe(R.redis_seconds, (double)us / 1e6);
}

void metrics_ac_lookup(const char *instance, bool hit)
{
	if (R.ac_total)
		metric_add(R.ac_total, 1, instance, hit ? "hit" : "miss");
}
