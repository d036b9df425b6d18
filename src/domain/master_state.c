/*
 * master_state.c - the build master's durable state (master_int.h,
 * "master_state.c"): what it holds lives in Redis under the keys that
 * src/state/keys.c lists ("The build master"), written by the
 * master_save/master_drop scripts when a lease is taken, at each step's
 * start, operation and end, and dropped when the build is released; on
 * start a master reads it back and resumes every build whose recorded
 * lease key the Buckets service still accepts (a Heartbeat) (re-attaching to the running
 * operation). Also the changes: each (change id, revision) is recorded once and later builds naming
 * it get the recorded form.  Redis is this reactord's even when the Buckets service or the executor
 * are elsewhere.  Writes are best effort: with Redis down a build runs on, and a restart simply
 * cannot resume it (its lease expires).
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/err.h"
#include "core/json.h"
#include "core/log.h"
#include "domain/master.h"
#include "domain/master_int.h"
#include "state/keys.h"
#include "state/lua.h"
#include "state/store.h"

#define BK_PFX	      "/reactor.buckets.v1.Buckets/"
#define CALL_TIMEOUT  (30LL * 1000000)
#define STEP_KEEP_S   (24 * 3600) /* step records after the build is released */
#define RESUME_MAX_US (10LL * 1000000)

static struct {
	int save, drop, change; /* script ids */
	bool registered;
	bool resuming, observing;
	int pending; /* held builds still being read back */
	struct event_base *base;
	struct event *deadline;
} ms = {.save = -1, .drop = -1, .change = -1};

int master_state_init(void)
{
	if (ms.registered)
		return 0;
	ms.save = store_script_register("master_save", lua_source("master_save"));
	if (ms.save < 0)
		return ms.save;
	ms.drop = store_script_register("master_drop", lua_source("master_drop"));
	if (ms.drop < 0)
		return ms.drop;
	ms.change = store_script_register("master_change", lua_source("master_change"));
	if (ms.change < 0)
		return ms.change;
	ms.registered = true;
	return 0;
}

/* ---- script arguments --------------------------------------------------------------- */

struct margs {
	char **v;
	int n;
};

static void arg(struct margs *a, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void arg(struct margs *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	a->v = xrealloc(a->v, (size_t)(a->n + 1) * sizeof(*a->v));
	a->v[a->n++] = xvasprintf(fmt, ap);
	va_end(ap);
}

static void arg_own(struct margs *a, char *s)
{
	a->v = xrealloc(a->v, (size_t)(a->n + 1) * sizeof(*a->v));
	a->v[a->n++] = s;
}

static void margs_free(struct margs *a)
{
	for (int i = 0; i < a->n; i++)
		free(a->v[i]);
	free(a->v);
}

static void run(int script, store_cb cb, void *cbarg, int nkeys, struct margs *a, const char *what,
		int64_t id)
{
	int rc = script < 0 ? ERR_STORE_DOWN
			    : store_evalsha(script, cb, cbarg, nkeys, a->n - nkeys,
					    (const char **)a->v, NULL);
	if (rc != 0)
		LOGD(MMOD, "build %" PRId64 ": %s not recorded (%s)", id, what, err_name(rc));
	margs_free(a);
}

/* ---- JSON of the workspace and the step records ------------------------------------- */

static void q(char **s, size_t *n, const char *t)
{
	json_quote(s, n, t ? t : "", t ? strlen(t) : 0);
}

static void add(char **s, size_t *n, const char *fmt, ...) PRINTF_LIKE(3, 4);
static void add(char **s, size_t *n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *t = xvasprintf(fmt, ap);
	va_end(ap);
	size_t l = strlen(t);
	*s = xrealloc(*s, *n + l + 1);
	memcpy(*s + *n, t, l + 1);
	*n += l;
	free(t);
}

static char *workspace_json(const struct mbuild *b)
{
	char *s = NULL;
	size_t n = 0;
	add(&s, &n, "[");
	for (int i = 0; i < b->nfiles; i++) {
		char d[DIGEST_STR_LEN];
		add(&s, &n, "%s[", i ? "," : "");
		q(&s, &n, b->files[i].path);
		add(&s, &n, ",\"%s\",%d]", digest_str(&b->files[i].d, d, sizeof(d)),
		    b->files[i].exec ? 1 : 0);
	}
	add(&s, &n, "]");
	return s;
}

static char *records_json(const struct mbuild *b)
{
	char *s = NULL;
	size_t n = 0;
	add(&s, &n, "[");
	for (int i = 0; i < b->nrecs; i++) {
		const struct mb_steprec *r = &b->recs[i];
		add(&s, &n, "%s{\"name\":", i ? "," : "");
		q(&s, &n, r->name);
		add(&s, &n,
		    ",\"status\":\"%s\",\"exit_code\":%d,\"duration_us\":%" PRId64
		    ",\"cached\":%s,\"action\":\"%s\",\"stdout\":\"%s\",\"stderr\":\"%s\","
		    "\"worker\":",
		    r->status, r->exit_code, r->duration_us, r->cached ? "true" : "false",
		    r->action, r->out, r->err);
		q(&s, &n, r->worker);
		add(&s, &n, "}");
	}
	add(&s, &n, "]");
	return s;
}

/* "hash/size" -> *d; false when it does not parse. */
static bool digest_ref(const char *s, struct digest *d)
{
	const char *sl = s ? strchr(s, '/') : NULL;
	if (!sl)
		return false;
	char *hex = xstrndup(s, (size_t)(sl - s));
	char *end;
	long long size = strtoll(sl + 1, &end, 10);
	bool ok = *end == '\0' && digest_parse(hex, size, d, NULL) == 0;
	free(hex);
	return ok;
}

static const char *str_of(const struct json *o, const char *k)
{
	const struct json *v = o ? json_get(o, k) : NULL;
	return v && v->type == JSON_STRING ? v->str : NULL;
}

static int64_t int_of(const struct json *o, const char *k)
{
	const struct json *v = o ? json_get(o, k) : NULL;
	return v && v->type == JSON_NUMBER ? (v->is_int ? v->i : (int64_t)v->num) : 0;
}

static void restore_workspace(struct mbuild *b, const char *text)
{
	char e[64];
	struct json *j = text ? json_parse(text, strlen(text), e, sizeof(e)) : NULL;
	for (size_t i = 0; j && j->type == JSON_ARRAY && i < j->n; i++) {
		const struct json *f = j->items[i];
		struct digest d;
		if (f->type != JSON_ARRAY || f->n != 3 || f->items[0]->type != JSON_STRING ||
		    f->items[1]->type != JSON_STRING || !digest_ref(f->items[1]->str, &d))
			continue;
		b->files = xrealloc(b->files, (size_t)(b->nfiles + 1) * sizeof(*b->files));
		b->files[b->nfiles++] = (struct mb_file){.path = xstrdup(f->items[0]->str),
							 .d = d,
							 .exec = f->items[2]->type == JSON_NUMBER &&
								 f->items[2]->i != 0};
	}
	json_free(j);
}

static void restore_records(struct mbuild *b, const char *text)
{
	static const char *const statuses[] = {"SUCCESS", "FAILURE", "INFRA_FAILURE"};
	char e[64];
	struct json *j = text ? json_parse(text, strlen(text), e, sizeof(e)) : NULL;
	for (size_t i = 0; j && j->type == JSON_ARRAY && i < j->n; i++) {
		const struct json *o = j->items[i];
		if (o->type != JSON_OBJECT || !str_of(o, "name"))
			continue;
		b->recs = xrealloc(b->recs, (size_t)(b->nrecs + 1) * sizeof(*b->recs));
		struct mb_steprec *r = &b->recs[b->nrecs++];
		memset(r, 0, sizeof(*r));
		r->name = xstrdup(str_of(o, "name"));
		r->status = statuses[2];
		for (size_t k = 0; k < ARRAY_LEN(statuses); k++)
			if (str_of(o, "status") && strcmp(str_of(o, "status"), statuses[k]) == 0)
				r->status = statuses[k];
		r->exit_code = (int)int_of(o, "exit_code");
		r->duration_us = int_of(o, "duration_us");
		const struct json *c = json_get(o, "cached");
		r->cached = c && c->type == JSON_BOOL && c->b;
		snprintf(r->action, sizeof(r->action), "%s", str_of(o, "action") ?: "");
		snprintf(r->out, sizeof(r->out), "%s", str_of(o, "stdout") ?: "");
		snprintf(r->err, sizeof(r->err), "%s", str_of(o, "stderr") ?: "");
		if (str_of(o, "worker") && *str_of(o, "worker"))
			r->worker = xstrdup(str_of(o, "worker"));
	}
	json_free(j);
}

/* ---- writes ------------------------------------------------------------------------- */

/* The keys of master_save: the held set, the build's hash and (step >= 0)
 * the step's hash. */
static int save_keys(struct margs *a, const struct mbuild *b, int step)
{
	arg_own(a, keys_master(master_name()));
	arg_own(a, keys_master_build(master_name(), b->id));
	if (step < 0)
		return 2;
	arg_own(a, keys_mstep(b->id, step));
	return 3;
}

void mstate_hold(struct mbuild *b)
{
	struct margs a = {0};
	int nk = save_keys(&a, b, -1);
	arg(&a, "%" PRId64, b->id);
	arg(&a, "new");
	arg(&a, "9");
	arg(&a, "lease_key");
	arg(&a, "%" PRId64, b->lease_key);
	arg(&a, "bucket");
	arg(&a, "%s", b->bucket);
	arg(&a, "builder");
	arg(&a, "%s", b->builder_name);
	arg(&a, "params");
	arg(&a, "%s", b->params_json);
	arg(&a, "leased");
	arg(&a, "%" PRId64, now_us());
	arg(&a, "step");
	arg(&a, "-1");
	arg(&a, "op");
	arg(&a, "%s", "");
	arg(&a, "workspace");
	arg(&a, "[]");
	arg(&a, "records");
	arg(&a, "[]");
	b->saved = true;
	run(ms.save, NULL, NULL, nk, &a, "lease", b->id);
}

void mstate_step_start(struct mbuild *b)
{
	if (!b->saved || b->gone)
		return;
	free(b->op_name);
	b->op_name = NULL;
	b->step_started_us = now_us();
	char ad[DIGEST_STR_LEN];
	digest_str(&b->action_d, ad, sizeof(ad));
	struct margs a = {0};
	int nk = save_keys(&a, b, b->step);
	arg(&a, "%" PRId64, b->id);
	arg(&a, "update");
	arg(&a, "6");
	arg(&a, "step");
	arg(&a, "%d", b->step);
	arg(&a, "op");
	arg(&a, "%s", "");
	arg(&a, "step_started");
	arg(&a, "%" PRId64, b->step_started_us);
	arg(&a, "action");
	arg(&a, "%s", ad);
	arg(&a, "workspace");
	arg_own(&a, workspace_json(b));
	arg(&a, "records");
	arg_own(&a, records_json(b));
	/* The step's record, every field so a re-run leaves nothing stale. */
	const char *kv[][2] = {{"name", b->bld->steps[b->step].name},
			       {"status", "RUNNING"},
			       {"master", master_name()},
			       {"action", ad},
			       {"operation", ""},
			       {"exit_code", ""},
			       {"duration_us", ""},
			       {"cached", ""},
			       {"stdout", ""},
			       {"stderr", ""},
			       {"worker", ""}};
	for (size_t i = 0; i < ARRAY_LEN(kv); i++) {
		arg(&a, "%s", kv[i][0]);
		arg(&a, "%s", kv[i][1]);
	}
	arg(&a, "started");
	arg(&a, "%" PRId64, b->step_started_us);
	run(ms.save, NULL, NULL, nk, &a, "step start", b->id);
}

void mstate_step_op(struct mbuild *b, const char *op)
{
	free(b->op_name);
	b->op_name = xstrdup(op);
	if (!b->saved || b->gone)
		return;
	struct margs a = {0};
	int nk = save_keys(&a, b, b->step);
	arg(&a, "%" PRId64, b->id);
	arg(&a, "update");
	arg(&a, "1");
	arg(&a, "op");
	arg(&a, "%s", op);
	arg(&a, "operation");
	arg(&a, "%s", op);
	run(ms.save, NULL, NULL, nk, &a, "operation", b->id);
}

void mstate_step_end(struct mbuild *b)
{
	if (!b->saved || b->gone || b->nrecs == 0)
		return;
	const struct mb_steprec *r = &b->recs[b->nrecs - 1];
	struct margs a = {0};
	int nk = save_keys(&a, b, b->step);
	arg(&a, "%" PRId64, b->id);
	arg(&a, "update");
	arg(&a, "2");
	arg(&a, "op");
	arg(&a, "%s", "");
	arg(&a, "records");
	arg_own(&a, records_json(b));
	arg(&a, "status");
	arg(&a, "%s", r->status);
	arg(&a, "exit_code");
	arg(&a, "%d", r->exit_code);
	arg(&a, "duration_us");
	arg(&a, "%" PRId64, r->duration_us);
	arg(&a, "cached");
	arg(&a, "%d", r->cached ? 1 : 0);
	arg(&a, "stdout");
	arg(&a, "%s", r->out);
	arg(&a, "stderr");
	arg(&a, "%s", r->err);
	arg(&a, "worker");
	arg(&a, "%s", r->worker ? r->worker : "");
	run(ms.save, NULL, NULL, nk, &a, "step end", b->id);
}

/* Drop build id's record: nsteps step records get their expiry. */
static void drop_id(int64_t id, int nsteps)
{
	struct margs a = {0};
	arg_own(&a, keys_master(master_name()));
	arg_own(&a, keys_master_build(master_name(), id));
	for (int i = 0; i < nsteps; i++)
		arg_own(&a, keys_mstep(id, i));
	int nk = a.n;
	arg(&a, "%" PRId64, id);
	arg(&a, "%d", STEP_KEEP_S);
	run(ms.drop, NULL, NULL, nk, &a, "release", id);
}

void mstate_drop(struct mbuild *b)
{
	if (!b->saved)
		return;
	b->saved = false;
	drop_id(b->id, b->bld ? b->bld->n_steps : b->nrecs);
}

/* ---- changes ------------------------------------------------------------------------ */

/* The changes of one build being recorded. */
struct mchanges {
	struct mbuild *b;
	struct json *params; /* the parsed parameters */
	char **recorded;     /* per change: the recorded JSON (NULL: as given) */
	size_t n;
	int pending;
};

static void changes_finish(struct mchanges *mc)
{
	struct mbuild *b = mc->b;
	if (!b->gone) {
		/* The parameters again, each change as recorded. */
		bool any = false;
		for (size_t i = 0; i < mc->n; i++)
			any = any || mc->recorded[i];
		if (any) {
			const struct json *p = mc->params;
			char *s = NULL;
			size_t n = 0;
			add(&s, &n, "{");
			for (size_t i = 0; i < p->n; i++) {
				add(&s, &n, "%s", i ? "," : "");
				q(&s, &n, p->keys[i]);
				add(&s, &n, ":");
				if (strcmp(p->keys[i], "changes") != 0) {
					mb_json_text(&s, &n, p->items[i]);
					continue;
				}
				const struct json *ch = p->items[i];
				add(&s, &n, "[");
				for (size_t k = 0; k < ch->n; k++) {
					add(&s, &n, "%s", k ? "," : "");
					if (mc->recorded[k])
						add(&s, &n, "%s", mc->recorded[k]);
					else
						mb_json_text(&s, &n, ch->items[k]);
				}
				add(&s, &n, "]");
			}
			add(&s, &n, "}");
			free(b->params_json);
			b->params_json = s;
			struct margs a = {0};
			int nk = save_keys(&a, b, -1);
			arg(&a, "%" PRId64, b->id);
			arg(&a, "update");
			arg(&a, "1");
			arg(&a, "params");
			arg(&a, "%s", b->params_json);
			run(ms.save, NULL, NULL, nk, &a, "parameters", b->id);
		}
		const struct cfg_builder *bl = cfg_builder_find(master_cfg(), b->builder_name);
		if (bl)
			mb_run(b, bl);
		else
			mb_release(b, "builder no longer configured");
	}
	for (size_t i = 0; i < mc->n; i++)
		free(mc->recorded[i]);
	free(mc->recorded);
	json_free(mc->params);
	mb_unref(b);
	free(mc);
}

struct mchange_one {
	struct mchanges *mc;
	size_t i;
};

static void change_done(struct redisReply *reply, void *arg)
{
	struct mchange_one *one = arg;
	struct mchanges *mc = one->mc;
	if (reply && reply->type == REDIS_REPLY_STRING) {
		/* Only what parses replaces the change. */
		char e[32];
		struct json *j = json_parse(reply->str, reply->len, e, sizeof(e));
		if (j && j->type == JSON_OBJECT)
			mc->recorded[one->i] = xstrndup(reply->str, reply->len);
		json_free(j);
	} else {
		LOGW(MMOD, "build %" PRId64 ": change %zu not recorded: %s", mc->b->id, one->i,
		     reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no reply");
	}
	free(one);
	if (--mc->pending == 0)
		changes_finish(mc);
}

void mstate_changes(struct mbuild *b, const struct cfg_builder *bl)
{
	char e[64];
	struct json *p = json_parse(b->params_json, strlen(b->params_json), e, sizeof(e));
	const struct json *ch = p && p->type == JSON_OBJECT ? json_get(p, "changes") : NULL;
	if (!ch || ch->type != JSON_ARRAY || ch->n == 0) {
		json_free(p);
		mb_run(b, bl);
		return;
	}
	struct mchanges *mc = xcalloc(1, sizeof(*mc));
	mc->b = b;
	mc->params = p;
	mc->n = ch->n;
	mc->recorded = xcalloc(ch->n, sizeof(char *));
	mc->pending = 1; /* this function's own, so nothing finishes before it returns */
	mb_ref(b);
	for (size_t i = 0; i < ch->n; i++) {
		const struct json *c = ch->items[i];
		const char *id = c->type == JSON_OBJECT ? str_of(c, "id") : NULL;
		const char *rev = c->type == JSON_OBJECT ? str_of(c, "revision") : NULL;
		if (!id || !rev || !*id || !*rev)
			continue; /* validation is the run's */
		struct margs a = {0};
		arg_own(&a, keys_mchange(id, rev));
		arg(&a, "%s", id);
		arg(&a, "%s", rev);
		char *s = NULL;
		size_t n = 0;
		mb_json_text(&s, &n, c);
		arg_own(&a, s);
		arg(&a, "%" PRId64, b->id);
		arg(&a, "%" PRId64, now_us());
		struct mchange_one *one = xcalloc(1, sizeof(*one));
		one->mc = mc;
		one->i = i;
		int rc = ms.change < 0 ? ERR_STORE_DOWN
				       : store_evalsha(ms.change, change_done, one, 1, a.n - 1,
						       (const char **)a.v, NULL);
		margs_free(&a);
		if (rc != 0) {
			LOGW(MMOD, "build %" PRId64 ": change %s/%s not recorded (%s)", b->id, id,
			     rev, err_name(rc));
			free(one);
			continue;
		}
		mc->pending++;
	}
	if (--mc->pending == 0) {
		/* Nothing went to Redis: go on as given (the run validates). */
		for (size_t i = 0; i < mc->n; i++)
			free(mc->recorded[i]);
		free(mc->recorded);
		json_free(mc->params);
		free(mc);
		mb_unref(b);
		mb_run(b, bl);
	}
}

/* ---- restart ------------------------------------------------------------------------ */

/* One held build read back from Redis. */
struct mres {
	int64_t id;
	int64_t lease_key;
	int step;
	int64_t step_started;
	char *bucket, *builder, *params, *op, *workspace, *records, *action;
};

static void mres_free(struct mres *r)
{
	free(r->bucket);
	free(r->builder);
	free(r->params);
	free(r->op);
	free(r->workspace);
	free(r->records);
	free(r->action);
	free(r);
}

static void resume_finish(void)
{
	if (!ms.resuming)
		return;
	ms.resuming = false;
	if (ms.deadline)
		event_del(ms.deadline);
	LOGD(MMOD, "resume: done");
	/* The resume renewed each lease; from now on they beat together. */
	master_heartbeat_now();
	master_wake();
}

static void resume_one_done(void)
{
	if (--ms.pending == 0)
		resume_finish();
}

/* Steps whose records a drop should expire. */
static int nsteps_of(const struct mres *r)
{
	const struct cfg_builder *bl =
		r->builder ? cfg_builder_find(master_cfg(), r->builder) : NULL;
	return bl ? bl->n_steps : r->step + 1;
}

static void adopt(struct mres *r, const BKM(Build) * bb)
{
	const struct cfg_builder *bl = cfg_builder_find(master_cfg(), r->builder);
	if (!bl) {
		LOGW(MMOD,
		     "build %" PRId64 ": builder %s is no longer configured; not resumed "
		     "(its lease will expire)",
		     r->id, r->builder);
		drop_id(r->id, r->step + 1);
		return;
	}
	struct mbuild *b = xcalloc(1, sizeof(*b));
	b->refs = 1;
	b->id = r->id;
	b->lease_key = r->lease_key;
	b->bucket = xstrdup(r->bucket ? r->bucket : bb->bucket);
	b->params_json = xstrdup(r->params && *r->params ? r->params : bb->parameters_json);
	b->builder_name = xstrdup(r->builder);
	b->state = MB_LEASING;
	b->saved = true;
	b->step = r->step;
	if (r->action)
		(void)digest_ref(r->action, &b->action_d);
	if (r->step_started > 0)
		b->step_start_mono = mono_us() - (now_us() - r->step_started);
	b->step_started_us = r->step_started;
	if (r->op && *r->op)
		b->op_name = xstrdup(r->op);
	restore_workspace(b, r->workspace);
	restore_records(b, r->records);
	bool started = bb->status == BKE(STATUS__STARTED);
	LOGI(MMOD,
	     "build %" PRId64 " (%s, builder %s): resumed with lease key %" PRId64
	     " at step %d%s%s",
	     b->id, b->bucket, b->builder_name, b->lease_key, b->step + 1,
	     b->op_name ? ", operation " : "", b->op_name ? b->op_name : "");
	mb_adopt(b);
	mb_resume(b, bl, started);
}

static void hb_done(int code, const char *msg, ProtobufCMessage *resp, void *arg)
{
	struct mres *r = arg;
	const BKM(BuildResponse) *gr = (const void *)resp;
	if (!master_running() || master_draining()) {
		/* stopping meanwhile: the record stays for the next start */
	} else if (code != RPC_OK) {
		/* Unknown: the record stays for the next start. */
		LOGW(MMOD, "build %" PRId64 ": not resumed: Heartbeat: %s", r->id, msg);
	} else if (gr->error || !gr->build) {
		LOGI(MMOD, "build %" PRId64 ": no longer ours (%s); dropped", r->id,
		     gr->error ? gr->error->message : "no build");
		drop_id(r->id, nsteps_of(r));
	} else if (gr->build->status != BKE(STATUS__STARTED) &&
		   gr->build->status != BKE(STATUS__SCHEDULED)) {
		LOGI(MMOD, "build %" PRId64 ": completed meanwhile; dropped", r->id);
		drop_id(r->id, nsteps_of(r));
	} else {
		adopt(r, gr->build);
	}
	mres_free(r);
	resume_one_done();
}

static void hgetall_done(struct redisReply *reply, void *arg)
{
	struct mres *r = arg;
	if (!reply || reply->type != REDIS_REPLY_ARRAY) {
		LOGW(MMOD, "build %" PRId64 ": cannot read its record; not resumed", r->id);
		goto out;
	}
	for (size_t i = 0; i + 1 < reply->elements; i += 2) {
		const char *k = reply->element[i]->str;
		const struct redisReply *v = reply->element[i + 1];
		if (!k || v->type != REDIS_REPLY_STRING)
			continue;
		char *s = xstrndup(v->str, v->len);
		char **slot = NULL;
		if (strcmp(k, "lease_key") == 0)
			r->lease_key = strtoll(s, NULL, 10);
		else if (strcmp(k, "step") == 0)
			r->step = (int)strtol(s, NULL, 10);
		else if (strcmp(k, "step_started") == 0)
			r->step_started = strtoll(s, NULL, 10);
		else if (strcmp(k, "bucket") == 0)
			slot = &r->bucket;
		else if (strcmp(k, "builder") == 0)
			slot = &r->builder;
		else if (strcmp(k, "params") == 0)
			slot = &r->params;
		else if (strcmp(k, "op") == 0)
			slot = &r->op;
		else if (strcmp(k, "workspace") == 0)
			slot = &r->workspace;
		else if (strcmp(k, "records") == 0)
			slot = &r->records;
		else if (strcmp(k, "action") == 0)
			slot = &r->action;
		if (slot) {
			free(*slot);
			*slot = s;
		} else {
			free(s);
		}
	}
	if (!r->lease_key || !r->builder) {
		LOGI(MMOD, "build %" PRId64 ": its record is incomplete; dropped", r->id);
		drop_id(r->id, 0);
		goto out;
	}
	/* A heartbeat with the recorded lease key both asks whether the lease
	 * is still ours and renews it. */
	BKM(HeartbeatRequest) req = BKE(HEARTBEAT_REQUEST__INIT);
	req.id = r->id;
	req.lease_key = r->lease_key;
	req.lease_expiration_ts = now_us() + master_cfg()->lease_duration_us;
	if (rc_unary_start(master_bk(), BK_PFX "Heartbeat", &req.base,
			   &reactor__buckets__v1__build_response__descriptor, CALL_TIMEOUT, hb_done,
			   r) == 0)
		return;
	LOGW(MMOD, "build %" PRId64 ": not resumed: no connection to the Buckets service", r->id);
out:
	mres_free(r);
	resume_one_done();
}

static void smembers_done(struct redisReply *reply, void *arg)
{
	(void)arg;
	if (!reply || reply->type != REDIS_REPLY_ARRAY) {
		LOGW(MMOD, "resume: cannot read the held builds: %s",
		     reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "no reply");
		resume_one_done();
		return;
	}
	if (reply->elements)
		LOGI(MMOD, "resume: %zu build(s) held before the restart", reply->elements);
	for (size_t i = 0; i < reply->elements; i++) {
		const struct redisReply *e = reply->element[i];
		if (e->type != REDIS_REPLY_STRING)
			continue;
		struct mres *r = xcalloc(1, sizeof(*r));
		r->id = strtoll(e->str, NULL, 10);
		r->step = -1;
		char *k = keys_master_build(master_name(), r->id);
		int rc = store_command(hgetall_done, r, "HGETALL %s", k);
		free(k);
		if (rc != 0) {
			mres_free(r);
			continue;
		}
		ms.pending++;
	}
	resume_one_done();
}

static void resume_begin(void)
{
	char *k = keys_master(master_name());
	ms.pending = 1;
	int rc = store_command(smembers_done, NULL, "SMEMBERS %s", k);
	free(k);
	if (rc != 0) {
		LOGW(MMOD, "resume: Redis is down (%s); nothing resumed", err_name(rc));
		ms.pending = 0;
		resume_finish();
	}
}

static void store_state(bool up, void *arg)
{
	(void)arg;
	if (up && ms.resuming && ms.pending == 0)
		resume_begin();
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	if (ms.resuming)
		LOGW(MMOD, "resume: not done after %llds; taking new builds anyway",
		     (long long)(RESUME_MAX_US / 1000000));
	resume_finish();
}

void mstate_resume(struct event_base *base)
{
	ms.base = base;
	ms.resuming = true;
	ms.pending = 0;
	if (!ms.deadline)
		ms.deadline = evtimer_new(base, deadline_cb, NULL);
	struct timeval tv = {(time_t)(RESUME_MAX_US / 1000000), 0};
	event_add(ms.deadline, &tv);
	if (!ms.observing) {
		ms.observing = true;
		store_on_state(store_state, NULL);
	}
	if (store_up())
		resume_begin();
}

bool mstate_resuming(void)
{
	return ms.resuming;
}

void mstate_free(void)
{
	if (ms.deadline)
		event_free(ms.deadline);
	ms.deadline = NULL;
	ms.resuming = false;
	ms.pending = 0;
}
