/*
 * ac.c - the action cache (see ac.h): reading, storing, dropping and
 * counting hits on entries in Redis, the completeness check run through
 * ac_walk.c, and the in-memory cache of successful checks.  Every Redis
 * access of the action cache is here; the writes are the scripts
 * src/state/lua/ac_put.lua, ac_drop.lua and ac_hit.lua, called with
 * EVALSHA.  Every entry expires after the retention (ac_configure), and
 * each write and each hit starts that time again, so Redis holds only the
 * entries someone stored or used lately.
 *
 * Each ac_get / ac_put is an `op` that lives until its callback ran.  Ops
 * whose check is running (or whose answer waits for the next loop pass)
 * sit on the pending list, so ac_shutdown can stop them before the blob
 * stores close; ops waiting for Redis are owned by the store's callback.
 */
#include "domain/ac.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "core/digest.h"
#include "core/err.h"
#include "core/list.h"
#include "core/log.h"
#include "core/map.h"
#include "domain/ac_walk.h"
#include "domain/blob.h"
#include "state/keys.h"
#include "state/lua.h"
#include "state/store.h"
#include "proto/pb.h"

#define MOD "ac"

/* Completeness-check cache. */
#define CHECK_TTL_US (60 * 1000000LL)
#define CHECK_MAX    16384

static struct {
	struct event_base *base;
	int drop_script, hit_script, put_script;
	int64_t retention_us; /* an entry's life after its last write or hit */
	bool shutdown;
	struct list pending; /* struct op.link */
	/* check cache: entries by key, and oldest check first */
	bool ck_init;
	struct map ck_map;
	struct list ck_age;
} ac = {.drop_script = -1,
	.hit_script = -1,
	.put_script = -1,
	.retention_us = AC_RETENTION_DEFAULT};

void ac_configure(int64_t retention_us)
{
	ac.retention_us = retention_us > 0 ? retention_us : AC_RETENTION_DEFAULT;
}

/* The retention as PEXPIRE's argument (milliseconds, at least 1). */
static void retention_ms(char *buf, size_t len)
{
	int64_t ms = (ac.retention_us + 999) / 1000;
	snprintf(buf, len, "%lld", (long long)(ms > 0 ? ms : 1));
}

/* ---- check cache ------------------------------------------------------ */

struct ck_ent {
	struct map_node node;
	struct list age;
	uint8_t fp[DIGEST_HASH_LEN]; /* SHA-256 of the serialized result */
	int64_t evictions;	     /* store evictions when checked */
	int64_t at;		     /* mono_us of the check */
	char key[];
};

static void ck_ensure(void)
{
	if (ac.ck_init)
		return;
	map_init(&ac.ck_map);
	list_init(&ac.ck_age);
	ac.ck_init = true;
}

static bool ck_eq(const struct map_node *n, const void *key)
{
	return strcmp(container_of(n, struct ck_ent, node)->key, key) == 0;
}

static struct ck_ent *ck_find(const char *key)
{
	ck_ensure();
	struct map_node *n = map_find(&ac.ck_map, map_hash_str(key), ck_eq, key);
	return n ? container_of(n, struct ck_ent, node) : NULL;
}

static void ck_remove(struct ck_ent *e)
{
	map_remove(&ac.ck_map, &e->node);
	list_del(&e->age);
	free(e);
}

static void ck_forget(const char *key)
{
	struct ck_ent *e = ck_find(key);
	if (e)
		ck_remove(e);
}

static int64_t store_evictions(struct blob_store *cas)
{
	struct blob_stats st;
	blob_get_stats(cas, &st);
	return st.evictions;
}

/* True when `key` holding a result with fingerprint fp was found complete
 * recently and the store has evicted nothing since. */
static bool ck_valid(const char *key, const uint8_t fp[DIGEST_HASH_LEN], struct blob_store *cas)
{
	struct ck_ent *e = ck_find(key);
	if (!e)
		return false;
	if (memcmp(e->fp, fp, DIGEST_HASH_LEN) != 0 || e->evictions != store_evictions(cas) ||
	    mono_us() - e->at > CHECK_TTL_US) {
		ck_remove(e);
		return false;
	}
	return true;
}

/* Remember that `key` with fingerprint fp was complete when the store's
 * eviction count was `evictions`. */
static void ck_put(const char *key, const uint8_t fp[DIGEST_HASH_LEN], int64_t evictions)
{
	int64_t now = mono_us();
	ck_forget(key);
	struct list *first;
	while ((first = list_first(&ac.ck_age))) {
		struct ck_ent *old = container_of(first, struct ck_ent, age);
		if (map_count(&ac.ck_map) < CHECK_MAX && now - old->at <= CHECK_TTL_US)
			break;
		ck_remove(old);
	}
	size_t klen = strlen(key);
	struct ck_ent *e = xcalloc(1, sizeof(*e) + klen + 1);
	memcpy(e->key, key, klen + 1);
	memcpy(e->fp, fp, DIGEST_HASH_LEN);
	e->evictions = evictions;
	e->at = now;
	map_insert(&ac.ck_map, &e->node, map_hash_str(key));
	list_add_tail(&ac.ck_age, &e->age);
}

static void fingerprint(const void *data, size_t len, uint8_t fp[DIGEST_HASH_LEN])
{
	struct digest d;
	digest_of(data, len, &d);
	memcpy(fp, d.hash, DIGEST_HASH_LEN);
}

/* ---- init and shutdown ------------------------------------------------ */

int ac_init(struct event_base *base)
{
	ac.base = base;
	ac.shutdown = false;
	if (!ac.pending.next)
		list_init(&ac.pending);
	ck_ensure();
	ac.drop_script = store_script_register("ac_drop", lua_source("ac_drop"));
	if (ac.drop_script < 0)
		return ac.drop_script;
	ac.hit_script = store_script_register("ac_hit", lua_source("ac_hit"));
	if (ac.hit_script < 0)
		return ac.hit_script;
	ac.put_script = store_script_register("ac_put", lua_source("ac_put"));
	return ac.put_script < 0 ? ac.put_script : 0;
}

/* ---- ops ---------------------------------------------------------------- */

struct op {
	struct list link; /* on ac.pending while checking or answering */
	char *key;
	struct digest action;
	struct blob_store *cas;
	uint8_t *bytes; /* the serialized result */
	size_t len;
	PbActionResult *r; /* unpacked from bytes, walked */
	struct ac_walk *w;
	uint8_t fp[DIGEST_HASH_LEN];
	int64_t evictions; /* store evictions before the check */
	ac_cb cb;
	void *arg;
	/* the answer, when it waits for the next loop pass */
	struct event *ev;
	int rc;
	char *msg;
};

static struct op *op_new(const char *instance, struct blob_store *cas, const struct digest *action,
			 ac_cb cb, void *arg)
{
	struct op *o = xcalloc(1, sizeof(*o));
	list_init(&o->link);
	o->key = keys_ac(instance, action);
	o->action = *action;
	o->cas = cas;
	o->cb = cb;
	o->arg = arg;
	return o;
}

static void op_free(struct op *o)
{
	list_del(&o->link);
	ac_walk_free(o->w);
	if (o->r)
		build__bazel__remote__execution__v2__action_result__free_unpacked(o->r, NULL);
	if (o->ev)
		event_free(o->ev);
	free(o->key);
	free(o->bytes);
	free(o->msg);
	free(o);
}

/* Call the op's callback with rc/msg and free it. */
static void op_answer(struct op *o, int rc, const char *msg, const struct ac_walk_res *wr)
{
	struct ac_res res = {.rc = rc, .msg = msg};
	if (rc == 0) {
		res.result = o->bytes;
		res.len = o->len;
	}
	if (rc == ERR_PRECONDITION && wr) {
		res.missing = wr->missing;
		res.nmissing = wr->nmissing;
	}
	if (o->cb) {
		o->cb(o->arg, &res);
	} else if (rc != 0) {
		char ds[DIGEST_STR_LEN];
		LOGW(MOD, "result of action %s not cached: %s%s%s",
		     digest_str(&o->action, ds, sizeof(ds)), err_name(rc), msg ? ": " : "",
		     msg ? msg : "");
	}
	op_free(o);
}

static void op_deferred(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct op *o = arg;
	const struct ac_walk_res *wr = o->w ? ac_walk_res(o->w) : NULL;
	op_answer(o, o->rc, o->msg, wr);
}

/* Answer on the next loop pass (the caller may still be inside ac_put). */
static void op_answer_later(struct op *o, int rc, char *msg)
{
	static const struct timeval now = {0, 0};
	o->rc = rc;
	o->msg = msg;
	o->ev = evtimer_new(ac.base, op_deferred, o);
	list_add_tail(&ac.pending, &o->link);
	evtimer_add(o->ev, &now);
}

void ac_shutdown(void)
{
	ac.shutdown = true;
	if (ac.pending.next) {
		struct list *pos;
		while ((pos = list_first(&ac.pending))) {
			struct op *o = container_of(pos, struct op, link);
			op_answer(o, -ECANCELED, "the server is shutting down", NULL);
		}
	}
	if (ac.ck_init) {
		struct list *pos;
		while ((pos = list_first(&ac.ck_age)))
			ck_remove(container_of(pos, struct ck_ent, age));
		map_destroy(&ac.ck_map);
		ac.ck_init = false;
	}
}

static int store_error(const struct redisReply *reply, char **msg, const char *doing)
{
	if (!reply) {
		*msg = xasprintf("connection lost while %s", doing);
		return ERR_STORE_FAILED;
	}
	*msg = xasprintf("while %s: %.300s", doing, reply->str ? reply->str : "unexpected reply");
	return store_reply_rc(reply); /* ERR_STORE_FULL for OOM, else ERR_STORE_REPLY */
}

/* ---- drop and hit ----------------------------------------------------- */

struct drop {
	ac_drop_cb cb;
	void *arg;
};

static void drop_reply(redisReply *reply, void *arg)
{
	struct drop *d = arg;
	if (!d->cb) {
		/* fire and forget */
	} else if (!reply || reply->type == REDIS_REPLY_ERROR) {
		char *msg = NULL;
		int rc = store_error(reply, &msg, "dropping an action cache entry");
		LOGW(MOD, "%s", msg);
		free(msg);
		d->cb(d->arg, rc, 0);
	} else {
		d->cb(d->arg, 0, reply->type == REDIS_REPLY_INTEGER && reply->integer > 0);
	}
	free(d);
}

static int drop_key(const char *key, const uint8_t *result, size_t len, ac_drop_cb cb, void *arg)
{
	ck_forget(key);
	const char *args[] = {key, (const char *)result};
	size_t lens[] = {strlen(key), len};
	struct drop *d = xcalloc(1, sizeof(*d));
	d->cb = cb;
	d->arg = arg;
	int rc = store_evalsha(ac.drop_script, drop_reply, d, 1, 1, args, lens);
	if (rc != 0)
		free(d);
	return rc;
}

int ac_drop_if(const char *instance, const struct digest *action, const uint8_t *result, size_t len,
	       ac_drop_cb cb, void *arg)
{
	char *key = keys_ac(instance, action);
	int rc = drop_key(key, result, len, cb, arg);
	free(key);
	return rc;
}

static void count_hit(const char *key)
{
	char ms[24];
	retention_ms(ms, sizeof ms);
	const char *args[] = {key, ms};
	if (store_evalsha(ac.hit_script, NULL, NULL, 1, 1, args, NULL) != 0)
		LOGD(MOD, "hit on %s not counted: Redis is down", key);
}

/* ---- ac_get ------------------------------------------------------------- */

static void get_dropped(void *arg, int rc, int dropped)
{
	struct op *o = arg;
	(void)rc, (void)dropped; /* NOT_FOUND either way: the entry is unusable */
	op_answer(o, -ENOENT, o->msg, NULL);
}

/* The entry is unusable: drop it (if unchanged), then answer -ENOENT with
 * why (malloc'd; taken). */
static void get_drop(struct op *o, char *why)
{
	LOGI(MOD, "dropping action cache entry %s: %s", o->key, why);
	o->msg = why;
	if (drop_key(o->key, o->bytes, o->len, get_dropped, o) != 0)
		op_answer(o, -ENOENT, o->msg, NULL);
}

static void get_walked(void *arg)
{
	struct op *o = arg;
	const struct ac_walk_res *wr = ac_walk_res(o->w);
	char ds[DIGEST_STR_LEN], ms[DIGEST_STR_LEN];
	digest_str(&o->action, ds, sizeof(ds));
	list_del(&o->link);
	if (wr->ioerr) {
		char *msg = xasprintf("checking the result of action %s: %s", ds, wr->ioerr);
		op_answer(o, -EIO, msg, NULL);
		free(msg);
	} else if (wr->invalid) {
		get_drop(o, xasprintf("cached result of action %s is malformed (%s); dropped it",
				      ds, wr->invalid));
	} else if (wr->nmissing) {
		get_drop(o, xasprintf("cached result of action %s references blobs/%s, which is "
				      "no longer in CAS%s; dropped the entry",
				      ds, digest_str(&wr->missing[0], ms, sizeof(ms)),
				      wr->nmissing > 1 ? " (and others)" : ""));
	} else {
		ck_put(o->key, o->fp, o->evictions);
		count_hit(o->key);
		op_answer(o, 0, NULL, NULL);
	}
}

static void get_reply(redisReply *reply, void *arg)
{
	struct op *o = arg;
	char ds[DIGEST_STR_LEN];
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		char *msg = NULL;
		int rc = store_error(reply, &msg, "reading the action cache");
		op_answer(o, rc, msg, NULL);
		free(msg);
		return;
	}
	if (reply->type != REDIS_REPLY_STRING) {
		op_answer(o, -ENOENT, NULL, NULL);
		return;
	}
	if (ac.shutdown) {
		op_answer(o, -ECANCELED, "the server is shutting down", NULL);
		return;
	}
	o->len = reply->len;
	o->bytes = xmalloc(o->len ? o->len : 1);
	memcpy(o->bytes, reply->str, o->len);
	o->r = build__bazel__remote__execution__v2__action_result__unpack(NULL, o->len, o->bytes);
	if (!o->r) {
		get_drop(o, xasprintf("action cache entry for action %s is not a valid "
				      "ActionResult; dropped it",
				      digest_str(&o->action, ds, sizeof(ds))));
		return;
	}
	fingerprint(o->bytes, o->len, o->fp);
	if (!o->cas || ck_valid(o->key, o->fp, o->cas)) { /* no cas: the caller checks */
		count_hit(o->key);
		op_answer(o, 0, NULL, NULL);
		return;
	}
	o->evictions = store_evictions(o->cas);
	o->w = ac_walk_new(ac.base, o->cas, o->r, get_walked, o);
	list_add_tail(&ac.pending, &o->link);
	ac_walk_run(o->w); /* inside a Redis reply: answering now is fine */
}

int ac_get(const char *instance, struct blob_store *cas, const struct digest *action, ac_cb cb,
	   void *arg)
{
	struct op *o = op_new(instance, cas, action, cb, arg);
	int rc = store_command(get_reply, o, "HGET %s result", o->key);
	if (rc != 0)
		op_free(o);
	return rc;
}

/* ---- ac_put ------------------------------------------------------------- */

static void put_reply(redisReply *reply, void *arg)
{
	struct op *o = arg;
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		char *msg = NULL;
		int rc = store_error(reply, &msg, "storing the action result");
		op_answer(o, rc, msg, NULL);
		free(msg);
		return;
	}
	ck_put(o->key, o->fp, o->evictions);
	op_answer(o, 0, NULL, NULL);
}

/* Pre-v2.1 clients list symlinks in the deprecated split fields, newer
 * ones in output_symlinks (some in both): count whichever list is longer. */
static size_t count_outputs(const PbActionResult *r)
{
	size_t links = r->n_output_symlinks;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
	size_t old = r->n_output_file_symlinks + r->n_output_directory_symlinks;
#pragma GCC diagnostic pop
	return r->n_output_files + r->n_output_directories + (links > old ? links : old);
}

static void digest_field(char *buf, size_t len,
			 const Build__Bazel__Remote__Execution__V2__Digest *pd)
{
	struct digest d;
	if (pd && digest_parse(pd->hash, pd->size_bytes, &d, NULL) == 0)
		digest_str(&d, buf, len);
	else
		buf[0] = '\0';
}

/* One HSET of the result and its readable fields, and the expiry
 * (ac_put.lua). */
static int put_store(struct op *o)
{
	const PbActionResult *r = o->r;
	char exit_code[16], outputs[24], updated[24], ms[24];
	char out_d[DIGEST_STR_LEN], err_d[DIGEST_STR_LEN];
	snprintf(exit_code, sizeof(exit_code), "%d", (int)r->exit_code);
	snprintf(outputs, sizeof(outputs), "%zu", count_outputs(r));
	snprintf(updated, sizeof(updated), "%lld", (long long)now_us());
	digest_field(out_d, sizeof(out_d), r->stdout_digest);
	digest_field(err_d, sizeof(err_d), r->stderr_digest);
	retention_ms(ms, sizeof ms);
	const char *argv[] = {o->key,	   ms,	      "result",	 (const char *)o->bytes,
			      "exit_code", exit_code, "outputs", outputs,
			      "stdout",	   out_d,     "stderr",	 err_d,
			      "updated",   updated};
	size_t lens[ARRAY_LEN(argv)];
	for (size_t i = 0; i < ARRAY_LEN(argv); i++)
		lens[i] = i == 3 ? o->len : strlen(argv[i]);
	return store_evalsha(ac.put_script, put_reply, o, 1, (int)ARRAY_LEN(argv) - 1, argv, lens);
}

static void put_walked(void *arg)
{
	struct op *o = arg;
	const struct ac_walk_res *wr = ac_walk_res(o->w);
	char ms[DIGEST_STR_LEN], ds[DIGEST_STR_LEN];
	list_del(&o->link);
	if (wr->invalid) {
		op_answer_later(o, wr->too_large ? ERR_TOO_LARGE : -EINVAL, xstrdup(wr->invalid));
	} else if (wr->ioerr) {
		op_answer_later(o, -EIO,
				xasprintf("checking the result of action %s: %s",
					  digest_str(&o->action, ds, sizeof(ds)), wr->ioerr));
	} else if (wr->nmissing) {
		op_answer_later(o, ERR_PRECONDITION,
				xasprintf("blobs/%s is missing from CAS%s",
					  digest_str(&wr->missing[0], ms, sizeof(ms)),
					  wr->nmissing > 1 ? " (and others)" : ""));
	} else {
		int rc = put_store(o);
		if (rc != 0)
			op_answer_later(o, rc, xstrdup("cannot store the action result"));
	}
	/* else put_reply answers */
}

int ac_put(const char *instance, struct blob_store *cas, const struct digest *action,
	   const PbActionResult *r, ac_cb cb, void *arg)
{
	if (!store_up())
		return ERR_STORE_DOWN;
	struct op *o = op_new(instance, cas, action, cb, arg);
	o->len = protobuf_c_message_get_packed_size(&r->base);
	o->bytes = xmalloc(o->len ? o->len : 1);
	protobuf_c_message_pack(&r->base, o->bytes);
	/* Our own copy: the walk may outlive the caller's message. */
	o->r = build__bazel__remote__execution__v2__action_result__unpack(NULL, o->len, o->bytes);
	if (!o->r)
		abort(); /* what protobuf-c packed it must parse */
	fingerprint(o->bytes, o->len, o->fp);
	if (!cas) { /* the caller checked it (cas_remote.c) */
		int rc = put_store(o);
		if (rc != 0)
			op_answer_later(o, rc, xstrdup("cannot store the action result"));
		return 0;
	}
	o->evictions = store_evictions(cas);
	o->w = ac_walk_new(ac.base, cas, o->r, put_walked, o);
	list_add_tail(&ac.pending, &o->link);
	ac_walk_run(o->w);
	return 0;
}
