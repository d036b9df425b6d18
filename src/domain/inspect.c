/*
 * inspect.c - the read-only view of inspect.h: one Lua script per query
 * (src/state/lua/inspect_*.lua; the scheduler's ones run after
 * sched_prelude.lua, so they read the keys exactly as the scheduler's own
 * scripts name them), replies turned into the plain structs of the
 * header.  The summary is a fixed batch of three commands (the
 * scheduler's counters with the operations by stage of opstats:{i}, the
 * buckets' counters, the master's lease set)
 * joined when the last reply is in.  Holds no state but the config
 * pointer and the script ids.
 */
#include "domain/inspect.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "domain/master.h"
#include "domain/sched.h"
#include "state/buckets_keys.h"
#include "state/keys.h"
#include "state/lua.h"
#include "state/store.h"

#define MOD "inspect"
/* Queue entries looked at for a platform's oldest queued job. */
#define OLDEST_HEAD 16

enum { I_BOTS, I_QUEUES, I_OPS, I_SUM, I_BUILDS, I_COUNT };
static const char *const script_name[I_COUNT] = {
	[I_BOTS] = "inspect_bots", [I_QUEUES] = "inspect_queues", [I_OPS] = "inspect_ops",
	[I_SUM] = "inspect_sum",   [I_BUILDS] = "inspect_builds",
};
static int script_id[I_COUNT];
static const struct cfg *icfg;

int inspect_init(void)
{
	const char *prelude = lua_source("sched_prelude");
	for (int i = 0; i < I_COUNT; i++) {
		char *text = i == I_BUILDS ? xstrdup(lua_source(script_name[i]))
					   : xasprintf("%s%s", prelude, lua_source(script_name[i]));
		script_id[i] = store_script_register(script_name[i], text);
		free(text);
		if (script_id[i] < 0)
			return script_id[i];
	}
	return 0;
}

void inspect_configure(const struct cfg *cfg)
{
	icfg = cfg;
}

const char *inspect_bot_state_name(int state)
{
	static const char *const names[] = {"UNSPECIFIED", "OK", "UNHEALTHY", "HOST_REBOOTING",
					    "BOT_TERMINATING"};
	return state > 0 && state < (int)ARRAY_LEN(names) ? names[state] : names[0];
}

/* ---- reply readers ---------------------------------------------------- */

static const redisReply *el(const redisReply *r, size_t i)
{
	if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements)
		return NULL;
	return r->element[i];
}

static char *el_str(const redisReply *r, size_t i)
{
	const redisReply *e = el(r, i);
	if (e && (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS))
		return xstrndup(e->str, e->len);
	if (e && e->type == REDIS_REPLY_INTEGER)
		return xasprintf("%lld", e->integer);
	return xstrdup("");
}

static int64_t el_int(const redisReply *r, size_t i)
{
	const redisReply *e = el(r, i);
	if (!e)
		return 0;
	if (e->type == REDIS_REPLY_INTEGER)
		return e->integer;
	if (e->type == REDIS_REPLY_STRING)
		return strtoll(e->str, NULL, 10);
	return 0;
}

static int reply_rc(const redisReply *r, const char *what)
{
	int rc = store_reply_rc(r);
	if (rc == 0 && r->type != REDIS_REPLY_ARRAY)
		rc = ERR_STORE_REPLY;
	if (rc == ERR_STORE_REPLY)
		LOGE(MOD, "%s: unexpected reply from Redis%s%s", what,
		     r && r->type == REDIS_REPLY_ERROR ? ": " : "",
		     r && r->type == REDIS_REPLY_ERROR ? r->str : "");
	return rc;
}

/* ---- running scripts ---------------------------------------------------- */

struct req;
/* What one list query (bots, queues, operations) is: its script, what a
 * log line calls it, how its reply becomes the result, and how the result
 * reaches the caller's typed callback and is freed afterwards. */
struct query {
	int script;
	const char *what;
	void *(*parse)(const redisReply *r, const char *instance);
	void (*answer)(const struct req *q, int rc, void *res);
};

struct req {
	const struct query *qd;
	void (*fn)(void); /* the caller's callback, cast back by qd->answer */
	void *arg;
	char *instance;
};

static void req_free(struct req *q)
{
	free(q->instance);
	free(q);
}

/* Run a scheduler script: the prelude's two shared keys and namespace,
 * then the script's own keys and arguments.  Returns store_evalsha's
 * code; cb is not called on failure (the caller frees its argument). */
static int run_sched(int s, store_cb cb, void *arg, const char *const *keys, int nkeys,
		     const char *const *args, int nargs)
{
	int n = 2 + nkeys + 1 + nargs, k = 0;
	const char **v = xcalloc((size_t)n, sizeof(*v));
	char *deadlines = keys_sched("deadlines"), *retire = keys_sched("retire");
	v[k++] = deadlines;
	v[k++] = retire;
	for (int i = 0; i < nkeys; i++)
		v[k++] = keys[i];
	v[k++] = keys_ns();
	for (int i = 0; i < nargs; i++)
		v[k++] = args[i];
	int rc = store_evalsha(script_id[s], cb, arg, 2 + nkeys, 1 + nargs, v, NULL);
	free(v);
	free(deadlines);
	free(retire);
	return rc;
}

static void query_reply(redisReply *r, void *arg)
{
	struct req *q = arg;
	int rc = reply_rc(r, q->qd->what);
	q->qd->answer(q, rc, rc == 0 ? q->qd->parse(r, q->instance) : NULL);
	req_free(q);
}

/* Start a list query; keys (malloc'd) are freed here.  Returns
 * run_sched's code (cb is then never called). */
static int query_run(const struct query *qd, void (*fn)(void), void *arg, const char *instance,
		     char **keys, int nkeys, const char *const *args, int nargs)
{
	struct req *q = xcalloc(1, sizeof(*q));
	q->qd = qd;
	q->fn = fn;
	q->arg = arg;
	q->instance = xstrdup(instance);
	int rc = run_sched(qd->script, query_reply, q, (const char *const *)keys, nkeys, args,
			   nargs);
	for (int i = 0; i < nkeys; i++)
		free(keys[i]);
	if (rc != 0)
		req_free(q);
	return rc;
}

/* Row i of a list reply, NULL when it is not a row. */
static const redisReply *row_at(const redisReply *r, size_t i)
{
	const redisReply *row = el(r, i);
	return row && row->type == REDIS_REPLY_ARRAY ? row : NULL;
}

/* The steal helpers: a copy of *r takes its contents, *r is left empty. */
static void *steal(void *r, size_t size)
{
	void *c = xmalloc(size);
	memcpy(c, r, size);
	memset(r, 0, size);
	return c;
}

static int clamp(int v, int def, int max)
{
	return v <= 0 ? def : v > max ? max : v;
}

static void fmt_int(char *buf, size_t size, long long v)
{
	snprintf(buf, size, "%lld", v);
}

/* ---- bots --------------------------------------------------------------- */

void inspect_bots_free(struct inspect_bots *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		struct inspect_bot *b = &r->bots[i];
		free(b->session);
		free(b->bot_id);
		free(b->owner);
		free(b->props);
		free(b->lease_job);
		free(b->lease_state);
		free(b->lease_action);
		for (size_t j = 0; j < b->n_lease_ops; j++)
			free(b->lease_ops[j]);
		free(b->lease_ops);
	}
	free(r->bots);
	free(r->instance);
	free(r);
}

struct inspect_bots *inspect_bots_steal(struct inspect_bots *r)
{
	return steal(r, sizeof(*r));
}

static void *bots_parse(const redisReply *r, const char *instance)
{
	struct inspect_bots *res = xcalloc(1, sizeof(*res));
	res->instance = xstrdup(instance);
	res->total = (size_t)el_int(r, 0);
	res->bots = xcalloc(r->elements, sizeof(*res->bots));
	for (size_t i = 1; i < r->elements; i++) {
		const redisReply *row = row_at(r, i);
		if (!row)
			continue;
		struct inspect_bot *b = &res->bots[res->n++];
		b->session = el_str(row, 0);
		b->bot_id = el_str(row, 1);
		b->owner = el_str(row, 2);
		b->state = (int)el_int(row, 3);
		b->props = el_str(row, 4);
		b->lease_job = el_str(row, 5);
		b->lease_state = el_str(row, 6);
		b->lease_action = el_str(row, 7);
		b->busy = b->lease_job[0] != '\0';
		b->created_us = el_int(row, 8);
		b->last_seen_us = el_int(row, 9);
		b->expire_us = el_int(row, 10);
		const redisReply *ops = el(row, 11);
		size_t nops = ops && ops->type == REDIS_REPLY_ARRAY ? ops->elements : 0;
		if (nops > INSPECT_MAX_LEASE_OPS)
			nops = INSPECT_MAX_LEASE_OPS;
		b->lease_ops = xcalloc(nops ? nops : 1, sizeof(char *));
		for (size_t j = 0; j < nops; j++)
			b->lease_ops[b->n_lease_ops++] = el_str(ops, j);
	}
	if (res->total < res->n)
		res->total = res->n;
	res->truncated = res->n < res->total;
	return res;
}

static void bots_answer(const struct req *q, int rc, void *res)
{
	((inspect_bots_cb)q->fn)(q->arg, rc, res);
	inspect_bots_free(res);
}

static const struct query bots_query = {I_BOTS, "listing bots", bots_parse, bots_answer};

int inspect_bots(const char *instance, int limit, inspect_bots_cb cb, void *arg)
{
	if (!instance || !cb)
		return -EINVAL;
	char lim[16], now[24], maxops[16];
	fmt_int(lim, sizeof lim, clamp(limit, INSPECT_BOTS_DEFAULT, INSPECT_MAX_BOTS));
	fmt_int(now, sizeof now, (long long)now_us());
	fmt_int(maxops, sizeof maxops, INSPECT_MAX_LEASE_OPS);
	char *keys[] = {keys_bots(instance)};
	const char *args[] = {lim, now, maxops};
	return query_run(&bots_query, (void (*)(void))cb, arg, instance, keys, 1, args, 3);
}

/* ---- queues ------------------------------------------------------------- */

void inspect_queues_free(struct inspect_queues *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		free(r->queues[i].platform);
	free(r->queues);
	free(r->instance);
	free(r);
}

struct inspect_queues *inspect_queues_steal(struct inspect_queues *r)
{
	return steal(r, sizeof(*r));
}

static void *queues_parse(const redisReply *r, const char *instance)
{
	struct inspect_queues *res = xcalloc(1, sizeof(*res));
	res->instance = xstrdup(instance);
	res->truncated = el_int(r, 0) != 0;
	res->queues = xcalloc(r->elements, sizeof(*res->queues));
	for (size_t i = 1; i < r->elements; i++) {
		const redisReply *row = row_at(r, i);
		if (!row)
			continue;
		struct inspect_queue *e = &res->queues[res->n++];
		e->platform = el_str(row, 0);
		e->queued = el_int(row, 1);
		e->oldest_us = el_int(row, 2);
		e->bots = el_int(row, 3);
		e->bots_busy = el_int(row, 4);
	}
	return res;
}

static void queues_answer(const struct req *q, int rc, void *res)
{
	((inspect_queues_cb)q->fn)(q->arg, rc, res);
	inspect_queues_free(res);
}

static const struct query queues_query = {I_QUEUES, "listing queues", queues_parse, queues_answer};

int inspect_queues(const char *instance, inspect_queues_cb cb, void *arg)
{
	if (!instance || !cb)
		return -EINVAL;
	char maxp[16], now[24], maxs[16], head[16];
	fmt_int(maxp, sizeof maxp, INSPECT_MAX_PLATFORMS);
	fmt_int(now, sizeof now, (long long)now_us());
	fmt_int(maxs, sizeof maxs, INSPECT_MAX_BUSY_SCAN);
	fmt_int(head, sizeof head, OLDEST_HEAD);
	char *keys[] = {keys_platforms(instance), keys_bots(instance)};
	const char *args[] = {instance, maxp, now, maxs, head};
	return query_run(&queues_query, (void (*)(void))cb, arg, instance, keys, 2, args, 5);
}

/* ---- operations --------------------------------------------------------- */

void inspect_ops_free(struct inspect_ops *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		struct inspect_op *o = &r->ops[i];
		free(o->name);
		free(o->action);
		free(o->job);
		free(o->owner);
		free(o->bot_id);
		free(o->session);
		free(o->message);
	}
	free(r->ops);
	free(r->instance);
	free(r);
}

struct inspect_ops *inspect_ops_steal(struct inspect_ops *r)
{
	return steal(r, sizeof(*r));
}

/* The exit code, and the worker when the row has no bot, from the
 * recorded ActionResult. */
static void op_result(struct inspect_op *o, const redisReply *res)
{
	if (!res || res->type != REDIS_REPLY_STRING || res->len == 0)
		return;
	Build__Bazel__Remote__Execution__V2__ActionResult *ar =
		build__bazel__remote__execution__v2__action_result__unpack(
			NULL, res->len, (const uint8_t *)res->str);
	if (!ar)
		return;
	o->has_exit = true;
	o->exit_code = ar->exit_code;
	if (!o->bot_id[0] && ar->execution_metadata && ar->execution_metadata->worker &&
	    ar->execution_metadata->worker[0]) {
		free(o->bot_id);
		o->bot_id = xstrdup(ar->execution_metadata->worker);
	}
	build__bazel__remote__execution__v2__action_result__free_unpacked(ar, NULL);
}

static void *ops_parse(const redisReply *r, const char *instance)
{
	struct inspect_ops *res = xcalloc(1, sizeof(*res));
	res->instance = xstrdup(instance);
	res->truncated = el_int(r, 0) != 0;
	res->ops = xcalloc(r->elements, sizeof(*res->ops));
	for (size_t i = 1; i < r->elements; i++) {
		const redisReply *row = row_at(r, i);
		if (!row)
			continue;
		struct inspect_op *o = &res->ops[res->n++];
		o->name = el_str(row, 0);
		char *st = el_str(row, 1);
		o->stage = sched_stage_parse(st);
		if (o->stage < 0)
			o->stage = SCHED_UNKNOWN;
		free(st);
		o->action = el_str(row, 2);
		o->job = el_str(row, 3);
		o->owner = el_str(row, 4);
		o->bot_id = el_str(row, 5);
		o->session = el_str(row, 6);
		o->created_us = el_int(row, 7);
		o->queued_us = el_int(row, 8);
		o->started_us = el_int(row, 9);
		o->completed_us = el_int(row, 10);
		o->cached = el_int(row, 11) != 0;
		o->status = (int)el_int(row, 12);
		o->message = el_str(row, 13);
		if (o->stage != SCHED_EXECUTING) {
			free(o->session);
			o->session = xstrdup("");
		}
		op_result(o, el(row, 14));
	}
	return res;
}

static void ops_answer(const struct req *q, int rc, void *res)
{
	((inspect_ops_cb)q->fn)(q->arg, rc, res);
	inspect_ops_free(res);
}

static const struct query ops_query = {I_OPS, "listing operations", ops_parse, ops_answer};

int inspect_operations(const char *instance, int stage, int limit, inspect_ops_cb cb, void *arg)
{
	if (!instance || !cb || stage < 0 || stage > SCHED_COMPLETED)
		return -EINVAL;
	char lim[16], scan[16];
	fmt_int(lim, sizeof lim, clamp(limit, INSPECT_OPS_DEFAULT, INSPECT_MAX_OPS));
	fmt_int(scan, sizeof scan, INSPECT_MAX_OPS_SCAN);
	char *keys[] = {keys_ops(instance)};
	const char *args[] = {lim, stage ? sched_stage_name(stage) : "", scan};
	return query_run(&ops_query, (void (*)(void))cb, arg, instance, keys, 1, args, 3);
}

/* ---- summary ------------------------------------------------------------ */

void inspect_summary_free(struct inspect_summary *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n_instances; i++)
		free(r->instances[i].instance);
	free(r->instances);
	for (size_t i = 0; i < r->n_depth; i++) {
		free(r->depth[i].instance);
		free(r->depth[i].platform);
	}
	free(r->depth);
	for (size_t i = 0; i < r->n_buckets; i++)
		free(r->buckets[i].bucket);
	free(r->buckets);
	free(r->master);
	free(r);
}

struct inspect_summary *inspect_summary_steal(struct inspect_summary *r)
{
	return steal(r, sizeof(*r));
}

/* The batch in flight: answers once `pending` reaches zero. */
struct sum_req {
	inspect_summary_cb cb;
	void *arg;
	int pending;
	int rc; /* the first failure */
	char **instances;
	size_t n_instances;
	struct inspect_summary *res;
};

static void sum_free(struct sum_req *s)
{
	inspect_summary_free(s->res);
	for (size_t i = 0; i < s->n_instances; i++)
		free(s->instances[i]);
	free(s->instances);
	free(s);
}

static void sum_done(struct sum_req *s)
{
	if (--s->pending > 0)
		return;
	s->cb(s->arg, s->rc, s->rc == 0 ? s->res : NULL);
	sum_free(s);
}

/* One reply of the batch: true when it can be read; otherwise its failure
 * is recorded (the first one wins) and the reply counted done. */
static bool sum_reply_ok(struct sum_req *s, int rc)
{
	if (rc == 0)
		return true;
	if (!s->rc)
		s->rc = rc;
	sum_done(s);
	return false;
}

static void sum_sched_reply(redisReply *r, void *arg)
{
	struct sum_req *s = arg;
	if (!sum_reply_ok(s, reply_rc(r, "reading the scheduler's counters")))
		return;
	struct inspect_summary *res = s->res;
	res->jobs_executing = el_int(r, 0);
	res->instances = xcalloc(s->n_instances ? s->n_instances : 1, sizeof(*res->instances));
	size_t ndepth = 0;
	for (size_t i = 0; i < s->n_instances; i++) {
		const redisReply *d = row_at(el(r, i + 1), 5);
		if (d)
			ndepth += d->elements / 2;
	}
	res->depth = xcalloc(ndepth ? ndepth : 1, sizeof(*res->depth));
	for (size_t i = 0; i < s->n_instances; i++) {
		const redisReply *row = el(r, i + 1);
		struct inspect_instance_sum *is = &res->instances[res->n_instances++];
		is->instance = xstrdup(s->instances[i]);
		is->ops = el_int(row, 0);
		is->queued = el_int(row, 1);
		is->bots = el_int(row, 2);
		is->bots_busy = el_int(row, 3);
		if (el_int(row, 4))
			res->truncated = true;
		const redisReply *d = row_at(row, 5);
		for (size_t j = 0; d && j + 1 < d->elements; j += 2) {
			struct inspect_platform_depth *pd = &res->depth[res->n_depth++];
			pd->instance = xstrdup(s->instances[i]);
			pd->platform = el_str(d, j);
			pd->queued = el_int(d, j + 1);
		}
		const redisReply *st = row_at(row, 6);
		is->ops_queued = el_int(st, 0);
		is->ops_executing = el_int(st, 1);
		is->ops_ok = el_int(st, 2);
		is->ops_failed = el_int(st, 3);
		is->ops_cancelled = el_int(st, 4);
	}
	sum_done(s);
}

static void sum_builds_reply(redisReply *r, void *arg)
{
	struct sum_req *s = arg;
	if (!sum_reply_ok(s, reply_rc(r, "reading the buckets' counters")))
		return;
	struct inspect_summary *res = s->res;
	res->builds_leased = el_int(r, 0);
	if (el_int(r, 1))
		res->truncated = true;
	res->buckets = xcalloc(r->elements, sizeof(*res->buckets));
	for (size_t i = 2; i < r->elements; i++) {
		const redisReply *row = row_at(r, i);
		if (!row)
			continue;
		struct inspect_bucket_sum *b = &res->buckets[res->n_buckets++];
		b->bucket = el_str(row, 0);
		b->scheduled = el_int(row, 1);
		b->started = el_int(row, 2);
		b->completed = el_int(row, 3);
	}
	sum_done(s);
}

static void sum_master_reply(redisReply *r, void *arg)
{
	struct sum_req *s = arg;
	int rc = store_reply_rc(r);
	if (rc == 0 && r->type != REDIS_REPLY_INTEGER)
		rc = ERR_STORE_REPLY;
	if (!sum_reply_ok(s, rc))
		return;
	s->res->master_leases = r->integer;
	sum_done(s);
}

/* Queue one more command of the batch (0, or its failure, then counted
 * as the batch's). */
static void sum_queued(struct sum_req *s, int rc)
{
	if (rc == 0)
		s->pending++;
	else if (!s->rc)
		s->rc = rc;
}

/* Keys per instance in inspect_sum.lua's KEYS. */
#define SUM_KEYS 4

int inspect_summary(inspect_summary_cb cb, void *arg)
{
	if (!cb)
		return -EINVAL;
	struct sum_req *s = xcalloc(1, sizeof(*s));
	s->cb = cb;
	s->arg = arg;
	s->res = xcalloc(1, sizeof(*s->res));
	const char *mname = master_running() ? master_name() : NULL;
	s->res->has_master = mname != NULL;
	s->res->master = xstrdup(mname ? mname : "");

	/* The instances that run the scheduler. */
	int ni = icfg ? icfg->n_instances : 0;
	s->instances = xcalloc(ni > 0 ? (size_t)ni : 1, sizeof(char *));
	for (int i = 0; i < ni; i++)
		if (icfg->instances[i].execution)
			s->instances[s->n_instances++] = xstrdup(icfg->instances[i].name);

	size_t nk = s->n_instances * SUM_KEYS, na = 3 + s->n_instances;
	char **keys = xcalloc(nk ? nk : 1, sizeof(char *));
	const char **args = xcalloc(na, sizeof(char *));
	char now[24], maxp[16], maxs[16];
	fmt_int(now, sizeof now, (long long)now_us());
	fmt_int(maxp, sizeof maxp, INSPECT_MAX_PLATFORMS);
	fmt_int(maxs, sizeof maxs, INSPECT_MAX_BUSY_SCAN);
	args[0] = now;
	args[1] = maxp;
	args[2] = maxs;
	for (size_t i = 0; i < s->n_instances; i++) {
		char **k = &keys[i * SUM_KEYS];
		k[0] = keys_ops(s->instances[i]);
		k[1] = keys_platforms(s->instances[i]);
		k[2] = keys_bots(s->instances[i]);
		k[3] = keys_opstats(s->instances[i]);
		args[3 + i] = s->instances[i];
	}
	/* The scheduler's script, plus one extra count so no reply can finish
	 * the batch before all three commands are queued. */
	s->pending = 2;
	int rc = run_sched(I_SUM, sum_sched_reply, s, (const char *const *)keys, (int)nk, args,
			   (int)na);
	for (size_t i = 0; i < nk; i++)
		free(keys[i]);
	free(keys);
	free(args);
	if (rc != 0) {
		/* Nothing queued: no callback. */
		sum_free(s);
		return rc;
	}
	char *base = bkeys_base(), *bk = bkeys_buckets(), *leased = bkeys_leased();
	char maxb[16];
	fmt_int(maxb, sizeof maxb, INSPECT_MAX_BUCKETS);
	const char *v[] = {bk, leased, base, maxb};
	sum_queued(s, store_evalsha(script_id[I_BUILDS], sum_builds_reply, s, 2, 2, v, NULL));
	free(base);
	free(bk);
	free(leased);
	if (s->rc == 0 && s->res->has_master) {
		char *mk = keys_master(mname);
		const char *mv[] = {"SCARD", mk};
		sum_queued(s, store_commandargv(sum_master_reply, s, 2, mv, NULL));
		free(mk);
	}
	/* Drop the extra count: the callback comes with the last reply, which
	 * is always later (s->rc set above fails the whole batch then). */
	s->pending--;
	return 0;
}
