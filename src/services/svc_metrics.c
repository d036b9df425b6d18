/*
 * svc_metrics.c - GET /metrics on the http: listener: the collectors that
 * read reactord's state at scrape time (connections, CAS per instance,
 * Redis link, and through domain/inspect one bounded Redis batch for
 * queues, bots, builds and the master's leases) and the handler that
 * answers with the registry rendered by core/metrics.  It owns the
 * scrapes in flight, so that a reply never goes to a request evhttp has
 * freed at shutdown.
 */
#include "services/svc_metrics.h"

#include <stdlib.h>
#include <string.h>

#include <event2/http.h>

#include "core/cfg.h"
#include "core/list.h"
#include "core/log.h"
#include "core/metrics.h"
#include "domain/blob.h"
#include "domain/inspect.h"
#include "services/inst.h"
#include "state/store.h"
#include "transport/http.h"
#include "transport/server.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* One /metrics request waiting for its collectors. */
struct pending_scrape {
	struct evhttp_request *req; /* NULL once orphaned by shutdown */
	struct list link;	    /* on M.scrapes */
};

static struct {
	const struct cfg *cfg; /* the boot config: instance names */
	struct list scrapes;
	bool up;
	struct metric *grpc_conns, *http_conns, *redis_up, *redis_reconnects, *redis_cmds;
	struct metric *cas_bytes, *cas_objects, *cas_max, *cas_evictions, *cas_lookups, *cas_ratio;
	struct metric *inst_ops, *ops_stage, *ops_completed, *jobs_queued, *jobs_executing,
		*queue_depth, *bots, *bots_busy;
	struct metric *builds, *builds_leased, *master_leases, *summary_truncated;
} M = {.scrapes = LIST_INIT(M.scrapes)};

/* ---- collectors ---------------------------------------------------------- */

static void collect_local(void *arg)
{
	(void)arg;
	metric_set(M.grpc_conns, (double)server_nconns());
	metric_set(M.http_conns, (double)http_nconns());
	struct store_stats ss;
	store_get_stats(&ss);
	metric_set(M.redis_up, store_up() ? 1 : 0);
	metric_set(M.redis_reconnects, (double)ss.reconnects);
	metric_set(M.redis_cmds, (double)ss.commands);

	metric_reset(M.cas_ratio);
	metric_reset(M.cas_max);
	for (int i = 0; M.cfg && i < M.cfg->n_instances; i++) {
		const char *name = M.cfg->instances[i].name;
		struct inst *in = inst_find(name);
		if (!in || !in->cas)
			continue;
		struct blob_stats st;
		blob_get_stats(in->cas, &st);
		metric_set(M.cas_bytes, (double)st.bytes, name);
		metric_set(M.cas_objects, (double)st.count, name);
		if (st.max_size > 0)
			metric_set(M.cas_max, (double)st.max_size, name);
		metric_set(M.cas_evictions, (double)st.evictions, name);
		metric_set(M.cas_lookups, (double)st.hits, name, "hit");
		metric_set(M.cas_lookups, (double)st.misses, name, "miss");
		if (st.hits + st.misses > 0)
			metric_set(M.cas_ratio, (double)st.hits / (double)(st.hits + st.misses),
				   name);
	}
}

static void summary_clear(void)
{
	metric_reset(M.inst_ops);
	metric_reset(M.ops_stage);
	metric_reset(M.ops_completed);
	metric_reset(M.jobs_queued);
	metric_reset(M.jobs_executing);
	metric_reset(M.queue_depth);
	metric_reset(M.bots);
	metric_reset(M.bots_busy);
	metric_reset(M.builds);
	metric_reset(M.builds_leased);
	metric_reset(M.master_leases);
	metric_reset(M.summary_truncated);
}

static void summary_done(void *arg, int rc, struct inspect_summary *r)
{
	struct metrics_pending *p = arg;
	summary_clear();
	if (rc != 0 || !r) {
		LOGD("metrics", "summary from Redis failed (%d): its series are left out", rc);
		metrics_collect_done(p, false);
		return;
	}
	for (size_t i = 0; i < r->n_instances; i++) {
		const struct inspect_instance_sum *s = &r->instances[i];
		metric_set(M.inst_ops, (double)s->ops, s->instance);
		metric_set(M.ops_stage, (double)s->ops_queued, s->instance, "QUEUED");
		metric_set(M.ops_stage, (double)s->ops_executing, s->instance, "EXECUTING");
		metric_set(M.ops_completed, (double)s->ops_ok, s->instance, "ok");
		metric_set(M.ops_completed, (double)s->ops_failed, s->instance, "failed");
		metric_set(M.ops_completed, (double)s->ops_cancelled, s->instance, "cancelled");
		metric_set(M.jobs_queued, (double)s->queued, s->instance);
		metric_set(M.bots, (double)s->bots, s->instance);
		metric_set(M.bots_busy, (double)s->bots_busy, s->instance);
	}
	for (size_t i = 0; i < r->n_depth; i++)
		metric_set(M.queue_depth, (double)r->depth[i].queued, r->depth[i].instance,
			   r->depth[i].platform);
	metric_set(M.jobs_executing, (double)r->jobs_executing);
	for (size_t i = 0; i < r->n_buckets; i++) {
		const struct inspect_bucket_sum *b = &r->buckets[i];
		metric_set(M.builds, (double)b->scheduled, b->bucket, "SCHEDULED");
		metric_set(M.builds, (double)b->started, b->bucket, "STARTED");
		metric_set(M.builds, (double)b->completed, b->bucket, "COMPLETED");
	}
	metric_set(M.builds_leased, (double)r->builds_leased);
	if (r->has_master)
		metric_set(M.master_leases, (double)r->master_leases, r->master);
	metric_set(M.summary_truncated, r->truncated ? 1 : 0);
	metrics_collect_done(p, true);
}

static void collect_summary(struct metrics_pending *p, void *arg)
{
	(void)arg;
	int rc = inspect_summary(summary_done, p);
	if (rc != 0) {
		summary_clear();
		LOGD("metrics", "summary from Redis not started (%d): its series are left out", rc);
		metrics_collect_done(p, false);
	}
}

/* ---- the handler --------------------------------------------------------- */

static void scrape_done(const char *text, size_t len, void *arg)
{
	struct pending_scrape *ps = arg;
	list_del(&ps->link);
	if (ps->req)
		http_reply(ps->req, 200, CONTENT_TYPE, text, len);
	free(ps);
}

static void handle_metrics(struct evhttp_request *req, const char *path, void *arg)
{
	(void)arg;
	if (strcmp(path, "/metrics") != 0) {
		http_reply_error(req, 404, "not found");
		return;
	}
	struct pending_scrape *ps = xcalloc(1, sizeof(*ps));
	ps->req = req;
	list_add_tail(&M.scrapes, &ps->link);
	metrics_scrape(scrape_done, ps);
}

#define GAUGE(name, help, labels)   metric_new(METRIC_GAUGE, name, help, labels)
#define COUNTER(name, help, labels) metric_new(METRIC_COUNTER, name, help, labels)

void svc_metrics_init(const struct cfg *cfg)
{
	M.cfg = cfg;
	M.grpc_conns = GAUGE("reactor_grpc_connections", "gRPC (HTTP/2) connections open.", NULL);
	M.http_conns = GAUGE("reactor_http_connections",
			     "HTTP/1.1 connections open on the http: listeners.", NULL);
	M.redis_up = GAUGE("reactor_redis_up", "1 while the Redis command connection is up.", NULL);
	M.redis_reconnects = COUNTER("reactor_redis_reconnects_total",
				     "Redis connection attempts after the first, on either "
				     "connection.",
				     NULL);
	M.redis_cmds = COUNTER("reactor_redis_commands_total", "Redis commands sent.", NULL);
	M.cas_bytes = GAUGE("reactor_cas_bytes", "Bytes of the blobs the CAS holds.", "instance");
	M.cas_objects = GAUGE("reactor_cas_objects", "Blobs the CAS holds.", "instance");
	M.cas_max = GAUGE("reactor_cas_max_bytes", "The CAS size limit (bounded stores only).",
			  "instance");
	M.cas_evictions = COUNTER("reactor_cas_evictions_total",
				  "Blobs evicted from the CAS for space since start.", "instance");
	M.cas_lookups = COUNTER("reactor_cas_lookups_total",
				"CAS existence checks and reads, by result (hit, miss).",
				"instance,result");
	M.cas_ratio =
		GAUGE("reactor_cas_hit_ratio",
		      "CAS hits over lookups since start (absent before the first).", "instance");
	M.inst_ops = GAUGE("reactor_operations_indexed",
			   "Operations indexed in Redis (any stage, finished ones until their "
			   "retention ends).",
			   "instance");
	M.ops_stage = GAUGE("reactor_operations",
			    "Operations waiting now, by stage (QUEUED, EXECUTING); exact, kept "
			    "by the scheduler at each transition.",
			    "instance,stage");
	M.ops_completed = COUNTER("reactor_operations_completed_total",
				  "Operations completed, by result: ok (status OK, cache hits "
				  "included, whatever the exit code), cancelled, failed (any "
				  "other status).",
				  "instance,result");
	M.jobs_queued = GAUGE("reactor_jobs_queued", "Jobs waiting for a bot.", "instance");
	M.jobs_executing =
		GAUGE("reactor_jobs_executing", "Jobs assigned to a bot, all instances.", NULL);
	M.queue_depth =
		GAUGE("reactor_queue_depth", "Jobs waiting, per platform.", "instance,platform");
	M.bots = GAUGE("reactor_bots", "Live bot sessions.", "instance");
	M.bots_busy = GAUGE("reactor_bots_busy", "Live bot sessions holding a lease.", "instance");
	M.builds = GAUGE("reactor_builds", "Builds in the buckets, by status.", "bucket,status");
	M.builds_leased = GAUGE("reactor_builds_leased", "Leased builds, all buckets.", NULL);
	M.master_leases =
		GAUGE("reactor_master_leases", "Builds this reactord's master holds.", "master");
	M.summary_truncated = GAUGE("reactor_summary_truncated",
				    "1 when a cap cut the Redis summary short (counts cover the "
				    "first entries only).",
				    NULL);
	metrics_collector(collect_local, NULL);
	metrics_async_collector(collect_summary, NULL);
	http_route("/metrics", handle_metrics, NULL);
	M.up = true;
}

void svc_metrics_shutdown(void)
{
	/* The requests go with http_stop; their collectors may still finish. */
	struct list *pos;
	list_for_each (pos, &M.scrapes)
		container_of(pos, struct pending_scrape, link)->req = NULL;
	M.up = false;
}
