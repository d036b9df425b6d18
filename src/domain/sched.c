/*
 * sched.c - the scheduler's C side (see sched.h): script registration,
 * typed wrappers around each Lua transition, platform canonicalization
 * and the sweep timer.  Replies are parsed here so services never see a
 * redisReply.  Every request carries a small heap context holding the
 * caller's callback; it is freed after the callback ran, whatever the
 * reply was (NULL on a dropped connection).
 */
#include "domain/sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <openssl/rand.h>

#include "core/cfg.h"
#include "google/devtools/remoteworkers/v1test2/bots.pb-c.h"
#include "state/keys.h"
#include "core/log.h"
#include "state/sched_lua.h"
#include "state/store.h"
#include "services/svc.h"

#define MOD	 "sched"
#define LEASE(x) GOOGLE__DEVTOOLS__REMOTEWORKERS__V1TEST2__LEASE_STATE__##x
/* Per sweep, at most this many of each kind of work (the rest waits for
 * the next tick, keeping every script run short). */
#define SWEEP_LIMIT 200
/* ListOperations scans at most this many index entries per page. */
#define LIST_SCAN 2000

enum {
	S_ENQUEUE,
	S_CACHED,
	S_VIEW,
	S_CANCEL,
	S_DELETE,
	S_LIST,
	S_BOT_CREATE,
	S_BOT_UPDATE,
	S_ASSIGN,
	S_UNASSIGN,
	S_QUEUED,
	S_SWEEP,
	S_COUNT
};

static const struct {
	const char *name;
	const char *lua;
} script_src[S_COUNT] = {
	[S_ENQUEUE] = {"sched_enqueue", sched_lua_enqueue},
	[S_CACHED] = {"sched_cached", sched_lua_cached},
	[S_VIEW] = {"sched_view", sched_lua_view},
	[S_CANCEL] = {"sched_cancel", sched_lua_cancel},
	[S_DELETE] = {"sched_delete", sched_lua_delete},
	[S_LIST] = {"sched_list", sched_lua_list},
	[S_BOT_CREATE] = {"sched_bot_create", sched_lua_bot_create},
	[S_BOT_UPDATE] = {"sched_bot_update", sched_lua_bot_update},
	[S_ASSIGN] = {"sched_assign", sched_lua_assign},
	[S_UNASSIGN] = {"sched_unassign", sched_lua_unassign},
	[S_QUEUED] = {"sched_queued", sched_lua_queued},
	[S_SWEEP] = {"sched_sweep", sched_lua_sweep},
};

static int script_id[S_COUNT];

static struct {
	struct event_base *base;
	struct event *sweep_ev;
	bool sweeping; /* a sweep is in flight: never two at once */
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

static int lease_state_parse(const char *s)
{
	if (!strcmp(s, "PENDING"))
		return LEASE(PENDING);
	if (!strcmp(s, "ACTIVE"))
		return LEASE(ACTIVE);
	if (!strcmp(s, "COMPLETED"))
		return LEASE(COMPLETED);
	if (!strcmp(s, "CANCELLED"))
		return LEASE(CANCELLED);
	return LEASE(LEASE_STATE_UNSPECIFIED);
}

static const char *lease_state_str(int st)
{
	switch (st) {
	case LEASE(PENDING): return "PENDING";
	case LEASE(ACTIVE): return "ACTIVE";
	case LEASE(COMPLETED): return "COMPLETED";
	case LEASE(CANCELLED): return "CANCELLED";
	default: return "";
	}
}

char *sched_uuid(void)
{
	uint8_t b[16];
	if (RAND_bytes(b, sizeof b) != 1)
		abort();
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
	return xasprintf("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
			 b[12], b[13], b[14], b[15]);
}

/* Element i of an array reply as a string ("" for nil); *len set. */
static const char *el_str(const redisReply *r, size_t i, size_t *len)
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

static int64_t el_int(const redisReply *r, size_t i)
{
	if (r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
	    r->element[i]->type == REDIS_REPLY_INTEGER)
		return r->element[i]->integer;
	return strtoll(el_str(r, i, NULL), NULL, 10);
}

/* "hash/size" to a digest; false when malformed. */
static bool parse_action(const char *s, struct digest *d)
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

/* A reply that is an error or missing: log it (errors are bugs or a
 * broken server) and say so. */
static bool reply_bad(const redisReply *r, const char *what)
{
	if (!r)
		return true;
	if (r->type == REDIS_REPLY_ERROR) {
		LOGE(MOD, "%s failed in Redis: %s", what, r->str);
		return true;
	}
	return false;
}

/* One request in flight: the caller's callback and its argument. */
struct req {
	void (*fn)(void);
	void *arg;
	char *extra; /* owned copy some replies need */
};

static struct req *req_new(void (*fn)(void), void *arg)
{
	struct req *q = xcalloc(1, sizeof(*q));
	q->fn = fn;
	q->arg = arg;
	return q;
}

static void req_free(struct req *q)
{
	free(q->extra);
	free(q);
}

/* Run a script with string arguments; on failure to queue, q is freed. */
static int run(int s, store_cb cb, struct req *q, int nkeys, int nargs, const char **args,
	       const size_t *lens)
{
	if (store_evalsha(script_id[s], cb, q, nkeys, nargs, args, lens) != 0) {
		if (q)
			req_free(q);
		return -1;
	}
	return 0;
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
			return -1;
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

static void view_reply(redisReply *r, void *arg)
{
	struct req *q = arg;
	sched_view_cb cb = (sched_view_cb)q->fn;
	if (reply_bad(r, "reading operations") || r->type != REDIS_REPLY_ARRAY ||
	    r->elements % 9 != 0) {
		cb(q->arg, -EIO, NULL, 0);
		req_free(q);
		return;
	}
	size_t n = r->elements / 9;
	struct sched_view *v = xcalloc(n ? n : 1, sizeof(*v));
	for (size_t i = 0; i < n; i++) {
		size_t b = i * 9, len;
		v[i].exists = el_int(r, b) == 1;
		if (!v[i].exists)
			continue;
		v[i].stage = sched_stage_parse(el_str(r, b + 1, NULL));
		if (v[i].stage < 0)
			v[i].stage = SCHED_UNKNOWN;
		v[i].status = (int)el_int(r, b + 2);
		v[i].message = (char *)el_str(r, b + 3, NULL);
		const char *res = el_str(r, b + 4, &len);
		v[i].result = len ? (uint8_t *)res : NULL;
		v[i].result_len = len;
		v[i].cached = el_int(r, b + 5) == 1;
		if (!parse_action(el_str(r, b + 6, NULL), &v[i].action))
			v[i].exists = false;
		v[i].version = el_int(r, b + 7);
		v[i].job = (char *)el_str(r, b + 8, NULL);
	}
	cb(q->arg, 0, v, n);
	free(v);
	req_free(q);
}

int sched_view(const char *const *ops, size_t n, sched_view_cb cb, void *arg)
{
	return run(S_VIEW, view_reply, req_new((void (*)(void))cb, arg), 0, (int)n,
		   (const char **)ops, NULL);
}

static void enqueue_reply(redisReply *r, void *arg)
{
	struct req *q = arg;
	sched_enqueue_cb cb = (sched_enqueue_cb)q->fn;
	if (reply_bad(r, "queueing a job") || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
		cb(q->arg, -EIO, NULL, 0, 0, false);
	} else {
		int st = sched_stage_parse(el_str(r, 1, NULL));
		cb(q->arg, 0, el_str(r, 0, NULL), st < 0 ? SCHED_QUEUED : st, el_int(r, 2),
		   el_int(r, 3) == 1);
	}
	req_free(q);
}

int sched_enqueue(const struct sched_enqueue_req *e, sched_enqueue_cb cb, void *arg)
{
	char action[DIGEST_STR_LEN], prio[16], timeout[24], attempts[16], now[24], ret[24];
	char *job = sched_uuid();
	char *ak = keys_action_job(e->instance, e->action);
	char *ok = keys_op(e->op);
	action_arg(action, sizeof action, e->action);
	snprintf(prio, sizeof prio, "%d", e->priority);
	snprintf(timeout, sizeof timeout, "%lld", (long long)e->timeout_us);
	snprintf(attempts, sizeof attempts, "%d", e->max_attempts);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(ret, sizeof ret, "%lld", (long long)(e->retention_us / 1000000));
	const char *args[] = {ak,	ok,   e->instance, action,  e->op,
			      job,	prio, e->platform, timeout, e->do_not_cache ? "1" : "0",
			      attempts, now,  ret};
	int rc = run(S_ENQUEUE, enqueue_reply, req_new((void (*)(void))cb, arg), 2, 11, args, NULL);
	free(job);
	free(ak);
	free(ok);
	return rc;
}

static void done_reply(redisReply *r, void *arg)
{
	struct req *q = arg;
	sched_done_cb cb = (sched_done_cb)q->fn;
	int rc = 0;
	if (reply_bad(r, q->extra ? q->extra : "operation change"))
		rc = -EIO;
	else if ((r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
		 !strcmp(r->str, "NOTFOUND"))
		rc = -ENOENT;
	cb(q->arg, rc);
	req_free(q);
}

int sched_cached_op(const char *instance, const char *op, const struct digest *action,
		    const uint8_t *result, size_t len, int64_t retention_us, sched_done_cb cb,
		    void *arg)
{
	char act[DIGEST_STR_LEN], now[24], ret[24];
	char *ok = keys_op(op);
	action_arg(act, sizeof act, action);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(ret, sizeof ret, "%lld", (long long)(retention_us / 1000000));
	const char *args[] = {ok, instance, op, act, now, ret, (const char *)result};
	size_t lens[ARRAY_LEN(args)];
	for (size_t i = 0; i < ARRAY_LEN(args); i++)
		lens[i] = i == 6 ? len : strlen(args[i]);
	struct req *q = req_new((void (*)(void))cb, arg);
	q->extra = xstrdup("recording a cache hit");
	int rc = run(S_CACHED, done_reply, q, 1, 6, args, lens);
	free(ok);
	return rc;
}

int sched_cancel_op(const char *op, sched_done_cb cb, void *arg)
{
	char now[24];
	char *ok = keys_op(op);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	const char *args[] = {ok, op, now};
	struct req *q = req_new((void (*)(void))cb, arg);
	q->extra = xstrdup("cancelling an operation");
	int rc = run(S_CANCEL, done_reply, q, 1, 2, args, NULL);
	free(ok);
	return rc;
}

int sched_delete_op(const char *op, sched_done_cb cb, void *arg)
{
	char *ok = keys_op(op);
	const char *args[] = {ok, op};
	struct req *q = req_new((void (*)(void))cb, arg);
	q->extra = xstrdup("deleting an operation");
	int rc = run(S_DELETE, done_reply, q, 1, 1, args, NULL);
	free(ok);
	return rc;
}

static void list_reply(redisReply *r, void *arg)
{
	struct req *q = arg;
	sched_list_cb cb = (sched_list_cb)q->fn;
	if (reply_bad(r, "listing operations") || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
		cb(q->arg, -EIO, NULL, 0, -1);
	} else {
		size_t n = r->elements - 1;
		char **names = xcalloc(n ? n : 1, sizeof(*names));
		for (size_t i = 0; i < n; i++)
			names[i] = (char *)el_str(r, i + 1, NULL);
		cb(q->arg, 0, names, n, el_int(r, 0));
		free(names);
	}
	req_free(q);
}

int sched_list_ops(const char *instance, int64_t offset, int size, int stage, sched_list_cb cb,
		   void *arg)
{
	char off[24], sz[16], scan[16];
	snprintf(off, sizeof off, "%lld", (long long)offset);
	snprintf(sz, sizeof sz, "%d", size);
	snprintf(scan, sizeof scan, "%d", LIST_SCAN > size ? LIST_SCAN : size);
	const char *args[] = {instance, off, sz, stage > 0 ? sched_stage_name(stage) : "", scan};
	return run(S_LIST, list_reply, req_new((void (*)(void))cb, arg), 0, 5, args, NULL);
}

/* ---- bots ----------------------------------------------------------------- */

static void bot_reply_common(redisReply *r, struct req *q, int kind)
{
	sched_bot_cb cb = (sched_bot_cb)q->fn;
	struct sched_bot_result res = {0};
	const char *what = kind == S_BOT_CREATE	  ? "creating a bot session"
			   : kind == S_BOT_UPDATE ? "updating a bot session"
						  : "assigning work";
	if (reply_bad(r, what) || r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
		res.rc = -EIO;
		cb(q->arg, &res);
		req_free(q);
		return;
	}
	const char *tag = el_str(r, 0, NULL);
	if (kind == S_BOT_CREATE) {
		res.closed = (char *)tag;
		if (r->elements >= 3 && parse_action(el_str(r, 2, NULL), &res.lease.action)) {
			res.lease.id = (char *)el_str(r, 1, NULL);
			res.lease.state = LEASE(PENDING);
		}
	} else if (!strcmp(tag, "NOSESSION")) {
		res.rc = -ENOENT;
	} else if (!strcmp(tag, "BOTID")) {
		res.rc = -EPERM;
		res.stored_bot_id = (char *)el_str(r, 1, NULL);
	} else if (kind == S_ASSIGN) {
		if (r->elements >= 3 && parse_action(el_str(r, 2, NULL), &res.lease.action)) {
			res.lease.id = (char *)el_str(r, 1, NULL);
			res.lease.state = LEASE(PENDING);
		}
	} else if (r->elements >= 8) {
		const char *id = el_str(r, 1, NULL);
		if (*id) {
			res.lease.id = (char *)id;
			res.lease.state = lease_state_parse(el_str(r, 2, NULL));
			/* A cancelled lease may name a job already gone. */
			if (!parse_action(el_str(r, 3, NULL), &res.lease.action))
				res.lease.action = digest_empty;
		}
		const char *dj = el_str(r, 4, NULL);
		if (*dj && parse_action(el_str(r, 5, NULL), &res.done_action)) {
			res.done_job = (char *)dj;
			res.done_do_not_cache = !strcmp(el_str(r, 6, NULL), "1");
		}
		res.instance = (char *)el_str(r, 7, NULL);
	}
	cb(q->arg, &res);
	req_free(q);
}

static void bot_create_reply(redisReply *r, void *arg)
{
	bot_reply_common(r, arg, S_BOT_CREATE);
}

static void bot_update_reply(redisReply *r, void *arg)
{
	bot_reply_common(r, arg, S_BOT_UPDATE);
}

static void assign_reply(redisReply *r, void *arg)
{
	bot_reply_common(r, arg, S_ASSIGN);
}

int sched_bot_create(const struct sched_bot_create_req *b, sched_bot_cb cb, void *arg)
{
	char now[24], exp[24], st[16];
	char *sk = keys_bot(b->session);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(exp, sizeof exp, "%lld", (long long)b->expire_us);
	snprintf(st, sizeof st, "%d", b->status);
	const char *args[] = {sk,  b->session, b->instance,	     b->bot_id, b->props, now,
			      exp, st,	       b->assign ? "1" : "0"};
	int rc = run(S_BOT_CREATE, bot_create_reply, req_new((void (*)(void))cb, arg), 1, 8, args,
		     NULL);
	free(sk);
	return rc;
}

int sched_bot_update(const struct sched_bot_update_req *b, sched_bot_cb cb, void *arg)
{
	char now[24], exp[24], st[16], code[16];
	char *sk = keys_bot(b->session);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	snprintf(exp, sizeof exp, "%lld", (long long)b->expire_us);
	snprintf(st, sizeof st, "%d", b->status);
	snprintf(code, sizeof code, "%d", b->code);
	const char *args[] = {sk,
			      b->session,
			      b->bot_id,
			      now,
			      exp,
			      st,
			      b->lease_id ? b->lease_id : "",
			      b->lease_id ? lease_state_str(b->lease_state) : "",
			      code,
			      b->message ? b->message : "",
			      b->result ? (const char *)b->result : "",
			      b->assign ? "1" : "0"};
	size_t lens[ARRAY_LEN(args)];
	for (size_t i = 0; i < ARRAY_LEN(args); i++)
		lens[i] = i == 10 ? (b->result ? b->result_len : 0) : strlen(args[i]);
	int rc = run(S_BOT_UPDATE, bot_update_reply, req_new((void (*)(void))cb, arg), 1, 11, args,
		     lens);
	free(sk);
	return rc;
}

int sched_assign(const char *session, sched_bot_cb cb, void *arg)
{
	char now[24];
	char *sk = keys_bot(session);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	const char *args[] = {sk, session, now};
	int rc = run(S_ASSIGN, assign_reply, req_new((void (*)(void))cb, arg), 1, 2, args, NULL);
	free(sk);
	return rc;
}

static void unassign_reply(redisReply *r, void *arg)
{
	(void)arg;
	reply_bad(r, "returning an undelivered lease");
}

int sched_unassign(const char *session, const char *job)
{
	char now[24];
	char *sk = keys_bot(session);
	snprintf(now, sizeof now, "%lld", (long long)now_us());
	const char *args[] = {sk, session, job, now};
	int rc = store_evalsha(script_id[S_UNASSIGN], unassign_reply, NULL, 1, 3, args, NULL);
	free(sk);
	return rc;
}

static void queued_reply(redisReply *r, void *arg)
{
	struct req *q = arg;
	sched_queued_cb cb = (sched_queued_cb)q->fn;
	if (reply_bad(r, "reading the queues") || r->type != REDIS_REPLY_ARRAY || r->elements % 2) {
		cb(q->arg, -EIO, NULL, NULL, 0);
	} else {
		size_t n = r->elements / 2;
		char **keys = xcalloc(n ? n : 1, sizeof(*keys));
		int64_t *counts = xcalloc(n ? n : 1, sizeof(*counts));
		for (size_t i = 0; i < n; i++) {
			keys[i] = (char *)el_str(r, 2 * i, NULL);
			counts[i] = el_int(r, 2 * i + 1);
		}
		cb(q->arg, 0, keys, counts, n);
		free(keys);
		free(counts);
	}
	req_free(q);
}

int sched_queued(const char *const *instances, size_t n, sched_queued_cb cb, void *arg)
{
	return run(S_QUEUED, queued_reply, req_new((void (*)(void))cb, arg), 0, (int)n,
		   (const char **)instances, NULL);
}

/* ---- the sweep ------------------------------------------------------------ */

static void sweep_arm(void)
{
	const struct cfg *cfg = svc_config();
	int64_t us = cfg ? cfg->sched_sweep_us : 1000000;
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(sc.sweep_ev, &tv);
}

static void sweep_reply(redisReply *r, void *arg)
{
	(void)arg;
	sc.sweeping = false;
	if (reply_bad(r, "the scheduler sweep") || r->type != REDIS_REPLY_ARRAY || r->elements < 4)
		return;
	int64_t closed = el_int(r, 0), timedout = el_int(r, 1), nowork = el_int(r, 2);
	for (size_t i = 4; i < r->elements; i++)
		LOGI(MOD, "bot session %s expired: closed, its lease (if any) requeued",
		     el_str(r, i, NULL));
	if (timedout)
		LOGI(MOD, "%lld job(s) ran past their action timeout: DEADLINE_EXCEEDED",
		     (long long)timedout);
	if (nowork)
		LOGI(MOD, "%lld job(s) failed: no connected bot can run their platform",
		     (long long)nowork);
	(void)closed;
	/* More than a batch was due: go again soon rather than a tick later. */
	if ((closed >= SWEEP_LIMIT || timedout >= SWEEP_LIMIT || el_int(r, 3) >= SWEEP_LIMIT) &&
	    sc.sweep_ev) {
		struct timeval tv = {0, 10000};
		evtimer_add(sc.sweep_ev, &tv);
	}
}

void sched_sweep_now(void)
{
	const struct cfg *cfg = svc_config();
	if (!cfg || sc.sweeping || !store_up())
		return;
	int n = 0;
	for (int i = 0; i < cfg->n_instances; i++)
		n += cfg->instances[i].execution;
	if (!n)
		return;
	const char **args = xcalloc((size_t)(2 + 2 * n), sizeof(*args));
	char(*nums)[24] = xcalloc((size_t)(2 + n), sizeof(*nums));
	snprintf(nums[0], 24, "%lld", (long long)now_us());
	snprintf(nums[1], 24, "%d", SWEEP_LIMIT);
	args[0] = nums[0];
	args[1] = nums[1];
	int a = 2, k = 2;
	for (int i = 0; i < cfg->n_instances; i++) {
		const struct cfg_instance *ci = &cfg->instances[i];
		if (!ci->execution)
			continue;
		snprintf(nums[k], 24, "%lld", (long long)ci->no_worker_timeout_us);
		args[a++] = ci->name;
		args[a++] = nums[k++];
	}
	if (store_evalsha(script_id[S_SWEEP], sweep_reply, NULL, 0, a, args, NULL) == 0)
		sc.sweeping = true;
	free(args);
	free(nums);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	sweep_arm();
	sched_sweep_now();
}

/* ---- life cycle ------------------------------------------------------------ */

int sched_init(void)
{
	for (int i = 0; i < S_COUNT; i++) {
		script_id[i] = store_script_register(script_src[i].name, script_src[i].lua);
		if (script_id[i] < 0)
			return -1;
	}
	return 0;
}

void sched_start(struct event_base *base)
{
	sc.base = base;
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
