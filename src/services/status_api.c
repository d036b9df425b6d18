/*
 * status_api.c - the JSON the status page fetches: /api/status (health,
 * version, uptime, and per instance the queues, bots and operations that
 * domain/inspect.h reads, with the buckets' counts and recent builds),
 * /api/operations/NAME (the operation's view, its job's times, its Action
 * and Command from the CAS, the ActionResult and inline stdout/stderr up
 * to STATUS_MAX_INLINE_LOG), /api/builds/ID (the build as the Buckets
 * service has it; its result details carry the master's step records) and
 * /api/logs/HASH-SIZE (a CAS blob as text, at most STATUS_MAX_LOG_BYTES).
 * Every string goes out through sj_str (status.c).  Requests waiting on
 * Redis sit on one list; at shutdown they are answered 503.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <hiredis/hiredis.h>

#include "config.h"
#include "core/cfg.h"
#include "core/digest.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"
#include "core/util.h"
#include "domain/blob.h"
#include "domain/buckets.h"
#include "domain/inspect.h"
#include "domain/master.h"
#include "domain/sched.h"
#include "proto/pb.h"
#include "services/inst.h"
#include "services/status.h"
#include "services/status_int.h"
#include "state/keys.h"
#include "state/store.h"

#define RECENT_BUILDS 50
#define RECENT_OPS    50
#define MAX_BOTS      100
#define MAX_BLOB      (1024 * 1024) /* Action / Command read from the CAS */

/* One request waiting for Redis answers.  req is NULL once it was answered
 * (shutdown); the callbacks then only count down. */
struct waiter {
	struct list link;
	struct evhttp_request *req;
	int pending;
	void (*done)(struct waiter *w); /* answers req (when set) */
	void (*release)(struct waiter *w);
};

static struct list waiters = LIST_INIT(waiters);
static int ngathers;

static void waiter_start(struct waiter *w, struct evhttp_request *req)
{
	w->req = req;
	list_add_tail(&waiters, &w->link);
}

/* One answer arrived: the last one finishes the request. */
static void waiter_dec(struct waiter *w)
{
	assert(w->pending > 0);
	if (--w->pending > 0)
		return;
	if (w->req)
		w->done(w);
	list_del(&w->link);
	w->release(w);
}

void status_api_shutdown(void)
{
	struct list *i;
	list_for_each (i, &waiters) {
		struct waiter *w = container_of(i, struct waiter, link);
		if (w->req)
			status_send_error(w->req, HTTP_SERVUNAVAIL, "reactord is shutting down");
		w->req = NULL;
	}
}

static const char *or_empty(const char *s)
{
	return s ? s : "";
}

static void j_i64(struct evbuffer *b, bool first, const char *key, int64_t v)
{
	sj_key(b, first, key);
	evbuffer_add_printf(b, "%" PRId64, v);
}

static void j_s(struct evbuffer *b, bool first, const char *key, const char *v)
{
	sj_key(b, first, key);
	sj_str(b, v);
}

static void j_b(struct evbuffer *b, bool first, const char *key, bool v)
{
	sj_key(b, first, key);
	evbuffer_add_printf(b, "%s", v ? "true" : "false");
}

/* ---- builds ------------------------------------------------------------------- */

static void j_build(struct evbuffer *b, const BkBuild *x)
{
	char id[32];
	snprintf(id, sizeof id, "%" PRId64, x->id);
	evbuffer_add(b, "{", 1);
	j_s(b, true, "id", id);
	j_s(b, false, "bucket", x->bucket);
	sj_key(b, false, "tags");
	evbuffer_add(b, "[", 1);
	for (size_t i = 0; i < x->n_tags; i++) {
		if (i)
			evbuffer_add(b, ",", 1);
		sj_str(b, x->tags[i]);
	}
	evbuffer_add(b, "]", 1);
	j_s(b, false, "parameters_json", x->parameters_json);
	j_s(b, false, "status", bk_status_name(x->status));
	j_s(b, false, "result", bk_result_name(x->result));
	j_s(b, false, "result_details_json", x->result_details_json);
	j_s(b, false, "failure_reason", bk_failure_name(x->failure_reason));
	j_s(b, false, "cancelation_reason", bk_cancel_name(x->cancelation_reason));
	j_i64(b, false, "lease_expiration_ts", x->lease_expiration_ts);
	j_s(b, false, "url", x->url);
	j_i64(b, false, "created_ts", x->created_ts);
	j_i64(b, false, "updated_ts", x->updated_ts);
	j_i64(b, false, "started_ts", x->started_ts);
	j_i64(b, false, "completed_ts", x->completed_ts);
	j_i64(b, false, "status_changed_ts", x->status_changed_ts);
	j_s(b, false, "created_by", x->created_by);
	j_s(b, false, "leasee", x->leasee);
	j_i64(b, false, "retry_of", x->retry_of);
	evbuffer_add(b, "}", 1);
}

/* ---- /api/status ------------------------------------------------------------- */

struct ginst {
	char *name;
	struct evbuffer *queues, *bots, *ops; /* JSON arrays, or NULL when unread */
	char *err;			      /* why a part is missing */
};

struct gather {
	struct waiter w;
	struct evbuffer *summary; /* the object's members from inspect_summary */
	char *summary_err;
	struct ginst *in;
	size_t nin;
	struct evbuffer *builds;
	char *builds_err;
};

static void gather_release(struct waiter *w)
{
	struct gather *g = container_of(w, struct gather, w);
	for (size_t i = 0; i < g->nin; i++) {
		struct ginst *gi = &g->in[i];
		free(gi->name);
		free(gi->err);
		if (gi->queues)
			evbuffer_free(gi->queues);
		if (gi->bots)
			evbuffer_free(gi->bots);
		if (gi->ops)
			evbuffer_free(gi->ops);
	}
	free(g->in);
	evbuffer_free(g->summary);
	if (g->builds)
		evbuffer_free(g->builds);
	free(g->summary_err);
	free(g->builds_err);
	free(g);
	ngathers--;
}

static void set_err(char **dst, const char *what, int rc)
{
	if (!*dst)
		*dst = xasprintf("%s: %s", what, err_name(rc));
}

static void gather_done(struct waiter *w)
{
	struct gather *g = container_of(w, struct gather, w);
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	int64_t up = (mono_us() - status_started_mono()) / 1000000;
	evbuffer_add(b, "{", 1);
	j_s(b, true, "version", PACKAGE_VERSION);
	j_i64(b, false, "uptime_s", up);
	j_i64(b, false, "now_us", now_us());
	j_s(b, false, "health", store_up() ? "SERVING" : "NOT_SERVING");
	j_b(b, false, "redis_up", store_up());
	j_s(b, false, "redis_error", store_last_error());
	j_b(b, false, "master_running", master_running());
	j_i64(b, false, "master_held", master_running() ? master_nheld() : 0);
	j_s(b, false, "summary_error", g->summary_err);
	evbuffer_add_buffer(b, g->summary);
	sj_key(b, false, "instances");
	evbuffer_add(b, "[", 1);
	for (size_t i = 0; i < g->nin; i++) {
		struct ginst *gi = &g->in[i];
		evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
		j_s(b, true, "name", gi->name);
		j_s(b, false, "error", gi->err);
		struct {
			const char *k;
			struct evbuffer *v;
		} parts[] = {{"queues", gi->queues}, {"bots", gi->bots}, {"ops", gi->ops}};
		for (size_t k = 0; k < ARRAY_LEN(parts); k++) {
			sj_key(b, false, parts[k].k);
			if (parts[k].v)
				evbuffer_add_buffer(b, parts[k].v);
			else
				evbuffer_add(b, "null", 4);
		}
		evbuffer_add(b, "}", 1);
	}
	evbuffer_add(b, "]", 1);
	j_s(b, false, "builds_error", g->builds_err);
	sj_key(b, false, "builds");
	if (g->builds)
		evbuffer_add_buffer(b, g->builds);
	else
		evbuffer_add(b, "[]", 2);
	evbuffer_add(b, "}\n", 2);
	status_send_buf(w->req, HTTP_OK, "application/json", b);
	evbuffer_free(b);
}

/* The instance an inspect answer is about, or NULL. */
static struct ginst *ginst_of(struct gather *g, const char *instance)
{
	for (size_t i = 0; i < g->nin; i++)
		if (strcmp(g->in[i].name, instance) == 0)
			return &g->in[i];
	return NULL;
}

static void on_queues(void *arg, int rc, struct inspect_queues *r)
{
	struct gather *g = arg;
	struct ginst *gi = r ? ginst_of(g, r->instance) : NULL;
	if (rc == 0 && gi) {
		struct evbuffer *b = gi->queues = evbuffer_new();
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < r->n; i++) {
			const struct inspect_queue *q = &r->queues[i];
			evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
			j_s(b, true, "platform", q->platform);
			j_i64(b, false, "queued", q->queued);
			j_i64(b, false, "oldest_us", q->oldest_us);
			j_i64(b, false, "bots", q->bots);
			j_i64(b, false, "bots_busy", q->bots_busy);
			evbuffer_add(b, "}", 1);
		}
		evbuffer_add(b, "]", 1);
	} else if (rc != 0) {
		set_err(&g->summary_err, "queues", rc);
	}
	waiter_dec(&g->w);
}

static void on_bots(void *arg, int rc, struct inspect_bots *r)
{
	struct gather *g = arg;
	struct ginst *gi = r ? ginst_of(g, r->instance) : NULL;
	if (rc == 0 && gi) {
		struct evbuffer *b = gi->bots = evbuffer_new();
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < r->n; i++) {
			const struct inspect_bot *x = &r->bots[i];
			evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
			j_s(b, true, "session", x->session);
			j_s(b, false, "bot_id", x->bot_id);
			j_s(b, false, "owner", x->owner);
			j_s(b, false, "state", inspect_bot_state_name(x->state));
			j_s(b, false, "props", x->props);
			j_b(b, false, "busy", x->busy);
			j_s(b, false, "lease_job", x->lease_job);
			j_s(b, false, "lease_state", x->lease_state);
			j_s(b, false, "lease_action", x->lease_action);
			sj_key(b, false, "lease_ops");
			evbuffer_add(b, "[", 1);
			for (size_t k = 0; k < x->n_lease_ops; k++) {
				if (k)
					evbuffer_add(b, ",", 1);
				sj_str(b, x->lease_ops[k]);
			}
			evbuffer_add(b, "]", 1);
			j_i64(b, false, "created_us", x->created_us);
			j_i64(b, false, "last_seen_us", x->last_seen_us);
			j_i64(b, false, "expire_us", x->expire_us);
			evbuffer_add(b, "}", 1);
		}
		evbuffer_add(b, "]", 1);
	} else if (rc != 0) {
		set_err(&g->summary_err, "bots", rc);
	}
	waiter_dec(&g->w);
}

static void j_op(struct evbuffer *b, const struct inspect_op *o)
{
	evbuffer_add(b, "{", 1);
	j_s(b, true, "name", o->name);
	j_s(b, false, "stage", sched_stage_name(o->stage));
	j_s(b, false, "action", o->action);
	j_s(b, false, "job", o->job);
	j_s(b, false, "owner", o->owner);
	j_s(b, false, "bot_id", o->bot_id);
	j_s(b, false, "session", o->session);
	j_i64(b, false, "created_us", o->created_us);
	j_i64(b, false, "queued_us", o->queued_us);
	j_i64(b, false, "started_us", o->started_us);
	j_i64(b, false, "completed_us", o->completed_us);
	j_b(b, false, "cached", o->cached);
	j_i64(b, false, "status", o->status);
	j_s(b, false, "message", o->message);
	sj_key(b, false, "exit_code");
	if (o->has_exit)
		evbuffer_add_printf(b, "%d", o->exit_code);
	else
		evbuffer_add(b, "null", 4);
	evbuffer_add(b, "}", 1);
}

static void on_ops(void *arg, int rc, struct inspect_ops *r)
{
	struct gather *g = arg;
	struct ginst *gi = r ? ginst_of(g, r->instance) : NULL;
	if (rc == 0 && gi) {
		struct evbuffer *b = gi->ops = evbuffer_new();
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < r->n; i++) {
			if (i)
				evbuffer_add(b, ",", 1);
			j_op(b, &r->ops[i]);
		}
		evbuffer_add(b, "]", 1);
	} else if (rc != 0) {
		set_err(&g->summary_err, "operations", rc);
	}
	waiter_dec(&g->w);
}

static void on_builds(struct bk_list *r, void *arg)
{
	struct gather *g = arg;
	if (r->err == 0 && r->reason == 0) {
		struct evbuffer *b = g->builds = evbuffer_new();
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < r->n; i++) {
			if (i)
				evbuffer_add(b, ",", 1);
			j_build(b, r->builds[i]);
		}
		evbuffer_add(b, "]", 1);
	} else {
		g->builds_err = xstrdup(r->message ? r->message : err_name(r->err));
	}
	waiter_dec(&g->w);
}

static void on_summary(void *arg, int rc, struct inspect_summary *s)
{
	struct gather *g = arg;
	struct evbuffer *b = g->summary;
	if (rc != 0 || !g->w.req) {
		if (rc != 0)
			set_err(&g->summary_err, "summary", rc);
		waiter_dec(&g->w);
		return;
	}
	sj_key(b, false, "master");
	sj_str(b, s->has_master ? s->master : NULL);
	j_i64(b, false, "master_leases", s->master_leases);
	j_i64(b, false, "jobs_executing", s->jobs_executing);
	j_i64(b, false, "builds_leased", s->builds_leased);
	j_b(b, false, "truncated", s->truncated);
	sj_key(b, false, "buckets");
	evbuffer_add(b, "[", 1);
	for (size_t i = 0; i < s->n_buckets; i++) {
		const struct inspect_bucket_sum *k = &s->buckets[i];
		evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
		j_s(b, true, "name", k->bucket);
		j_i64(b, false, "scheduled", k->scheduled);
		j_i64(b, false, "started", k->started);
		j_i64(b, false, "completed", k->completed);
		evbuffer_add(b, "}", 1);
	}
	evbuffer_add(b, "]", 1);
	sj_key(b, false, "instance_sums");
	evbuffer_add(b, "[", 1);
	for (size_t i = 0; i < s->n_instances; i++) {
		const struct inspect_instance_sum *k = &s->instances[i];
		evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
		j_s(b, true, "name", k->instance);
		j_i64(b, false, "ops", k->ops);
		j_i64(b, false, "queued", k->queued);
		j_i64(b, false, "bots", k->bots);
		j_i64(b, false, "bots_busy", k->bots_busy);
		evbuffer_add(b, "}", 1);
	}
	evbuffer_add(b, "]", 1);
	/* Then each instance's detail (three bounded queries each). */
	g->nin = s->n_instances;
	g->in = xcalloc(g->nin ? g->nin : 1, sizeof(*g->in));
	for (size_t i = 0; i < g->nin; i++)
		g->in[i].name = xstrdup(s->instances[i].instance);
	for (size_t i = 0; i < g->nin; i++) {
		const char *name = g->in[i].name;
		int r;
		g->w.pending += 3;
		if ((r = inspect_queues(name, on_queues, g)) != 0) {
			set_err(&g->in[i].err, "queues", r);
			g->w.pending--;
		}
		if ((r = inspect_bots(name, MAX_BOTS, on_bots, g)) != 0) {
			set_err(&g->in[i].err, "bots", r);
			g->w.pending--;
		}
		if ((r = inspect_operations(name, 0, RECENT_OPS, on_ops, g)) != 0) {
			set_err(&g->in[i].err, "operations", r);
			g->w.pending--;
		}
	}
	waiter_dec(&g->w);
}

static void api_status(struct evhttp_request *req)
{
	if (ngathers >= STATUS_MAX_GATHERS) {
		char *m = xasprintf("too many status requests at once (limit %d)",
				    STATUS_MAX_GATHERS);
		status_send_error(req, HTTP_SERVUNAVAIL, m);
		free(m);
		return;
	}
	struct gather *g = xcalloc(1, sizeof(*g));
	ngathers++;
	g->summary = evbuffer_new();
	if (!g->summary)
		abort();
	g->w.done = gather_done;
	g->w.release = gather_release;
	waiter_start(&g->w, req);
	/* One count held while issuing, so no answer finishes it early. */
	g->w.pending = 1;
	int rc;
	g->w.pending++;
	if ((rc = inspect_summary(on_summary, g)) != 0) {
		set_err(&g->summary_err, "summary", rc);
		g->w.pending--;
	}
	Reactor__Buckets__V1__SearchRequest sr = REACTOR__BUCKETS__V1__SEARCH_REQUEST__INIT;
	sr.max_builds = RECENT_BUILDS;
	g->w.pending++;
	if ((rc = bk_search(&sr, on_builds, g)) != 0) {
		set_err(&g->builds_err, "builds", rc);
		g->w.pending--;
	}
	waiter_dec(&g->w);
}

/* ---- /api/builds/ID ----------------------------------------------------------- */

/* A running build's steps come from the master's records in Redis
 * (mstep:{id}:{n}, keys.c): at most this many are read. */
#define MAX_LIVE_STEPS 32
static const char *const step_fields[] = {"name",   "status", "exit_code", "duration_us", "cached",
					  "stdout", "stderr", "worker",	   "started"};
#define NSTEP_FIELDS ARRAY_LEN(step_fields)

struct bget {
	struct waiter w;
	struct evbuffer *out;
	int code;
	bool live; /* a STARTED build: steps and operation read as well */
	char *steps[MAX_LIVE_STEPS][NSTEP_FIELDS];
	char *op; /* the master's current operation ("" none) */
	struct bstep {
		struct bget *x;
		int n;
	} slots[MAX_LIVE_STEPS];
};

static void bget_release(struct waiter *w)
{
	struct bget *x = container_of(w, struct bget, w);
	evbuffer_free(x->out);
	for (int n = 0; n < MAX_LIVE_STEPS; n++)
		for (size_t f = 0; f < NSTEP_FIELDS; f++)
			free(x->steps[n][f]);
	free(x->op);
	free(x);
}

static char *reply_str(const redisReply *r, size_t i);

static void bget_done(struct waiter *w)
{
	struct bget *x = container_of(w, struct bget, w);
	if (x->code != HTTP_OK) {
		status_send_buf(w->req, x->code, "application/json", x->out);
		return;
	}
	struct evbuffer *b = x->out;
	if (x->live) {
		sj_key(b, false, "current_op");
		sj_str(b, x->op);
		sj_key(b, false, "live_steps");
		evbuffer_add(b, "[", 1);
		for (int n = 0; n < MAX_LIVE_STEPS && x->steps[n][0]; n++) {
			evbuffer_add(b, n ? ",{" : "{", n ? 2 : 1);
			for (size_t f = 0; f < NSTEP_FIELDS; f++)
				j_s(b, f == 0, step_fields[f], x->steps[n][f]);
			evbuffer_add(b, "}", 1);
		}
		evbuffer_add(b, "]", 1);
	}
	evbuffer_add(b, "}\n", 2);
	status_send_buf(w->req, x->code, "application/json", b);
}

static void on_step(redisReply *r, void *arg)
{
	struct bstep *sl = arg;
	for (size_t f = 0; f < NSTEP_FIELDS; f++)
		sl->x->steps[sl->n][f] = reply_str(r, f);
	waiter_dec(&sl->x->w);
}

static void on_master_rec(redisReply *r, void *arg)
{
	struct bget *x = arg;
	x->op = reply_str(r, 0);
	waiter_dec(&x->w);
}

/* Read the master's records of a started build (read-only commands). */
static void read_live(struct bget *x, const BkBuild *bd)
{
	x->live = true;
	for (int n = 0; n < MAX_LIVE_STEPS; n++) {
		char *k = keys_mstep(bd->id, n);
		x->slots[n].x = x;
		x->slots[n].n = n;
		x->w.pending++;
		if (store_command(on_step, &x->slots[n],
				  "HMGET %s name status exit_code duration_us cached stdout stderr "
				  "worker started",
				  k) != 0)
			x->w.pending--;
		free(k);
	}
	if (bd->leasee && *bd->leasee) {
		char *k = keys_master_build(bd->leasee, bd->id);
		x->w.pending++;
		if (store_command(on_master_rec, x, "HMGET %s op", k) != 0)
			x->w.pending--;
		free(k);
	}
}

static void on_build(struct bk_res *r, void *arg)
{
	struct bget *x = arg;
	struct evbuffer *b = x->out;
	if (r->err == 0 && r->reason == 0 && r->build) {
		x->code = HTTP_OK;
		evbuffer_add(b, "{", 1);
		j_s(b, true, "log_instance",
		    status_cfg() && status_cfg()->master
			    ? or_empty(status_cfg()->master->executor_instance)
			    : "");
		sj_key(b, false, "build");
		j_build(b, r->build);
		if (x->w.req && r->build->status == REACTOR__BUCKETS__V1__STATUS__STARTED)
			read_live(x, r->build);
	} else {
		x->code = r->err == 0 ? HTTP_NOTFOUND : HTTP_SERVUNAVAIL;
		evbuffer_add(b, "{", 1);
		j_s(b, true, "error", r->message ? r->message : err_name(r->err));
		evbuffer_add(b, "}\n", 2);
	}
	waiter_dec(&x->w);
}

static void api_build(struct evhttp_request *req, const char *seg)
{
	char *end;
	errno = 0;
	long long id = strtoll(seg, &end, 10);
	if (*end || errno || id <= 0 || strspn(seg, "0123456789") != strlen(seg)) {
		status_send_error(req, HTTP_BADREQUEST, "a build id is a positive decimal number");
		return;
	}
	struct bget *x = xcalloc(1, sizeof(*x));
	x->out = evbuffer_new();
	x->w.done = bget_done;
	x->w.release = bget_release;
	x->w.pending = 1;
	int rc = bk_get(id, on_build, x);
	if (rc != 0) {
		evbuffer_free(x->out);
		free(x);
		status_send_error(req, HTTP_SERVUNAVAIL, err_name(rc));
		return;
	}
	waiter_start(&x->w, req);
}

/* ---- CAS reads ---------------------------------------------------------------- */

/* "hash/size" or "hash-size" to d. */
static bool parse_digest(const char *s, struct digest *d)
{
	const char *sep = strpbrk(s, "/-");
	if (!sep || sep - s != DIGEST_HEX_LEN)
		return false;
	char hex[DIGEST_HEX_LEN + 1];
	memcpy(hex, s, DIGEST_HEX_LEN);
	hex[DIGEST_HEX_LEN] = '\0';
	char *end;
	errno = 0;
	long long size = strtoll(sep + 1, &end, 10);
	if (*end || errno || size < 0 || end == sep + 1)
		return false;
	char *err = NULL;
	int rc = digest_parse(hex, size, d, &err);
	free(err);
	return rc == 0;
}

/* At most max bytes of blob d into *out (malloc'd); *full is false when
 * the blob is longer.  Returns 0, -ENOENT, -EIO. */
static int read_blob(struct blob_store *s, const struct digest *d, size_t max, char **out,
		     size_t *len, bool *full)
{
	struct blob_reader *r;
	int rc = blob_reader_open(s, d, 0, &r);
	if (rc != 0)
		return rc;
	size_t want = d->size < (int64_t)max ? (size_t)d->size : max;
	char *buf = xmalloc(want + 1);
	size_t got = 0;
	while (got < want) {
		ssize_t n = blob_reader_read(r, buf + got, want - got);
		if (n < 0) {
			blob_reader_close(r);
			free(buf);
			return (int)n;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	blob_reader_close(r);
	buf[got] = '\0';
	*out = buf;
	*len = got;
	*full = (int64_t)got == d->size;
	return 0;
}

static struct blob_store *cas_of(const char *instance)
{
	struct inst *in = inst_find(instance ? instance : "");
	return in ? in->cas : NULL;
}

/* /api/logs/HASH-SIZE[?instance=NAME] */
static void api_log(struct evhttp_request *req, const char *seg)
{
	struct digest d;
	if (!parse_digest(seg, &d)) {
		status_send_error(req, HTTP_BADREQUEST, "a log is named by its digest: HASH-SIZE");
		return;
	}
	const char *instance = "";
	struct evkeyvalq q = {0};
	const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
	const char *qs = u ? evhttp_uri_get_query(u) : NULL;
	if (qs && evhttp_parse_query_str(qs, &q) == 0) {
		const char *v = evhttp_find_header(&q, "instance");
		if (v)
			instance = v;
	}
	struct blob_store *s = cas_of(instance);
	if (!s) {
		status_send_error(req, HTTP_NOTFOUND, "no such instance");
	} else {
		char *buf;
		size_t len;
		bool full;
		int rc = read_blob(s, &d, STATUS_MAX_LOG_BYTES, &buf, &len, &full);
		if (rc == -ENOENT) {
			status_send_error(req, HTTP_NOTFOUND, "no such blob in the CAS");
		} else if (rc != 0) {
			status_send_error(req, HTTP_INTERNAL, "cannot read the blob");
		} else {
			if (!full)
				evhttp_add_header(evhttp_request_get_output_headers(req),
						  "X-Reactor-Truncated", "1");
			status_send(req, HTTP_OK, "text/plain; charset=utf-8", buf, len);
			free(buf);
		}
	}
	evhttp_clear_headers(&q);
}

/* ---- /api/operations/NAME ----------------------------------------------------- */

struct oget {
	struct waiter w;
	char *name;
	struct sched_view v;
	bool have_view;
	char *view_err;
	/* HMGET replies: the op's created, the job's times and bot. */
	char *created, *queued, *assigned, *started, *completed, *bot, *attempts, *platform;
	char *bot_id;
};

static void oget_release(struct waiter *w)
{
	struct oget *o = container_of(w, struct oget, w);
	free(o->name);
	free(o->view_err);
	free(o->v.message);
	free(o->v.result);
	free(o->v.job);
	free(o->v.owner);
	free(o->v.instance);
	char **f[] = {&o->created, &o->queued,	 &o->assigned, &o->started, &o->completed,
		      &o->bot,	   &o->attempts, &o->platform, &o->bot_id};
	for (size_t i = 0; i < ARRAY_LEN(f); i++)
		free(*f[i]);
	free(o);
}

static void j_digest(struct evbuffer *b, bool first, const char *key, const PbDigest *d)
{
	sj_key(b, first, key);
	if (!d || !d->hash) {
		evbuffer_add(b, "null", 4);
		return;
	}
	char *s = xasprintf("%s/%" PRId64, d->hash, d->size_bytes);
	sj_str(b, s);
	free(s);
}

static void j_platform(struct evbuffer *b, const PbPlatform *p)
{
	evbuffer_add(b, "[", 1);
	for (size_t i = 0; p && i < p->n_properties; i++) {
		evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
		j_s(b, true, "name", p->properties[i]->name);
		j_s(b, false, "value", p->properties[i]->value);
		evbuffer_add(b, "}", 1);
	}
	evbuffer_add(b, "]", 1);
}

static int64_t ts_us(const Google__Protobuf__Timestamp *t)
{
	return t ? t->seconds * 1000000 + t->nanos / 1000 : 0;
}

/* An inline log: the raw bytes, else up to STATUS_MAX_INLINE_LOG of the
 * blob. */
static void j_log(struct evbuffer *b, const char *key, ProtobufCBinaryData raw, const PbDigest *d,
		  struct blob_store *s)
{
	sj_key(b, false, key);
	evbuffer_add(b, "{", 1);
	if (raw.len) {
		size_t n = raw.len < STATUS_MAX_INLINE_LOG ? raw.len : STATUS_MAX_INLINE_LOG;
		j_s(b, true, "digest", NULL);
		sj_key(b, false, "text");
		sj_strn(b, (const char *)raw.data, n);
		j_b(b, false, "truncated", n < raw.len);
	} else if (d && d->hash && *d->hash) {
		j_digest(b, true, "digest", d);
		struct digest dd;
		char *txt = NULL, *ds = xasprintf("%s-%" PRId64, d->hash, d->size_bytes);
		size_t len = 0;
		bool full = true;
		int rc = !s ? -ENOENT
			 : !parse_digest(ds, &dd)
				 ? -EINVAL
				 : read_blob(s, &dd, STATUS_MAX_INLINE_LOG, &txt, &len, &full);
		free(ds);
		sj_key(b, false, "text");
		if (rc == 0)
			sj_strn(b, txt, len);
		else
			evbuffer_add(b, "null", 4);
		j_b(b, false, "truncated", !full);
		j_s(b, false, "error",
		    rc == 0	    ? NULL
		    : rc == -ENOENT ? "not in the CAS"
				    : "unreadable");
		free(txt);
	} else {
		j_s(b, true, "digest", NULL);
		j_s(b, false, "text", "");
		j_b(b, false, "truncated", false);
	}
	evbuffer_add(b, "}", 1);
}

/* A small message from the CAS, unpacked (NULL when missing/too big). */
static ProtobufCMessage *cas_msg(struct blob_store *s, const PbDigest *pd,
				 const ProtobufCMessageDescriptor *desc)
{
	struct digest d;
	if (!s || !pd || !pd->hash || pd->size_bytes > MAX_BLOB)
		return NULL;
	char *ds = xasprintf("%s-%" PRId64, pd->hash, pd->size_bytes);
	bool ok = parse_digest(ds, &d);
	free(ds);
	uint8_t *data;
	if (!ok || blob_get(s, &d, &data) != 0)
		return NULL;
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, (size_t)d.size, data);
	free(data);
	return m;
}

static void j_timeline(struct evbuffer *b, struct oget *o, const PbActionResult *ar)
{
	/* Times the server recorded (us), then what the worker reported. */
	struct {
		const char *k;
		int64_t v;
	} t[] = {
		{"created", o->created ? strtoll(o->created, NULL, 10) : 0},
		{"queued", o->queued ? strtoll(o->queued, NULL, 10) : 0},
		{"assigned", o->assigned ? strtoll(o->assigned, NULL, 10) : 0},
		{"started", o->started ? strtoll(o->started, NULL, 10) : 0},
		{"completed", o->completed ? strtoll(o->completed, NULL, 10) : 0},
	};
	const PbExecutedActionMetadata *m = ar ? ar->execution_metadata : NULL;
	struct {
		const char *k;
		const Google__Protobuf__Timestamp *v;
	} w[] = {
		{"worker_start", m ? m->worker_start_timestamp : NULL},
		{"input_fetch_start", m ? m->input_fetch_start_timestamp : NULL},
		{"input_fetch_completed", m ? m->input_fetch_completed_timestamp : NULL},
		{"execution_start", m ? m->execution_start_timestamp : NULL},
		{"execution_completed", m ? m->execution_completed_timestamp : NULL},
		{"output_upload_start", m ? m->output_upload_start_timestamp : NULL},
		{"output_upload_completed", m ? m->output_upload_completed_timestamp : NULL},
		{"worker_completed", m ? m->worker_completed_timestamp : NULL},
	};
	sj_key(b, false, "timeline");
	evbuffer_add(b, "[", 1);
	bool first = true;
	for (size_t i = 0; i < ARRAY_LEN(t); i++) {
		if (t[i].v <= 0)
			continue;
		evbuffer_add(b, first ? "{" : ",{", first ? 1 : 2);
		j_s(b, true, "event", t[i].k);
		j_i64(b, false, "us", t[i].v);
		j_s(b, false, "by", "server");
		evbuffer_add(b, "}", 1);
		first = false;
	}
	for (size_t i = 0; i < ARRAY_LEN(w); i++) {
		if (!w[i].v || ts_us(w[i].v) <= 0)
			continue;
		evbuffer_add(b, first ? "{" : ",{", first ? 1 : 2);
		j_s(b, true, "event", w[i].k);
		j_i64(b, false, "us", ts_us(w[i].v));
		j_s(b, false, "by", "worker");
		evbuffer_add(b, "}", 1);
		first = false;
	}
	evbuffer_add(b, "]", 1);
}

static void oget_done(struct waiter *w)
{
	struct oget *o = container_of(w, struct oget, w);
	if (!o->have_view) {
		status_send_error(w->req, HTTP_SERVUNAVAIL,
				  o->view_err ? o->view_err : "cannot read the operation");
		return;
	}
	if (!o->v.exists) {
		status_send_error(w->req, HTTP_NOTFOUND, "no such operation");
		return;
	}
	const struct sched_view *v = &o->v;
	struct blob_store *s = cas_of(v->instance);
	struct evbuffer *b = evbuffer_new();
	if (!b)
		abort();
	char ad[DIGEST_STR_LEN];
	evbuffer_add(b, "{", 1);
	j_s(b, true, "name", o->name);
	j_s(b, false, "instance", v->instance);
	j_s(b, false, "stage", sched_stage_name(v->stage));
	j_i64(b, false, "status", v->status);
	j_s(b, false, "message", v->message);
	j_b(b, false, "cached", v->cached);
	j_s(b, false, "job", v->job);
	j_s(b, false, "owner", v->owner);
	j_s(b, false, "action_digest", digest_str(&v->action, ad, sizeof ad));
	j_s(b, false, "bot", o->bot_id);
	j_s(b, false, "session", o->bot);
	j_s(b, false, "attempts", o->attempts);
	j_s(b, false, "platform_key", o->platform);
	/* The Action and its Command, from the CAS. */
	PbDigest pad = BUILD__BAZEL__REMOTE__EXECUTION__V2__DIGEST__INIT;
	char hex[DIGEST_HEX_LEN + 1];
	memcpy(hex, v->action.hex, sizeof hex);
	pad.hash = hex;
	pad.size_bytes = v->action.size;
	PbAction *act = (PbAction *)cas_msg(
		s, &pad, &build__bazel__remote__execution__v2__action__descriptor);
	PbCommand *cmd = act ? (PbCommand *)cas_msg(
				       s, act->command_digest,
				       &build__bazel__remote__execution__v2__command__descriptor)
			     : NULL;
	sj_key(b, false, "action");
	if (act) {
		evbuffer_add(b, "{", 1);
		j_digest(b, true, "command_digest", act->command_digest);
		j_digest(b, false, "input_root_digest", act->input_root_digest);
		j_i64(b, false, "timeout_s", act->timeout ? act->timeout->seconds : 0);
		j_b(b, false, "do_not_cache", act->do_not_cache);
		sj_key(b, false, "platform");
		j_platform(b, act->platform);
		evbuffer_add(b, "}", 1);
	} else {
		evbuffer_add(b, "null", 4);
	}
	sj_key(b, false, "command");
	if (cmd) {
		evbuffer_add(b, "{", 1);
		sj_key(b, true, "arguments");
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < cmd->n_arguments; i++) {
			if (i)
				evbuffer_add(b, ",", 1);
			sj_str(b, cmd->arguments[i]);
		}
		evbuffer_add(b, "]", 1);
		sj_key(b, false, "environment");
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < cmd->n_environment_variables; i++) {
			evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
			j_s(b, true, "name", cmd->environment_variables[i]->name);
			j_s(b, false, "value", cmd->environment_variables[i]->value);
			evbuffer_add(b, "}", 1);
		}
		evbuffer_add(b, "]", 1);
		j_s(b, false, "working_directory", cmd->working_directory);
		sj_key(b, false, "output_paths");
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < cmd->n_output_paths; i++) {
			if (i)
				evbuffer_add(b, ",", 1);
			sj_str(b, cmd->output_paths[i]);
		}
		evbuffer_add(b, "]", 1);
		evbuffer_add(b, "}", 1);
	} else {
		evbuffer_add(b, "null", 4);
	}
	PbActionResult *ar = v->result ? build__bazel__remote__execution__v2__action_result__unpack(
						 NULL, v->result_len, v->result)
				       : NULL;
	sj_key(b, false, "result");
	if (ar) {
		evbuffer_add(b, "{", 1);
		j_i64(b, true, "exit_code", ar->exit_code);
		j_s(b, false, "worker",
		    ar->execution_metadata ? ar->execution_metadata->worker : NULL);
		sj_key(b, false, "output_files");
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < ar->n_output_files; i++) {
			evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
			j_s(b, true, "path", ar->output_files[i]->path);
			j_digest(b, false, "digest", ar->output_files[i]->digest);
			evbuffer_add(b, "}", 1);
		}
		evbuffer_add(b, "]", 1);
		sj_key(b, false, "output_directories");
		evbuffer_add(b, "[", 1);
		for (size_t i = 0; i < ar->n_output_directories; i++) {
			evbuffer_add(b, i ? ",{" : "{", i ? 2 : 1);
			j_s(b, true, "path", ar->output_directories[i]->path);
			j_digest(b, false, "digest", ar->output_directories[i]->tree_digest);
			evbuffer_add(b, "}", 1);
		}
		evbuffer_add(b, "]", 1);
		j_log(b, "stdout", ar->stdout_raw, ar->stdout_digest, s);
		j_log(b, "stderr", ar->stderr_raw, ar->stderr_digest, s);
		evbuffer_add(b, "}", 1);
	} else {
		evbuffer_add(b, "null", 4);
	}
	j_timeline(b, o, ar);
	evbuffer_add(b, "}\n", 2);
	status_send_buf(w->req, HTTP_OK, "application/json", b);
	evbuffer_free(b);
	if (ar)
		build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
	if (cmd)
		protobuf_c_message_free_unpacked(&cmd->base, NULL);
	if (act)
		protobuf_c_message_free_unpacked(&act->base, NULL);
}

static char *reply_str(const redisReply *r, size_t i)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements ||
	    r->element[i]->type != REDIS_REPLY_STRING)
		return NULL;
	return xstrndup(r->element[i]->str, r->element[i]->len);
}

static void on_job_times(redisReply *r, void *arg)
{
	struct oget *o = arg;
	o->queued = reply_str(r, 0);
	o->assigned = reply_str(r, 1);
	o->started = reply_str(r, 2);
	o->completed = reply_str(r, 3);
	o->bot = reply_str(r, 4);
	o->attempts = reply_str(r, 5);
	o->platform = reply_str(r, 6);
	/* The bot ids tried, comma separated: the last one is (or was) it. */
	char *bots = reply_str(r, 7);
	if (bots) {
		char *last = strrchr(bots, ',');
		o->bot_id = xstrdup(last ? last + 1 : bots);
		free(bots);
	}
	waiter_dec(&o->w);
}

static void on_op_created(redisReply *r, void *arg)
{
	struct oget *o = arg;
	o->created = reply_str(r, 0);
	waiter_dec(&o->w);
}

static void on_view(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct oget *o = arg;
	if (rc == 0 && n == 1) {
		o->have_view = true;
		o->v = v[0];
		/* Copy the strings: the view points into the scheduler's reply. */
		o->v.message = xstrdup(v[0].message ? v[0].message : "");
		o->v.job = xstrdup(v[0].job ? v[0].job : "");
		o->v.owner = xstrdup(v[0].owner ? v[0].owner : "");
		o->v.instance = xstrdup(v[0].instance ? v[0].instance : "");
		o->v.result = NULL;
		if (v[0].result && v[0].result_len) {
			o->v.result = xmalloc(v[0].result_len);
			memcpy(o->v.result, v[0].result, v[0].result_len);
		}
		if (o->w.req && o->v.exists) {
			/* The times: the op's creation and its job's (read-only). */
			char *ok = keys_op(o->name);
			o->w.pending++;
			if (store_command(on_op_created, o, "HMGET %s created", ok) != 0)
				o->w.pending--;
			free(ok);
			if (o->v.job && *o->v.job) {
				char *jk = keys_job(o->v.job);
				o->w.pending++;
				if (store_command(on_job_times, o,
						  "HMGET %s queued assigned started completed bot "
						  "attempts platform bots",
						  jk) != 0)
					o->w.pending--;
				free(jk);
			}
		}
	} else {
		o->view_err = xstrdup(err_name(rc));
	}
	waiter_dec(&o->w);
}

static void api_operation(struct evhttp_request *req, const char *seg)
{
	struct oget *o = xcalloc(1, sizeof(*o));
	o->name = xstrdup(seg);
	o->w.done = oget_done;
	o->w.release = oget_release;
	o->w.pending = 1;
	const char *ops[] = {o->name};
	int rc = sched_view(ops, 1, on_view, o);
	if (rc != 0) {
		status_send_error(req, HTTP_SERVUNAVAIL, err_name(rc));
		oget_release(&o->w);
		return;
	}
	waiter_start(&o->w, req);
}

/* ---- routing ------------------------------------------------------------------ */

void status_api(struct evhttp_request *req, const char *path)
{
	char seg[256];
	size_t q = strcspn(path, "?");
	char *p = xstrndup(path, q);
	if (strcmp(p, "status") == 0)
		api_status(req);
	else if (strncmp(p, "operations/", 11) == 0 && status_name(p + 11, true, seg, sizeof seg))
		api_operation(req, seg);
	else if (strncmp(p, "builds/", 7) == 0 && status_segment(p + 7, seg, sizeof seg))
		api_build(req, seg);
	else if (strncmp(p, "logs/", 5) == 0 && status_segment(p + 5, seg, sizeof seg))
		api_log(req, seg);
	else if (strncmp(p, "operations/", 11) == 0 || strncmp(p, "builds/", 7) == 0 ||
		 strncmp(p, "logs/", 5) == 0)
		status_send_error(req, HTTP_BADREQUEST, "malformed name in the path");
	else
		status_send_error(req, HTTP_NOTFOUND, "no such API");
	free(p);
}
