/*
 * blob_mem.c - the in-memory blob store: verified blobs in malloc'd
 * buffers, indexed by digest, on one LRU list under a byte budget.  It
 * owns its entries; readers pin an entry with a reference count so a blob
 * being streamed is never evicted, and a deleted one lives until its last
 * reader lets go.
 */
#define BLOB_BACKEND
#include "domain/blob.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define MOD "blob"
/* First allocation of an upload buffer; it doubles up to the blob size,
 * so a client announcing a huge blob and sending little costs little. */
#define MEM_BUF_MIN (64 * 1024)

struct ment {
	struct digest_map_node node;
	struct blob_rnode rec; /* unlinked (prev NULL) once unindexed */
	uint8_t *data;
	int refs; /* open readers */
};

struct mem {
	struct blob_store base;
	struct digest_map index;
	struct blob_recency rec; /* list only: nothing here is cold */
	int64_t bytes, evictions;
};

static struct mem *mem_of(struct blob_store *s)
{
	return container_of(s, struct mem, base);
}

static struct ment *ment_of(struct digest_map_node *n)
{
	return n ? container_of(n, struct ment, node) : NULL;
}

static struct ment *lookup(struct mem *m, const struct digest *d)
{
	struct ment *e = ment_of(digest_map_find(&m->index, d));
	if (e)
		blob_rec_touch(&m->rec, &e->rec);
	return e;
}

static void ment_free(struct ment *e)
{
	free(e->data);
	free(e);
}

/* Take e out of the index; the memory goes now or with its last reader. */
static void unindex(struct mem *m, struct ment *e)
{
	digest_map_remove(&m->index, &e->node);
	blob_rec_remove(&m->rec, &e->rec);
	m->bytes -= e->node.size;
	if (e->refs == 0)
		ment_free(e);
}

static bool mem_has(struct blob_store *s, const struct digest *d)
{
	return lookup(mem_of(s), d) != NULL;
}

static int mem_get(struct blob_store *s, const struct digest *d, uint8_t **data)
{
	struct ment *e = lookup(mem_of(s), d);
	if (!e)
		return -ENOENT;
	*data = xmalloc((size_t)d->size);
	memcpy(*data, e->data, (size_t)d->size);
	return 0;
}

static int mem_del(struct blob_store *s, const struct digest *d)
{
	struct mem *m = mem_of(s);
	struct ment *e = ment_of(digest_map_find(&m->index, d));
	if (!e)
		return -ENOENT;
	unindex(m, e);
	return 0;
}

static void mem_stats(struct blob_store *s, struct blob_stats *st)
{
	struct mem *m = mem_of(s);
	st->bytes = m->bytes;
	st->count = (int64_t)digest_map_count(&m->index);
	st->evictions = m->evictions;
	st->index_complete = true;
}

static int mem_reader_open(struct blob_store *s, struct blob_reader *r)
{
	struct ment *e = lookup(mem_of(s), &r->d);
	if (!e)
		return -ENOENT;
	e->refs++;
	r->ent = e;
	return 0;
}

static ssize_t mem_reader_read(struct blob_reader *r, void *buf, size_t n)
{
	const struct ment *e = r->ent;
	memcpy(buf, e->data + r->off, n);
	return (ssize_t)n;
}

static void mem_reader_close(struct blob_reader *r)
{
	struct ment *e = r->ent;
	assert(e->refs > 0);
	/* Unlinked: deleted while we read it. */
	if (--e->refs == 0 && !e->rec.prev)
		ment_free(e);
}

static int mem_writer_write(struct blob_writer *w, const void *data, size_t n)
{
	size_t need = (size_t)w->off + n;
	if (need > w->datacap) {
		size_t cap = w->datacap ? w->datacap : MEM_BUF_MIN;
		while (cap < need)
			cap *= 2;
		if (cap > (size_t)w->expected.size)
			cap = (size_t)w->expected.size;
		w->data = xrealloc(w->data, cap);
		w->datacap = cap;
	}
	memcpy(w->data + w->off, data, n);
	return 0;
}

/* Evict unpinned blobs, least recent first, until `need` more bytes fit. */
static int make_room(struct mem *m, int64_t need)
{
	int64_t max = m->base.max_size;
	if (max <= 0)
		return 0;
	/* Walk the list from its old end, skipping pinned entries. */
	struct blob_rnode *n = m->rec.list.next;
	while (m->bytes + need > max && n != &m->rec.list) {
		struct ment *e = container_of(n, struct ment, rec);
		n = n->next;
		if (e->refs == 0) {
			char ds[DIGEST_STR_LEN];
			struct digest d;
			digest_from_hash(e->node.hash, e->node.size, &d);
			LOGD(MOD, "memory store: evicting %s", digest_str(&d, ds, sizeof(ds)));
			unindex(m, e);
			m->evictions++;
		}
	}
	return m->bytes + need > max ? -ENOSPC : 0;
}

static int mem_writer_publish(struct blob_writer *w, char **err)
{
	struct mem *m = mem_of(w->s);
	if (lookup(m, &w->expected))
		return 0;
	if (make_room(m, w->expected.size) < 0) {
		char ds[DIGEST_STR_LEN];
		if (err)
			*err = xasprintf("memory store full: cannot fit %s "
					 "(%" PRId64 " of %" PRId64 " bytes "
					 "used, the rest pinned by readers)",
					 digest_str(&w->expected, ds, sizeof(ds)), m->bytes,
					 m->base.max_size);
		return -ENOSPC;
	}
	struct ment *e = xcalloc(1, sizeof(*e));
	memcpy(e->node.hash, w->expected.hash, DIGEST_HASH_LEN);
	e->node.size = w->expected.size;
	e->data = w->data;
	w->data = NULL;
	digest_map_insert(&m->index, &e->node);
	blob_rec_add(&m->rec, &e->rec, -1);
	m->bytes += e->node.size;
	return 0;
}

static void mem_reserve(struct blob_store *s, int64_t need)
{
	(void)make_room(mem_of(s), need); /* pinned blobs may stay */
}

static void mem_writer_release(struct blob_writer *w)
{
	free(w->data);
	w->data = NULL;
}

static void mem_close(struct blob_store *s)
{
	struct mem *m = mem_of(s);
	/* No readers are open, so nothing is pinned. */
	struct blob_rnode *n;
	while ((n = blob_rec_oldest(&m->rec))) {
		struct ment *e = container_of(n, struct ment, rec);
		blob_rec_remove(&m->rec, n);
		assert(e->refs == 0);
		ment_free(e);
	}
	blob_rec_destroy(&m->rec);
	digest_map_clear(&m->index);
	free(m);
}

static const struct blob_backend mem_backend = {
	.close = mem_close,
	.has = mem_has,
	.get = mem_get,
	.del = mem_del,
	.stats = mem_stats,
	.reader_open = mem_reader_open,
	.reader_read = mem_reader_read,
	.reader_close = mem_reader_close,
	.writer_write = mem_writer_write,
	.writer_publish = mem_writer_publish,
	.writer_release = mem_writer_release,
	.reserve = mem_reserve,
};

struct blob_store *blob_open_memory(int64_t max_size)
{
	struct mem *m = xcalloc(1, sizeof(*m));
	m->base.be = &mem_backend;
	m->base.max_size = max_size;
	digest_map_init(&m->index);
	blob_rec_init(&m->rec);
	return &m->base;
}
