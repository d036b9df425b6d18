/*
 * svc_buckets.c - reactor.buckets.v1.Buckets: the gRPC face of build
 * buckets (domain in buckets.c).  Unary methods turn a request into one
 * domain operation (batches into one per item, pipelined) and the result
 * into a response: domain errors in-band with gRPC OK, Redis trouble as
 * UNAVAILABLE/INTERNAL.  This file also owns the two sweep timers (lease
 * expiry, build timeout) and WatchBuilds: watchers sit on one list, woken
 * by the bb:events:* pattern subscription; a matching event fetches the
 * build once (concurrent events for one build merge) and sends its current
 * state to every watcher that wants it.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "domain/buckets.h"
#include "state/buckets_keys.h"
#include "core/cfg.h"
#include "core/json.h"
#include "core/log.h"
#include "state/store.h"
#include "services/svc.h"

#define MOD	      "buckets"
#define MSG(T)	      Reactor__Buckets__V1__##T
#define SWEEP_LIMIT   1000
#define FETCH_BUCKETS 1024
#define FETCH_IDLE_US (60LL * 1000000)

/* Callers are not authenticated yet; Buildbucket's word for that. */
static const char *identity(struct call *c)
{
	(void)c;
	return "anonymous";
}

/* ---- unary methods ---------------------------------------------------------- */

static void reply_build(struct call *c, const struct bk_res *r)
{
	if (r->code != GRPC_OK) {
		call_finish(c, r->code, "%s", r->message ? r->message : "");
		return;
	}
	MSG(BuildResponse) resp = REACTOR__BUCKETS__V1__BUILD_RESPONSE__INIT;
	MSG(Error) e = REACTOR__BUCKETS__V1__ERROR__INIT;
	if (r->reason) {
		e.reason = r->reason;
		e.message = r->message ? r->message : (char *)"";
		resp.error = &e;
	} else {
		resp.build = r->build;
	}
	call_reply(c, &resp.base);
}

static void on_build(struct bk_res *r, void *arg)
{
	struct call *c = arg;
	if (!call_done(c))
		reply_build(c, r);
	call_unref(c);
}

#define UNARY(fn, T, stmt)                                                                         \
	void fn(struct call *c, const ProtobufCMessage *msg)                                       \
	{                                                                                          \
		const MSG(T) *req = (const void *)msg;                                             \
		call_ref(c);                                                                       \
		stmt;                                                                              \
	}

UNARY(svc_buckets_put, PutRequest, bk_put(req, identity(c), on_build, c))
UNARY(svc_buckets_get, GetRequest, bk_get(req->id, on_build, c))
UNARY(svc_buckets_lease, LeaseRequest, bk_lease(req, on_build, c))
UNARY(svc_buckets_reset, ResetRequest, bk_reset(req->id, on_build, c))
UNARY(svc_buckets_start, StartRequest, bk_start(req, on_build, c))
UNARY(svc_buckets_heartbeat, HeartbeatRequest, bk_heartbeat(req, on_build, c))
UNARY(svc_buckets_succeed, SucceedRequest, bk_succeed(req, on_build, c))
UNARY(svc_buckets_fail, FailRequest, bk_fail(req, on_build, c))
UNARY(svc_buckets_cancel, CancelRequest, bk_cancel(req->id, on_build, c))
UNARY(svc_buckets_retry, RetryRequest, bk_retry(req, identity(c), on_build, c))

static void on_list(struct bk_list *r, void *arg)
{
	struct call *c = arg;
	if (!call_done(c)) {
		if (r->code != GRPC_OK) {
			call_finish(c, r->code, "%s", r->message ? r->message : "");
		} else {
			MSG(SearchResponse) resp = REACTOR__BUCKETS__V1__SEARCH_RESPONSE__INIT;
			MSG(Error) e = REACTOR__BUCKETS__V1__ERROR__INIT;
			if (r->reason) {
				e.reason = r->reason;
				e.message = r->message ? r->message : (char *)"";
				resp.error = &e;
			} else {
				resp.n_builds = r->n;
				resp.builds = r->builds;
				resp.next_cursor = r->next_cursor ? r->next_cursor : (char *)"";
			}
			call_reply(c, &resp.base);
		}
	}
	call_unref(c);
}

UNARY(svc_buckets_peek, PeekRequest, bk_peek(req, on_list, c))
UNARY(svc_buckets_search, SearchRequest, bk_search(req, on_list, c))

/* ---- batches ------------------------------------------------------------------ */

enum batch_kind { B_PUT, B_HEARTBEAT, B_CANCEL };

struct bitem {
	struct batch *b;
	BkBuild *build;
	int reason;
	char *msg;
	char *op_id; /* PutBatch: the item's client_operation_id */
	int64_t id;  /* HeartbeatBatch / CancelBatch: the build id asked */
};

struct batch {
	enum batch_kind kind;
	struct call *c;
	size_t n, pending;
	int code; /* first transport failure of any item */
	char *cmsg;
	struct bitem *it;
};

static void batch_error(struct call *c, enum batch_kind kind, const char *msg)
{
	MSG(Error) e = REACTOR__BUCKETS__V1__ERROR__INIT;
	e.reason = REACTOR__BUCKETS__V1__ERROR_REASON__INVALID_INPUT;
	e.message = (char *)msg;
	MSG(PutBatchResponse) pr = REACTOR__BUCKETS__V1__PUT_BATCH_RESPONSE__INIT;
	MSG(HeartbeatBatchResponse) hr = REACTOR__BUCKETS__V1__HEARTBEAT_BATCH_RESPONSE__INIT;
	MSG(CancelBatchResponse) cr = REACTOR__BUCKETS__V1__CANCEL_BATCH_RESPONSE__INIT;
	pr.error = hr.error = cr.error = &e;
	call_reply(c, kind == B_PUT ? &pr.base : kind == B_HEARTBEAT ? &hr.base : &cr.base);
}

static void batch_reply(struct batch *b)
{
	size_t n = b->n;
	MSG(Error) *errs = xcalloc(n + 1, sizeof *errs);
	for (size_t i = 0; i < n; i++) {
		reactor__buckets__v1__error__init(&errs[i]);
		errs[i].reason = b->it[i].reason;
		errs[i].message = b->it[i].msg ? b->it[i].msg : (char *)"";
	}
#define ERR_OF(i) (b->it[i].reason ? &errs[i] : NULL)
	if (b->kind == B_PUT) {
		MSG(PutBatchResponse) resp = REACTOR__BUCKETS__V1__PUT_BATCH_RESPONSE__INIT;
		MSG(PutBatchResult) *res = xcalloc(n + 1, sizeof *res);
		MSG(PutBatchResult) **ptr = xcalloc(n + 1, sizeof *ptr);
		for (size_t i = 0; i < n; i++) {
			reactor__buckets__v1__put_batch_result__init(&res[i]);
			res[i].client_operation_id = b->it[i].op_id;
			res[i].build = b->it[i].build;
			res[i].error = ERR_OF(i);
			ptr[i] = &res[i];
		}
		resp.n_results = n;
		resp.results = ptr;
		call_reply(b->c, &resp.base);
		free(res);
		free(ptr);
	} else if (b->kind == B_HEARTBEAT) {
		MSG(HeartbeatBatchResponse)
		resp = REACTOR__BUCKETS__V1__HEARTBEAT_BATCH_RESPONSE__INIT;
		MSG(HeartbeatResult) *res = xcalloc(n + 1, sizeof *res);
		MSG(HeartbeatResult) **ptr = xcalloc(n + 1, sizeof *ptr);
		for (size_t i = 0; i < n; i++) {
			reactor__buckets__v1__heartbeat_result__init(&res[i]);
			res[i].build_id = b->it[i].id;
			res[i].lease_expiration_ts =
				b->it[i].build ? b->it[i].build->lease_expiration_ts : 0;
			res[i].error = ERR_OF(i);
			ptr[i] = &res[i];
		}
		resp.n_results = n;
		resp.results = ptr;
		call_reply(b->c, &resp.base);
		free(res);
		free(ptr);
	} else {
		MSG(CancelBatchResponse) resp = REACTOR__BUCKETS__V1__CANCEL_BATCH_RESPONSE__INIT;
		MSG(CancelBatchResult) *res = xcalloc(n + 1, sizeof *res);
		MSG(CancelBatchResult) **ptr = xcalloc(n + 1, sizeof *ptr);
		for (size_t i = 0; i < n; i++) {
			reactor__buckets__v1__cancel_batch_result__init(&res[i]);
			res[i].build_id = b->it[i].id;
			res[i].build = b->it[i].build;
			res[i].error = ERR_OF(i);
			ptr[i] = &res[i];
		}
		resp.n_results = n;
		resp.results = ptr;
		call_reply(b->c, &resp.base);
		free(res);
		free(ptr);
	}
#undef ERR_OF
	free(errs);
}

static void batch_unpend(struct batch *b)
{
	if (--b->pending > 0)
		return;
	if (!call_done(b->c)) {
		if (b->code != GRPC_OK)
			call_finish(b->c, b->code, "%s", b->cmsg ? b->cmsg : "");
		else
			batch_reply(b);
	}
	for (size_t i = 0; i < b->n; i++) {
		bk_build_free(b->it[i].build);
		free(b->it[i].msg);
		free(b->it[i].op_id);
	}
	free(b->it);
	free(b->cmsg);
	call_unref(b->c);
	free(b);
}

static void on_item(struct bk_res *r, void *arg)
{
	struct bitem *it = arg;
	struct batch *b = it->b;
	if (r->code != GRPC_OK) {
		if (b->code == GRPC_OK) {
			b->code = r->code;
			b->cmsg = r->message;
			r->message = NULL;
		}
	} else {
		it->reason = r->reason;
		it->msg = r->message;
		it->build = r->build;
		r->message = NULL;
		r->build = NULL;
	}
	batch_unpend(b);
}

/* NULL (after answering) when the batch is too large. */
static struct batch *batch_new(struct call *c, enum batch_kind kind, size_t n, const char *what)
{
	if (n > BK_MAX_BATCH) {
		char msg[96];
		snprintf(msg, sizeof msg, "at most %d %s per batch, got %zu", BK_MAX_BATCH, what,
			 n);
		batch_error(c, kind, msg);
		return NULL;
	}
	struct batch *b = xcalloc(1, sizeof *b);
	b->kind = kind;
	b->c = c;
	b->n = n;
	b->pending = n + 1; /* items may answer at once: hold one until all are issued */
	b->it = xcalloc(n + 1, sizeof *b->it);
	for (size_t i = 0; i < n; i++)
		b->it[i].b = b;
	call_ref(c);
	return b;
}

void svc_buckets_put_batch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(PutBatchRequest) *req = (const void *)msg;
	struct batch *b = batch_new(c, B_PUT, req->n_builds, "builds");
	if (!b)
		return;
	for (size_t i = 0; i < req->n_builds; i++)
		b->it[i].op_id = xstrdup(req->builds[i]->client_operation_id);
	for (size_t i = 0; i < req->n_builds; i++)
		bk_put(req->builds[i], identity(c), on_item, &b->it[i]);
	batch_unpend(b);
}

void svc_buckets_heartbeat_batch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(HeartbeatBatchRequest) *req = (const void *)msg;
	struct batch *b = batch_new(c, B_HEARTBEAT, req->n_heartbeats, "heartbeats");
	if (!b)
		return;
	for (size_t i = 0; i < req->n_heartbeats; i++)
		b->it[i].id = req->heartbeats[i]->id;
	for (size_t i = 0; i < req->n_heartbeats; i++)
		bk_heartbeat(req->heartbeats[i], on_item, &b->it[i]);
	batch_unpend(b);
}

void svc_buckets_cancel_batch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(CancelBatchRequest) *req = (const void *)msg;
	struct batch *b = batch_new(c, B_CANCEL, req->n_build_ids, "build ids");
	if (!b)
		return;
	for (size_t i = 0; i < req->n_build_ids; i++)
		b->it[i].id = req->build_ids[i];
	for (size_t i = 0; i < req->n_build_ids; i++)
		bk_cancel(req->build_ids[i], on_item, &b->it[i]);
	batch_unpend(b);
}

/* ---- WatchBuilds ----------------------------------------------------------------- */

struct watcher {
	struct call *c;
	char **buckets;
	size_t nb;
	int64_t *ids;
	size_t nids;
	bool live; /* response headers sent: events reach it from now on */
	struct watcher *prev, *next;
};

/* One build being fetched for watchers, or fetched lately: events whose
 * updated_ts is not newer than what was sent are dropped, so a state is
 * sent once however many events announced it. */
struct fent {
	int64_t id;
	int64_t sent_ts; /* updated_ts of the last state sent */
	int64_t want_ts; /* newest updated_ts announced */
	bool inflight;
	int64_t used_mono;
	struct fent *next;
};

static struct {
	struct event_base *base;
	struct event *expire_ev, *timeout_ev;
	int64_t expire_us, timeout_check_us;
	bool expiring, timing_out;
	bool sub_live; /* the subscriber answered our probe */
	bool was_down; /* the command connection has been lost since start */
	bool shut;
	struct watcher *watchers;
	size_t nwatchers;
	struct fent *fetch[FETCH_BUCKETS];
	size_t nfetch;
} bw;

static bool watcher_wants(const struct watcher *w, int64_t id, const char *bucket)
{
	for (size_t i = 0; i < w->nids; i++)
		if (w->ids[i] == id)
			return true;
	for (size_t i = 0; bucket && i < w->nb; i++)
		if (strcmp(w->buckets[i], bucket) == 0)
			return true;
	return false;
}

static struct fent **fslot(int64_t id)
{
	struct fent **pp = &bw.fetch[(uint64_t)id % FETCH_BUCKETS];
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

static void fetch_reply(redisReply *r, void *arg);
static void drop_watcher(struct call *c);

static void fetch(struct fent *e)
{
	int64_t *arg = xmalloc(sizeof *arg);
	*arg = e->id;
	if (store_command(fetch_reply, arg, "HGETALL " BK_BUILD "%" PRId64, e->id) < 0) {
		free(arg);
		return; /* Redis down: the refetch on reconnect covers it */
	}
	e->inflight = true;
}

static void want(int64_t id, int64_t ts, bool force)
{
	struct fent **pp = fslot(id), *e = *pp;
	if (!e) {
		e = *pp = xcalloc(1, sizeof *e);
		e->id = id;
		bw.nfetch++;
	}
	e->used_mono = mono_us();
	if (!force && ts <= e->sent_ts)
		return;
	if (ts > e->want_ts)
		e->want_ts = ts;
	if (force)
		e->want_ts = INT64_MAX;
	if (!e->inflight)
		fetch(e);
}

static void fetch_reply(redisReply *r, void *arg)
{
	int64_t id = *(int64_t *)arg;
	free(arg);
	struct fent *e = *fslot(id);
	if (!e || bw.shut)
		return;
	e->inflight = false;
	BkBuild *b = r && r->type == REDIS_REPLY_ARRAY ? bk_build_from_hash(id, r) : NULL;
	if (!b) {
		e->want_ts = 0;
		return;
	}
	if (b->updated_ts > e->sent_ts) {
		e->sent_ts = b->updated_ts;
		b->utcnow_ts = now_us();
		for (struct watcher *w = bw.watchers, *next; w; w = next) {
			next = w->next;
			if (!w->live || !watcher_wants(w, id, b->bucket))
				continue;
			/* A send that fails finished the call (message too large)
			 * without its on_cancel: let the watcher go now. */
			if (call_send(w->c, &b->base) < 0 && call_done(w->c))
				drop_watcher(w->c);
		}
	}
	/* An event newer than what we read arrived meanwhile. */
	if (e->want_ts > e->sent_ts && e->want_ts != INT64_MAX)
		fetch(e);
	else
		e->want_ts = e->sent_ts;
	bk_build_free(b);
}

/* Drop entries nobody asked about lately. */
static void fetch_gc(bool all)
{
	int64_t old = mono_us() - FETCH_IDLE_US;
	for (size_t i = 0; i < FETCH_BUCKETS; i++) {
		for (struct fent **pp = &bw.fetch[i]; *pp;) {
			struct fent *e = *pp;
			if (all || (!e->inflight && e->used_mono < old)) {
				*pp = e->next;
				free(e);
				bw.nfetch--;
			} else {
				pp = &e->next;
			}
		}
	}
}

static void on_event(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)arg;
	if (!bw.watchers)
		return;
	struct json *j = json_parse(msg, len, NULL, 0);
	const struct json *id = json_get(j, "build_id"), *bucket = json_get(j, "bucket"),
			  *upd = json_get(j, "updated_ts");
	if (id && id->type == JSON_STRING && bucket && bucket->type == JSON_STRING && upd &&
	    upd->is_int) {
		int64_t bid = strtoll(id->str, NULL, 10);
		for (struct watcher *w = bw.watchers; w; w = w->next) {
			if (w->live && watcher_wants(w, bid, bucket->str)) {
				want(bid, upd->i, false);
				break;
			}
		}
	} else {
		LOGW(MOD, "ignoring malformed event on %s: %.*s", channel,
		     (int)(len > 200 ? 200 : len), msg);
	}
	json_free(j);
}

static void go_live(void)
{
	for (struct watcher *w = bw.watchers; w; w = w->next) {
		if (!w->live) {
			w->live = true;
			call_send_headers(w->c);
		}
	}
}

static void on_probe(const char *channel, const char *msg, size_t len, void *arg)
{
	(void)channel, (void)msg, (void)len, (void)arg;
	if (!bw.sub_live)
		LOGD(MOD, "event subscription is live");
	bw.sub_live = true;
	go_live();
}

static void probe(void)
{
	if (store_command(NULL, NULL, "PUBLISH %s %d", BK_PROBE, (int)getpid()) < 0)
		LOGD(MOD, "cannot probe the event subscription now: Redis is down");
}

static void drop_watcher(struct call *c)
{
	struct watcher *w = call_data(c);
	if (!w)
		return;
	if (w->prev)
		w->prev->next = w->next;
	else
		bw.watchers = w->next;
	if (w->next)
		w->next->prev = w->prev;
	bw.nwatchers--;
	call_set_data(c, NULL);
	bk_strv_free(w->buckets, w->nb);
	free(w->ids);
	free(w);
	call_unref(c);
}

void svc_buckets_watch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(WatchBuildsRequest) *req = (const void *)msg;
	if (req->n_buckets == 0 && req->n_build_ids == 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "WatchBuilds needs at least one bucket or build id");
		return;
	}
	for (size_t i = 0; i < req->n_buckets; i++) {
		if (!bk_bucket_name_ok(req->buckets[i])) {
			call_finish(c, GRPC_INVALID_ARGUMENT,
				    "buckets[%zu]: \"%.120s\" is not a valid bucket name", i,
				    req->buckets[i]);
			return;
		}
	}
	if (bw.shut) {
		call_finish(c, GRPC_UNAVAILABLE, "server shutting down");
		return;
	}
	struct watcher *w = xcalloc(1, sizeof *w);
	w->c = c;
	w->nb = req->n_buckets;
	w->buckets = xcalloc(w->nb + 1, sizeof(char *));
	for (size_t i = 0; i < w->nb; i++)
		w->buckets[i] = xstrdup(req->buckets[i]);
	w->nids = req->n_build_ids;
	w->ids = xcalloc(w->nids + 1, sizeof(int64_t));
	if (w->nids)
		memcpy(w->ids, req->build_ids, w->nids * sizeof(int64_t));
	w->next = bw.watchers;
	if (bw.watchers)
		bw.watchers->prev = w;
	bw.watchers = w;
	bw.nwatchers++;
	call_ref(c);
	call_set_data(c, w);
	if (bw.sub_live) {
		w->live = true;
		call_send_headers(c);
	} else {
		probe();
	}
}

void svc_buckets_watch_cancel(struct call *c)
{
	drop_watcher(c);
}

/* ---- timers and store state ---------------------------------------------------- */

static void expire_done(long n, void *arg);
static void timeout_done(long n, void *arg);

static void expire_run(void)
{
	bw.expiring = true;
	bk_expire_pass(SWEEP_LIMIT, expire_done, NULL);
}

static void expire_done(long n, void *arg)
{
	(void)arg;
	bw.expiring = false;
	if (n > 0)
		LOGD(MOD, "lease expiry pass looked at %ld lease(s)", n);
	if (n == SWEEP_LIMIT && !bw.shut)
		expire_run();
}

static void timeout_run(void)
{
	bw.timing_out = true;
	bk_timeout_pass(SWEEP_LIMIT, timeout_done, NULL);
}

static void timeout_done(long n, void *arg)
{
	(void)arg;
	bw.timing_out = false;
	if (n > 0)
		LOGI(MOD, "build timeout pass looked at %ld build(s)", n);
	if (n == SWEEP_LIMIT && !bw.shut)
		timeout_run();
}

static void on_expire_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	if (!bw.expiring && store_up())
		expire_run();
	fetch_gc(false);
	/* Lossy pub/sub: keep probing until the subscriber answers. */
	if (!bw.sub_live && store_up())
		probe();
}

static void on_timeout_timer(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	if (!bw.timing_out && store_up())
		timeout_run();
}

static void on_store_state(bool up, void *arg)
{
	(void)arg;
	if (!up) {
		bw.was_down = true;
		bw.sub_live = false;
		return;
	}
	probe();
	if (!bw.was_down)
		return;
	/* Events may have been lost while we were away: re-read the builds
	 * watched by id (bucket watchers only see changes from now on). */
	for (struct watcher *w = bw.watchers; w; w = w->next)
		for (size_t i = 0; i < w->nids; i++)
			want(w->ids[i], 0, true);
	if (!bw.expiring)
		expire_run();
}

static void arm(struct event *ev, int64_t us)
{
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(ev, &tv);
}

void svc_buckets_configure(const struct cfg *cfg)
{
	struct bk_config bc = {cfg->buckets_op_ttl_us, cfg->buckets_build_timeout_us};
	bk_configure(&bc);
	bw.expire_us = cfg->buckets_expiry_interval_us;
	bw.timeout_check_us = cfg->buckets_timeout_check_interval_us;
	if (bw.expire_ev)
		arm(bw.expire_ev, bw.expire_us);
	if (bw.timeout_ev)
		arm(bw.timeout_ev, bw.timeout_check_us);
}

int svc_buckets_init(struct event_base *base)
{
	if (bk_register_scripts() < 0)
		return -1;
	bw.base = base;
	bw.shut = false;
	bw.sub_live = bw.was_down = false;
	/* Pattern first: the probe's answer then proves both are live. */
	store_subscribe(BK_EVENTS "*", on_event, NULL);
	store_subscribe(BK_PROBE, on_probe, NULL);
	store_on_state(on_store_state, NULL);
	bw.expire_ev = event_new(base, -1, EV_PERSIST, on_expire_timer, NULL);
	bw.timeout_ev = event_new(base, -1, EV_PERSIST, on_timeout_timer, NULL);
	if (!bw.expire_ev || !bw.timeout_ev)
		abort();
	if (bw.expire_us > 0)
		arm(bw.expire_ev, bw.expire_us);
	if (bw.timeout_check_us > 0)
		arm(bw.timeout_ev, bw.timeout_check_us);
	return 0;
}

void svc_buckets_shutdown(void)
{
	bw.shut = true;
	while (bw.watchers) {
		struct call *c = bw.watchers->c;
		call_ref(c);
		drop_watcher(c);
		call_finish(c, GRPC_UNAVAILABLE, "server shutting down");
		call_unref(c);
	}
	if (bw.expire_ev) {
		event_free(bw.expire_ev);
		bw.expire_ev = NULL;
	}
	if (bw.timeout_ev) {
		event_free(bw.timeout_ev);
		bw.timeout_ev = NULL;
	}
	fetch_gc(true);
	assert(bw.nwatchers == 0 && bw.nfetch == 0 && !bw.watchers);
}
