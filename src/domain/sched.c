/*
 * sched.c - the scheduler's C side (see sched.h): script registration,
 * typed wrappers around each operation's Lua transition, platform
 * canonicalization and the sweep timer; the Bots side (sessions, leases,
 * queue sizes) is sched_bots.c, sharing sched_int.h.  Replies are parsed
 * here so services never see a redisReply.  Every request carries a small
 * heap context holding the caller's callback; it is freed after the
 * callback ran, whatever the reply was (NULL on a dropped connection).
 *
 * Scripts are src/state/lua/sched_NAME.lua, each registered as
 * sched_prelude.lua followed by its own text: the helpers every
 * transition shares (finish, requeue, close_session, assign) are spelled
 * once, and each loaded script is still self-contained for EVALSHA.
 * sched_run() adds the arguments the prelude expects (the two shared zsets
 * in KEYS, the namespace as the first ARGV).
 */
#include "domain/sched.h"
#include "domain/sched_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "state/keys.h"
#include "state/lua.h"
#include "state/store.h"

#define MOD SCHED_MOD
/* Per sweep, at most this many of each kind of work (the rest waits for
 * the next tick, keeping every script run short). */
#define SWEEP_LIMIT 200
/* ListOperations scans at most this many index entries per page. */
#define LIST_SCAN 2000

/* File names (without .lua) of src/state/lua/, by script. */
static const char *const script_name[S_COUNT] = {
	[S_ENQUEUE] = "sched_enqueue",
	[S_CACHED] = "sched_cached",
	[S_VIEW] = "sched_view",
	[S_CANCEL] = "sched_cancel",
	[S_DELETE] = "sched_delete",
	[S_LIST] = "sched_list",
	[S_BOT_CREATE] = "sched_bot_create",
	[S_BOT_UPDATE] = "sched_bot_update",
	[S_ASSIGN] = "sched_assign",
	[S_UNASSIGN] = "sched_unassign",
	[S_QUEUED] = "sched_queued",
	[S_SWEEP] = "sched_sweep",
};

static int script_id[S_COUNT];

static struct {
	struct event_base *base;
	struct event *sweep_ev;
	int64_t started_us; /* mono_us() at sched_start: scheduler.start-grace */
	bool sweeping;	    /* a sweep is in flight: never two at once */
	/* The config in force (sched_configure); valid until the next call. */
	const struct cfg *cfg;
} sc;

/* ---- small helpers ---------------------------------------------------------- */

static const char *const stage_names[] = {"UNKNOWN", "CACHE_CHECK", "QUEUED", "EXECUTING",
					  "COMPLETED"};

const char *sched_stage_name(int stage)
{
	return stage >= 0 && stage <= SCHED_COMPLETED ? stage_names[stage] : "?";
}

int sched_stage_parse(const char *name)
{
	for (int i = 0; i <= SCHED_COMPLETED; i++)
		if (strcmp(name, stage_names[i]) == 0)
			return i;
	return -1;
}

/* Element i of an array reply as a string ("" for nil); *len set. */
const char *sched_el_str(const redisReply *r, size_t i, size_t *len)
{
	static char num[32];
	if (!r || r->type != REDIS_REPLY_ARRAY || i >= r->elements) {
		if (len)
			*len = 0;
		return "";
	}
	const redisReply *e = r->element[i];
	if (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS) {
		if (len)
			*len = e->len;
		return e->str;
	}
	if (e->type == REDIS_REPLY_INTEGER) {
		snprintf(num, sizeof num, "%lld", e->integer);
		if (len)
			*len = strlen(num);
		return num;
	}
	if (len)
		*len = 0;
	return "";
}

int64_t sched_el_int(const redisReply *r, size_t i)
{
	if (r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
	    r->element[i]->type == REDIS_REPLY_INTEGER)
		return r->element[i]->integer;
	return strtoll(sched_el_str(r, i, NULL), NULL, 10);
}

/* "hash/size" to a digest; false when malformed. */
bool sched_parse_action(const char *s, struct digest *d)
{
	const char *slash = strchr(s, '/');
	if (!slash || slash - s != DIGEST_HEX_LEN)
		return false;
	char hex[DIGEST_HEX_LEN + 1];
	memcpy(hex, s, DIGEST_HEX_LEN);
	hex[DIGEST_HEX_LEN] = '\0';
	return digest_parse(hex, strtoll(slash + 1, NULL, 10), d, NULL) == 0;
}

static void action_arg(char *buf, size_t len, const struct digest *d)
{
	snprintf(buf, len, "%s/%lld", d->hex, (long long)d->size);
}

/* 0 for a usable reply; ERR_STORE_FAILED when the connection dropped
 * before it came, ERR_STORE_REPLY for an error reply (a script bug or a
 * broken server: logged). */
int sched_reply_err(const redisReply *r, const char *what)
{
	if (!r)
		return ERR_STORE_FAILED;
	if (r->type == REDIS_REPLY_ERROR) {
		LOGE(MOD, "%s failed in Redis: %s", what, r->str);
		return store_reply_rc(r); /* ERR_STORE_FULL for OOM */
	}
	return 0;
}

/* sched_reply_err, and also ERR_STORE_REPLY when r is not an array of at
 * least `min` elements. */
int sched_reply_array_err(const redisReply *r, size_t min, const char *what)
{
	int rc = sched_reply_err(r, what);
	if (rc == 0 && (r->type != REDIS_REPLY_ARRAY || r->elements < min)) {
		LOGE(MOD, "%s: unexpected reply from Redis (type %d)", what, r->type);
		rc = ERR_STORE_REPLY;
	}
	return rc;
}

struct sched_req *sched_req_new(void (*fn)(void), void *arg)
{
	struct sched_req *q = xcalloc(1, sizeof(*q));
	q->fn = fn;
	q->arg = arg;
	return q;
}

void sched_req_free(struct sched_req *q)
{
	free(q->extra);
	free(q);
}

/* Run script s with its own keys and arguments (lens: NULL for
 * NUL-terminated arguments), adding what the prelude expects.  Returns 0,
 * or store_evalsha's error (ERR_STORE_DOWN) with q freed and cb never
 * called. */
int sched_run(int s, store_cb cb, struct sched_req *q, const char *const *keys, int nkeys,
	      const char *const *args, const size_t *lens, int nargs)
{
	int n = 2 + nkeys + 1 + nargs, k = 0;
	const char **v = xcalloc((size_t)n, sizeof(*v));
	size_t *l = xcalloc((size_t)n, sizeof(*l));
	char *deadlines = keys_sched("deadlines"), *retire = keys_sched("retire");

	v[k++] = deadlines;
	v[k++] = retire;
	for (int i = 0; i < nkeys; i++)
		v[k++] = keys[i];
	v[k++] = keys_ns();
	for (int i = 0; i < k; i++)
		l[i] = strlen(v[i]);
	for (int i = 0; i < nargs; i++, k++) {
		v[k] = args[i];
		l[k] = lens ? lens[i] : strlen(args[i]);
	}
	int rc = store_evalsha(script_id[s], cb, q, 2 + nkeys, 1 + nargs, v, l);
	free(v);
	free(l);
	free(deadlines);
	free(retire);
	if (rc != 0 && q)
		sched_req_free(q);
	return rc;
}

void sched_free_strv(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* ---- platforms ------------------------------------------------------------ */

static void escape_into(char **buf, size_t *len, size_t *cap, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (*len + 4 >= *cap) {
			*cap = *cap * 2 + 64;
			*buf = xrealloc(*buf, *cap);
		}
		if (ch == '%' || ch == ';' || ch == '=' || ch == ':' || ch < 0x20 || ch == 0x7f)
			*len += (size_t)sprintf(*buf + *len, "%%%02X", ch);
		else
			(*buf)[(*len)++] = (char)ch;
	}
	(*buf)[*len] = '\0';
}

static char *pair(const char *k, const char *v)
{
	size_t len = 0, cap = strlen(k) + strlen(v) + 16;
	char *b = xmalloc(cap);
	b[0] = '\0';
	escape_into(&b, &len, &cap, k);
	if (len + 2 >= cap)
		b = xrealloc(b, cap += 16);
	b[len++] = '=';
	b[len] = '\0';
	escape_into(&b, &len, &cap, v);
	return b;
}

static int strp_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sort, drop duplicates, join with ';' and free the pieces. */
static char *join_pairs(char **v, size_t n)
{
	qsort(v, n, sizeof(*v), strp_cmp);
	size_t total = 1;
	for (size_t i = 0; i < n; i++)
		total += strlen(v[i]) + 1;
	char *out = xmalloc(total), *o = out;
	*o = '\0';
	for (size_t i = 0; i < n; i++)
		if (i == 0 || strcmp(v[i], v[i - 1]) != 0)
			o += sprintf(o, "%s%s", o == out ? "" : ";", v[i]);
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return out;
}

static bool declared(const struct cfg_instance *ci, const char *key)
{
	if (!strcmp(key, "OSFamily") || !strcmp(key, "ISA"))
		return true;
	for (int i = 0; ci && i < ci->n_platform_properties; i++)
		if (!strcmp(ci->platform_properties[i], key))
			return true;
	return false;
}

int sched_platform(const Build__Bazel__Remote__Execution__V2__Platform *p,
		   const struct cfg_instance *ci, char **out, char **err)
{
	size_t n = p ? p->n_properties : 0;
	char **v = xcalloc(n ? n : 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		const char *k = p->properties[i]->name, *val = p->properties[i]->value;
		if (!declared(ci, k)) {
			char list[256] = "OSFamily, ISA";
			for (int j = 0; ci && j < ci->n_platform_properties; j++)
				if (strcmp(ci->platform_properties[j], "OSFamily") &&
				    strcmp(ci->platform_properties[j], "ISA"))
					snprintf(list + strlen(list), sizeof(list) - strlen(list),
						 ", %s", ci->platform_properties[j]);
			*err = xasprintf("platform property \"%.100s\" is not supported by this "
					 "instance (its platform-properties: %s)",
					 k, list);
			for (size_t j = 0; j < i; j++)
				free(v[j]);
			free(v);
			return -EINVAL;
		}
		v[i] = pair(k, val);
	}
	*out = join_pairs(v, n);
	return 0;
}

char *sched_bot_props(const Google__Devtools__Remoteworkers__V1test2__Worker *w,
		      const struct cfg_instance *ci)
{
	size_t n = 0, cap = 8;
	char **v = xcalloc(cap, sizeof(*v));
#define ADD(k, val)                                                                                \
	do {                                                                                       \
		if (declared(ci, k)) {                                                             \
			if (n == cap)                                                              \
				v = xrealloc(v, (cap *= 2) * sizeof(*v));                          \
			v[n++] = pair(k, val);                                                     \
		}                                                                                  \
	} while (0)
	if (w) {
		for (size_t i = 0; i < w->n_properties; i++)
			ADD(w->properties[i]->key, w->properties[i]->value);
		if (w->n_devices && w->devices[0])
			for (size_t i = 0; i < w->devices[0]->n_properties; i++)
				ADD(w->devices[0]->properties[i]->key,
				    w->devices[0]->properties[i]->value);
	}
#undef ADD
	return join_pairs(v, n);
}

bool sched_platform_match(const char *platform, const char *props)
{
	const char *p = platform;
	size_t plen = strlen(props);
	while (*p) {
		size_t len = strcspn(p, ";");
		bool found = false;
		for (const char *q = props; q < props + plen;) {
			size_t ql = strcspn(q, ";");
			if (ql == len && memcmp(p, q, len) == 0) {
				found = true;
				break;
			}
			q += ql + (q[ql] == ';');
		}
		if (len && !found)
			return false;
		p += len + (p[len] == ';');
	}
	return true;
}

/* ---- operations -------------------------------------------------------- */

/* Values per operation in sched_view.lua's reply. */
#define VIEW_N 11

bool sched_op_owned(const struct sched_view *v, const char *who)
{
	return v->owner && *v->owner && who && !strcmp(v->owner, who);
}

static void view_reply(redisReply *r, void *arg)
{
	struct sched_req *q = arg;
	sched_view_cb cb = (sched_view_cb)q->fn;
	int rc = sched_reply_array_err(r, 0, "reading operations");
	if (rc == 0 && r->elements % VIEW_N != 0)
		rc = ERR_STORE_REPLY;
	if (rc != 0) {
		cb(q->arg, rc, NULL, 0);
		sched_req_free(q);
		return;
	}
	size_t n = r->elements / VIEW_N;
	struct sched_view *v = xcalloc(n ? n : 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		size_t b = i * VIEW_N, len;
		v[i].owner = (char *)"";
		v[i].instance = (char *)"";
		v[i].exists = sched_el_int(r, b) == 1;
		if (!v[i].exists)
			continue;
		v[i].stage = sched_stage_parse(sched_el_str(r, b + 1, NULL));
		if (v[i].stage < 0)
			v[i].stage = SCHED_UNKNOWN;
		v[i].status = (int)sched_el_int(r, b + 2);
		v[i].message = (char *)sched_el_str(r, b + 3, NULL);
		const char *res = sched_el_str(r, b + 4, &len);
		v[i].result = len ? (uint8_t *)res : NULL;
		v[i].result_len = len;
		v[i].cached = sched_el_int(r, b + 5) == 1;
		if (!sched_parse_action(sched_el_str(r, b + 6, NULL), &v[i].action))
			v[i].exists = false;
		v[i].version = sched_el_int(r, b + 7);
		v[i].job = (char *)sched_el_str(r, b + 8, NULL);
		v[i].owner = (char *)sched_el_str(r, b + 9, NULL);
		v[i].instance = (char *)sched_el_str(r, b + 10, NULL);
	}
	cb(q->arg, 0, v, n);
	free(v);
	sched_req_free(q);
}

int sched_view(const char *const *ops, size_t n, sched_view_cb cb, void *arg)
{
	char **keys = xcalloc(n ? n : 1, sizeof(*keys));
	for (size_t i = 0; i < n; i++)
		keys[i] = keys_op(ops[i]);
	int rc = sched_run(S_VIEW, view_reply, sched_req_new((void (*)(void))cb, arg),
			   (const char *const *)keys, (int)n, NULL, NULL, 0);
	sched_free_strv(keys, n);
	return rc;
}

/* "k=v;k=v" as "{k=v, k=v}" for messages (malloc'd). */
static char *platform_shown(const char *plat)
{
	if (!*plat)
		return xstrdup("{} (no properties)");
	char *out = xmalloc(strlen(plat) * 2 + 3), *o = out;
	*o++ = '{';
	for (const char *p = plat; *p; p++)
		if (*p == ';') {
			*o++ = ',';
			*o++ = ' ';
		} else {
			*o++ = *p;
		}
	*o++ = '}';
	*o = '\0';
	return out;
}

static const struct cfg_instance *instance_cfg(const char *name)
{
	for (int i = 0; sc.cfg && i < sc.cfg->n_instances; i++)
		if (!strcmp(sc.cfg->instances[i].name, name))
			return &sc.cfg->instances[i];
	return NULL;
}

/* The properties reactord's local workers advertise ("k=v;k=v"; the
 * worker's own default without workers.properties), or NULL when there
 * are none.  They serve instance "" only. */
static char *local_props(void)
{
	const struct cfg *cfg = sc.cfg;
	if (!cfg || cfg->workers_local <= 0)
		return NULL;
	if (cfg->n_workers_properties == 0)
		return xstrdup("OSFamily=linux;ISA=x86-64");
	size_t total = 1;
	for (int i = 0; i < cfg->n_workers_properties; i++)
		total += strlen(cfg->workers_properties[i]) + 1;
	char *out = xmalloc(total), *o = out;
	*o = '\0';
	for (int i = 0; i < cfg->n_workers_properties; i++)
		o += sprintf(o, "%s%s", i ? ";" : "", cfg->workers_properties[i]);
	return out;
}

/* Whether an Execute for `platform` may fail at once when no bot offers
 * it (see sched_enqueue_req): not during scheduler.start-grace after
 * start, and never when reactord's local workers offer it (they are
 * supervised: down only briefly). */
static bool fail_fast(const char *instance, const char *platform)
{
	/* Before sched_start (tools, unit tests) the grace has not begun. */
	if (!sc.cfg || !sc.started_us || mono_us() - sc.started_us < sc.cfg->sched_start_grace_us)
		return false;
	char *lp = *instance ? NULL : local_props();
	bool local = lp && sched_platform_match(platform, lp);
	free(lp);
	return !local;
}

static void enqueue_reply(redisReply *r, void *arg)
{
	struct sched_req *q = arg;
	sched_enqueue_cb cb = (sched_enqueue_cb)q->fn;
	int rc = sched_reply_array_err(r, 4, "queueing a job");
	if (rc != 0) {
		cb(q->arg, rc, NULL, 0, 0, false);
	} else if (!strcmp(sched_el_str(r, 1, NULL), "FULL")) {
		long long waiting = (long long)sched_el_int(r, 2),
			  limit = (long long)sched_el_int(r, 3);
		char *msg = xasprintf("too many distinct platforms with queued work on instance "
				      "\"%s\" (%lld waiting; "
				      "limit %lld, config scheduler.max-platforms): platform "
				      "\"%s\" would be a new "
				      "one; retry once queued work has drained",
				      q->extra, waiting, limit, q->extra + strlen(q->extra) + 1);
		cb(q->arg, -ENOSPC, msg, 0, 0, false);
		free(msg);
	} else if (!strcmp(sched_el_str(r, 1, NULL), "NOBOT")) {
		const char *inst = q->extra, *plat = q->extra + strlen(q->extra) + 1;
		const struct cfg_instance *ci = instance_cfg(inst);
		char *shown = platform_shown(plat), *lp = *inst ? NULL : local_props();
		char *lshown = lp ? platform_shown(lp) : NULL;
		char *msg = xasprintf(
			"no bot offers platform %s on instance \"%s\": none connected with "
			"matching properties, none seen in the last %.0fs (no-worker-timeout)%s%s",
			shown, inst, ci ? (double)ci->no_worker_timeout_us / 1e6 : 0.0,
			lshown ? "; the local workers offer " : "", lshown ? lshown : "");
		cb(q->arg, ERR_PRECONDITION, msg, 0, 0, false);
		free(msg);
		free(shown);
		free(lp);
		free(lshown);
	} else {
		int st = sched_stage_parse(sched_el_str(r, 1, NULL));
		cb(q->arg, 0, sched_el_str(r, 0, NULL), st < 0 ? SCHED_QUEUED : st,
		   sched_el_int(r, 2), sched_el_int(r, 3) == 1);
	}
	sched_req_free(q);
}

int sched_enqueue(const struct sched_enqueue_req *e, sched_enqueue_cb cb, void *arg)
{
	char action[DIGEST_STR_LEN], prio[16], timeout[24], attempts[16], now[24], ret[24];
	char maxp[16], since[24];
	char *job = uuid4();
	char *keys[] = {keys_action_job(e->instance, e->action),
			keys_op(e->op),
			keys_ops(e->instance),
			keys_job(job),
			keys_job_ops(job),
			keys_queue(e->instance, e->platform),
			keys_platforms(e->instance),
			keys_sched("seq"),
			keys_botprops(e->instance),
			keys_botseen(e->instance)};
	action_arg(action, sizeof action, e->action);
	snprintf(prio, sizeof prio, "%d", e->priority);
	snprintf(timeout, sizeof timeout, "%lld", (long long)e->timeout_us);
	snprintf(attempts, sizeof attempts, "%d", e->max_attempts);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(ret, sizeof ret, "%lld", (long long)(e->retention_us / 1000000));
	snprintf(maxp, sizeof maxp, "%d",
		 sc.cfg && sc.cfg->sched_max_platforms > 0 ? sc.cfg->sched_max_platforms
							   : SCHED_MAX_PLATFORMS_DEFAULT);
	const char *args[] = {e->instance,
			      action,
			      e->op,
			      job,
			      prio,
			      e->platform,
			      timeout,
			      e->do_not_cache ? "1" : "0",
			      attempts,
			      now,
			      ret,
			      maxp,
			      e->owner ? e->owner : "",
			      fail_fast(e->instance, e->platform) ? "1" : "0",
			      since};
	const struct cfg_instance *ci = instance_cfg(e->instance);
	snprintf(since, sizeof since, "%lld",
		 (long long)(now_us() - (ci ? ci->no_worker_timeout_us : 0)));
	struct sched_req *q = sched_req_new((void (*)(void))cb, arg);
	/* The instance and the platform, for the over-the-limit message. */
	size_t il = strlen(e->instance), pl = strlen(e->platform);
	q->extra = xmalloc(il + pl + 2);
	memcpy(q->extra, e->instance, il + 1);
	memcpy(q->extra + il + 1, e->platform, pl + 1);
	int rc = sched_run(S_ENQUEUE, enqueue_reply, q, (const char *const *)keys,
			   (int)ARRAY_LEN(keys), args, NULL, (int)ARRAY_LEN(args));
	free(job);
	for (size_t i = 0; i < ARRAY_LEN(keys); i++)
		free(keys[i]);
	return rc;
}

static void done_reply(redisReply *r, void *arg)
{
	struct sched_req *q = arg;
	sched_done_cb cb = (sched_done_cb)q->fn;
	int rc = sched_reply_err(r, q->extra ? q->extra : "operation change");
	if (rc == 0 && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
	    !strcmp(r->str, "NOTFOUND"))
		rc = -ENOENT;
	cb(q->arg, rc);
	sched_req_free(q);
}

/* A done_reply request on one operation key. */
static int run_op(int s, const char *what, const char *op, const char *const *args,
		  const size_t *lens, int nargs, const char *extra_key, sched_done_cb cb, void *arg)
{
	const char *keys[2] = {NULL, extra_key};
	char *ok = keys_op(op);
	keys[0] = ok;
	struct sched_req *q = sched_req_new((void (*)(void))cb, arg);
	q->extra = xstrdup(what);
	int rc = sched_run(s, done_reply, q, keys, extra_key ? 2 : 1, args, lens, nargs);
	free(ok);
	return rc;
}

int sched_cached_op(const char *instance, const char *op, const char *owner,
		    const struct digest *action, const uint8_t *result, size_t len,
		    int64_t retention_us, sched_done_cb cb, void *arg)
{
	char act[DIGEST_STR_LEN], now[24], ret[24];
	char *opsk = keys_ops(instance);
	action_arg(act, sizeof act, action);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(ret, sizeof ret, "%lld", (long long)(retention_us / 1000000));
	const char *args[] = {instance,		 op, act, now, ret, (const char *)result,
			      owner ? owner : ""};
	size_t lens[ARRAY_LEN(args)];
	for (size_t i = 0; i < ARRAY_LEN(args); i++)
		lens[i] = i == 5 ? len : strlen(args[i]);
	int rc = run_op(S_CACHED, "recording a cache hit", op, args, lens, (int)ARRAY_LEN(args),
			opsk, cb, arg);
	free(opsk);
	return rc;
}

/* Cancel / delete: "NOTFOUND", {"DENIED", instance}, or done. */
static void change_reply(redisReply *r, void *arg)
{
	struct sched_req *q = arg;
	sched_change_cb cb = (sched_change_cb)q->fn;
	int rc = sched_reply_err(r, q->extra);
	const char *inst = "";
	if (rc != 0) {
	} else if ((r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
		   !strcmp(r->str, "NOTFOUND")) {
		rc = -ENOENT;
	} else if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 &&
		   !strcmp(sched_el_str(r, 0, NULL), "DENIED")) {
		rc = -EACCES;
		inst = sched_el_str(r, 1, NULL);
	}
	cb(q->arg, rc, inst);
	sched_req_free(q);
}

static int run_change(int s, const char *what, const char *op, const char *const *args, int nargs,
		      sched_change_cb cb, void *arg)
{
	char *ok = keys_op(op);
	const char *keys[] = {ok};
	struct sched_req *q = sched_req_new((void (*)(void))cb, arg);
	q->extra = xstrdup(what);
	int rc = sched_run(s, change_reply, q, keys, 1, args, NULL, nargs);
	free(ok);
	return rc;
}

int sched_cancel_op(const char *op, const char *who, sched_change_cb cb, void *arg)
{
	char now[24];
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	const char *args[] = {op, now, who ? "1" : "0", who ? who : ""};
	return run_change(S_CANCEL, "cancelling an operation", op, args, 4, cb, arg);
}

int sched_delete_op(const char *op, const char *who, sched_change_cb cb, void *arg)
{
	const char *args[] = {op, who ? "1" : "0", who ? who : ""};
	return run_change(S_DELETE, "deleting an operation", op, args, 3, cb, arg);
}

static void list_reply(redisReply *r, void *arg)
{
	struct sched_req *q = arg;
	sched_list_cb cb = (sched_list_cb)q->fn;
	int rc = sched_reply_array_err(r, 1, "listing operations");
	if (rc != 0) {
		cb(q->arg, rc, NULL, 0, -1);
	} else {
		size_t n = r->elements - 1;
		char **names = xcalloc(n ? n : 1, sizeof(*names));
		for (size_t i = 0; i < n; i++)
			names[i] = (char *)sched_el_str(r, i + 1, NULL);
		cb(q->arg, 0, names, n, sched_el_int(r, 0));
		free(names);
	}
	sched_req_free(q);
}

int sched_list_ops(const char *instance, const char *owner, int64_t offset, int size, int stage,
		   sched_list_cb cb, void *arg)
{
	char off[24], sz[16], scan[16];
	char *ik = keys_ops(instance);
	snprintf(off, sizeof off, "%lld", (long long)offset);
	snprintf(sz, sizeof sz, "%d", size);
	snprintf(scan, sizeof scan, "%d", LIST_SCAN > size ? LIST_SCAN : size);
	const char *keys[] = {ik};
	const char *args[] = {off,
			      sz,
			      stage > 0 ? sched_stage_name(stage) : "",
			      scan,
			      owner ? "1" : "0",
			      owner ? owner : ""};
	int rc = sched_run(S_LIST, list_reply, sched_req_new((void (*)(void))cb, arg), keys, 1,
			   args, NULL, 6);
	free(ik);
	return rc;
}

/* ---- the sweep ------------------------------------------------------------ */

static void sweep_arm(void)
{
	int64_t us = sc.cfg ? sc.cfg->sched_sweep_us : 1000000;
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(sc.sweep_ev, &tv);
}

static void sweep_reply(redisReply *r, void *arg)
{
	(void)arg;
	sc.sweeping = false;
	if (sched_reply_array_err(r, 4, "the scheduler sweep") != 0)
		return;
	int64_t closed = sched_el_int(r, 0), timedout = sched_el_int(r, 1),
		nowork = sched_el_int(r, 2);
	for (size_t i = 4; i < r->elements; i++)
		LOGI(MOD, "bot session %s expired: closed, its lease (if any) requeued",
		     sched_el_str(r, i, NULL));
	if (timedout)
		LOGI(MOD, "%lld job(s) ran past their action timeout: DEADLINE_EXCEEDED",
		     (long long)timedout);
	if (nowork)
		LOGI(MOD, "%lld job(s) failed: no connected bot can run their platform",
		     (long long)nowork);
	/* More than a batch was due: go again soon rather than a tick later. */
	if ((closed >= SWEEP_LIMIT || timedout >= SWEEP_LIMIT ||
	     sched_el_int(r, 3) >= SWEEP_LIMIT) &&
	    sc.sweep_ev) {
		struct timeval tv = {0, 10000};
		evtimer_add(sc.sweep_ev, &tv);
	}
}

/* One sweep over the instances with execution enabled (none in flight). */
static void sweep(void)
{
	const struct cfg *cfg = sc.cfg;
	if (!cfg || sc.sweeping || !store_up())
		return;
	size_t n = 0;
	for (int i = 0; i < cfg->n_instances; i++)
		n += cfg->instances[i].execution;
	if (!n)
		return;
	char **keys = xcalloc(3 * n, sizeof(*keys));
	const char **args = xcalloc(2 + 2 * n, sizeof(*args));
	char(*nums)[24] = xcalloc(2 + n, sizeof(*nums));
	snprintf(nums[0], 24, "%lld", (long long)now_us());
	snprintf(nums[1], 24, "%d", SWEEP_LIMIT);
	args[0] = nums[0];
	args[1] = nums[1];
	size_t a = 2, k = 0;
	for (int i = 0; i < cfg->n_instances; i++) {
		const struct cfg_instance *ci = &cfg->instances[i];
		if (!ci->execution)
			continue;
		snprintf(nums[a / 2 + 1], 24, "%lld", (long long)ci->no_worker_timeout_us);
		args[a] = ci->name;
		args[a + 1] = nums[a / 2 + 1];
		a += 2;
		keys[k++] = keys_bots(ci->name);
		keys[k++] = keys_botprops(ci->name);
		keys[k++] = keys_platforms(ci->name);
	}
	if (sched_run(S_SWEEP, sweep_reply, NULL, (const char *const *)keys, (int)k, args, NULL,
		      (int)a) == 0)
		sc.sweeping = true;
	sched_free_strv(keys, k);
	free(args);
	free(nums);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	sweep_arm();
	sweep();
}

/* ---- life cycle ------------------------------------------------------------ */

void sched_configure(const struct cfg *cfg)
{
	sc.cfg = cfg;
}

int sched_init(void)
{
	const char *prelude = lua_source("sched_prelude");
	for (int i = 0; i < S_COUNT; i++) {
		char *text = xasprintf("%s%s", prelude, lua_source(script_name[i]));
		script_id[i] = store_script_register(script_name[i], text);
		free(text);
		if (script_id[i] < 0)
			return script_id[i];
	}
	return 0;
}

void sched_start(struct event_base *base)
{
	sc.base = base;
	sc.started_us = mono_us();
	sc.sweep_ev = evtimer_new(base, sweep_cb, NULL);
	if (!sc.sweep_ev)
		abort();
	sweep_arm();
}

void sched_stop(void)
{
	if (sc.sweep_ev) {
		event_free(sc.sweep_ev);
		sc.sweep_ev = NULL;
	}
	sc.sweeping = false;
}
