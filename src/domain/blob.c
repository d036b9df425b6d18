/*
 * blob.c - the backend-independent half of the blob store: argument and
 * range checks, the empty blob (always present, never stored), hit/miss
 * counters, the running SHA-256 of uploads and the verification that
 * gates every publish, and the recency order (LRU list + cold heap) both
 * backends evict by.  Backends (blob_disk.c, blob_mem.c) only move bytes
 * and keep their index; they never see unverified content as published
 * data.
 */
#define BLOB_BACKEND
#include "domain/blob.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void blob_close(struct blob_store *s)
{
	if (!s)
		return;
	assert(s->open_readers == 0);
	assert(s->open_writers == 0);
	s->be->close(s);
}

static void count(struct blob_store *s, bool hit)
{
	if (hit)
		s->hits++;
	else
		s->misses++;
}

bool blob_has(struct blob_store *s, const struct digest *d)
{
	bool hit = digest_is_empty(d) || s->be->has(s, d);
	count(s, hit);
	return hit;
}

int blob_get(struct blob_store *s, const struct digest *d, uint8_t **data)
{
	int rc = 0;
	if (digest_is_empty(d))
		*data = xmalloc(0);
	else
		rc = s->be->get(s, d, data);
	count(s, rc == 0);
	return rc;
}

int blob_delete(struct blob_store *s, const struct digest *d)
{
	if (digest_is_empty(d))
		return 0;
	return s->be->del(s, d);
}

void blob_get_stats(struct blob_store *s, struct blob_stats *st)
{
	memset(st, 0, sizeof(*st));
	s->be->stats(s, st);
	st->max_size = s->max_size;
	st->hits = s->hits;
	st->misses = s->misses;
}

/* ---- readers ---------------------------------------------------------- */

int blob_reader_open(struct blob_store *s, const struct digest *d, int64_t offset,
		     struct blob_reader **out)
{
	if (offset < 0 || offset > d->size)
		return -ERANGE;
	struct blob_reader *r = xcalloc(1, sizeof(*r));
	r->s = s;
	r->d = *d;
	r->off = offset;
	r->fd = -1;
	int rc = 0;
	if (!digest_is_empty(d))
		rc = s->be->reader_open(s, r);
	count(s, rc == 0);
	if (rc < 0) {
		free(r);
		return rc;
	}
	s->open_readers++;
	*out = r;
	return 0;
}

ssize_t blob_reader_read(struct blob_reader *r, void *buf, size_t n)
{
	int64_t left = r->d.size - r->off;
	if (left <= 0 || n == 0)
		return 0;
	if ((uint64_t)left < n)
		n = (size_t)left;
	ssize_t got = r->s->be->reader_read(r, buf, n);
	if (got > 0)
		r->off += got;
	return got;
}

int64_t blob_reader_offset(const struct blob_reader *r)
{
	return r->off;
}

void blob_reader_close(struct blob_reader *r)
{
	if (!r)
		return;
	if (!digest_is_empty(&r->d))
		r->s->be->reader_close(r);
	assert(r->s->open_readers > 0);
	r->s->open_readers--;
	free(r);
}

/* ---- writers ---------------------------------------------------------- */

static struct blob_writer *writer_new(struct blob_store *s, const struct digest *expected,
				      bool hash)
{
	assert(expected->size >= 0);
	struct blob_writer *w = xcalloc(1, sizeof(*w));
	w->s = s;
	w->expected = *expected;
	w->h = hash ? hasher_new() : NULL;
	w->fd = -1;
	s->open_writers++;
	return w;
}

struct blob_writer *blob_writer_open(struct blob_store *s, const struct digest *expected)
{
	return writer_new(s, expected, true);
}

static void writer_free(struct blob_writer *w)
{
	if (!digest_is_empty(&w->expected))
		w->s->be->writer_release(w);
	hasher_free(w->h);
	assert(w->s->open_writers > 0);
	w->s->open_writers--;
	w->s->tmp_bytes -= w->off;
	assert(w->s->tmp_bytes >= 0);
	free(w);
}

static bool too_big(const struct blob_store *s, const struct digest *d)
{
	return s->max_size > 0 && d->size > s->max_size;
}

int blob_writer_write(struct blob_writer *w, const void *data, size_t n)
{
	if (w->err)
		return w->err;
	if (n == 0)
		return 0;
	if ((uint64_t)(w->expected.size - w->off) < n)
		return -EFBIG;
	/* Refuse before buffering a byte of something commit must reject. */
	if (too_big(w->s, &w->expected))
		return -ENOSPC;
	struct blob_store *s = w->s;
	if (s->max_size > 0) {
		if (s->tmp_bytes + (int64_t)n > s->max_size)
			return -EDQUOT;
		if (s->be->reserve)
			s->be->reserve(s, s->tmp_bytes + (int64_t)n);
	}
	if (w->h)
		hasher_update(w->h, data, n);
	int rc = w->s->be->writer_write(w, data, n);
	if (rc < 0) {
		/* The hash already covers data the backend lost. */
		w->err = rc;
		return rc;
	}
	w->off += (int64_t)n;
	s->tmp_bytes += (int64_t)n;
	return 0;
}

int64_t blob_tmp_bytes(const struct blob_store *s)
{
	return s->tmp_bytes;
}

int blob_writer_suspend(struct blob_writer *w)
{
	if (w->err)
		return w->err;
	if (digest_is_empty(&w->expected) || !w->s->be->writer_suspend)
		return 0;
	int rc = w->s->be->writer_suspend(w);
	if (rc < 0)
		w->err = rc;
	return rc;
}

int64_t blob_writer_offset(const struct blob_writer *w)
{
	return w->off;
}

static int fail(char **err, int rc, char *msg)
{
	if (err)
		*err = msg;
	else
		free(msg);
	return rc;
}

static int verify(struct blob_writer *w, char **err)
{
	char es[DIGEST_STR_LEN], gs[DIGEST_STR_LEN];
	const struct digest *e = &w->expected;
	if (w->err)
		return fail(err, w->err,
			    xasprintf("upload of %s failed earlier: %s",
				      digest_str(e, es, sizeof(es)), strerror(-w->err)));
	if (too_big(w->s, e))
		return fail(err, -ENOSPC,
			    xasprintf("blob %s is larger than the store's "
				      "limit of %" PRId64 " bytes",
				      digest_str(e, es, sizeof(es)), w->s->max_size));
	if (w->off != e->size)
		return fail(err, -EINVAL,
			    xasprintf("size mismatch for %s: expected %" PRId64
				      " bytes, got %" PRId64,
				      digest_str(e, es, sizeof(es)), e->size, w->off));
	if (w->h) {
		struct digest got;
		hasher_final(w->h, &got);
		if (!digest_eq(&got, e))
			return fail(err, -EINVAL,
				    xasprintf("digest mismatch: expected %s, "
					      "uploaded data hashes to %s",
					      digest_str(e, es, sizeof(es)),
					      digest_str(&got, gs, sizeof(gs))));
	}
	return 0;
}

int blob_writer_commit(struct blob_writer *w, char **err)
{
	int rc = verify(w, err);
	if (rc == 0 && !digest_is_empty(&w->expected))
		rc = w->s->be->writer_publish(w, err);
	writer_free(w);
	return rc;
}

void blob_writer_abort(struct blob_writer *w)
{
	if (w)
		writer_free(w);
}

int blob_put(struct blob_store *s, const struct digest *d, const void *data, size_t len, char **err)
{
	char es[DIGEST_STR_LEN], gs[DIGEST_STR_LEN];
	if (too_big(s, d))
		return fail(err, -ENOSPC,
			    xasprintf("blob %s is larger than the store's "
				      "limit of %" PRId64 " bytes",
				      digest_str(d, es, sizeof(es)), s->max_size));
	struct digest got;
	digest_of(data, len, &got);
	if (!digest_eq(&got, d))
		return fail(err, -EINVAL,
			    xasprintf("digest mismatch: expected %s, data "
				      "hashes to %s",
				      digest_str(d, es, sizeof(es)),
				      digest_str(&got, gs, sizeof(gs))));
	/* Re-uploads are common (clients skip FindMissingBlobs); a lookup
	 * is cheaper than writing a temp copy to throw away. */
	if (digest_is_empty(d) || s->be->has(s, d))
		return 0;
	/* Already verified: the writer skips its own hash. */
	struct blob_writer *w = writer_new(s, d, false);
	int rc = blob_writer_write(w, data, len);
	if (rc == -EDQUOT) {
		int64_t held = s->tmp_bytes;
		blob_writer_abort(w);
		return fail(err, rc,
			    xasprintf("cannot store %s: uploads in progress hold %" PRId64
				      " bytes, and the store's limit is %" PRId64 " bytes",
				      digest_str(d, es, sizeof(es)), held, s->max_size));
	}
	if (rc < 0) {
		blob_writer_abort(w);
		return fail(err, rc,
			    xasprintf("cannot store %s: %s", digest_str(d, es, sizeof(es)),
				      strerror(-rc)));
	}
	return blob_writer_commit(w, err);
}

/* ---- recency order ------------------------------------------------------ */

void blob_rec_init(struct blob_recency *r)
{
	memset(r, 0, sizeof(*r));
	r->list.prev = r->list.next = &r->list;
	r->list.hidx = BLOB_NOT_IN_HEAP;
}

void blob_rec_destroy(struct blob_recency *r)
{
	free(r->heap);
	blob_rec_init(r);
}

static void heap_set(struct blob_recency *r, size_t i, struct blob_rnode *n)
{
	r->heap[i] = n;
	n->hidx = (uint32_t)i;
}

static void heap_up(struct blob_recency *r, size_t i)
{
	struct blob_rnode *n = r->heap[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (r->heap[p]->cold <= n->cold)
			break;
		heap_set(r, i, r->heap[p]);
		i = p;
	}
	heap_set(r, i, n);
}

static void heap_down(struct blob_recency *r, size_t i)
{
	struct blob_rnode *n = r->heap[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= r->nheap)
			break;
		if (c + 1 < r->nheap && r->heap[c + 1]->cold < r->heap[c]->cold)
			c++;
		if (n->cold <= r->heap[c]->cold)
			break;
		heap_set(r, i, r->heap[c]);
		i = c;
	}
	heap_set(r, i, n);
}

static void list_push(struct blob_recency *r, struct blob_rnode *n)
{
	n->prev = r->list.prev;
	n->next = &r->list;
	r->list.prev->next = n;
	r->list.prev = n;
}

void blob_rec_add(struct blob_recency *r, struct blob_rnode *n, int64_t cold)
{
	n->hidx = BLOB_NOT_IN_HEAP;
	if (cold < 0) {
		list_push(r, n);
		return;
	}
	if (r->nheap == r->heapcap) {
		r->heapcap = r->heapcap ? r->heapcap * 2 : 1024;
		r->heap = xrealloc(r->heap, r->heapcap * sizeof(*r->heap));
	}
	assert(r->nheap < BLOB_NOT_IN_HEAP);
	n->prev = n->next = NULL;
	n->cold = cold;
	heap_set(r, r->nheap++, n);
	heap_up(r, r->nheap - 1);
}

void blob_rec_remove(struct blob_recency *r, struct blob_rnode *n)
{
	if (n->hidx == BLOB_NOT_IN_HEAP) {
		n->prev->next = n->next;
		n->next->prev = n->prev;
		n->prev = n->next = NULL;
		return;
	}
	size_t i = n->hidx;
	assert(i < r->nheap && r->heap[i] == n);
	struct blob_rnode *last = r->heap[--r->nheap];
	n->hidx = BLOB_NOT_IN_HEAP;
	if (last == n)
		return;
	heap_set(r, i, last);
	heap_up(r, i);
	heap_down(r, last->hidx);
}

void blob_rec_touch(struct blob_recency *r, struct blob_rnode *n)
{
	blob_rec_remove(r, n);
	list_push(r, n);
}

struct blob_rnode *blob_rec_oldest(const struct blob_recency *r)
{
	if (r->nheap)
		return r->heap[0];
	return r->list.next != &r->list ? r->list.next : NULL;
}
