/*
 * check_sched.c - unit tests for the scheduler (src/domain/sched*.c).
 * The pure parts: platform canonicalization (sorting, duplicates,
 * escaping, undeclared keys), bot properties, platform matching, stage
 * names and UUIDs.  The Lua transitions (src/state/lua/sched_*.lua) run
 * for real against a redis-server through the store: enqueue and dedup,
 * assignment by platform, completion, requeue of a lost lease and the
 * max-attempts failure, cancel, the expiry sweep, retention, and every key
 * under the namespace; ownership (issue 12): operations cancelled,
 * deleted and listed only by their owner (or as an ops-admin), dedup
 * sharers owning their own operation, bot ids bound to the identity that
 * opened their session.  The waiter side (sched_watch.c): a waiter removed
 * before its reply, a waiter freed from its own callback, batched
 * wake-ups, the safety net catching a lost message, bots woken by queue.
 *
 * The Redis tests share one TCase whose unchecked fixture (in the runner)
 * starts a redis-server on a unix socket in a temp dir and kills it in
 * teardown whatever happened in the forked tests (PR_SET_PDEATHSIG too).
 * Nothing sleeps for readiness: the loop runs until a counter moves.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "domain/sched.h"
#include "domain/sched_watch.h"
#include "proto/pb.h"
#include "state/keys.h"
#include "state/store.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "check_run.h"
#define CHECK_REDIS_NAME "check_sched"
#include "check_redis.h"

#define NS "t/ns:"

static struct cfg_instance inst_with(char **keys, int n)
{
	struct cfg_instance ci = {0};
	ci.name = (char *)"";
	ci.platform_properties = keys;
	ci.n_platform_properties = n;
	return ci;
}

static char *canon(const struct cfg_instance *ci, const char *const *kv, size_t n, char **err)
{
	PbPlatform p = BUILD__BAZEL__REMOTE__EXECUTION__V2__PLATFORM__INIT;
	PbPlatformProperty props[8], *pp[8];
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__platform__property__init(&props[i]);
		props[i].name = (char *)kv[2 * i];
		props[i].value = (char *)kv[2 * i + 1];
		pp[i] = &props[i];
	}
	p.n_properties = n;
	p.properties = pp;
	char *out = NULL;
	*err = NULL;
	int rc = sched_platform(&p, ci, &out, err);
	if (rc != 0) {
		ck_assert_int_eq(rc, -EINVAL);
		return NULL;
	}
	return out;
}

START_TEST(test_platform_canonical)
{
	char *keys[] = {(char *)"pool", (char *)"label"};
	struct cfg_instance ci = inst_with(keys, 2);
	char *err;
	const char *a[] = {"pool", "big",   "OSFamily", "linux",    "label",
			   "b",	   "label", "a",	"OSFamily", "linux"};
	char *s = canon(&ci, a, 5, &err);
	ck_assert_ptr_nonnull(s);
	ck_assert_str_eq(s, "OSFamily=linux;label=a;label=b;pool=big");
	free(s);

	/* Separators inside names and values are escaped. */
	const char *b[] = {"pool", "a;b=c:d%"};
	s = canon(&ci, b, 1, &err);
	ck_assert_str_eq(s, "pool=a%3Bb%3Dc%3Ad%25");
	free(s);

	/* No properties: the empty platform. */
	s = canon(&ci, NULL, 0, &err);
	ck_assert_str_eq(s, "");
	free(s);
	char *out = NULL;
	ck_assert_int_eq(sched_platform(NULL, &ci, &out, &err), 0);
	ck_assert_str_eq(out, "");
	free(out);
}
END_TEST

START_TEST(test_platform_undeclared)
{
	struct cfg_instance ci = inst_with(NULL, 0);
	char *err;
	const char *a[] = {"ISA", "x86-64", "container-image", "docker://x"};
	char *s = canon(&ci, a, 2, &err);
	ck_assert_ptr_null(s);
	ck_assert_ptr_nonnull(err);
	ck_assert_ptr_nonnull(strstr(err, "\"container-image\""));
	ck_assert_ptr_nonnull(strstr(err, "OSFamily, ISA"));
	free(err);
}
END_TEST

START_TEST(test_bot_props)
{
	char *keys[] = {(char *)"pool"};
	struct cfg_instance ci = inst_with(keys, 1);
	Google__Devtools__Remoteworkers__V1test2__Worker w =
		GOOGLE__DEVTOOLS__REMOTEWORKERS__V1TEST2__WORKER__INIT;
	Google__Devtools__Remoteworkers__V1test2__Device
		d0 = GOOGLE__DEVTOOLS__REMOTEWORKERS__V1TEST2__DEVICE__INIT,
		d1 = d0, *devs[] = {&d0, &d1};
	Google__Devtools__Remoteworkers__V1test2__Device__Property p[3], *pp0[2], *pp1[1];
	const char *kv[][2] = {{"OSFamily", "linux"}, {"secret", "x"}, {"ISA", "arm"}};
	for (int i = 0; i < 3; i++) {
		google__devtools__remoteworkers__v1test2__device__property__init(&p[i]);
		p[i].key = (char *)kv[i][0];
		p[i].value = (char *)kv[i][1];
	}
	pp0[0] = &p[0];
	pp0[1] = &p[1];
	pp1[0] = &p[2];
	d0.n_properties = 2;
	d0.properties = pp0;
	d1.n_properties = 1;
	d1.properties = pp1;
	Google__Devtools__Remoteworkers__V1test2__Worker__Property wp, *wpp[] = {&wp};
	google__devtools__remoteworkers__v1test2__worker__property__init(&wp);
	wp.key = (char *)"pool";
	wp.value = (char *)"big";
	w.n_devices = 2;
	w.devices = devs;
	w.n_properties = 1;
	w.properties = wpp;
	/* Only the first device counts; undeclared keys are dropped. */
	char *s = sched_bot_props(&w, &ci);
	ck_assert_str_eq(s, "OSFamily=linux;pool=big");
	free(s);
	s = sched_bot_props(NULL, &ci);
	ck_assert_str_eq(s, "");
	free(s);
}
END_TEST

START_TEST(test_match)
{
	ck_assert(sched_platform_match("", ""));
	ck_assert(sched_platform_match("", "OSFamily=linux"));
	ck_assert(sched_platform_match("OSFamily=linux", "ISA=x86;OSFamily=linux"));
	ck_assert(!sched_platform_match("OSFamily=linux", ""));
	ck_assert(!sched_platform_match("OSFamily=linux", "OSFamily=linuxx"));
	ck_assert(!sched_platform_match("OSFamily=lin", "OSFamily=linux"));
	ck_assert(sched_platform_match("label=a;label=b", "label=a;label=b;pool=x"));
	ck_assert(!sched_platform_match("label=a;label=b", "label=a;pool=x"));
}
END_TEST

START_TEST(test_stages)
{
	ck_assert_str_eq(sched_stage_name(SCHED_QUEUED), "QUEUED");
	ck_assert_str_eq(sched_stage_name(SCHED_COMPLETED), "COMPLETED");
	ck_assert_int_eq(sched_stage_parse("EXECUTING"), SCHED_EXECUTING);
	ck_assert_int_eq(sched_stage_parse("nope"), -1);
}
END_TEST

/* ---- runner-side fixture: one redis-server for the Redis TCases ---- */

static struct event_base *g_base;
static struct cfg *g_cfg;
static struct cfg_instance g_inst;
static redisContext *g_sync; /* plain connection for checks */
static int g_up;

/* ---- test-side fixture ---- */

static void on_state(bool up, void *arg)
{
	(void)arg;
	if (up)
		g_up++;
}

static bool run_until(const int *v, int min, int64_t us)
{
	return check_loop_until(g_base, v, min, us);
}

/* Store up with the scheduler's scripts; the watch too when `watch`. */
static void start(bool watch)
{
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_WARN);
	g_sync = sync_conn(5000000);
	ck_assert_msg(g_sync, "no redis-server on %s", g_sock);
	freeReplyObject(redisCommand(g_sync, "FLUSHALL"));
	g_base = event_base_new();
	g_cfg = calloc(1, sizeof *g_cfg);
	g_cfg->redis_embedded = false;
	g_cfg->redis_address = g_sock;
	g_cfg->redis_connect_timeout_us = 1000000;
	g_cfg->redis_reconnect_max_us = 200000;
	g_cfg->sched_sweep_us = 3600LL * 1000000; /* tests sweep on demand */
	g_cfg->sched_safety_net_us = 3600LL * 1000000;
	g_inst.name = (char *)"";
	g_inst.execution = true;
	g_inst.no_worker_timeout_us = 3600LL * 1000000;
	g_cfg->instances = &g_inst;
	g_cfg->n_instances = 1;
	keys_set_ns(NS);
	sched_configure(g_cfg);
	sched_watch_configure(g_cfg);
	ck_assert_int_eq(sched_init(), 0);
	if (watch)
		sched_watch_init(g_base);
	g_up = 0;
	store_on_state(on_state, NULL);
	char *err = NULL;
	ck_assert_msg(store_start(g_base, g_cfg, &err) == 0, "store_start: %s", err);
	ck_assert_msg(run_until(&g_up, 1, 5000000), "store never came up");
}

static void setup(void)
{
	start(false);
}

/* Subscribers of `channel` Redis knows of. */
static long long numsub(const char *channel)
{
	redisReply *r = redisCommand(g_sync, "PUBSUB NUMSUB %s", channel);
	long long n =
		r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 ? r->element[1]->integer : -1;
	freeReplyObject(r);
	return n;
}

static void setup_watch(void)
{
	start(true);
	/* The subscriber connection comes up on its own: wait for it. */
	int64_t end = mono_us() + 5000000;
	int flag = 0;
	while ((numsub(NS "sched:job") != 1 || numsub(NS "sched:queue") != 1) && mono_us() < end)
		check_loop_until(g_base, &flag, 1, 10000);
	ck_assert_int_eq(numsub(NS "sched:queue"), 1);
	ck_assert_int_eq(numsub(NS "sched:job"), 1);
}

static void teardown(void)
{
	sched_stop();
	sched_watch_shutdown();
	store_stop();
	event_base_free(g_base);
	free(g_cfg);
	redisFree(g_sync);
}

/* Run one sweep now: a short interval, until the retire/deadline work is
 * visible through `done` (a predicate on Redis). */
static bool sweep_until(bool (*done)(void), int64_t us)
{
	g_cfg->sched_sweep_us = 10000;
	sched_start(g_base);
	int64_t end = mono_us() + us;
	int flag = 0;
	while (!done() && mono_us() < end)
		check_loop_until(g_base, &flag, 1, 20000);
	sched_stop();
	return done();
}

static char *hget(const char *key, const char *field)
{
	redisReply *r = redisCommand(g_sync, "HGET %s %s", key, field);
	char *s = r && r->type == REDIS_REPLY_STRING ? strdup(r->str) : NULL;
	freeReplyObject(r);
	return s;
}

static long long cmd_int(const char *fmt, const char *key)
{
	redisReply *r = redisCommand(g_sync, fmt, key);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
	freeReplyObject(r);
	return v;
}

#define ck_hget(key, field, want)                                                                  \
	do {                                                                                       \
		char *v_ = hget(key, field);                                                       \
		ck_assert_msg(v_ && !strcmp(v_, want), "%s %s: \"%s\", want \"%s\"", key, field,   \
			      v_ ? v_ : "(nil)", want);                                            \
		free(v_);                                                                          \
	} while (0)

/* ---- call helpers ---- */

static struct digest action_of(const char *s)
{
	struct digest d;
	digest_of(s, strlen(s), &d);
	return d;
}

struct enq {
	int done, rc, stage;
	bool joined;
	char job[64];
};

static void on_enq(void *arg, int rc, const char *job, int stage, int64_t version, bool joined)
{
	(void)version;
	struct enq *e = arg;
	e->done++;
	e->rc = rc;
	e->stage = stage;
	e->joined = joined;
	snprintf(e->job, sizeof e->job, "%s", job ? job : "");
}

/* Queue `op` for action `act` on `platform`, as `owner`. */
static struct enq enqueue_as(const char *owner, const char *op, const char *act,
			     const char *platform, int attempts, int64_t retention_us)
{
	struct digest d = action_of(act);
	struct sched_enqueue_req r = {.instance = "",
				      .action = &d,
				      .op = op,
				      .platform = platform,
				      .timeout_us = 3600LL * 1000000,
				      .max_attempts = attempts,
				      .retention_us = retention_us,
				      .owner = owner};
	struct enq e = {0};
	ck_assert_int_eq(sched_enqueue(&r, on_enq, &e), 0);
	ck_assert_int_eq(e.done, 0); /* never before the call returned */
	ck_assert(run_until(&e.done, 1, 5000000));
	ck_assert_int_eq(e.rc, 0);
	return e;
}

static struct enq enqueue(const char *op, const char *act, const char *platform, int attempts,
			  int64_t retention_us)
{
	return enqueue_as("alice", op, act, platform, attempts, retention_us);
}

struct botres {
	int done, rc;
	char lease[64];
	int state;
	char done_job[64];
};

static void on_bot(void *arg, const struct sched_bot_result *r)
{
	struct botres *b = arg;
	b->done++;
	b->rc = r->rc;
	snprintf(b->lease, sizeof b->lease, "%s", r->lease.id ? r->lease.id : "");
	b->state = r->lease.state;
	snprintf(b->done_job, sizeof b->done_job, "%s", r->done_job ? r->done_job : "");
}

static struct botres bot_create_as(const char *owner, const char *session, const char *bot_id,
				   const char *props, int64_t expire_us)
{
	struct sched_bot_create_req r = {.session = session,
					 .instance = "",
					 .bot_id = bot_id,
					 .props = props,
					 .owner = owner,
					 .expire_us = expire_us,
					 .assign = true};
	struct botres b = {0};
	ck_assert_int_eq(sched_bot_create(&r, on_bot, &b), 0);
	ck_assert(run_until(&b.done, 1, 5000000));
	return b;
}

static struct botres bot_create(const char *session, const char *bot_id, const char *props,
				int64_t expire_us)
{
	return bot_create_as("worker", session, bot_id, props, expire_us);
}

/* UpdateBotSession as `owner` reporting `lease` (NULL: none) in `state`. */
static struct botres bot_update_as(const char *owner, const char *session, const char *bot_id,
				   const char *lease, int state, int code)
{
	struct sched_bot_update_req r = {.session = session,
					 .bot_id = bot_id,
					 .owner = owner,
					 .expire_us = now_us() + 3600LL * 1000000,
					 .lease_id = lease,
					 .lease_state = state,
					 .code = code,
					 .message = code ? "failed" : "",
					 .result = (const uint8_t *)"RES",
					 .result_len = 3,
					 .assign = true};
	struct botres b = {0};
	ck_assert_int_eq(sched_bot_update(&r, on_bot, &b), 0);
	ck_assert(run_until(&b.done, 1, 5000000));
	return b;
}

static struct botres bot_update(const char *session, const char *bot_id, const char *lease,
				int state, int code)
{
	return bot_update_as("worker", session, bot_id, lease, state, code);
}

struct viewres {
	int done, rc, stage, status;
	bool exists, cached, alice; /* alice: sched_op_owned(v, "alice") */
	char result[16];
	char owner[32];
};

static void on_view(void *arg, int rc, struct sched_view *v, size_t n)
{
	struct viewres *w = arg;
	w->done++;
	w->rc = rc;
	if (rc == 0 && n == 1) {
		w->exists = v->exists;
		w->stage = v->stage;
		w->status = v->status;
		w->cached = v->cached;
		snprintf(w->result, sizeof w->result, "%.*s", (int)v->result_len,
			 v->result ? (const char *)v->result : "");
		snprintf(w->owner, sizeof w->owner, "%s", v->owner);
		w->alice = sched_op_owned(v, "alice");
	}
}

static struct viewres view(const char *op)
{
	struct viewres w = {0};
	const char *ops[] = {op};
	ck_assert_int_eq(sched_view(ops, 1, on_view, &w), 0);
	ck_assert(run_until(&w.done, 1, 5000000));
	ck_assert_int_eq(w.rc, 0);
	return w;
}

struct doneres {
	int done, rc;
};

static void on_done(void *arg, int rc)
{
	struct doneres *d = arg;
	d->done++;
	d->rc = rc;
}

struct changeres {
	int done, rc;
	char instance[32];
};

static void on_change(void *arg, int rc, const char *instance)
{
	struct changeres *d = arg;
	d->done++;
	d->rc = rc;
	snprintf(d->instance, sizeof d->instance, "%s", instance ? instance : "(null)");
}

/* Cancel (or delete) `op` as `who` (NULL: as an ops-admin). */
static struct changeres change_as(bool del, const char *op, const char *who)
{
	struct changeres d = {0};
	ck_assert_int_eq(del ? sched_delete_op(op, who, on_change, &d)
			     : sched_cancel_op(op, who, on_change, &d),
			 0);
	ck_assert_int_eq(d.done, 0);
	ck_assert(run_until(&d.done, 1, 5000000));
	return d;
}

static int cancel(const char *op)
{
	return change_as(false, op, NULL).rc;
}

struct listres {
	int done, rc;
	char names[256];
};

static void on_list(void *arg, int rc, char **ops, size_t n, int64_t next)
{
	(void)next;
	struct listres *l = arg;
	l->done++;
	l->rc = rc;
	for (size_t i = 0; i < n; i++)
		snprintf(l->names + strlen(l->names), sizeof l->names - strlen(l->names), "%s%s",
			 i ? "," : "", ops[i]);
}

/* The names ListOperations shows `owner` (NULL: everyone's), joined. */
static struct listres list_as(const char *owner)
{
	struct listres l = {0};
	ck_assert_int_eq(sched_list_ops("", owner, 0, 100, 0, on_list, &l), 0);
	ck_assert(run_until(&l.done, 1, 5000000));
	ck_assert_int_eq(l.rc, 0);
	return l;
}

/* ---- scheduler scripts ---- */

START_TEST(test_enqueue_dedup)
{
	struct enq a = enqueue("op-a", "act1", "", 3, 60000000);
	ck_assert(!a.joined);
	ck_assert_int_eq(a.stage, SCHED_QUEUED);
	struct enq b = enqueue("op-b", "act1", "", 3, 60000000);
	ck_assert(b.joined);
	ck_assert_str_eq(b.job, a.job);
	struct enq c = enqueue("op-c", "act2", "", 3, 60000000);
	ck_assert(!c.joined);
	ck_assert_str_ne(c.job, a.job);

	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", a.job);
	ck_hget(jk, "ops", "2");
	ck_hget(jk, "stage", "QUEUED");
	ck_hget(NS "op:op-b", "job", a.job);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "queue::"), 2);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "ops:"), 3);
	struct viewres v = view("op-b");
	ck_assert(v.exists);
	ck_assert_int_eq(v.stage, SCHED_QUEUED);
	ck_assert(!view("op-none").exists);
}
END_TEST

START_TEST(test_assign_complete)
{
	struct enq e = enqueue("op-1", "act", "pool=big", 3, 60000000);
	/* A bot whose properties do not match gets nothing... */
	struct botres small = bot_create("s-small", "small", "pool=small", now_us() + 60000000);
	ck_assert_int_eq(small.rc, 0);
	ck_assert_str_eq(small.lease, "");
	/* ... one that matches gets the job. */
	struct botres big =
		bot_create("s-big", "big", "OSFamily=linux;pool=big", now_us() + 60000000);
	ck_assert_int_eq(big.rc, 0);
	ck_assert_str_eq(big.lease, e.job);
	ck_assert_int_eq(big.state, LEASE(PENDING));
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "queue::pool=big"), 0);

	struct botres r = bot_update("s-big", "big", e.job, LEASE(ACTIVE), 0);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_int_eq(r.state, LEASE(ACTIVE));
	ck_assert_int_eq(view("op-1").stage, SCHED_EXECUTING);

	r = bot_update("s-big", "big", e.job, LEASE(COMPLETED), 0);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_str_eq(r.done_job, e.job);
	struct viewres v = view("op-1");
	ck_assert_int_eq(v.stage, SCHED_COMPLETED);
	ck_assert_int_eq(v.status, 0);
	ck_assert_str_eq(v.result, "RES");
	/* The dedup entry is gone: the same action queues a new job. */
	ck_assert(!enqueue("op-2", "act", "pool=big", 3, 60000000).joined);

	/* Sessions: unknown -> -ENOENT, another bot id -> -EPERM. */
	ck_assert_int_eq(bot_update("s-none", "x", NULL, 0, 0).rc, -ENOENT);
	ck_assert_int_eq(bot_update("s-small", "other", NULL, 0, 0).rc, -EPERM);
	ck_assert_int_eq(cmd_int("EXISTS %s", NS "bot:s-small"), 0);
}
END_TEST

START_TEST(test_requeue_and_max_attempts)
{
	struct enq e = enqueue("op-1", "act", "", 2, 60000000);
	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", e.job);
	ck_assert_str_eq(bot_create("s1", "b1", "", now_us() + 60000000).lease, e.job);
	/* The bot no longer reports its lease: requeued, attempt counted. */
	struct botres r = bot_update("s1", "b1", NULL, 0, 0);
	ck_assert_int_eq(r.rc, 0);
	/* ... and handed out again at once (the same idle bot asks). */
	ck_assert_str_eq(r.lease, e.job);
	ck_hget(jk, "attempts", "2");
	ck_hget(jk, "bots", "b1,b1");
	/* Given up a second time: max-attempts reached, the job fails. */
	r = bot_update("s1", "b1", e.job, LEASE(CANCELLED), 0);
	ck_assert_int_eq(r.rc, 0);
	struct viewres v = view("op-1");
	ck_assert_int_eq(v.stage, SCHED_COMPLETED);
	ck_assert_int_eq(v.status, 14);
	char *msg = hget(jk, "message");
	ck_assert_ptr_nonnull(strstr(msg, "max-attempts 2"));
	free(msg);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "queue::"), 0);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "sched:deadlines"), 0);
}
END_TEST

START_TEST(test_unassign)
{
	struct enq e = enqueue("op-1", "act", "", 2, 60000000);
	ck_assert_str_eq(bot_create("s1", "b1", "", now_us() + 60000000).lease, e.job);
	ck_assert_int_eq(sched_unassign("s1", e.job), 0);
	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", e.job);
	int dummy = 0;
	int64_t end = mono_us() + 5000000;
	while (cmd_int("ZCARD %s", NS "queue::") != 1 && mono_us() < end)
		check_loop_until(g_base, &dummy, 1, 10000);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "queue::"), 1);
	ck_hget(jk, "attempts", "0"); /* not counted */
	ck_hget(jk, "stage", "QUEUED");
}
END_TEST

START_TEST(test_cancel)
{
	struct enq a = enqueue("op-a", "act", "", 3, 60000000);
	enqueue("op-b", "act", "", 3, 60000000);
	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", a.job);
	ck_assert_int_eq(cancel("op-a"), 0);
	struct viewres v = view("op-a");
	ck_assert_int_eq(v.stage, SCHED_COMPLETED);
	ck_assert_int_eq(v.status, 1);
	ck_hget(jk, "stage", "QUEUED"); /* op-b still waits on it */
	ck_assert_int_eq(view("op-b").stage, SCHED_QUEUED);
	ck_assert_int_eq(cancel("op-b"), 0);
	ck_hget(jk, "stage", "COMPLETED");
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "queue::"), 0);
	ck_assert_int_eq(cancel("op-b"), 0); /* already done */
	ck_assert_int_eq(cancel("op-none"), -ENOENT);
}
END_TEST

static bool no_sessions(void)
{
	return cmd_int("ZCARD %s", NS "bots:") == 0;
}

/* Operations belong to who created them; a dedup sharer owns its own. */
START_TEST(test_op_owner)
{
	struct enq a = enqueue_as("alice", "op-a", "act", "", 3, 60000000);
	struct enq b = enqueue_as("bob", "op-b", "act", "", 3, 60000000);
	ck_assert(b.joined);
	ck_assert_str_eq(a.job, b.job);
	ck_assert_str_eq(view("op-a").owner, "alice");
	ck_assert(view("op-a").alice);
	ck_assert_str_eq(view("op-b").owner, "bob");
	ck_assert(!view("op-b").alice);
	ck_hget(NS "op:op-a", "owner", "alice");
	ck_hget(NS "op:op-b", "owner", "bob");

	/* bob may not cancel or delete alice's operation: nothing changes,
	 * and the answer names its instance (for the ops-admin check). */
	struct changeres d = change_as(false, "op-a", "bob");
	ck_assert_int_eq(d.rc, -EACCES);
	ck_assert_str_eq(d.instance, "");
	ck_assert_int_eq(view("op-a").stage, SCHED_QUEUED);
	ck_assert_int_eq(change_as(true, "op-a", "bob").rc, -EACCES);
	ck_assert(view("op-a").exists);
	/* Not-found stays not-found whoever asks. */
	ck_assert_int_eq(change_as(false, "op-none", "bob").rc, -ENOENT);

	/* Listing: one's own, or everyone's. */
	ck_assert_str_eq(list_as("bob").names, "op-b");
	ck_assert_str_eq(list_as("alice").names, "op-a");
	ck_assert_str_eq(list_as("mallory").names, "");
	ck_assert_str_eq(list_as(NULL).names, "op-a,op-b");

	/* The sharer cancels its own operation; alice's job runs on. */
	ck_assert_int_eq(change_as(false, "op-b", "bob").rc, 0);
	ck_assert_int_eq(view("op-b").stage, SCHED_COMPLETED);
	ck_assert_int_eq(view("op-a").stage, SCHED_QUEUED);
	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", a.job);
	ck_hget(jk, "stage", "QUEUED");
	/* The owner deletes its own. */
	ck_assert_int_eq(change_as(true, "op-b", "bob").rc, 0);
	ck_assert(!view("op-b").exists);

	/* An operation from before owners were recorded is nobody's: only
	 * an ops-admin (who NULL) reaches it. */
	redisReply *r = redisCommand(g_sync, "HDEL %s owner", NS "op:op-a");
	freeReplyObject(r);
	ck_assert_str_eq(view("op-a").owner, "");
	ck_assert(!view("op-a").alice);
	ck_assert_int_eq(change_as(false, "op-a", "alice").rc, -EACCES);
	ck_assert_int_eq(change_as(false, "op-a", "").rc, -EACCES);
	ck_assert_str_eq(list_as("").names, "");
	ck_assert_int_eq(change_as(false, "op-a", NULL).rc, 0);
	ck_hget(jk, "stage", "COMPLETED");
}
END_TEST

/* A bot id is bound to the identity that opened its session. */
START_TEST(test_bot_owner)
{
	struct enq e = enqueue("op-1", "act", "", 3, 60000000);
	struct botres w = bot_create_as("w1", "s1", "b1", "", now_us() + 60000000);
	ck_assert_int_eq(w.rc, 0);
	ck_assert_str_eq(w.lease, e.job);
	ck_hget(NS "bot:s1", "owner", "w1");

	/* Another identity cannot take the bot id over... */
	ck_assert_int_eq(bot_create_as("w2", "s2", "b1", "", now_us() + 60000000).rc, -EACCES);
	ck_assert_int_eq(cmd_int("EXISTS %s", NS "bot:s2"), 0);
	redisReply *g = redisCommand(g_sync, "GET %s", NS "botid::b1");
	ck_assert(g && g->type == REDIS_REPLY_STRING && !strcmp(g->str, "s1"));
	freeReplyObject(g);
	/* ...nor report on its lease, nor close its session with a wrong
	 * bot id. */
	ck_assert_int_eq(bot_update_as("w2", "s1", "b1", e.job, LEASE(COMPLETED), 0).rc, -EACCES);
	ck_assert_int_eq(view("op-1").stage, SCHED_QUEUED);
	ck_assert_int_eq(bot_update_as("w2", "s1", "b1", e.job, LEASE(CANCELLED), 0).rc, -EACCES);
	ck_assert_int_eq(bot_update_as("w2", "s1", "other", NULL, 0, 0).rc, -EACCES);
	ck_assert_int_eq(cmd_int("EXISTS %s", NS "bot:s1"), 1);
	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", e.job);
	ck_hget(jk, "bot", "s1");
	ck_hget(jk, "lease", "PENDING");

	/* The owner completes it. */
	struct botres r = bot_update_as("w1", "s1", "b1", e.job, LEASE(COMPLETED), 0);
	ck_assert_int_eq(r.rc, 0);
	ck_assert_str_eq(r.done_job, e.job);
	ck_assert_int_eq(view("op-1").stage, SCHED_COMPLETED);
	/* The same identity may reopen the bot id (closing s1). */
	ck_assert_int_eq(bot_create_as("w1", "s3", "b1", "", now_us() + 60000000).rc, 0);
	ck_assert_int_eq(cmd_int("EXISTS %s", NS "bot:s1"), 0);
	/* A session from before owners were recorded is anyone's. */
	redisReply *x = redisCommand(g_sync, "HDEL %s owner", NS "bot:s3");
	freeReplyObject(x);
	ck_assert_int_eq(bot_create_as("w2", "s4", "b1", "", now_us() + 60000000).rc, 0);
	ck_hget(NS "bot:s4", "owner", "w2");
}
END_TEST

START_TEST(test_sweep_expired_session)
{
	struct enq e = enqueue("op-1", "act", "", 3, 60000000);
	/* A session that expired at once holds the lease. */
	ck_assert_str_eq(bot_create("s1", "b1", "", now_us() - 1).lease, e.job);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "queue::"), 0);
	ck_assert(sweep_until(no_sessions, 5000000));
	ck_assert_int_eq(cmd_int("EXISTS %s", NS "bot:s1"), 0);
	ck_assert_int_eq(cmd_int("EXISTS %s", NS "botid::b1"), 0);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "queue::"), 1);
	ck_assert_int_eq(view("op-1").stage, SCHED_QUEUED);
}
END_TEST

static bool retired(void)
{
	return cmd_int("ZCARD %s", NS "sched:retire") == 0 && cmd_int("ZCARD %s", NS "ops:") == 0;
}

START_TEST(test_retention)
{
	/* Retention 0: removable by the first sweep after completion. */
	struct enq e = enqueue("op-1", "act", "", 3, 0);
	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", e.job);
	ck_assert_int_eq(cancel("op-1"), 0);
	ck_assert_int_eq(cmd_int("EXISTS %s", jk), 1);
	ck_assert_int_eq(cmd_int("ZCARD %s", NS "sched:retire"), 3); /* job, its ops, op */
	ck_assert(sweep_until(retired, 5000000));
	ck_assert_int_eq(cmd_int("EXISTS %s", jk), 0);
	ck_assert_int_eq(cmd_int("EXISTS %s", NS "op:op-1"), 0);
	ck_assert(!view("op-1").exists);
}
END_TEST

START_TEST(test_keys_under_namespace)
{
	struct enq e = enqueue("op-1", "act", "pool=a", 3, 60000000);
	enqueue("op-2", "act", "pool=a", 3, 60000000);
	struct botres b = bot_create("s1", "b1", "pool=a", now_us() + 60000000);
	ck_assert_str_eq(b.lease, e.job);
	bot_update("s1", "b1", e.job, LEASE(COMPLETED), 0);
	struct digest d = action_of("cached");
	struct doneres c = {0};
	ck_assert_int_eq(sched_cached_op("", "op-3", "carol", &d, (const uint8_t *)"R", 1, 60000000,
					 on_done, &c),
			 0);
	ck_assert(run_until(&c.done, 1, 5000000));
	ck_assert_int_eq(c.rc, 0);
	ck_assert(view("op-3").cached);
	ck_assert_str_eq(view("op-3").owner, "carol");

	size_t n = 0, outside = 0;
	char cursor[32] = "0";
	do {
		redisReply *r = redisCommand(g_sync, "SCAN %s COUNT 100", cursor);
		ck_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
		snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
		for (size_t i = 0; i < r->element[1]->elements; i++) {
			const char *k = r->element[1]->element[i]->str;
			n++;
			if (strncmp(k, NS, strlen(NS)) != 0) {
				fprintf(stderr, "key outside the namespace: %s\n", k);
				outside++;
			}
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	ck_assert_uint_eq(outside, 0);
	/* job, job ops, op x3, ops, queue, platforms, bot, bots, botid,
	 * botprops, seq, deadlines or retire... */
	ck_assert_uint_ge(n, 12);
}
END_TEST

START_TEST(test_store_down)
{
	store_stop();
	struct enq e = {0};
	struct digest d = action_of("x");
	struct sched_enqueue_req r = {.instance = "", .action = &d, .op = "o", .platform = ""};
	ck_assert_int_eq(sched_enqueue(&r, on_enq, &e), ERR_STORE_DOWN);
	const char *ops[] = {"o"};
	struct viewres w = {0};
	ck_assert_int_eq(sched_view(ops, 1, on_view, &w), ERR_STORE_DOWN);
	ck_assert_int_eq(e.done + w.done, 0);
}
END_TEST

/* ---- waiters (sched_watch.c) ---- */

struct waiter {
	struct sched_watch_op w;
	int views, stage;
	bool free_self;	     /* remove and free itself in its callback */
	struct waiter *kill; /* remove this one in the callback */
	int *count;	     /* shared counter of callbacks */
};

static void waiter_view(struct sched_watch_op *op, const struct sched_view *v)
{
	struct waiter *w = container_of(op, struct waiter, w);
	w->views++;
	w->stage = v ? v->stage : -1;
	if (w->count)
		(*w->count)++;
	if (w->kill)
		sched_watch_op_remove(&w->kill->w);
	if (w->free_self) {
		sched_watch_op_remove(&w->w);
		free(w);
	}
}

static struct waiter *waiter_new(const char *op, int *count)
{
	struct waiter *w = calloc(1, sizeof(*w));
	w->w.op = op;
	w->w.on_view = waiter_view;
	w->count = count;
	return w;
}

/* Publish a change of `job` as the scripts do (n messages in one
 * pipeline: they reach the subscriber together). */
static void publish(const char *job, int n)
{
	for (int i = 0; i < n; i++)
		redisAppendCommand(g_sync, "PUBLISH %s %s", NS "sched:job", job);
	for (int i = 0; i < n; i++) {
		redisReply *r = NULL;
		ck_assert_int_eq(redisGetReply(g_sync, (void **)&r), REDIS_OK);
		ck_assert_int_eq(r->integer, 1); /* our subscriber heard it */
		freeReplyObject(r);
	}
}

START_TEST(test_watch_removed_before_reply)
{
	struct enq e = enqueue("op-1", "act", "", 3, 60000000);
	int count = 0;
	struct waiter *gone = waiter_new("op-1", NULL), *stay = waiter_new("op-1", &count);
	uint64_t seq = sched_watch_job_seq();
	sched_watch_op_add(&gone->w, e.job, seq);
	sched_watch_op_add(&stay->w, e.job, seq);
	publish(e.job, 1);
	/* Until the message is in and the read is on its way... */
	while (sched_watch_job_seq() == seq)
		event_base_loop(g_base, EVLOOP_ONCE);
	event_base_loop(g_base, EVLOOP_NONBLOCK);
	/* ... then the first waiter leaves, and its memory goes. */
	sched_watch_op_remove(&gone->w);
	free(gone);
	ck_assert(run_until(&count, 1, 5000000));
	ck_assert_int_eq(stay->views, 1);
	ck_assert_int_eq(stay->stage, SCHED_QUEUED);
	sched_watch_op_remove(&stay->w);
	sched_watch_op_remove(&stay->w); /* twice is harmless */
	free(stay);
}
END_TEST

START_TEST(test_watch_freed_in_callback)
{
	struct enq e = enqueue("op-1", "act", "", 3, 60000000);
	int count = 0;
	struct waiter *a = waiter_new("op-1", &count), *b = waiter_new("op-1", &count),
		      *c = waiter_new("op-1", &count);
	uint64_t seq = sched_watch_job_seq();
	/* Added at the head: delivered c, b, a.  c frees itself and removes
	 * b, which is then never called; a still is. */
	sched_watch_op_add(&a->w, e.job, seq);
	sched_watch_op_add(&b->w, e.job, seq);
	sched_watch_op_add(&c->w, e.job, seq);
	c->free_self = true;
	c->kill = b;
	publish(e.job, 1);
	ck_assert(run_until(&count, 2, 5000000));
	ck_assert_int_eq(b->views, 0);
	ck_assert_int_eq(a->views, 1);
	/* Nothing more comes. */
	ck_assert(!run_until(&count, 3, 200000));
	sched_watch_op_remove(&a->w);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_watch_batched)
{
	struct enq e = enqueue("op-1", "act", "", 3, 60000000);
	int count = 0;
	struct waiter *a = waiter_new("op-1", &count);
	sched_watch_op_add(&a->w, e.job, sched_watch_job_seq());
	uint64_t seq = sched_watch_job_seq();
	publish(e.job, 5);
	ck_assert(run_until(&count, 1, 5000000));
	ck_assert_uint_eq(sched_watch_job_seq() - seq, 5);
	/* Five messages in one read: one view read, one callback. */
	ck_assert(!run_until(&count, 2, 300000));
	ck_assert_int_eq(a->views, 1);
	/* A message announced before the waiter existed is not missed. */
	struct waiter *late = waiter_new("op-1", &count);
	sched_watch_op_add(&late->w, e.job, seq);
	ck_assert(run_until(&count, 2, 5000000));
	ck_assert_int_eq(late->views, 1);
	sched_watch_op_remove(&a->w);
	sched_watch_op_remove(&late->w);
	free(a);
	free(late);
}
END_TEST

START_TEST(test_watch_safety_net)
{
	struct enq e = enqueue("op-1", "act", "", 3, 60000000);
	char jk[128];
	snprintf(jk, sizeof jk, NS "job:%s", e.job);
	int count = 0;
	struct waiter *a = waiter_new("op-1", &count);
	sched_watch_op_add(&a->w, e.job, sched_watch_job_seq());
	/* A change whose message was lost (none is published)... */
	freeReplyObject(redisCommand(g_sync, "HSET %s stage EXECUTING", jk));
	ck_assert(!run_until(&count, 1, 200000));
	/* ... reaches the waiter when the safety net runs. */
	g_cfg->sched_safety_net_us = 50000;
	sched_watch_configure(g_cfg);
	ck_assert(run_until(&count, 1, 5000000));
	ck_assert_int_eq(a->stage, SCHED_EXECUTING);
	sched_watch_op_remove(&a->w);
	free(a);
}
END_TEST

struct wbot {
	struct sched_watch_bot b;
	int wakes;
};

static void bot_wake(struct sched_watch_bot *b)
{
	struct wbot *w = container_of(b, struct wbot, b);
	w->wakes++;
	sched_watch_bot_remove(b); /* leaves from its own callback */
}

START_TEST(test_watch_bots)
{
	struct wbot big = {.b = {.instance = "", .props = "pool=big", .on_wake = bot_wake}};
	struct wbot small = {.b = {.instance = "", .props = "pool=small", .on_wake = bot_wake}};
	ck_assert(!sched_watch_bot_listed(&big.b));
	sched_watch_bot_add(&small.b);
	sched_watch_bot_add(&big.b);
	ck_assert(sched_watch_bot_listed(&big.b));
	enqueue("op-1", "act", "pool=big", 3, 60000000);
	ck_assert(run_until(&big.wakes, 1, 5000000));
	ck_assert(!sched_watch_bot_listed(&big.b));
	ck_assert_int_eq(small.wakes, 0);
	ck_assert(sched_watch_bot_listed(&small.b));
	sched_watch_bot_remove(&small.b);
}
END_TEST

static void add_redis_tests(Suite *s)
{
	TCase *tc = tcase_create("redis");
	tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_enqueue_dedup);
	tcase_add_test(tc, test_assign_complete);
	tcase_add_test(tc, test_requeue_and_max_attempts);
	tcase_add_test(tc, test_unassign);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_op_owner);
	tcase_add_test(tc, test_bot_owner);
	tcase_add_test(tc, test_sweep_expired_session);
	tcase_add_test(tc, test_retention);
	tcase_add_test(tc, test_keys_under_namespace);
	tcase_add_test(tc, test_store_down);
	suite_add_tcase(s, tc);

	tc = tcase_create("watch");
	tcase_add_unchecked_fixture(tc, redis_setup, redis_teardown);
	tcase_add_checked_fixture(tc, setup_watch, teardown);
	tcase_add_test(tc, test_watch_removed_before_reply);
	tcase_add_test(tc, test_watch_freed_in_callback);
	tcase_add_test(tc, test_watch_batched);
	tcase_add_test(tc, test_watch_safety_net);
	tcase_add_test(tc, test_watch_bots);
	suite_add_tcase(s, tc);
}

int main(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_platform_canonical);
	tcase_add_test(tc, test_platform_undeclared);
	tcase_add_test(tc, test_bot_props);
	tcase_add_test(tc, test_match);
	tcase_add_test(tc, test_stages);
	suite_add_tcase(s, tc);
	add_redis_tests(s);
	return check_run(s);
}
