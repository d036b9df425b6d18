/*
 * buckets.c - the build-bucket operations (see buckets.h): each validates
 * its request (buckets_input.c), names the keys it can name before the
 * call (state/buckets_keys.h), runs one script with EVALSHA and turns the
 * reply into a result (buckets_build.c).  It owns no state besides the
 * tunables and the loop used to defer answers: everything lives in Redis.
 *
 * Checks that depend on the build (unknown id, completed, lease key) run
 * inside the scripts, in the order the API promises; input errors found
 * here that must come after them are handed to the script as a "late
 * error" it reports once the build checks pass.  Input errors found before
 * any Redis call are answered from a zero-delay event, so no callback runs
 * before the operation returns (core/err.h).
 */
#include "domain/buckets.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "domain/buckets_int.h"
#include "state/buckets_keys.h"
#include "state/store.h"

#define MOD  "buckets"
#define R(x) REACTOR__BUCKETS__V1__ERROR_REASON__##x

static struct bk_config conf = {60LL * 1000000, 2LL * 86400 * 1000000, 30LL * 86400 * 1000000, 64};
static struct event_base *loop;

void bk_configure(const struct bk_config *c)
{
	conf = *c;
	/* Zero (a caller that predates a field): the default. */
	if (conf.retention_us <= 0)
		conf.retention_us = 30LL * 86400 * 1000000;
	if (conf.max_tags <= 0)
		conf.max_tags = 64;
}

int bk_init(struct event_base *base)
{
	loop = base;
	return bk_scripts_register();
}

/* ---- script plumbing -------------------------------------------------------- */

enum op_kind { OP_BUILD, OP_LIST, OP_COUNT };

struct op {
	enum op_kind kind;
	bk_cb cb;
	bk_list_cb lcb;
	bk_count_cb ncb;
	void *arg;
	const char *what; /* for logs */
	int64_t get_id;	  /* Get */
	int late_reason;  /* Put in "check" mode: the input error to report */
	char *late_msg;	  /* when client_operation_id was not seen */
	int dreason;	  /* a deferred answer (defer()) */
	char *dmsg;
};

/* Script keys and arguments, all owned: the keys first (nkeys of them),
 * then the key base (the scripts' ARGV[1]), then the script's own. */
struct args {
	char **v;
	size_t *len;
	int n, nkeys, cap;
};

static void push_own(struct args *a, char *s)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? 2 * a->cap : 16;
		a->v = xrealloc(a->v, (size_t)a->cap * sizeof *a->v);
		a->len = xrealloc(a->len, (size_t)a->cap * sizeof *a->len);
	}
	a->v[a->n] = s;
	a->len[a->n] = strlen(s);
	a->n++;
}

/* A key (before any argument); takes s over. */
static void push_key(struct args *a, char *s)
{
	if (a->n != a->nkeys)
		abort();
	push_own(a, s);
	a->nkeys++;
}

static void push(struct args *a, const char *s)
{
	if (a->n == a->nkeys)
		push_own(a, bkeys_base()); /* the scripts' ARGV[1] */
	push_own(a, xstrdup(s ? s : ""));
}

static void push_i64(struct args *a, int64_t x)
{
	char buf[24];
	snprintf(buf, sizeof buf, "%" PRId64, x);
	push(a, buf);
}

static void args_free(struct args *a)
{
	for (int i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
	free(a->len);
}

static struct op *op_new(enum op_kind kind, const char *what, void *arg)
{
	struct op *o = xcalloc(1, sizeof *o);
	o->kind = kind;
	o->what = what;
	o->arg = arg;
	return o;
}

static void op_free(struct op *o)
{
	free(o->late_msg);
	free(o->dmsg);
	free(o);
}

static void finish_build(struct op *o, int err, int reason, char *msg, BkBuild *b)
{
	struct bk_res r = {err, reason, msg, b};
	o->cb(&r, o->arg);
	free(r.message);
	bk_build_free(r.build);
	op_free(o);
}

static void finish_list(struct op *o, int err, int reason, char *msg)
{
	struct bk_list r = {err, reason, msg, NULL, 0, NULL};
	o->lcb(&r, o->arg);
	free(r.message);
	op_free(o);
}

/* Report a failure of any kind of op (the message is taken over). */
static void fail_op(struct op *o, int err, int reason, char *msg)
{
	switch (o->kind) {
	case OP_BUILD: finish_build(o, err, reason, msg, NULL); break;
	case OP_LIST: finish_list(o, err, reason, msg); break;
	case OP_COUNT:
		free(msg);
		o->ncb(err, -1, o->arg);
		op_free(o);
		break;
	}
}

static void deferred(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct op *o = arg;
	char *m = o->dmsg;
	o->dmsg = NULL;
	fail_op(o, 0, o->dreason, m);
}

/* Answer `reason` (msg taken over) from a zero-delay event: the caller
 * returns before the callback runs.  Returns 0. */
static int defer(struct op *o, int reason, char *msg)
{
	static const struct timeval zero = {0, 0};
	o->dreason = reason;
	o->dmsg = msg;
	if (!loop || event_base_once(loop, -1, EV_TIMEOUT, deferred, o, &zero) < 0) {
		LOGE(MOD, "%s: cannot schedule an answer", o->what);
		abort(); /* bk_init not called, or out of memory inside libevent */
	}
	return 0;
}

static int input_error(struct op *o, char *msg)
{
	return defer(o, R(INVALID_INPUT), msg);
}

static bool is_str(const redisReply *r, const char *s)
{
	return r->type == REDIS_REPLY_STRING && strcmp(r->str, s) == 0;
}

/* Common checks; returns true when the reply is usable (and else has
 * finished the op). */
static bool reply_ok(struct op *o, const redisReply *r)
{
	if (!r) {
		fail_op(o, ERR_STORE_FAILED, 0, NULL);
		return false;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		LOGE(MOD, "%s: Redis error: %s", o->what, r->str);
		fail_op(o, store_reply_rc(r), 0, xasprintf("Redis error in %s: %s", o->what, r->str));
		return false;
	}
	return true;
}

static void bad_reply(struct op *o)
{
	LOGE(MOD, "%s: unexpected reply from Redis", o->what);
	fail_op(o, ERR_STORE_REPLY, 0, xasprintf("to %s", o->what));
}

/* {"ERR", reason, message}: in-band error. */
static bool script_err(struct op *o, const redisReply *r)
{
	if (r->elements != 3 || !is_str(r->element[0], "ERR") ||
	    r->element[1]->type != REDIS_REPLY_STRING || r->element[2]->type != REDIS_REPLY_STRING)
		return false;
	int reason = bk_reason_value(r->element[1]->str);
	fail_op(o, 0, reason ? reason : R(INVALID_INPUT),
		xstrndup(r->element[2]->str, r->element[2]->len));
	return true;
}

static void build_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	if (!reply_ok(o, r))
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
		bad_reply(o);
		return;
	}
	if (script_err(o, r))
		return;
	if (r->elements == 1 && is_str(r->element[0], "MISS")) {
		char *m = o->late_msg;
		o->late_msg = NULL;
		fail_op(o, 0, o->late_reason, m);
		return;
	}
	BkBuild *b;
	if (r->elements != 4 || !is_str(r->element[0], "OK") ||
	    r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[2]->type != REDIS_REPLY_STRING ||
	    !(b = bk_build_from_reply(r->element[3]))) {
		bad_reply(o);
		return;
	}
	b->utcnow_ts = bk_reply_num(r->element[1]);
	b->lease_key = bk_reply_num(r->element[2]);
	LOGD(MOD, "%s: build %" PRId64 " now %s%s%s%s", o->what, b->id, bk_status_name(b->status),
	     b->lease_expiration_ts ? ", leased" : "", b->result ? " " : "",
	     b->result ? bk_result_name(b->result) : "");
	finish_build(o, 0, 0, NULL, b);
}

static void list_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	if (!reply_ok(o, r))
		return;
	if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
	    r->element[0]->type != REDIS_REPLY_STRING) {
		bad_reply(o);
		return;
	}
	struct bk_list l = {0, 0, NULL, NULL, 0, NULL};
	l.builds = xcalloc(r->elements, sizeof *l.builds);
	for (size_t i = 1; i < r->elements; i++) {
		BkBuild *b = bk_build_from_reply(r->element[i]);
		if (b)
			l.builds[l.n++] = b;
	}
	int64_t now = now_us();
	for (size_t i = 0; i < l.n; i++)
		l.builds[i]->utcnow_ts = now;
	l.next_cursor = xstrndup(r->element[0]->str, r->element[0]->len);
	o->lcb(&l, o->arg);
	for (size_t i = 0; i < l.n; i++)
		bk_build_free(l.builds[i]);
	free(l.builds);
	free(l.next_cursor);
	free(l.message);
	op_free(o);
}

static void count_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	if (!reply_ok(o, r))
		return;
	if (r->type != REDIS_REPLY_INTEGER) {
		bad_reply(o);
		return;
	}
	o->ncb(0, (long)r->integer, o->arg);
	op_free(o);
}

/* Run the script; on 0 the reply finishes o, else o is freed and the
 * caller's callback is never called. */
static int run(struct op *o, int script, struct args *a)
{
	static const store_cb cbs[] = {
		[OP_BUILD] = build_reply,
		[OP_LIST] = list_reply,
		[OP_COUNT] = count_reply,
	};
	if (a->n == a->nkeys)
		push_own(a, bkeys_base());
	int rc = store_evalsha(bk_scripts[script], cbs[o->kind], o, a->nkeys, a->n - a->nkeys,
			       (const char **)a->v, a->len);
	args_free(a);
	if (rc < 0)
		op_free(o);
	return rc;
}

static struct op *build_op(const char *what, bk_cb cb, void *arg)
{
	struct op *o = op_new(OP_BUILD, what, arg);
	o->cb = cb;
	return o;
}

/* Ids are positive: answer BUILD_NOT_FOUND for the rest without Redis. */
static bool id_known(int64_t id)
{
	return id > 0;
}

static int not_found(struct op *o, int64_t id)
{
	return defer(o, R(BUILD_NOT_FOUND), xasprintf("build %" PRId64 " not found", id));
}

/* KEYS of the scripts that act on one known build. */
static void build_keys(struct args *a, int64_t id)
{
	push_key(a, bkeys_build(id));
	push_key(a, bkeys_leased());
}

/* ---- operations --------------------------------------------------------------- */

/* The tags as a sorted JSON array (what the build hash stores). */
static char *tags_json(char **tags, size_t ntags)
{
	char *tjson = xstrdup("[");
	size_t tlen = 1;
	for (size_t i = 0; i < ntags; i++) {
		if (i)
			tjson = xrealloc(tjson, tlen + 2), tjson[tlen++] = ',', tjson[tlen] = '\0';
		json_quote(&tjson, &tlen, tags[i], strlen(tags[i]));
	}
	tjson = xrealloc(tjson, tlen + 2);
	tjson[tlen++] = ']';
	tjson[tlen] = '\0';
	return tjson;
}

/* NULL when a build may carry n tags, else the message naming the limit. */
static char *tags_over(size_t n)
{
	if (n <= (size_t)conf.max_tags)
		return NULL;
	return xasprintf("tags: the build would carry %zu tags (with builder:NAME), over the limit "
			 "of %d per build (config buckets.max-tags)",
			 n, conf.max_tags);
}

/* A Put whose input is bad but carries a client_operation_id: a repeat
 * returns the first build whatever else it says, so ask Redis first and
 * report the input error (err, taken over) only on a miss. */
static int put_check(struct op *o, const Reactor__Buckets__V1__PutRequest *req, char *err)
{
	struct args a = {0};
	o->late_reason = R(INVALID_INPUT);
	o->late_msg = err;
	push_key(&a, bkeys_op(req->bucket, req->client_operation_id));
	push(&a, req->bucket);
	for (int i = 0; i < 3; i++)
		push(&a, "");
	push(&a, req->client_operation_id);
	for (int i = 0; i < 4; i++)
		push(&a, "0");
	push(&a, "check");
	return run(o, BK_S_PUT, &a);
}

int bk_put(const Reactor__Buckets__V1__PutRequest *req, const char *created_by, bk_cb cb, void *arg)
{
	struct op *o = build_op("Put", cb, arg);
	struct bk_params p = {0};
	char *err = NULL, **tags = NULL;
	size_t ntags = 0;
	struct args a = {0};

	if (!bk_bucket_name_ok(req->bucket))
		return input_error(o, bk_bad_bucket("bucket", req->bucket));
	if ((err = bk_check_utf8("client_operation_id", req->client_operation_id)))
		return input_error(o, err);
	if ((err = bk_check_utf8v("tags", req->tags, req->n_tags)) ||
	    (err = bk_check_utf8("leasee", req->leasee)) ||
	    bk_params_parse(req->parameters_json, &p, &err) < 0 ||
	    bk_tags_normalize(req->tags, req->n_tags, p.builder_name, &tags, &ntags, &err) < 0 ||
	    (err = tags_over(ntags))) {
		bk_strv_free(tags, ntags);
		bk_params_free(&p);
		if (!*req->client_operation_id)
			return input_error(o, err);
		return put_check(o, req, err);
	}
	push_key(&a, bkeys_idgen());
	push_key(&a, bkeys_buckets());
	push_key(&a, bkeys_leased());
	push_key(&a, bkeys_bucket(req->bucket, "SCHEDULED"));
	push_key(&a, bkeys_bucket(req->bucket, "peek"));
	if (*req->client_operation_id)
		push_key(&a, bkeys_op(req->bucket, req->client_operation_id));
	for (size_t i = 0; i < ntags; i++)
		push_key(&a, bkeys_tag(tags[i]));
	for (size_t i = 0; i < p.n_changes; i++)
		push_key(&a, bkeys_change(p.change_ids[i], p.change_revs[i]));

	push(&a, req->bucket);
	push_own(&a, tags_json(tags, ntags));
	a.len[a.n - 1] = strlen(a.v[a.n - 1]);
	push(&a, req->parameters_json);
	push(&a, created_by);
	push(&a, req->client_operation_id);
	push_i64(&a, req->lease_expiration_ts);
	push(&a, req->leasee);
	push_i64(&a, bk_lease_key_new());
	push_i64(&a, (conf.op_ttl_us + 999) / 1000);
	push(&a, "put");
	push_i64(&a, (int64_t)ntags);
	for (size_t i = 0; i < ntags; i++)
		push(&a, tags[i]);
	push_i64(&a, (int64_t)p.n_changes);
	for (size_t i = 0; i < p.n_changes; i++) {
		push(&a, p.change_ids[i]);
		push(&a, p.change_revs[i]);
	}
	bk_strv_free(tags, ntags);
	bk_params_free(&p);
	return run(o, BK_S_PUT, &a);
}

int bk_retry(const Reactor__Buckets__V1__RetryRequest *req, const char *created_by, bk_cb cb,
	     void *arg)
{
	struct op *o = build_op("Retry", cb, arg);
	struct args a = {0};
	char *err;
	if (!id_known(req->id))
		return not_found(o, req->id);
	if ((err = bk_check_utf8("client_operation_id", req->client_operation_id)) ||
	    (err = bk_check_utf8("leasee", req->leasee)))
		return input_error(o, err);
	build_keys(&a, req->id);
	push_key(&a, bkeys_idgen());
	push_key(&a, bkeys_buckets());
	push_i64(&a, req->id);
	push(&a, req->client_operation_id);
	push_i64(&a, req->lease_expiration_ts);
	push(&a, req->leasee);
	push_i64(&a, bk_lease_key_new());
	push(&a, created_by);
	push_i64(&a, (conf.op_ttl_us + 999) / 1000);
	return run(o, BK_S_RETRY, &a);
}

static void get_reply(redisReply *r, void *arg)
{
	struct op *o = arg;
	if (!reply_ok(o, r))
		return;
	if (r->type != REDIS_REPLY_ARRAY) {
		bad_reply(o);
		return;
	}
	BkBuild *b = bk_build_from_hash(o->get_id, r);
	if (!b) {
		fail_op(o, 0, R(BUILD_NOT_FOUND),
			xasprintf("build %" PRId64 " not found", o->get_id));
		return;
	}
	b->utcnow_ts = now_us();
	finish_build(o, 0, 0, NULL, b);
}

int bk_get(int64_t id, bk_cb cb, void *arg)
{
	struct op *o = build_op("Get", cb, arg);
	o->get_id = id;
	if (!id_known(id))
		return not_found(o, id);
	char *key = bkeys_build(id);
	int rc = store_command(get_reply, o, "HGETALL %s", key);
	free(key);
	if (rc < 0)
		op_free(o);
	return rc;
}

int bk_lease(const Reactor__Buckets__V1__LeaseRequest *req, bk_cb cb, void *arg)
{
	struct op *o = build_op("Lease", cb, arg);
	struct args a = {0};
	char *err;
	if (!id_known(req->id))
		return not_found(o, req->id);
	if ((err = bk_check_utf8("leasee", req->leasee)))
		return input_error(o, err);
	build_keys(&a, req->id);
	push_i64(&a, req->id);
	push_i64(&a, req->lease_expiration_ts);
	push(&a, req->leasee);
	push_i64(&a, bk_lease_key_new());
	return run(o, BK_S_LEASE, &a);
}

static int by_id(const char *what, int script, int64_t id, bk_cb cb, void *arg)
{
	struct op *o = build_op(what, cb, arg);
	struct args a = {0};
	if (!id_known(id))
		return not_found(o, id);
	build_keys(&a, id);
	push_i64(&a, id);
	return run(o, script, &a);
}

int bk_reset(int64_t id, bk_cb cb, void *arg)
{
	return by_id("Reset", BK_S_RESET, id, cb, arg);
}

int bk_cancel(int64_t id, bk_cb cb, void *arg)
{
	return by_id("Cancel", BK_S_CANCEL, id, cb, arg);
}

int bk_start(const Reactor__Buckets__V1__StartRequest *req, bk_cb cb, void *arg)
{
	struct op *o = build_op("Start", cb, arg);
	struct args a = {0};
	char *err;
	if (!id_known(req->id))
		return not_found(o, req->id);
	if ((err = bk_check_utf8("url", req->url)))
		return input_error(o, err);
	build_keys(&a, req->id);
	push_i64(&a, req->id);
	push_i64(&a, req->lease_key);
	push(&a, req->url);
	return run(o, BK_S_START, &a);
}

int bk_heartbeat(const Reactor__Buckets__V1__HeartbeatRequest *req, bk_cb cb, void *arg)
{
	struct op *o = build_op("Heartbeat", cb, arg);
	struct args a = {0};
	if (!id_known(req->id))
		return not_found(o, req->id);
	build_keys(&a, req->id);
	push_i64(&a, req->id);
	push_i64(&a, req->lease_key);
	push_i64(&a, req->lease_expiration_ts);
	return run(o, BK_S_HEARTBEAT, &a);
}

struct completion {
	const char *what, *result;
	int64_t id, key;
	int failure_reason;
	const char *details, *url;
	char *const *new_tags;
	size_t n_new;
};

static int complete(const struct completion *c, bk_cb cb, void *arg)
{
	struct op *o = build_op(c->what, cb, arg);
	struct args a = {0};
	char *err = NULL;
	if (!id_known(c->id))
		return not_found(o, c->id);
	const char *frname = c->failure_reason ? bk_failure_name(c->failure_reason) : "";
	if (!frname) {
		frname = "";
		err = xasprintf("failure_reason: unknown value %d", c->failure_reason);
	} else if (!(err = bk_check_utf8("url", c->url)) &&
		   !(err = bk_check_utf8v("new_tags", c->new_tags, c->n_new)) &&
		   bk_new_tags_check(c->new_tags, c->n_new, &err) == 0) {
		err = bk_check_details(c->details);
	}
	build_keys(&a, c->id);
	for (size_t i = 0; i < c->n_new; i++)
		push_key(&a, bkeys_tag(c->new_tags[i]));
	push_i64(&a, c->id);
	push_i64(&a, c->key);
	push(&a, c->result);
	push(&a, frname);
	push(&a, c->details);
	push(&a, c->url);
	/* Reported after the build checks (an idempotent repeat ignores it). */
	push(&a, err ? err : "");
	push_i64(&a, (int64_t)c->n_new);
	for (size_t i = 0; i < c->n_new; i++)
		push(&a, c->new_tags[i]);
	push_i64(&a, conf.max_tags);
	free(err);
	return run(o, BK_S_COMPLETE, &a);
}

int bk_succeed(const Reactor__Buckets__V1__SucceedRequest *req, bk_cb cb, void *arg)
{
	struct completion c = {"Succeed",
			       "SUCCESS",
			       req->id,
			       req->lease_key,
			       0,
			       req->result_details_json,
			       req->url,
			       req->new_tags,
			       req->n_new_tags};
	return complete(&c, cb, arg);
}

int bk_fail(const Reactor__Buckets__V1__FailRequest *req, bk_cb cb, void *arg)
{
	int fr = req->failure_reason ? (int)req->failure_reason
				     : REACTOR__BUCKETS__V1__FAILURE_REASON__BUILD_FAILURE;
	struct completion c = {"Fail",
			       "FAILURE",
			       req->id,
			       req->lease_key,
			       fr,
			       req->result_details_json,
			       req->url,
			       req->new_tags,
			       req->n_new_tags};
	return complete(&c, cb, arg);
}

static struct op *list_op(const char *what, bk_list_cb cb, void *arg)
{
	struct op *o = op_new(OP_LIST, what, arg);
	o->lcb = cb;
	return o;
}

int bk_peek(const Reactor__Buckets__V1__PeekRequest *req, bk_list_cb cb, void *arg)
{
	struct op *o = list_op("Peek", cb, arg);
	const char **b;
	size_t nb;
	char *err;
	if (req->n_buckets == 0)
		return input_error(o, xstrdup("buckets: at least one bucket is required"));
	if ((err = bk_check_buckets(req->buckets, req->n_buckets, &b, &nb)))
		return input_error(o, err);
	if (!bk_cursor_ok(req->start_cursor)) {
		free(b);
		return input_error(o, xstrdup("start_cursor: not a cursor this server returned"));
	}
	int max = req->max_builds <= 0		  ? BK_PEEK_DEFAULT
		  : req->max_builds > BK_PEEK_MAX ? BK_PEEK_MAX
						  : req->max_builds;
	struct args a = {0};
	for (size_t i = 0; i < nb; i++)
		push_key(&a, bkeys_bucket(b[i], "peek"));
	push_i64(&a, max);
	push(&a, req->start_cursor);
	for (size_t i = 0; i < nb; i++)
		push(&a, b[i]);
	free(b);
	return run(o, BK_S_PEEK, &a);
}

/* Search's input checks; NULL when fine, else the message. */
static char *search_check(const Reactor__Buckets__V1__SearchRequest *req, const char *names[4])
{
	char *err;
	if ((err = bk_enum_filter("status", bk_status_name, req->status, &names[0])) ||
	    (err = bk_enum_filter("result", bk_result_name, req->result, &names[1])) ||
	    (err = bk_enum_filter("failure_reason", bk_failure_name, req->failure_reason,
				  &names[2])) ||
	    (err = bk_enum_filter("cancelation_reason", bk_cancel_name, req->cancelation_reason,
				  &names[3])))
		return err;
	if (req->n_tags > (size_t)conf.max_tags)
		return xasprintf("tags: %zu tags, over the limit of %d per Search (config "
				 "buckets.max-tags)",
				 req->n_tags, conf.max_tags);
	if ((err = bk_check_utf8v("tags", req->tags, req->n_tags)) ||
	    (err = bk_check_utf8("created_by", req->created_by)))
		return err;
	for (size_t i = 0; i < req->n_tags; i++)
		if (!strchr(req->tags[i], ':'))
			return xasprintf("tags[%zu]: \"%.200s\" is not key:value (no ':')", i,
					 req->tags[i]);
	if (req->retry_of < 0)
		return xstrdup("retry_of: must not be negative");
	if (!bk_cursor_ok(req->start_cursor))
		return xstrdup("start_cursor: not a cursor this server returned");
	return NULL;
}

/* Search's KEYS: the tag sets when tags are given (the script walks the
 * first and tests the others), else the bucket list and the status sets of
 * the buckets named (the sets of unnamed buckets are found at run time). */
static void search_keys(struct args *a, const Reactor__Buckets__V1__SearchRequest *req,
			const char **b, size_t nb, const char *status)
{
	static const char *const all[] = {"SCHEDULED", "STARTED", "COMPLETED"};
	if (req->n_tags) {
		for (size_t i = 0; i < req->n_tags; i++)
			push_key(a, bkeys_tag(req->tags[i]));
		return;
	}
	push_key(a, bkeys_buckets());
	for (size_t i = 0; i < nb; i++) {
		if (*status)
			push_key(a, bkeys_bucket(b[i], status));
		else
			for (size_t k = 0; k < ARRAY_LEN(all); k++)
				push_key(a, bkeys_bucket(b[i], all[k]));
	}
}

int bk_search(const Reactor__Buckets__V1__SearchRequest *req, bk_list_cb cb, void *arg)
{
	struct op *o = list_op("Search", cb, arg);
	const char **b = NULL, *names[4];
	size_t nb = 0;
	char *err;
	if ((err = bk_check_buckets(req->buckets, req->n_buckets, &b, &nb)))
		return input_error(o, err);
	if ((err = search_check(req, names))) {
		free(b);
		return input_error(o, err);
	}
	int max = req->max_builds <= 0		    ? BK_SEARCH_DEFAULT
		  : req->max_builds > BK_SEARCH_MAX ? BK_SEARCH_MAX
						    : req->max_builds;
	struct args a = {0};
	search_keys(&a, req, b, nb, names[0]);
	push_i64(&a, max);
	push(&a, req->start_cursor);
	for (int i = 0; i < 4; i++)
		push(&a, names[i]);
	push(&a, req->created_by);
	push_i64(&a, req->retry_of);
	push_i64(&a, (int64_t)nb);
	for (size_t i = 0; i < nb; i++)
		push(&a, b[i]);
	push_i64(&a, (int64_t)req->n_tags);
	for (size_t i = 0; i < req->n_tags; i++)
		push(&a, req->tags[i]);
	free(b);
	return run(o, BK_S_SEARCH, &a);
}

int bk_expire_pass(int limit, bk_count_cb cb, void *arg)
{
	struct op *o = op_new(OP_COUNT, "lease expiry", arg);
	struct args a = {0};
	o->ncb = cb;
	push_key(&a, bkeys_leased());
	push_i64(&a, limit);
	return run(o, BK_S_EXPIRE, &a);
}

int bk_timeout_pass(int limit, bk_count_cb cb, void *arg)
{
	struct op *o = op_new(OP_COUNT, "build timeout", arg);
	struct args a = {0};
	o->ncb = cb;
	push_key(&a, bkeys_buckets());
	push_key(&a, bkeys_done());
	push_i64(&a, conf.build_timeout_us);
	push_i64(&a, limit);
	push_i64(&a, conf.retention_us);
	return run(o, BK_S_TIMEOUT, &a);
}
