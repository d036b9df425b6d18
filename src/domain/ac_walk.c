/*
 * ac_walk.c - the sliced completeness check of an ActionResult (see
 * ac_walk.h).  A walk is a small state machine over the result's fields
 * (output files, output directories, stdout, stderr); an output directory
 * whose Tree was not seen before in this walk detours through reading the
 * Tree (chunks from a blob reader, hashed on the way) and parsing it (one
 * top-level Directory of the Tree's wire form per step, so no step unpacks
 * the whole Tree).  Each loop pass runs steps for at most WALK_SLICE_US,
 * then re-arms a zero-delay timer, as BatchUpdateBlobs does, so the loop
 * polls sockets between slices.
 */
#include "domain/ac_walk.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/digest.h"
#include "core/pbwire.h"
#include "core/list.h"
#include "core/util.h"
#include "domain/ac.h"
#include "domain/blob.h"
#include "proto/pb.h"


/* Time per loop pass, and steps between clock reads. */
#define WALK_SLICE_US	 2000
#define WALK_CLOCK_EVERY 32
/* Bytes of a Tree read per step. */
#define WALK_READ_CHUNK (256 << 10)

enum phase { P_FILES, P_DIRS, P_TREE_READ, P_TREE_PARSE, P_STDIO, P_DONE };

struct seen {
	struct digest_map_node n;
	struct list link;
};

struct ac_walk {
	struct event_base *base;
	struct event *ev;
	struct blob_store *cas;
	const PbActionResult *r;
	void (*done)(void *arg);
	void *arg;
	enum phase phase;
	size_t i; /* index in the phase's list */
	struct digest_map seen;
	struct list seen_list;
	/* the Tree of output_directories[i] being read and parsed */
	struct digest td;
	struct blob_reader *rd;
	struct hasher *h;
	uint8_t *buf;
	size_t have, pos;	 /* bytes read; parse position in the Tree */
	size_t dir_pos, dir_end; /* the Directory being walked, in buf */
	struct ac_walk_res res;
	size_t cap;
};

static void *pb_alloc(void *data, size_t size)
{
	(void)data;
	return xmalloc(size ? size : 1);
}

static void pb_free(void *data, void *p)
{
	(void)data;
	free(p);
}

static ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, NULL};

static void add_missing(struct ac_walk *w, const struct digest *d)
{
	struct ac_walk_res *res = &w->res;
	if (res->nmissing == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 8;
		res->missing = xrealloc(res->missing, w->cap * sizeof(*res->missing));
	}
	res->missing[res->nmissing++] = *d;
}

static void set_invalid(struct ac_walk *w, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void set_invalid(struct ac_walk *w, const char *fmt, ...)
{
	if (w->res.invalid)
		return;
	va_list ap;
	va_start(ap, fmt);
	w->res.invalid = xvasprintf(fmt, ap);
	va_end(ap);
}

static void set_ioerr(struct ac_walk *w, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void set_ioerr(struct ac_walk *w, const char *fmt, ...)
{
	if (w->res.ioerr)
		return;
	va_list ap;
	va_start(ap, fmt);
	w->res.ioerr = xvasprintf(fmt, ap);
	va_end(ap);
}

static int parse_ref(const PbDigest *pd, struct digest *out, char **err)
{
	if (!pd) {
		*err = xstrdup("missing digest");
		return -1;
	}
	return digest_parse(pd->hash, pd->size_bytes, out, err);
}

/* Validate one reference (fmt names it for messages) and check that its
 * blob is stored.  Returns true when it is valid and present. */
static bool check_ref(struct ac_walk *w, const PbDigest *pd, struct digest *out, const char *fmt,
		      ...) PRINTF_LIKE(4, 5);
static bool check_ref(struct ac_walk *w, const PbDigest *pd, struct digest *out, const char *fmt,
		      ...)
{
	char *err = NULL;
	if (parse_ref(pd, out, &err) != 0) {
		char what[512];
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(what, sizeof(what), fmt, ap);
		va_end(ap);
		set_invalid(w, "%s: %s", what, err);
		free(err);
		return false;
	}
	if (digest_is_empty(out) || blob_has(w->cas, out))
		return true;
	add_missing(w, out);
	return false;
}

static const Build__Bazel__Remote__Execution__V2__OutputDirectory *cur_dir(const struct ac_walk *w)
{
	return w->r->output_directories[w->i];
}

static void tree_end(struct ac_walk *w)
{
	blob_reader_close(w->rd);
	w->rd = NULL;
	if (w->h)
		hasher_free(w->h);
	w->h = NULL;
	free(w->buf);
	w->buf = NULL;
	w->have = w->pos = w->dir_pos = w->dir_end = 0;
	w->phase = P_DIRS;
	w->i++;
}

/* Output directory i: validate it, and start on its Tree unless this walk
 * has seen that Tree already. */
static void step_dir(struct ac_walk *w)
{
	const Build__Bazel__Remote__Execution__V2__OutputDirectory *od = cur_dir(w);
	struct digest d;
	char ds[DIGEST_STR_LEN];
	if (od->root_directory_digest) {
		/* Optional and not a CAS reference on its own (it names the
		 * Tree's root): validated, not looked up. */
		char *err = NULL;
		if (parse_ref(od->root_directory_digest, &d, &err) != 0) {
			set_invalid(
				w,
				"output_directories[%zu] (\"%.200s\"): root_directory_digest: %s",
				w->i, od->path, err);
			free(err);
			return;
		}
	}
	char *err = NULL;
	if (parse_ref(od->tree_digest, &d, &err) != 0) {
		set_invalid(w, "output_directories[%zu] (\"%.200s\"): tree_digest: %s", w->i,
			    od->path, err);
		free(err);
		return;
	}
	if (digest_map_find(&w->seen, &d)) {
		w->i++; /* checked (or reported missing) for an earlier directory */
		return;
	}
	struct seen *s = xcalloc(1, sizeof(*s));
	memcpy(s->n.hash, d.hash, DIGEST_HASH_LEN);
	s->n.size = d.size;
	digest_map_insert(&w->seen, &s->n);
	list_add_tail(&w->seen_list, &s->link);
	if (d.size == 0) { /* the empty Tree lists nothing */
		w->i++;
		return;
	}
	if (d.size > AC_TREE_MAX) {
		w->res.too_large = !w->res.invalid;
		set_invalid(w,
			    "output_directories[%zu] (\"%.200s\"): Tree blob %s is larger than "
			    "the limit of %lld bytes (%lld MiB) on Trees this server verifies",
			    w->i, od->path, digest_str(&d, ds, sizeof(ds)), AC_TREE_MAX,
			    AC_TREE_MAX >> 20);
		return;
	}
	int rc = blob_has(w->cas, &d) ? blob_reader_open(w->cas, &d, 0, &w->rd) : -ENOENT;
	if (rc == -ENOENT) {
		add_missing(w, &d);
		w->i++;
		return;
	}
	if (rc != 0) {
		set_ioerr(w, "reading Tree blob %s: %s", digest_str(&d, ds, sizeof(ds)),
			  strerror(-rc));
		w->i++;
		return;
	}
	w->td = d;
	w->h = hasher_new();
	w->buf = xmalloc((size_t)d.size);
	w->phase = P_TREE_READ;
}

static void step_tree_read(struct ac_walk *w)
{
	char ds[DIGEST_STR_LEN];
	size_t want = (size_t)w->td.size - w->have;
	if (want > WALK_READ_CHUNK)
		want = WALK_READ_CHUNK;
	ssize_t n = blob_reader_read(w->rd, w->buf + w->have, want);
	if (n <= 0) {
		set_ioerr(w, "reading Tree blob %s: %s", digest_str(&w->td, ds, sizeof(ds)),
			  n == 0 ? "short read" : strerror((int)-n));
		tree_end(w);
		return;
	}
	hasher_update(w->h, w->buf + w->have, (size_t)n);
	w->have += (size_t)n;
	if (w->have < (size_t)w->td.size)
		return;
	struct digest got;
	hasher_final(w->h, &got);
	if (!digest_eq(&got, &w->td)) {
		/* A torn or corrupt file: gone, as a whole-blob read would say. */
		blob_reader_close(w->rd);
		w->rd = NULL;
		(void)blob_delete(w->cas, &w->td);
		add_missing(w, &w->td);
		tree_end(w);
		return;
	}
	w->phase = P_TREE_PARSE;
}

/* One field of protobuf wire data in p[*pos, end) (core/pbwire.h): its
 * number and wire type, and for length-delimited fields its bytes.
 * Advances *pos past it.  False when the bytes are malformed or end. */
static bool next_field(const uint8_t *p, size_t end, size_t *pos, unsigned *field, unsigned *wt,
		       const uint8_t **data, size_t *len)
{
	struct pbw r;
	struct pbw_field f;
	pbw_init(&r, p + *pos, end - *pos);
	if (pbw_next(&r, &f) != 1)
		return false;
	*pos = (size_t)(r.p - p);
	*field = f.num;
	*wt = (unsigned)f.wt;
	if (f.wt == PBW_LEN) {
		*data = f.data;
		*len = f.len;
	}
	return true;
}

/* One field of the Tree's top level: a Directory (root = 1, children = 2)
 * is entered (its fields are the next steps); other fields are skipped,
 * as protobuf parsers skip unknown fields.  False when not a Tree. */
static bool tree_field(struct ac_walk *w)
{
	unsigned field, wt;
	const uint8_t *data = NULL;
	size_t len = 0, start;
	if (!next_field(w->buf, w->have, &w->pos, &field, &wt, &data, &len))
		return false;
	if (field != 1 && field != 2)
		return true;
	if (wt != 2)
		return false; /* a known field with the wrong wire type */
	start = (size_t)(data - w->buf);
	w->dir_pos = start;
	w->dir_end = start + len;
	return true;
}

/* One field of the Directory being walked: each node is unpacked on its
 * own (so a Directory of 100,000 files is many small steps), a FileNode's
 * digest is checked.  False when not a Directory. */
static bool dir_field(struct ac_walk *w)
{
	unsigned field, wt;
	const uint8_t *data = NULL;
	size_t len = 0;
	if (!next_field(w->buf, w->dir_end, &w->dir_pos, &field, &wt, &data, &len))
		return false;
	const ProtobufCMessageDescriptor *desc;
	switch (field) {
	case 1: desc = &build__bazel__remote__execution__v2__file_node__descriptor; break;
	case 2: desc = &build__bazel__remote__execution__v2__directory_node__descriptor; break;
	case 3: desc = &build__bazel__remote__execution__v2__symlink_node__descriptor; break;
	case 5: desc = &build__bazel__remote__execution__v2__node_properties__descriptor; break;
	default: return true; /* unknown: skipped */
	}
	if (wt != 2)
		return false;
	ProtobufCMessage *m = protobuf_c_message_unpack(desc, &pb_allocator, len, data);
	if (!m)
		return false;
	if (field == 1) {
		const Build__Bazel__Remote__Execution__V2__FileNode *fn = (const void *)m;
		const Build__Bazel__Remote__Execution__V2__OutputDirectory *od = cur_dir(w);
		struct digest d;
		check_ref(w, fn->digest, &d,
			  "output_directories[%zu] (\"%.200s\"): file \"%.200s\" in its Tree", w->i,
			  od->path, fn->name);
	}
	protobuf_c_message_free_unpacked(m, &pb_allocator);
	return true;
}

static void step_tree_parse(struct ac_walk *w)
{
	bool ok;
	if (w->dir_pos < w->dir_end) {
		ok = dir_field(w);
	} else if (w->pos < w->have) {
		ok = tree_field(w);
	} else {
		tree_end(w);
		return;
	}
	if (!ok) {
		char ds[DIGEST_STR_LEN];
		const Build__Bazel__Remote__Execution__V2__OutputDirectory *od = cur_dir(w);
		set_invalid(w,
			    "output_directories[%zu] (\"%.200s\"): tree_digest %s is not a "
			    "serialized build.bazel.remote.execution.v2.Tree",
			    w->i, od->path, digest_str(&w->td, ds, sizeof(ds)));
	}
}

/* One unit of work. */
static void step(struct ac_walk *w)
{
	const PbActionResult *r = w->r;
	struct digest d;
	switch (w->phase) {
	case P_FILES:
		if (w->i == r->n_output_files) {
			w->phase = P_DIRS;
			w->i = 0;
			return;
		}
		check_ref(w, r->output_files[w->i]->digest, &d,
			  "output_files[%zu] (\"%.200s\"): digest", w->i,
			  r->output_files[w->i]->path);
		w->i++;
		return;
	case P_DIRS:
		if (w->i == r->n_output_directories) {
			w->phase = P_STDIO;
			return;
		}
		step_dir(w);
		return;
	case P_TREE_READ: step_tree_read(w); return;
	case P_TREE_PARSE: step_tree_parse(w); return;
	case P_STDIO:
		if (r->stdout_digest)
			check_ref(w, r->stdout_digest, &d, "stdout_digest");
		if (r->stderr_digest && !w->res.invalid)
			check_ref(w, r->stderr_digest, &d, "stderr_digest");
		w->phase = P_DONE;
		return;
	case P_DONE: return;
	}
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
static void unique_missing(struct ac_walk_res *res)
{
	if (res->nmissing < 2)
		return;
	qsort(res->missing, res->nmissing, sizeof(*res->missing), digest_cmp);
	size_t o = 1;
	for (size_t i = 1; i < res->nmissing; i++)
		if (digest_cmp(&res->missing[i], &res->missing[o - 1]) != 0)
			res->missing[o++] = res->missing[i];
	res->nmissing = o;
}

static void walk_slice(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct ac_walk *w = arg;
	int64_t until = mono_us() + WALK_SLICE_US;
	for (unsigned k = 1; w->phase != P_DONE; k++) {
		step(w);
		if (w->res.invalid && w->phase != P_DONE) {
			/* The first malformed reference ends the walk. */
			if (w->rd || w->buf)
				tree_end(w);
			w->phase = P_DONE;
		}
		if (k % WALK_CLOCK_EVERY == 0 && mono_us() >= until)
			break;
		if (w->phase == P_TREE_READ || w->phase == P_TREE_PARSE) {
			/* Tree steps are the costly ones: look at the clock each time. */
			if (mono_us() >= until)
				break;
		}
	}
	if (w->phase != P_DONE) {
		/* A zero timer, not event_active: active events run in the same
		 * pass, before the loop polls sockets again. */
		static const struct timeval now = {0, 0};
		evtimer_add(w->ev, &now);
		return;
	}
	unique_missing(&w->res);
	w->done(w->arg);
}

struct ac_walk *ac_walk_new(struct event_base *base, struct blob_store *cas,
			    const PbActionResult *r, void (*done)(void *arg), void *arg)
{
	struct ac_walk *w = xcalloc(1, sizeof(*w));
	w->base = base;
	w->ev = evtimer_new(base, walk_slice, w);
	w->cas = cas;
	w->r = r;
	w->done = done;
	w->arg = arg;
	w->phase = P_FILES;
	digest_map_init(&w->seen);
	list_init(&w->seen_list);
	return w;
}

void ac_walk_run(struct ac_walk *w)
{
	walk_slice(-1, 0, w);
}

const struct ac_walk_res *ac_walk_res(const struct ac_walk *w)
{
	return &w->res;
}

void ac_walk_free(struct ac_walk *w)
{
	if (!w)
		return;
	event_free(w->ev);
	blob_reader_close(w->rd);
	if (w->h)
		hasher_free(w->h);
	free(w->buf);
	struct list *pos, *tmp;
	list_for_each_safe(pos, tmp, &w->seen_list)
	{
		struct seen *s = container_of(pos, struct seen, link);
		digest_map_remove(&w->seen, &s->n);
		free(s);
	}
	digest_map_destroy(&w->seen);
	free(w->res.invalid);
	free(w->res.ioerr);
	free(w->res.missing);
	free(w);
}
