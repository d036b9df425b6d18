/*
 * svc_buckets.c - reactor.buckets.v1.Buckets: the gRPC face of build
 * buckets (domain in domain/buckets*.c).  Unary methods turn a request into
 * one domain operation (batches into one per item, pipelined) and the
 * result into a response: domain answers in-band with gRPC OK (the Error
 * reason and message of the proto), failures through svc_fail(), the one
 * mapping of core/err.h codes to statuses (fail() below is the only
 * caller).  WatchBuilds streams are domain watchers (buckets_watch.h) whose
 * callbacks send the build states; this file issues no Redis commands.
 *
 * Bucket roles (issue 12; services/auth.h): Put, PutBatch and Retry need
 * put; Get, Peek, Search and WatchBuilds read; Lease, Start, Heartbeat,
 * Succeed and Fail lease; Reset lease or admin (a master Resets the
 * builds it holds when it shuts down); Cancel is for the build's creator
 * (created_by, the caller's identity at Put or Retry) or a bucket admin.
 * Calls that name a bucket are checked before they run; calls by build id
 * first read the build (its bucket and creator never change) and run
 * only when the caller may.  The Buckets proto's ErrorReason has no
 * "permission denied", so a refusal is the gRPC status PERMISSION_DENIED
 * naming the role (auth_bucket_deny), for a whole batch when any item
 * is refused (nothing of it runs then).  A Search or WatchBuilds that
 * names no bucket only shows builds of buckets the caller may read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "domain/buckets.h"
#include "domain/buckets_watch.h"
#include "rpc/grpc.h"
#include "services/auth.h"
#include "services/svc.h"

#define MOD    "buckets"
#define MSG(T) Reactor__Buckets__V1__##T

/* The caller's identity: a build's created_by. */
static const char *identity(struct call *c)
{
	return auth_identity(c);
}

/* Finish c for a failed domain result (err < 0, core/err.h). */
static void fail(struct call *c, int err, const char *detail)
{
	if (detail)
		svc_fail(c, err, "%s", detail);
	else
		svc_fail(c, err, NULL);
}

/* ---- unary methods ---------------------------------------------------------- */

static void reply_build(struct call *c, const struct bk_res *r)
{
	if (r->err < 0) {
		fail(c, r->err, r->message);
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

/* rc < 0: the operation was not issued and will not call back. */
static void issued(struct call *c, int rc)
{
	if (rc < 0) {
		fail(c, rc, NULL);
		call_unref(c);
	}
}

#define UNARY(fn, T, expr)                                                                         \
	void fn(struct call *c, const ProtobufCMessage *msg)                                       \
	{                                                                                          \
		const MSG(T) *req = (const void *)msg;                                             \
		call_ref(c);                                                                       \
		issued(c, expr);                                                                   \
	}

/* ---- roles -------------------------------------------------------------------- */

/* What a by-id call needs on its build's bucket. */
enum need { NEED_READ, NEED_PUT, NEED_LEASE, NEED_RESET, NEED_CANCEL };

/* The role that allows it (NEED_RESET: lease, or admin too). */
static const enum auth_bucket_role need_role[] = {
	[NEED_READ] = BROLE_READ,   [NEED_PUT] = BROLE_PUT,	 [NEED_LEASE] = BROLE_LEASE,
	[NEED_RESET] = BROLE_LEASE, [NEED_CANCEL] = BROLE_ADMIN,
};

/* True when the caller may do `need` on build b (Cancel: its creator, or
 * an admin of its bucket). */
static bool may(struct call *c, enum need need, const BkBuild *b)
{
	if (need == NEED_CANCEL && b->created_by && *b->created_by &&
	    !strcmp(b->created_by, identity(c)))
		return true;
	if (need == NEED_RESET && auth_bucket_has(c, b->bucket, BROLE_ADMIN))
		return true;
	return auth_bucket_has(c, b->bucket, need_role[need]);
}

static void deny(struct call *c, enum need need, const BkBuild *b)
{
	char what[96];
	snprintf(what, sizeof what,
		 need == NEED_CANCEL  ? "build %" PRId64 " was created by another identity"
		 : need == NEED_RESET ? "build %" PRId64 " (Reset needs lease or admin)"
				      : "build %" PRId64,
		 b->id);
	auth_bucket_deny(c, b->bucket, need_role[need], what);
}

/* A call naming buckets: true when the caller holds `r` on each valid
 * name (an invalid one is the domain's INVALID_INPUT answer); otherwise
 * the call is finished PERMISSION_DENIED. */
static bool may_buckets(struct call *c, char *const *names, size_t n, enum auth_bucket_role r)
{
	for (size_t i = 0; i < n; i++)
		if (bk_bucket_name_ok(names[i]) && !auth_bucket_has(c, names[i], r)) {
			auth_bucket_deny(c, names[i], r, NULL);
			return false;
		}
	return true;
}

/* ---- calls by build id ------------------------------------------------------- */

/* A by-id call: the build is read first, then the request (kept with
 * call_take_request) runs when the caller may. */
struct guarded {
	struct call *c;
	enum need need;
	const ProtobufCMessage *req;
	int (*run)(struct guarded *g); /* issue the call with on_build */
};

static void guarded_free(struct guarded *g)
{
	/* g->req lives in the call's arena until the call is freed. */
	call_unref(g->c);
	free(g);
}

static void on_loaded(struct bk_res *r, void *arg)
{
	struct guarded *g = arg;
	struct call *c = g->c;
	if (call_done(c)) {
	} else if (r->err < 0) {
		fail(c, r->err, r->message);
	} else if ((r->reason || !r->build) && !g->run) {
		reply_build(c, r); /* Get: BUILD_NOT_FOUND */
	} else if (r->reason || !r->build) {
		/* Unknown build: the call itself gives its answer. */
		call_ref(c);
		issued(c, g->run(g));
	} else if (!may(c, g->need, r->build)) {
		deny(c, g->need, r->build);
	} else if (!g->run) {
		reply_build(c, r); /* Get: the answer is the build read */
	} else {
		call_ref(c);
		issued(c, g->run(g));
	}
	guarded_free(g);
}

static void guarded_start(struct call *c, const ProtobufCMessage *req, int64_t id, enum need need,
			  int (*run)(struct guarded *g))
{
	struct guarded *g = xcalloc(1, sizeof *g);
	call_take_request(c);
	call_ref(c);
	g->c = c;
	g->need = need;
	g->req = req;
	g->run = run;
	int rc = bk_get(id, on_loaded, g);
	if (rc < 0) {
		fail(c, rc, NULL);
		guarded_free(g);
	}
}

#define BY_ID(fn, T, need, expr)                                                                   \
	static int fn##_run(struct guarded *g)                                                     \
	{                                                                                          \
		const MSG(T) *req = (const void *)g->req;                                          \
		struct call *c = g->c;                                                             \
		(void)req;                                                                         \
		return expr;                                                                       \
	}                                                                                          \
	void fn(struct call *c, const ProtobufCMessage *msg)                                       \
	{                                                                                          \
		const MSG(T) *req = (const void *)msg;                                             \
		guarded_start(c, msg, req->id, need, fn##_run);                                    \
	}

/* Get: the read is the answer (run NULL). */
void svc_buckets_get(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(GetRequest) *req = (const void *)msg;
	guarded_start(c, msg, req->id, NEED_READ, NULL);
}

BY_ID(svc_buckets_lease, LeaseRequest, NEED_LEASE, bk_lease(req, on_build, c))
BY_ID(svc_buckets_reset, ResetRequest, NEED_RESET, bk_reset(req->id, on_build, c))
BY_ID(svc_buckets_start, StartRequest, NEED_LEASE, bk_start(req, on_build, c))
BY_ID(svc_buckets_heartbeat, HeartbeatRequest, NEED_LEASE, bk_heartbeat(req, on_build, c))
BY_ID(svc_buckets_succeed, SucceedRequest, NEED_LEASE, bk_succeed(req, on_build, c))
BY_ID(svc_buckets_fail, FailRequest, NEED_LEASE, bk_fail(req, on_build, c))
BY_ID(svc_buckets_cancel, CancelRequest, NEED_CANCEL, bk_cancel(req->id, on_build, c))
BY_ID(svc_buckets_retry, RetryRequest, NEED_PUT, bk_retry(req, identity(c), on_build, c))

void svc_buckets_put(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(PutRequest) *req = (const void *)msg;
	char *const b[] = {req->bucket};
	if (!may_buckets(c, b, 1, BROLE_PUT))
		return;
	call_ref(c);
	issued(c, bk_put(req, identity(c), on_build, c));
}

static void on_list(struct bk_list *r, void *arg)
{
	struct call *c = arg;
	if (!call_done(c)) {
		if (r->err < 0) {
			fail(c, r->err, r->message);
		} else {
			MSG(SearchResponse) resp = REACTOR__BUCKETS__V1__SEARCH_RESPONSE__INIT;
			BkBuild **shown = NULL;
			MSG(Error) e = REACTOR__BUCKETS__V1__ERROR__INIT;
			if (r->reason) {
				e.reason = r->reason;
				e.message = r->message ? r->message : (char *)"";
				resp.error = &e;
			} else {
				/* A Search naming no bucket: only the buckets the
				 * caller reads (the cursor pages over every build). */
				shown = xcalloc(r->n + 1, sizeof *shown);
				for (size_t i = 0; i < r->n; i++)
					if (auth_bucket_has(c, r->builds[i]->bucket, BROLE_READ))
						shown[resp.n_builds++] = r->builds[i];
				resp.builds = shown;
				resp.next_cursor = r->next_cursor ? r->next_cursor : (char *)"";
			}
			call_reply(c, &resp.base);
			free(shown);
		}
	}
	call_unref(c);
}

void svc_buckets_peek(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(PeekRequest) *req = (const void *)msg;
	if (!may_buckets(c, req->buckets, req->n_buckets, BROLE_READ))
		return;
	call_ref(c);
	issued(c, bk_peek(req, on_list, c));
}

void svc_buckets_search(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(SearchRequest) *req = (const void *)msg;
	if (!may_buckets(c, req->buckets, req->n_buckets, BROLE_READ))
		return;
	call_ref(c);
	issued(c, bk_search(req, on_list, c));
}

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
	int err; /* first failure (core/err.h) of any item */
	char *emsg;
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
		if (b->err < 0)
			fail(b->c, b->err, b->emsg);
		else
			batch_reply(b);
	}
	for (size_t i = 0; i < b->n; i++) {
		bk_build_free(b->it[i].build);
		free(b->it[i].msg);
		free(b->it[i].op_id);
	}
	free(b->it);
	free(b->emsg);
	call_unref(b->c);
	free(b);
}

static void on_item(struct bk_res *r, void *arg)
{
	struct bitem *it = arg;
	struct batch *b = it->b;
	if (r->err < 0) {
		if (b->err == 0) {
			b->err = r->err;
			b->emsg = r->message;
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

/* An item that could not be issued (rc < 0): its answer. */
static void item_issued(struct bitem *it, int rc)
{
	if (rc < 0) {
		if (it->b->err == 0)
			it->b->err = rc;
		batch_unpend(it->b);
	}
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
	b->pending = n + 1; /* hold one until every item is issued */
	b->it = xcalloc(n + 1, sizeof *b->it);
	for (size_t i = 0; i < n; i++)
		b->it[i].b = b;
	call_ref(c);
	return b;
}

void svc_buckets_put_batch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(PutBatchRequest) *req = (const void *)msg;
	for (size_t i = 0; i < req->n_builds && i <= BK_MAX_BATCH; i++) {
		char *const bk[] = {req->builds[i]->bucket};
		if (!may_buckets(c, bk, 1, BROLE_PUT))
			return;
	}
	struct batch *b = batch_new(c, B_PUT, req->n_builds, "builds");
	if (!b)
		return;
	for (size_t i = 0; i < req->n_builds; i++)
		b->it[i].op_id = xstrdup(req->builds[i]->client_operation_id);
	for (size_t i = 0; i < req->n_builds; i++)
		item_issued(&b->it[i], bk_put(req->builds[i], identity(c), on_item, &b->it[i]));
	batch_unpend(b);
}

static void heartbeat_batch(struct call *c, const MSG(HeartbeatBatchRequest) * req)
{
	struct batch *b = batch_new(c, B_HEARTBEAT, req->n_heartbeats, "heartbeats");
	if (!b)
		return;
	for (size_t i = 0; i < req->n_heartbeats; i++)
		b->it[i].id = req->heartbeats[i]->id;
	for (size_t i = 0; i < req->n_heartbeats; i++)
		item_issued(&b->it[i], bk_heartbeat(req->heartbeats[i], on_item, &b->it[i]));
	batch_unpend(b);
}

static void cancel_batch(struct call *c, const MSG(CancelBatchRequest) * req)
{
	struct batch *b = batch_new(c, B_CANCEL, req->n_build_ids, "build ids");
	if (!b)
		return;
	for (size_t i = 0; i < req->n_build_ids; i++)
		b->it[i].id = req->build_ids[i];
	for (size_t i = 0; i < req->n_build_ids; i++)
		item_issued(&b->it[i], bk_cancel(req->build_ids[i], on_item, &b->it[i]));
	batch_unpend(b);
}

/* HeartbeatBatch and CancelBatch read every build first and run only
 * when the caller may act on each one (else PERMISSION_DENIED for the
 * whole batch: nothing of it runs). */
struct precheck {
	struct call *c;
	enum batch_kind kind;
	const ProtobufCMessage *req;
	size_t n, pending;
	int err; /* first failure of a read */
	char *emsg;
	BkBuild **builds; /* as read; NULL: not found (the batch answers) */
};

struct pitem {
	struct precheck *p;
	size_t i;
};

static void precheck_unpend(struct precheck *p)
{
	if (--p->pending > 0)
		return;
	struct call *c = p->c;
	enum need need = p->kind == B_CANCEL ? NEED_CANCEL : NEED_LEASE;
	if (!call_done(c)) {
		size_t i = 0;
		while (p->err == 0 && i < p->n && (!p->builds[i] || may(c, need, p->builds[i])))
			i++;
		if (p->err < 0)
			fail(c, p->err, p->emsg);
		else if (i < p->n)
			deny(c, need, p->builds[i]);
		else if (p->kind == B_CANCEL)
			cancel_batch(c, (const void *)p->req);
		else
			heartbeat_batch(c, (const void *)p->req);
	}
	for (size_t i = 0; i < p->n; i++)
		bk_build_free(p->builds[i]);
	free(p->builds);
	free(p->emsg);
	/* p->req lives in the call's arena until the call is freed. */
	call_unref(c);
	free(p);
}

static void on_precheck(struct bk_res *r, void *arg)
{
	struct pitem *it = arg;
	struct precheck *p = it->p;
	if (r->err < 0 && p->err == 0) {
		p->err = r->err;
		p->emsg = r->message;
		r->message = NULL;
	} else if (r->err == 0 && !r->reason) {
		p->builds[it->i] = r->build;
		r->build = NULL;
	}
	free(it);
	precheck_unpend(p);
}

static void precheck_start(struct call *c, enum batch_kind kind, const ProtobufCMessage *msg,
			   const int64_t *ids, size_t n)
{
	if (n > BK_MAX_BATCH) { /* batch_new's answer */
		if (kind == B_CANCEL)
			cancel_batch(c, (const void *)msg);
		else
			heartbeat_batch(c, (const void *)msg);
		return;
	}
	struct precheck *p = xcalloc(1, sizeof *p);
	call_take_request(c);
	call_ref(c);
	p->c = c;
	p->kind = kind;
	p->req = msg;
	p->n = n;
	p->pending = n + 1;
	p->builds = xcalloc(n + 1, sizeof *p->builds);
	for (size_t i = 0; i < n; i++) {
		struct pitem *it = xcalloc(1, sizeof *it);
		it->p = p;
		it->i = i;
		int rc = bk_get(ids[i], on_precheck, it);
		if (rc < 0) {
			free(it);
			if (p->err == 0)
				p->err = rc;
			precheck_unpend(p);
		}
	}
	precheck_unpend(p);
}

void svc_buckets_heartbeat_batch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(HeartbeatBatchRequest) *req = (const void *)msg;
	/* The ids live in separate messages: gather them. */
	size_t n = req->n_heartbeats;
	int64_t *ids = xcalloc(n + 1, sizeof *ids);
	for (size_t i = 0; i < n; i++)
		ids[i] = req->heartbeats[i]->id;
	precheck_start(c, B_HEARTBEAT, msg, ids, n);
	free(ids);
}

void svc_buckets_cancel_batch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(CancelBatchRequest) *req = (const void *)msg;
	precheck_start(c, B_CANCEL, msg, req->build_ids, req->n_build_ids);
}

/* ---- WatchBuilds ----------------------------------------------------------------- */

/* One WatchBuilds stream: a domain watcher and its call.  While the
 * client does not read (SVC_STREAM_HIWAT bytes or more wait to go out),
 * build states queue up here, serialized, and on_writable sends them in
 * order; a stream whose queue would pass buckets.watch-max-queued ends
 * with RESOURCE_EXHAUSTED (the proto has no "resync" message: the client
 * watches again and reads the builds it cares about). */
struct swatch {
	struct bk_watcher w;
	struct call *c;
	struct list queue; /* of struct qmsg, oldest first */
	size_t nqueued;
};

struct qmsg {
	struct list link;
	uint8_t *buf; /* 5 free bytes, then the Build (call_send_owned) */
	size_t len;
};

static bool shut;
static int watch_max_ids = 1000, watch_max_queued = 1000;

static void queue_clear(struct swatch *s)
{
	while (!list_empty(&s->queue)) {
		struct qmsg *q = container_of(list_first(&s->queue), struct qmsg, link);
		list_del(&q->link);
		free(q->buf);
		free(q);
	}
	s->nqueued = 0;
}

static void drop_watcher(struct call *c)
{
	struct swatch *s = call_data(c);
	if (!s)
		return;
	bk_watch_remove(&s->w);
	call_set_data(c, NULL);
	queue_clear(s);
	bk_strv_free(s->w.buckets, s->w.nb);
	free(s->w.ids);
	free(s);
	call_unref(c);
}

static void watch_live(struct bk_watcher *w)
{
	call_send_headers(container_of(w, struct swatch, w)->c);
}

static void watch_build(struct bk_watcher *w, const BkBuild *b)
{
	struct swatch *s = container_of(w, struct swatch, w);
	struct call *c = s->c;
	/* Watched by id: only builds of buckets the caller reads. */
	if (!auth_bucket_has(c, b->bucket, BROLE_READ))
		return;
	if (list_empty(&s->queue) && call_pending(c) < SVC_STREAM_HIWAT) {
		/* A send that fails finished the call (message too large)
		 * without its on_cancel: let the watcher go now. */
		if (call_send(c, &b->base) < 0 && call_done(c))
			drop_watcher(c);
		return;
	}
	if (s->nqueued >= (size_t)watch_max_queued) {
		size_t n = s->nqueued;
		call_ref(c);
		drop_watcher(c);
		call_finish(c, GRPC_RESOURCE_EXHAUSTED,
			    "WatchBuilds client is not reading: %zu build states are queued for it "
			    "(limit %d, config buckets.watch-max-queued); watch again and re-read "
			    "the builds",
			    n, watch_max_queued);
		call_unref(c);
		return;
	}
	struct qmsg *q = xcalloc(1, sizeof *q);
	q->len = protobuf_c_message_get_packed_size(&b->base);
	q->buf = xmalloc(q->len + 5);
	protobuf_c_message_pack(&b->base, q->buf + 5);
	list_add_tail(&s->queue, &q->link);
	s->nqueued++;
	call_want_writable(c);
}

void svc_buckets_watch_writable(struct call *c)
{
	struct swatch *s = call_data(c);
	while (s && !list_empty(&s->queue) && call_pending(c) < SVC_STREAM_HIWAT) {
		struct qmsg *q = container_of(list_first(&s->queue), struct qmsg, link);
		list_del(&q->link);
		s->nqueued--;
		uint8_t *buf = q->buf;
		size_t len = q->len;
		free(q);
		if (call_send_owned(c, buf, len) < 0) {
			if (call_done(c))
				drop_watcher(c);
			return;
		}
		s = call_data(c);
	}
	if (s && !list_empty(&s->queue))
		call_want_writable(c);
}

void svc_buckets_watch(struct call *c, const ProtobufCMessage *msg)
{
	const MSG(WatchBuildsRequest) *req = (const void *)msg;
	if (req->n_buckets == 0 && req->n_build_ids == 0) {
		svc_fail(c, -EINVAL, "WatchBuilds needs at least one bucket or build id");
		return;
	}
	for (size_t i = 0; i < req->n_buckets; i++) {
		if (!bk_bucket_name_ok(req->buckets[i])) {
			svc_fail(c, -EINVAL, "buckets[%zu]: \"%.120s\" is not a valid bucket name",
				 i, req->buckets[i]);
			return;
		}
	}
	if (!may_buckets(c, req->buckets, req->n_buckets, BROLE_READ))
		return;
	if (req->n_build_ids > (size_t)watch_max_ids) {
		call_finish(c, GRPC_RESOURCE_EXHAUSTED,
			    "WatchBuilds asks for %zu build ids (limit %d, config "
			    "buckets.watch-max-ids)",
			    req->n_build_ids, watch_max_ids);
		return;
	}
	if (shut) {
		call_finish(c, GRPC_UNAVAILABLE, "server shutting down");
		return;
	}
	struct swatch *s = xcalloc(1, sizeof *s);
	s->c = c;
	list_init(&s->queue);
	s->w.nb = req->n_buckets;
	s->w.buckets = xcalloc(s->w.nb + 1, sizeof(char *));
	for (size_t i = 0; i < s->w.nb; i++)
		s->w.buckets[i] = xstrdup(req->buckets[i]);
	s->w.nids = req->n_build_ids;
	s->w.ids = xcalloc(s->w.nids + 1, sizeof(int64_t));
	if (s->w.nids)
		memcpy(s->w.ids, req->build_ids, s->w.nids * sizeof(int64_t));
	s->w.on_live = watch_live;
	s->w.on_build = watch_build;
	list_init(&s->w.link);
	call_ref(c);
	call_set_data(c, s);
	if (bk_watch_add(&s->w))
		call_send_headers(c);
}

void svc_buckets_watch_cancel(struct call *c)
{
	drop_watcher(c);
}

/* ---- life cycle ---------------------------------------------------------------- */

void svc_buckets_configure(const struct cfg *cfg)
{
	struct bk_config bc = {cfg->buckets_op_ttl_us, cfg->buckets_build_timeout_us,
			       cfg->buckets_retention_us, cfg->buckets_max_tags};
	bk_configure(&bc);
	bk_watch_configure(cfg->buckets_expiry_interval_us, cfg->buckets_timeout_check_interval_us);
	watch_max_ids = cfg->buckets_watch_max_ids;
	watch_max_queued = cfg->buckets_watch_max_queued;
}

int svc_buckets_init(struct event_base *base)
{
	if (bk_init(base) < 0)
		return -1;
	shut = false;
	bk_watch_init(base);
	return 0;
}

void svc_buckets_shutdown(void)
{
	struct bk_watcher *w;
	shut = true;
	while ((w = bk_watch_any())) {
		struct call *c = container_of(w, struct swatch, w)->c;
		call_ref(c);
		drop_watcher(c);
		call_finish(c, GRPC_UNAVAILABLE, "server shutting down");
		call_unref(c);
	}
	bk_watch_shutdown();
}
