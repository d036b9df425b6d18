/*
 * svc_ac.c - build.bazel.remote.execution.v2.ActionCache: GetActionResult
 * and UpdateActionResult.  Entries are Redis hashes (schema in keys.c and
 * reactor-redis(7)) holding the serialized ActionResult plus plain fields
 * for people, so several reactords sharing one Redis share the cache.
 *
 * The rule this file exists to keep: a result is served only while every
 * blob it references (output files, output directories' Tree blobs and
 * the files inside them, stdout/stderr) is in the instance's CAS.  Updates
 * that reference missing blobs are refused with a PreconditionFailure; a
 * stored entry found incomplete on a read is dropped and reported
 * NOT_FOUND, so the client re-executes instead of failing on a download.
 * The outcome of a successful check is remembered in a small in-memory
 * table (keyed by entry, valid while the result bytes are unchanged, the
 * store has evicted nothing since, and for at most CHECK_TTL), so hot
 * entries skip the walk through their output trees.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "domain/ac.h"
#include "domain/blob.h"
#include "core/cfg.h"
#include "google/rpc/error_details.pb-c.h"
#include "services/inst.h"
#include "state/keys.h"
#include "core/log.h"
#include "services/reapi.h"
#include "state/store.h"
#include "services/svc.h"

#define MOD	"ac"
#define REV2(x) BUILD__BAZEL__REMOTE__EXECUTION__V2__##x

typedef Build__Bazel__Remote__Execution__V2__ActionResult PbActionResult;
typedef Build__Bazel__Remote__Execution__V2__Directory PbDirectory;
typedef Build__Bazel__Remote__Execution__V2__Tree PbTree;

/* Inlining: each blob at most INLINE_BLOB_MAX, and the whole response
 * kept under INLINE_MSG_MAX (the default receive limit of gRPC clients,
 * Bazel's included) minus a margin for framing. */
#define INLINE_BLOB_MAX (1 << 20)
#define INLINE_MSG_MAX	(4 << 20)
#define INLINE_MARGIN	(16 << 10)

/* Tree blobs are read whole to check the files inside; bigger ones are
 * refused rather than stall the loop allocating and hashing them. */
#define TREE_MAX (64LL << 20)

/* Completeness-check cache. */
#define CHECK_TTL_US  (60 * 1000000LL)
#define CHECK_MAX     16384
#define CHECK_BUCKETS 4096 /* power of two */

/* FAILED_PRECONDITION details travel in a trailer: keep the serialized
 * PreconditionFailure under this many bytes (about 44 violations), so the
 * base64 trailer fits the 8 KiB metadata limit of common clients. */
#define DETAILS_MAX	 4096
#define PRECONDITION_URL "type.googleapis.com/google.rpc.PreconditionFailure"

/* Drop an entry only if it still holds the result we judged stale: a
 * fresh update racing with the drop must survive. */
static const char DROP_LUA[] = "if redis.call('HGET', KEYS[1], 'result') == ARGV[1] then "
			       "return redis.call('DEL', KEYS[1]) end return 0";
/* Count a hit without resurrecting an entry someone just dropped. */
static const char HIT_LUA[] = "if redis.call('EXISTS', KEYS[1]) == 1 then "
			      "return redis.call('HINCRBY', KEYS[1], 'hits', 1) end return 0";

/* ---- the completeness check ------------------------------------------ */

/* What a walk over a result's references found. */
struct walk {
	struct blob_store *cas;
	char *invalid; /* first malformed reference (malloc'd), or NULL */
	char *ioerr;   /* first storage error other than absence, or NULL */
	struct digest *missing;
	size_t nmissing, cap;
};

static void walk_free(struct walk *w)
{
	free(w->invalid);
	free(w->ioerr);
	free(w->missing);
}

static void walk_add_missing(struct walk *w, const struct digest *d)
{
	if (w->nmissing == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 8;
		w->missing = xrealloc(w->missing, w->cap * sizeof(*w->missing));
	}
	w->missing[w->nmissing++] = *d;
}

static void walk_invalid(struct walk *w, const char *err, const char *fmt, va_list ap)
{
	if (w->invalid)
		return;
	char what[512];
	vsnprintf(what, sizeof(what), fmt, ap);
	w->invalid = xasprintf("%s: %s", what, err);
}

/* Validate one reference (fmt names it for messages) and check that its
 * blob is stored.  Returns true when it is valid and present. */
static bool walk_ref(struct walk *w, const PbDigest *pd, struct digest *out, const char *fmt, ...)
	PRINTF_LIKE(4, 5);
static bool walk_ref(struct walk *w, const PbDigest *pd, struct digest *out, const char *fmt, ...)
{
	char *err = NULL;
	if (reapi_digest_err(pd, out, &err) != 0) {
		va_list ap;
		va_start(ap, fmt);
		walk_invalid(w, err, fmt, ap);
		va_end(ap);
		free(err);
		return false;
	}
	if (digest_is_empty(out) || blob_has(w->cas, out))
		return true;
	walk_add_missing(w, out);
	return false;
}

static void walk_dir(struct walk *w, const PbDirectory *dir, size_t idx, const char *path)
{
	if (!dir)
		return;
	for (size_t i = 0; i < dir->n_files && !w->invalid; i++) {
		struct digest d;
		walk_ref(w, dir->files[i]->digest, &d,
			 "output_directories[%zu] (\"%.200s\"): file \"%.200s\" in its Tree", idx,
			 path, dir->files[i]->name);
	}
}

/* The Tree blob td is present: check the files it lists. */
static void walk_tree(struct walk *w, const struct digest *td, size_t idx, const char *path)
{
	char ds[DIGEST_STR_LEN];
	if (td->size == 0)
		return; /* the empty Tree lists nothing */
	if (td->size > TREE_MAX) {
		if (!w->invalid)
			w->invalid = xasprintf(
				"output_directories[%zu] (\"%.200s\"): Tree blob %s is "
				"larger than the %lld MiB this server verifies",
				idx, path, digest_str(td, ds, sizeof(ds)), TREE_MAX >> 20);
		return;
	}
	uint8_t *data = NULL;
	int rc = blob_get(w->cas, td, &data);
	if (rc == -ENOENT) {
		walk_add_missing(w, td);
		return;
	}
	if (rc != 0) {
		if (!w->ioerr)
			w->ioerr = xasprintf("reading Tree blob %s: %s",
					     digest_str(td, ds, sizeof(ds)), strerror(-rc));
		return;
	}
	PbTree *t = build__bazel__remote__execution__v2__tree__unpack(&call_pb_allocator,
								      (size_t)td->size, data);
	free(data);
	if (!t) {
		if (!w->invalid)
			w->invalid = xasprintf(
				"output_directories[%zu] (\"%.200s\"): tree_digest %s "
				"is not a serialized build.bazel.remote.execution.v2.Tree",
				idx, path, digest_str(td, ds, sizeof(ds)));
		return;
	}
	walk_dir(w, t->root, idx, path);
	for (size_t i = 0; i < t->n_children && !w->invalid; i++)
		walk_dir(w, t->children[i], idx, path);
	build__bazel__remote__execution__v2__tree__free_unpacked(t, &call_pb_allocator);
}

/* Check every reference of r.  Afterwards the result is complete and
 * well-formed iff !w->invalid && !w->ioerr && !w->nmissing. */
static void walk_result(struct walk *w, const PbActionResult *r)
{
	struct digest d;
	for (size_t i = 0; i < r->n_output_files && !w->invalid; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputFile *f = r->output_files[i];
		walk_ref(w, f->digest, &d, "output_files[%zu] (\"%.200s\"): digest", i, f->path);
	}
	for (size_t i = 0; i < r->n_output_directories && !w->invalid; i++) {
		const Build__Bazel__Remote__Execution__V2__OutputDirectory *od =
			r->output_directories[i];
		if (od->root_directory_digest) {
			/* Optional and not a CAS reference on its own (it names
			 * the Tree's root): validated, not looked up. */
			char *err = NULL;
			if (reapi_digest_err(od->root_directory_digest, &d, &err) != 0) {
				w->invalid = xasprintf("output_directories[%zu] (\"%.200s\"): "
						       "root_directory_digest: %s",
						       i, od->path, err);
				free(err);
				break;
			}
		}
		if (walk_ref(w, od->tree_digest, &d,
			     "output_directories[%zu] (\"%.200s\"): tree_digest", i, od->path))
			walk_tree(w, &d, i, od->path);
	}
	if (r->stdout_digest && !w->invalid)
		walk_ref(w, r->stdout_digest, &d, "stdout_digest");
	if (r->stderr_digest && !w->invalid)
		walk_ref(w, r->stderr_digest, &d, "stderr_digest");
}

static int digest_cmp(const void *a, const void *b)
{
	const struct digest *x = a, *y = b;
	int c = memcmp(x->hash, y->hash, DIGEST_HASH_LEN);
	if (c)
		return c;
	return (x->size > y->size) - (x->size < y->size);
}

/* Sort the missing list and drop duplicates (outputs often share blobs). */
static void walk_unique(struct walk *w)
{
	if (w->nmissing < 2)
		return;
	qsort(w->missing, w->nmissing, sizeof(*w->missing), digest_cmp);
	size_t o = 1;
	for (size_t i = 1; i < w->nmissing; i++)
		if (digest_cmp(&w->missing[i], &w->missing[o - 1]) != 0)
			w->missing[o++] = w->missing[i];
	w->nmissing = o;
}

/* ---- check cache --------------------------------------------------------- */

struct ck_ent {
	struct ck_ent *hnext;	      /* bucket chain */
	struct ck_ent *older, *newer; /* age list: oldest check first */
	uint8_t fp[DIGEST_HASH_LEN];  /* SHA-256 of the serialized result */
	int64_t evictions;	      /* store evictions when checked */
	int64_t at;		      /* mono_us of the check */
	char key[];
};

static struct {
	struct ck_ent **tab;
	struct ck_ent *oldest, *newest;
	size_t count;
} ck;

static uint32_t ck_hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h & (CHECK_BUCKETS - 1);
}

static struct ck_ent *ck_find(const char *key)
{
	if (!ck.tab)
		return NULL;
	for (struct ck_ent *e = ck.tab[ck_hash(key)]; e; e = e->hnext)
		if (strcmp(e->key, key) == 0)
			return e;
	return NULL;
}

static void ck_remove(struct ck_ent *e)
{
	struct ck_ent **pp = &ck.tab[ck_hash(e->key)];
	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	if (e->older)
		e->older->newer = e->newer;
	else
		ck.oldest = e->newer;
	if (e->newer)
		e->newer->older = e->older;
	else
		ck.newest = e->older;
	ck.count--;
	free(e);
}

static void ck_forget(const char *key)
{
	struct ck_ent *e = ck_find(key);
	if (e)
		ck_remove(e);
}

/* True when `key` holding a result with fingerprint fp was found complete
 * recently and the store has evicted nothing since. */
static bool ck_valid(const char *key, const uint8_t fp[DIGEST_HASH_LEN], struct blob_store *cas)
{
	struct ck_ent *e = ck_find(key);
	if (!e)
		return false;
	struct blob_stats st;
	blob_get_stats(cas, &st);
	if (memcmp(e->fp, fp, DIGEST_HASH_LEN) != 0 || e->evictions != st.evictions ||
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
	while (ck.oldest && (ck.count >= CHECK_MAX || now - ck.oldest->at > CHECK_TTL_US))
		ck_remove(ck.oldest);
	if (!ck.tab)
		ck.tab = xcalloc(CHECK_BUCKETS, sizeof(*ck.tab));
	size_t klen = strlen(key);
	struct ck_ent *e = xmalloc(sizeof(*e) + klen + 1);
	memcpy(e->key, key, klen + 1);
	memcpy(e->fp, fp, DIGEST_HASH_LEN);
	e->evictions = evictions;
	e->at = now;
	uint32_t b = ck_hash(key);
	e->hnext = ck.tab[b];
	ck.tab[b] = e;
	e->newer = NULL;
	e->older = ck.newest;
	if (ck.newest)
		ck.newest->newer = e;
	else
		ck.oldest = e;
	ck.newest = e;
	ck.count++;
}

static void fingerprint(const void *data, size_t len, uint8_t fp[DIGEST_HASH_LEN])
{
	struct digest d;
	digest_of(data, len, &d);
	memcpy(fp, d.hash, DIGEST_HASH_LEN);
}

static int64_t store_evictions(struct blob_store *cas)
{
	struct blob_stats st;
	blob_get_stats(cas, &st);
	return st.evictions;
}

void svc_ac_shutdown(void)
{
	while (ck.oldest)
		ck_remove(ck.oldest);
	free(ck.tab);
	ck.tab = NULL;
}

/* ---- shared helpers ------------------------------------------------------ */

static void finish_redis_error(struct call *c, const redisReply *r, const char *doing)
{
	if (!r)
		call_finish(c, GRPC_UNAVAILABLE, "Redis is down: connection lost while %s", doing);
	else
		call_finish(c, GRPC_INTERNAL, "Redis error while %s: %.300s", doing,
			    r->str ? r->str : "unexpected reply");
}

/* ---- GetActionResult ---------------------------------------------------- */

struct get_ctx {
	struct call *c;
	char *instance;
	char *key;
	struct digest action;
	bool inline_stdout, inline_stderr;
	size_t n_inline;
	char **inline_paths; /* sorted copies */
	/* while dropping a stale entry: */
	char *why;
};

static void get_free(struct get_ctx *g)
{
	free(g->instance);
	free(g->key);
	for (size_t i = 0; i < g->n_inline; i++)
		free(g->inline_paths[i]);
	free(g->inline_paths);
	free(g->why);
	free(g);
}

static int strp_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool wants_inline(const struct get_ctx *g, const char *path)
{
	return g->n_inline &&
	       bsearch(&path, g->inline_paths, g->n_inline, sizeof(char *), strp_cmp) != NULL;
}

/* Swapped-in bytes fields of an unpacked result: the original value is
 * put back (and ours freed) before the message is freed. */
struct swap {
	ProtobufCBinaryData *field;
	ProtobufCBinaryData saved;
	uint8_t *ours;
};

struct swaps {
	struct swap *v;
	size_t n, cap;
};

static void swap_set(struct swaps *s, ProtobufCBinaryData *field, uint8_t *data, size_t len)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 4;
		s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
	}
	s->v[s->n++] = (struct swap){field, *field, data};
	field->data = data;
	field->len = len;
}

static void swaps_undo(struct swaps *s)
{
	while (s->n) {
		struct swap *w = &s->v[--s->n];
		*w->field = w->saved;
		free(w->ours);
	}
	free(s->v);
}

/* Fill one inline field from CAS if it fits the budget. */
static void inline_blob(struct swaps *s, struct blob_store *cas, ProtobufCBinaryData *field,
			const PbDigest *pd, int64_t *budget)
{
	struct digest d;
	if (!pd || field->len || reapi_digest_err(pd, &d, NULL) != 0 || d.size == 0)
		return;
	if (d.size > INLINE_BLOB_MAX || d.size + 8 > *budget)
		return; /* the client downloads it instead, as REAPI allows */
	uint8_t *data = NULL;
	if (blob_get(cas, &d, &data) != 0)
		return;
	*budget -= d.size + 8;
	swap_set(s, field, data, (size_t)d.size);
}

/* Strip inlined bytes the client did not ask for (kept when they are the
 * only copy), then inline what it asked for within the limits. */
static void apply_inlining(const struct get_ctx *g, PbActionResult *r, struct blob_store *cas,
			   struct swaps *s)
{
	if (!g->inline_stdout && r->stdout_digest && r->stdout_raw.len)
		swap_set(s, &r->stdout_raw, NULL, 0);
	if (!g->inline_stderr && r->stderr_digest && r->stderr_raw.len)
		swap_set(s, &r->stderr_raw, NULL, 0);
	for (size_t i = 0; i < r->n_output_files; i++) {
		Build__Bazel__Remote__Execution__V2__OutputFile *f = r->output_files[i];
		if (f->contents.len && f->digest && !wants_inline(g, f->path))
			swap_set(s, &f->contents, NULL, 0);
	}
	int64_t budget = INLINE_MSG_MAX - INLINE_MARGIN -
			 (int64_t)protobuf_c_message_get_packed_size(&r->base);
	if (g->inline_stdout)
		inline_blob(s, cas, &r->stdout_raw, r->stdout_digest, &budget);
	if (g->inline_stderr)
		inline_blob(s, cas, &r->stderr_raw, r->stderr_digest, &budget);
	for (size_t i = 0; i < r->n_output_files && g->n_inline; i++) {
		Build__Bazel__Remote__Execution__V2__OutputFile *f = r->output_files[i];
		if (wants_inline(g, f->path))
			inline_blob(s, cas, &f->contents, f->digest, &budget);
	}
}

static void drop_reply(redisReply *reply, void *arg)
{
	struct get_ctx *g = arg;
	if (!reply || reply->type == REDIS_REPLY_ERROR)
		LOGW(MOD, "could not drop stale entry %s: %s", g->key,
		     reply ? reply->str : "connection lost");
	if (!call_done(g->c))
		call_finish(g->c, GRPC_NOT_FOUND, "%s", g->why);
	call_unref(g->c);
	get_free(g);
}

/* Drop the stale entry (if it still holds `result`), then answer
 * NOT_FOUND with `why` (malloc'd; taken).  Takes g. */
static void drop_and_not_found(struct get_ctx *g, const char *result, size_t len, char *why)
{
	LOGI(MOD, "dropping action cache entry %s: %s", g->key, why);
	ck_forget(g->key);
	g->why = why;
	if (store_command(drop_reply, g, "EVAL %s 1 %s %b", DROP_LUA, g->key, result, len) == 0)
		return; /* drop_reply finishes the call and frees g */
	call_finish(g->c, GRPC_NOT_FOUND, "%s", g->why);
	call_unref(g->c);
	get_free(g);
}

/* Answer from the HGET reply.  Returns false when g was handed on. */
static bool get_answer(struct get_ctx *g, redisReply *reply)
{
	struct call *c = g->c;
	char ds[DIGEST_STR_LEN];
	digest_str(&g->action, ds, sizeof(ds));
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		finish_redis_error(c, reply, "reading the action cache");
		return true;
	}
	if (reply->type != REDIS_REPLY_STRING) {
		call_finish(c, GRPC_NOT_FOUND,
			    "no action cache entry for action %s in instance \"%s\"", ds,
			    g->instance);
		return true;
	}
	struct inst *in = inst_find(g->instance);
	if (!in) {
		call_finish(c, GRPC_UNAVAILABLE, "instance \"%s\" was removed", g->instance);
		return true;
	}
	PbActionResult *r = build__bazel__remote__execution__v2__action_result__unpack(
		&call_pb_allocator, reply->len, (const uint8_t *)reply->str);
	if (!r) {
		drop_and_not_found(g, reply->str, reply->len,
				   xasprintf("action cache entry for action %s is not a valid "
					     "ActionResult; dropped it",
					     ds));
		return false;
	}
	uint8_t fp[DIGEST_HASH_LEN];
	fingerprint(reply->str, reply->len, fp);
	if (!ck_valid(g->key, fp, in->cas)) {
		int64_t ev = store_evictions(in->cas);
		struct walk w = {.cas = in->cas};
		walk_result(&w, r);
		if (w.ioerr) {
			call_finish(c, GRPC_INTERNAL, "checking the result of action %s: %s", ds,
				    w.ioerr);
			walk_free(&w);
			build__bazel__remote__execution__v2__action_result__free_unpacked(
				r, &call_pb_allocator);
			return true;
		}
		if (w.invalid || w.nmissing) {
			char *why;
			if (w.invalid) {
				why = xasprintf(
					"cached result of action %s is malformed (%s); dropped "
					"it",
					ds, w.invalid);
			} else {
				char ms[DIGEST_STR_LEN];
				why = xasprintf(
					"cached result of action %s references blobs/%s, which "
					"is no longer in CAS%s; dropped the entry",
					ds, digest_str(&w.missing[0], ms, sizeof(ms)),
					w.nmissing > 1 ? " (and others)" : "");
			}
			walk_free(&w);
			build__bazel__remote__execution__v2__action_result__free_unpacked(
				r, &call_pb_allocator);
			drop_and_not_found(g, reply->str, reply->len, why);
			return false;
		}
		walk_free(&w);
		ck_put(g->key, fp, ev);
	}

	struct swaps s = {0};
	apply_inlining(g, r, in->cas, &s);
	if (store_command(NULL, NULL, "EVAL %s 1 %s", HIT_LUA, g->key) != 0)
		LOGD(MOD, "hit on %s not counted: Redis is down", g->key);
	call_reply(c, &r->base);
	swaps_undo(&s);
	build__bazel__remote__execution__v2__action_result__free_unpacked(r, &call_pb_allocator);
	return true;
}

static void get_reply(redisReply *reply, void *arg)
{
	struct get_ctx *g = arg;
	if (call_done(g->c) || get_answer(g, reply)) {
		call_unref(g->c);
		get_free(g);
	}
}

void svc_ac_get(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__GetActionResultRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	struct digest action;
	if (!in || reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->action_digest, "action_digest", &action) != 0)
		return;
	struct get_ctx *g = xcalloc(1, sizeof(*g));
	g->c = c;
	g->instance = xstrdup(req->instance_name);
	g->key = keys_ac(req->instance_name, &action);
	g->action = action;
	g->inline_stdout = req->inline_stdout;
	g->inline_stderr = req->inline_stderr;
	if (req->n_inline_output_files) {
		g->n_inline = req->n_inline_output_files;
		g->inline_paths = xcalloc(g->n_inline, sizeof(char *));
		for (size_t i = 0; i < g->n_inline; i++)
			g->inline_paths[i] = xstrdup(req->inline_output_files[i]);
		qsort(g->inline_paths, g->n_inline, sizeof(char *), strp_cmp);
	}
	call_ref(c);
	if (store_command(get_reply, g, "HGET %s result", g->key) != 0) {
		call_finish(c, GRPC_UNAVAILABLE, "Redis is down: cannot read the action cache");
		call_unref(c);
		get_free(g);
	}
}

/* ---- UpdateActionResult ------------------------------------------------- */

struct upd_ctx {
	struct call *c;
	char *key;
	uint8_t *bytes;
	size_t len;
	int64_t evictions; /* store evictions before the check */
};

static void upd_free(struct upd_ctx *u)
{
	free(u->key);
	free(u->bytes);
	free(u);
}

static void upd_reply(redisReply *reply, void *arg)
{
	struct upd_ctx *u = arg;
	struct call *c = u->c;
	if (call_done(c)) {
		/* Stored all the same; nothing to answer. */
	} else if (!reply || reply->type == REDIS_REPLY_ERROR) {
		finish_redis_error(c, reply, "storing the action result");
	} else {
		uint8_t fp[DIGEST_HASH_LEN];
		fingerprint(u->bytes, u->len, fp);
		ck_put(u->key, fp, u->evictions);
		PbActionResult *r = build__bazel__remote__execution__v2__action_result__unpack(
			&call_pb_allocator, u->len, u->bytes);
		if (r) {
			call_reply(c, &r->base);
			build__bazel__remote__execution__v2__action_result__free_unpacked(
				r, &call_pb_allocator);
		} else {
			call_finish(c, GRPC_INTERNAL, "stored action result does not re-parse");
		}
	}
	call_unref(c);
	upd_free(u);
}

/* FAILED_PRECONDITION listing each missing blob as a MISSING violation
 * (as many as fit the trailer budget; the message counts them all). */
static void finish_missing(struct call *c, struct walk *w, const char *action)
{
	walk_unique(w);
	size_t n = w->nmissing;
	Google__Rpc__PreconditionFailure__Violation *vs = xcalloc(n, sizeof(*vs));
	Google__Rpc__PreconditionFailure__Violation **vp = xcalloc(n, sizeof(*vp));
	char **subjects = xcalloc(n, sizeof(*subjects));
	size_t used = 0, nv = 0;
	for (size_t i = 0; i < n; i++) {
		subjects[i] = xasprintf("blobs/%s/%lld", w->missing[i].hex,
					(long long)w->missing[i].size);
		google__rpc__precondition_failure__violation__init(&vs[i]);
		vs[i].type = (char *)"MISSING";
		vs[i].subject = subjects[i];
		size_t sz = protobuf_c_message_get_packed_size(&vs[i].base) + 3;
		if (used + sz <= DETAILS_MAX) {
			used += sz;
			vp[nv++] = &vs[i];
		}
	}
	Google__Rpc__PreconditionFailure pf = GOOGLE__RPC__PRECONDITION_FAILURE__INIT;
	pf.n_violations = nv;
	pf.violations = vp;
	size_t len = protobuf_c_message_get_packed_size(&pf.base);
	uint8_t *buf = xmalloc(len ? len : 1);
	protobuf_c_message_pack(&pf.base, buf);
	struct grpc_any any = {PRECONDITION_URL, buf, len};

	char list[400] = "";
	size_t off = 0;
	for (size_t i = 0; i < n && i < 3; i++) {
		int k = snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
				 subjects[i]);
		if (k < 0 || (size_t)k >= sizeof(list) - off)
			break;
		off += (size_t)k;
	}
	call_finish_details(c, GRPC_FAILED_PRECONDITION, &any, 1,
			    "action result for %s references %zu blob%s missing from CAS "
			    "(upload them first): %s%s%s",
			    action, n, n == 1 ? "" : "s", list, n > 3 ? ", ..." : "",
			    nv < n ? " (details list the first ones)" : "");
	free(buf);
	for (size_t i = 0; i < n; i++)
		free(subjects[i]);
	free(subjects);
	free(vp);
	free(vs);
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

static void digest_field(char *buf, size_t len, const PbDigest *pd)
{
	struct digest d;
	if (pd && reapi_digest_err(pd, &d, NULL) == 0)
		digest_str(&d, buf, len);
	else
		buf[0] = '\0';
}

void svc_ac_update(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__UpdateActionResultRequest *req =
		(const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in)
		return;
	if (!inst_cfg(in)->allow_updates) {
		call_finish(c, GRPC_PERMISSION_DENIED,
			    "instance \"%s\" does not accept action cache updates "
			    "(allow-updates: false)",
			    req->instance_name);
		return;
	}
	struct digest action;
	if (reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->action_digest, "action_digest", &action) != 0)
		return;
	const PbActionResult *r = req->action_result;
	char ds[DIGEST_STR_LEN];
	digest_str(&action, ds, sizeof(ds));
	if (!r) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "action_result is required (action %s)", ds);
		return;
	}

	int64_t ev = store_evictions(in->cas);
	struct walk w = {.cas = in->cas};
	walk_result(&w, r);
	if (w.invalid) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "action_result.%s", w.invalid);
		walk_free(&w);
		return;
	}
	if (w.ioerr) {
		call_finish(c, GRPC_INTERNAL, "checking the result of action %s: %s", ds, w.ioerr);
		walk_free(&w);
		return;
	}
	if (w.nmissing) {
		finish_missing(c, &w, ds);
		walk_free(&w);
		return;
	}
	walk_free(&w);

	struct upd_ctx *u = xcalloc(1, sizeof(*u));
	u->c = c;
	u->key = keys_ac(req->instance_name, &action);
	u->len = protobuf_c_message_get_packed_size(&r->base);
	u->bytes = xmalloc(u->len ? u->len : 1);
	protobuf_c_message_pack(&r->base, u->bytes);
	u->evictions = ev;

	char exit_code[16], outputs[24], updated[24];
	char out_d[DIGEST_STR_LEN], err_d[DIGEST_STR_LEN];
	snprintf(exit_code, sizeof(exit_code), "%d", (int)r->exit_code);
	snprintf(outputs, sizeof(outputs), "%zu", count_outputs(r));
	snprintf(updated, sizeof(updated), "%lld", (long long)now_us());
	digest_field(out_d, sizeof(out_d), r->stdout_digest);
	digest_field(err_d, sizeof(err_d), r->stderr_digest);
	const char *argv[] = {"HSET",	   u->key,    "result",	 (const char *)u->bytes,
			      "exit_code", exit_code, "outputs", outputs,
			      "stdout",	   out_d,     "stderr",	 err_d,
			      "updated",   updated};
	size_t lens[ARRAY_LEN(argv)];
	for (size_t i = 0; i < ARRAY_LEN(argv); i++)
		lens[i] = i == 3 ? u->len : strlen(argv[i]);
	call_ref(c);
	if (store_commandargv(upd_reply, u, (int)ARRAY_LEN(argv), argv, lens) != 0) {
		call_finish(c, GRPC_UNAVAILABLE, "Redis is down: cannot store the action result");
		call_unref(c);
		upd_free(u);
	}
}

/* ---- internal API (ac.h): the scheduler's lookup and store --------------- */

struct ac_lk {
	char *instance;
	char *key;
	ac_lookup_cb cb;
	void *arg;
};

/* Fire-and-forget drop of a stale entry that still holds `result`. */
static void ac_drop_quietly(const char *key, const char *result, size_t len)
{
	ck_forget(key);
	if (store_command(NULL, NULL, "EVAL %s 1 %s %b", DROP_LUA, key, result, len) != 0)
		LOGD(MOD, "stale entry %s not dropped: Redis is down", key);
}

static void ac_lk_reply(redisReply *reply, void *arg)
{
	struct ac_lk *l = arg;
	struct inst *in = inst_find(l->instance);
	if (!reply || reply->type == REDIS_REPLY_ERROR) {
		l->cb(l->arg, -EIO, NULL, 0);
	} else if (reply->type != REDIS_REPLY_STRING || !in) {
		l->cb(l->arg, -ENOENT, NULL, 0);
	} else {
		PbActionResult *r = build__bazel__remote__execution__v2__action_result__unpack(
			&call_pb_allocator, reply->len, (const uint8_t *)reply->str);
		bool ok = r != NULL;
		uint8_t fp[DIGEST_HASH_LEN];
		fingerprint(reply->str, reply->len, fp);
		if (ok && !ck_valid(l->key, fp, in->cas)) {
			int64_t ev = store_evictions(in->cas);
			struct walk w = {.cas = in->cas};
			walk_result(&w, r);
			ok = !w.invalid && !w.ioerr && !w.nmissing;
			if (ok)
				ck_put(l->key, fp, ev);
			else if (!w.ioerr)
				LOGI(MOD, "dropping action cache entry %s: %s", l->key,
				     w.invalid ? w.invalid : "references blobs missing from CAS");
			walk_free(&w);
		}
		if (r)
			build__bazel__remote__execution__v2__action_result__free_unpacked(
				r, &call_pb_allocator);
		if (ok) {
			if (store_command(NULL, NULL, "EVAL %s 1 %s", HIT_LUA, l->key) != 0)
				LOGD(MOD, "hit on %s not counted: Redis is down", l->key);
			l->cb(l->arg, 0, (const uint8_t *)reply->str, reply->len);
		} else {
			ac_drop_quietly(l->key, reply->str, reply->len);
			l->cb(l->arg, -ENOENT, NULL, 0);
		}
	}
	free(l->instance);
	free(l->key);
	free(l);
}

int ac_lookup(struct inst *in, const struct digest *action, ac_lookup_cb cb, void *arg)
{
	struct ac_lk *l = xcalloc(1, sizeof(*l));
	l->instance = xstrdup(in->name);
	l->key = keys_ac(in->name, action);
	l->cb = cb;
	l->arg = arg;
	if (store_command(ac_lk_reply, l, "HGET %s result", l->key) != 0) {
		free(l->instance);
		free(l->key);
		free(l);
		return -1;
	}
	return 0;
}

int ac_store(struct inst *in, const struct digest *action, const PbActionResult *r, char **err)
{
	int64_t ev = store_evictions(in->cas);
	struct walk w = {.cas = in->cas};
	walk_result(&w, r);
	if (w.invalid || w.ioerr || w.nmissing) {
		int rc = w.invalid ? -EINVAL : w.ioerr ? -EIO : -ENOENT;
		if (err) {
			char ms[DIGEST_STR_LEN];
			*err = w.invalid ? xasprintf("%s", w.invalid)
			       : w.ioerr ? xasprintf("%s", w.ioerr)
					 : xasprintf("blobs/%s is missing from CAS%s",
						     digest_str(&w.missing[0], ms, sizeof(ms)),
						     w.nmissing > 1 ? " (and others)" : "");
		}
		walk_free(&w);
		return rc;
	}
	walk_free(&w);
	char *key = keys_ac(in->name, action);
	size_t len = protobuf_c_message_get_packed_size(&r->base);
	uint8_t *bytes = xmalloc(len ? len : 1);
	protobuf_c_message_pack(&r->base, bytes);
	char exit_code[16], outputs[24], updated[24];
	char out_d[DIGEST_STR_LEN], err_d[DIGEST_STR_LEN];
	snprintf(exit_code, sizeof(exit_code), "%d", (int)r->exit_code);
	snprintf(outputs, sizeof(outputs), "%zu", count_outputs(r));
	snprintf(updated, sizeof(updated), "%lld", (long long)now_us());
	digest_field(out_d, sizeof(out_d), r->stdout_digest);
	digest_field(err_d, sizeof(err_d), r->stderr_digest);
	const char *argv[] = {"HSET",	   key,	      "result",	 (const char *)bytes,
			      "exit_code", exit_code, "outputs", outputs,
			      "stdout",	   out_d,     "stderr",	 err_d,
			      "updated",   updated};
	size_t lens[ARRAY_LEN(argv)];
	for (size_t i = 0; i < ARRAY_LEN(argv); i++)
		lens[i] = i == 3 ? len : strlen(argv[i]);
	int rc = store_commandargv(NULL, NULL, (int)ARRAY_LEN(argv), argv, lens);
	if (rc == 0) {
		uint8_t fp[DIGEST_HASH_LEN];
		fingerprint(bytes, len, fp);
		ck_put(key, fp, ev);
	}
	free(bytes);
	free(key);
	if (rc != 0 && err)
		*err = xstrdup("Redis is down");
	return rc == 0 ? 0 : -EIO;
}
