/*
 * cas_remote_tree.c - GetTree for remote and sharded instances (see
 * cas_remote.h): the tree is walked here, its Directory blobs read from
 * their owners (the shard-self's from the local store, cached ones from the
 * read-through cache, the rest with one BatchReadBlobs per shard, sent
 * concurrently: mread_start in cas_remote.c).
 *
 * The answer is the local GetTree's (svc_cas.c), message for message:
 * depth-first preorder, children in the order each Directory lists them,
 * a directory reached twice sent once, a missing or malformed subtree
 * omitted, pages cut at page_size directories or TREE_MSG_BYTES, and the
 * same page token ("t1:<16 hex of the root hash>:<i0>.<i1>...", the
 * number of children visited in each directory on the path to the next
 * one), so a token from either server resumes on the other.  That order
 * needs the path's directories in hand, so the fetching goes one level of
 * one directory at a time: when the walk enters a directory, the children
 * it will visit next are read in one batch (at most TREE_CHUNK bytes,
 * under the shards' batch limit), and the next batch only when those are
 * used up.  Memory is bounded: prefetched directories held by the whole
 * walk stay under TREE_HOLD bytes (plus the one being visited), a page
 * under TREE_MSG_BYTES, and the walk pauses while TREE_PENDING bytes wait
 * for a slow client; what grows with the tree is the set of directories
 * already sent (one digest each), as in the local walk.
 *
 * A shard that cannot answer ends the call UNAVAILABLE naming it (what
 * was sent stays sent: the client resumes with the last page token).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/pbwire.h"
#include "domain/blob.h"
#include "proto/pb.h"
#include "services/cas_remote.h"
#include "services/cas_remote_int.h"
#include "services/inst.h"
#include "services/reapi.h"
#include "services/svc.h"

/* The local walk's limits (svc_cas.c): the same pages and tokens. */
#define DIRECTORY_MAX	(4 << 20)
#define TREE_MSG_BYTES	(2 << 20)
#define TREE_PENDING	(256 << 10)
#define TREE_MAX_DEPTH	2048
#define TREE_TOKEN_MAX	(TREE_MAX_DEPTH * 11 + 32)
#define TREE_SLICE_DIRS 256
/* Fetching. */
#define TREE_CHUNK   (1 << 20) /* bytes of Directories per BatchReadBlobs round */
#define TREE_CHUNK_N 1000
#define TREE_HOLD    (8 << 20) /* prefetched, not yet visited */

enum kid_state { KID_NONE, KID_PENDING, KID_OK, KID_GONE };

struct rframe {
	struct digest *kids; /* child directories, in order */
	size_t nkids, next;  /* next: children visited so far */
	uint8_t **raw;	     /* per kid, when KID_OK */
	uint8_t *st;	     /* enum kid_state per kid */
};

struct rseen {
	struct digest_map_node node;
};

struct rtree {
	struct rcall rc;
	struct call *c;
	struct cas_remote *r;
	struct digest root;
	size_t page_size;
	struct rframe *stack;
	size_t depth;
	struct digest_map seen;
	struct rseen **seen_nodes;
	size_t nseen, seen_cap;
	uint8_t *page; /* 5 bytes of room for the gRPC prefix, then a GetTreeResponse */
	size_t page_len, page_cap, page_dirs;
	int64_t held;
	bool sent_any, paused, fetching;
	char *tok;	  /* resuming: the token; NULL once the path is rebuilt */
	const char *tp;	  /* where in it */
	struct event *ev; /* zero timer: the next slice */
};

static void tree_step(struct rtree *w);

/* ---- directories ---------------------------------------------------------- */

/* The child directories of a serialized Directory into f (invalid child
 * digests skipped, as missing subtrees are).  -1: not a Directory. */
static int rdir_scan(const uint8_t *raw, size_t len, struct rframe *f)
{
	memset(f, 0, sizeof(*f));
	PbDirectory *dir = build__bazel__remote__execution__v2__directory__unpack(NULL, len, raw);
	if (!dir)
		return -1;
	f->kids = xcalloc(dir->n_directories + 1, sizeof(*f->kids));
	for (size_t i = 0; i < dir->n_directories; i++)
		if (reapi_digest_err(dir->directories[i]->digest, &f->kids[f->nkids], NULL) == 0)
			f->nkids++;
	build__bazel__remote__execution__v2__directory__free_unpacked(dir, NULL);
	f->raw = xcalloc(f->nkids + 1, sizeof(*f->raw));
	f->st = xcalloc(f->nkids + 1, 1);
	return 0;
}

static void rframe_free(struct rtree *w, struct rframe *f)
{
	for (size_t i = 0; i < f->nkids; i++)
		if (f->raw[i]) {
			w->held -= f->kids[i].size;
			free(f->raw[i]);
		}
	free(f->raw);
	free(f->st);
	free(f->kids);
}

static bool rseen(struct rtree *w, const struct digest *d)
{
	return digest_map_find(&w->seen, d) != NULL;
}

static void rmark(struct rtree *w, const struct digest *d)
{
	struct rseen *n = xcalloc(1, sizeof(*n));
	memcpy(n->node.hash, d->hash, DIGEST_HASH_LEN);
	n->node.size = d->size;
	digest_map_insert(&w->seen, &n->node);
	if (w->nseen == w->seen_cap) {
		w->seen_cap = w->seen_cap ? w->seen_cap * 2 : 64;
		w->seen_nodes = xrealloc(w->seen_nodes, w->seen_cap * sizeof(*w->seen_nodes));
	}
	w->seen_nodes[w->nseen++] = n;
}

/* ---- pages ---------------------------------------------------------------- */

static void page_add(struct rtree *w, unsigned field, const void *p, size_t n)
{
	if (w->page_len + 11 + n > w->page_cap) {
		w->page_cap = w->page_len + 11 + n > w->page_cap * 2 ? w->page_len + 11 + n
								     : w->page_cap * 2;
		w->page = xrealloc(w->page, w->page_cap);
	}
	w->page[w->page_len++] = (uint8_t)(field << 3 | 2);
	w->page_len += pb_varint_put(w->page + w->page_len, n);
	memcpy(w->page + w->page_len, p, n);
	w->page_len += n;
}

static void page_new(struct rtree *w)
{
	w->page_cap = 4096;
	w->page = xmalloc(w->page_cap);
	w->page_len = 5;
	w->page_dirs = 0;
}

/* Pop visited frames; true while something is left to visit. */
static bool rmore(struct rtree *w)
{
	while (w->depth > 0 && w->stack[w->depth - 1].next >= w->stack[w->depth - 1].nkids)
		rframe_free(w, &w->stack[--w->depth]);
	return w->depth > 0;
}

/* Send the page, with the token of what follows unless the walk is done. */
static void page_flush(struct rtree *w)
{
	if (rmore(w)) {
		size_t cap = 32 + w->depth * 11;
		char *tok = xmalloc(cap);
		int n = snprintf(tok, cap, "t1:%.16s:", w->root.hex);
		for (size_t i = 0; i < w->depth; i++)
			n += snprintf(tok + n, cap - (size_t)n, i ? ".%zu" : "%zu",
				      w->stack[i].next);
		page_add(w, 2, tok, (size_t)n);
		free(tok);
	}
	call_send_owned(w->c, w->page, w->page_len - 5);
	w->sent_any = true;
	page_new(w);
}

/* ---- the walk --------------------------------------------------------------- */

static void rtree_free(struct rtree *w)
{
	rcall_del(&w->rc);
	if (w->ev)
		event_free(w->ev);
	while (w->depth > 0)
		rframe_free(w, &w->stack[--w->depth]);
	free(w->stack);
	digest_map_clear(&w->seen);
	for (size_t i = 0; i < w->nseen; i++)
		free(w->seen_nodes[i]);
	free(w->seen_nodes);
	free(w->page);
	free(w->tok);
	call_unref(w->c);
	free(w);
}

static void dir_too_big(struct rtree *w, const struct digest *d)
{
	call_finish(w->c, GRPC_INVALID_ARGUMENT,
		    "Directory blobs/%s/%lld is %lld bytes, over the %d MiB limit for a parsed "
		    "Directory",
		    d->hex, (long long)d->size, (long long)d->size, DIRECTORY_MAX >> 20);
}

static void bad_token(struct rtree *w)
{
	size_t len = strlen(w->tok);
	call_finish(w->c, GRPC_INVALID_ARGUMENT,
		    "invalid page_token \"%.64s%s\": not a token this server gave for root_digest "
		    "%s/%lld, or the tree changed",
		    w->tok, len > 64 ? "..." : "", w->root.hex, (long long)w->root.size);
}

/* Visit directory d (raw, its bytes: taken): send it, enter it.  Returns
 * 0, 1 when it is no Directory (omitted), -1 when the call was finished. */
static int rvisit(struct rtree *w, const struct digest *d, uint8_t *raw)
{
	struct rframe f;
	int bad = rdir_scan(raw, (size_t)d->size, &f);
	if (bad) {
		free(raw);
		return 1;
	}
	rmark(w, d);
	page_add(w, 1, raw, (size_t)d->size);
	free(raw);
	w->page_dirs++;
	if (f.nkids == 0) {
		rframe_free(w, &f);
	} else if (w->depth == TREE_MAX_DEPTH) {
		rframe_free(w, &f);
		call_finish(w->c, GRPC_INVALID_ARGUMENT,
			    "the tree under root_digest %s/%lld is deeper than %d levels",
			    w->root.hex, (long long)w->root.size, TREE_MAX_DEPTH);
		return -1;
	} else {
		w->stack[w->depth++] = f;
	}
	if (w->page_dirs >= w->page_size || w->page_len >= TREE_MSG_BYTES)
		page_flush(w);
	return 0;
}

/* The root (or, resuming, the next directory on the token's path) came. */
static void got_path_dir(struct rtree *w, const struct digest *d, int code, const char *msg,
			 uint8_t *raw)
{
	if (!w->tok) {
		if (code == GRPC_NOT_FOUND)
			call_finish(w->c, GRPC_NOT_FOUND, "root directory %s/%lld not found",
				    d->hex, (long long)d->size);
		else if (code != GRPC_OK)
			call_finish(w->c, code, "%s", msg ? msg : "reading the root failed");
		else if (rvisit(w, d, raw) == 1)
			call_finish(w->c, GRPC_INVALID_ARGUMENT,
				    "root_digest %s/%lld is not a Directory message", d->hex,
				    (long long)d->size);
		return;
	}
	/* Resuming: one index of the token per directory on the path. */
	struct rframe f;
	char *end;
	unsigned long long i = strtoull(w->tp, &end, 10);
	if (code != GRPC_OK && code != GRPC_NOT_FOUND) {
		call_finish(w->c, code, "%s", msg ? msg : "reading a directory failed");
		return;
	}
	if (code != GRPC_OK || rdir_scan(raw, (size_t)d->size, &f) != 0) {
		free(raw);
		bad_token(w);
		return;
	}
	free(raw);
	if (i > f.nkids || (*end == '.' && i == 0) || (*end != '.' && *end != '\0')) {
		rframe_free(w, &f);
		bad_token(w);
		return;
	}
	f.next = (size_t)i;
	rmark(w, d);
	w->stack[w->depth++] = f;
	if (*end == '\0') {
		free(w->tok);
		w->tok = NULL;
		return;
	}
	w->tp = end + 1;
	if (*w->tp < '0' || *w->tp > '9' || w->depth == TREE_MAX_DEPTH ||
	    rseen(w, &f.kids[i - 1])) /* a cycle: no real tree has one */
		bad_token(w);
}

static void path_read(void *arg, int code, const char *msg, struct mread *m);

/* Read the next directory on the path (the root, or the token's). */
static void path_next(struct rtree *w)
{
	const struct digest *d =
		w->depth ? &w->stack[w->depth - 1].kids[w->stack[w->depth - 1].next - 1] : &w->root;
	if (d->size > DIRECTORY_MAX) {
		dir_too_big(w, d);
		rtree_free(w);
		return;
	}
	w->fetching = true;
	mread_start(w->r, d, 1, w->c, path_read, w);
}

static void path_read(void *arg, int code, const char *msg, struct mread *m)
{
	struct rtree *w = arg;
	w->fetching = false;
	if (call_done(w->c)) {
		rtree_free(w);
		return;
	}
	const struct digest d =
		w->depth ? w->stack[w->depth - 1].kids[w->stack[w->depth - 1].next - 1] : w->root;
	uint8_t *raw = NULL;
	if (code == GRPC_OK)
		code = mread_get(m, &d, &raw, &msg, true);
	got_path_dir(w, &d, code, msg, raw);
	if (call_done(w->c))
		rtree_free(w);
	else if (w->tok)
		path_next(w);
	else
		tree_step(w);
}

static void chunk_read(void *arg, int code, const char *msg, struct mread *m)
{
	struct rtree *w = arg;
	w->fetching = false;
	if (call_done(w->c)) {
		rtree_free(w);
		return;
	}
	if (code != GRPC_OK) {
		call_finish(w->c, code, "%s", msg);
		rtree_free(w);
		return;
	}
	struct rframe *f = &w->stack[w->depth - 1];
	for (size_t k = f->next; k < f->nkids && f->st[k] != KID_NONE; k++) {
		if (f->st[k] != KID_PENDING)
			continue;
		uint8_t *data;
		const char *em;
		int rc = mread_get(m, &f->kids[k], &data, &em, false);
		if (rc == GRPC_OK) {
			f->raw[k] = xmalloc((size_t)f->kids[k].size + 1);
			memcpy(f->raw[k], data, (size_t)f->kids[k].size);
			w->held += f->kids[k].size;
			f->st[k] = KID_OK;
		} else if (rc == GRPC_NOT_FOUND) {
			f->st[k] = KID_GONE; /* a missing subtree is omitted */
		} else {
			call_finish(w->c, rc, "%s", em ? em : "reading a Directory failed");
			rtree_free(w);
			return;
		}
	}
	tree_step(w);
}

/* Read the children of the top frame from its next one on, up to the
 * chunk and hold limits (at least one). */
static void chunk_fetch(struct rtree *w)
{
	struct rframe *f = &w->stack[w->depth - 1];
	struct digest *ds = xcalloc(TREE_CHUNK_N, sizeof(*ds));
	size_t n = 0;
	int64_t bytes = 0;
	for (size_t k = f->next; k < f->nkids && n < TREE_CHUNK_N; k++) {
		const struct digest *d = &f->kids[k];
		if (n && (bytes + d->size > TREE_CHUNK || w->held + bytes + d->size > TREE_HOLD))
			break;
		if (rseen(w, d)) {
			f->st[k] = KID_GONE; /* sent already: skipped when its turn comes */
			continue;
		}
		f->st[k] = KID_PENDING;
		ds[n++] = *d;
		bytes += d->size;
	}
	w->fetching = true;
	mread_start(w->r, ds, n, w->c, chunk_read, w);
	free(ds);
}

static void step_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	tree_step(arg);
}

static void tree_step(struct rtree *w)
{
	static const struct timeval now = {0, 0};
	for (int n = 0; !call_done(w->c); n++) {
		if (call_pending(w->c) >= TREE_PENDING) {
			w->paused = true; /* the client is slow: on_writable resumes */
			call_want_writable(w->c);
			return;
		}
		if (n >= TREE_SLICE_DIRS) {
			evtimer_add(w->ev, &now); /* let the loop serve sockets */
			return;
		}
		if (!rmore(w)) {
			if (w->page_dirs > 0 || !w->sent_any)
				page_flush(w);
			call_finish(w->c, GRPC_OK, NULL);
			break;
		}
		struct rframe *f = &w->stack[w->depth - 1];
		size_t k = f->next;
		const struct digest d = f->kids[k];
		if (f->st[k] == KID_NONE && !rseen(w, &d)) {
			if (d.size > DIRECTORY_MAX) {
				dir_too_big(w, &d);
				break;
			}
			chunk_fetch(w);
			return;
		}
		f->next++;
		uint8_t *raw = f->raw[k];
		f->raw[k] = NULL;
		if (raw)
			w->held -= d.size;
		/* A subtree reached twice is sent once. */
		if (rseen(w, &d) || !raw)
			free(raw);
		else if (rvisit(w, &d, raw) == -1)
			break;
	}
	rtree_free(w);
}

void cas_remote_tree_cancel(struct call *c, struct rcall *rc)
{
	(void)c;
	struct rtree *w = container_of(rc, struct rtree, rc);
	if (!w->fetching)
		rtree_free(w); /* else the read's callback finds the call done */
}

void cas_remote_tree_writable(struct call *c, struct rcall *rc)
{
	struct rtree *w = container_of(rc, struct rtree, rc);
	if (!w->paused)
		return;
	if (call_pending(c) >= TREE_PENDING) {
		call_want_writable(c);
		return;
	}
	w->paused = false;
	tree_step(w);
}

bool cas_remote_get_tree(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__GetTreeRequest *req = (const void *)msg;
	struct cas_remote *r = cas_remote_of(req->instance_name);
	if (!r)
		return false;
	struct digest root;
	if (reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->root_digest, "root_digest", &root) != 0)
		return true;
	struct rtree *w = xcalloc(1, sizeof(*w));
	w->c = c;
	call_ref(c);
	w->r = r;
	w->root = root;
	w->page_size = req->page_size > 0 ? (size_t)req->page_size : SIZE_MAX;
	w->stack = xmalloc(TREE_MAX_DEPTH * sizeof(*w->stack));
	digest_map_init(&w->seen);
	page_new(w);
	w->ev = evtimer_new(cas_remote_base(), step_cb, w);
	rcall_add(&w->rc, c, RK_TREE);
	if (req->page_token && *req->page_token) {
		w->tok = xstrdup(req->page_token);
		char prefix[3 + 16 + 2];
		snprintf(prefix, sizeof prefix, "t1:%.16s:", root.hex);
		w->tp = w->tok + strlen(prefix);
		if (strlen(w->tok) > TREE_TOKEN_MAX ||
		    strncmp(w->tok, prefix, strlen(prefix)) != 0 || *w->tp < '0' || *w->tp > '9') {
			bad_token(w);
			rtree_free(w);
			return true;
		}
	}
	path_next(w);
	return true;
}
