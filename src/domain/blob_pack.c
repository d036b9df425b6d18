/*
 * blob_pack.c - the disk store's small blobs: verified blobs appended as
 * checksummed records to segment files under dir/pack, one pwritev per
 * blob, read back with pread from segment descriptors kept open (a
 * bounded LRU, no open() per blob).  It owns the segment table, the scan
 * that rebuilds the index from the segments found at open (dropping a
 * torn tail), tombstones, and the compaction that copies a segment's
 * live records forward once enough of it is dead, in slices on the loop.
 * The record format and the rules are in blob_pack.h.
 *
 * Startup cost: the scan reads every segment byte once and checksums it
 * (crc32c, in hardware where the CPU has it): about 1 GiB for a million
 * 1 KiB blobs, roughly a second from the page cache, done in 4 ms slices
 * on the loop.  A lookup that misses before the scan is done finishes
 * the scan at once (a miss must be a real miss), so the first such miss
 * may hold the loop for that long, once per start.
 */
#define BLOB_BACKEND
#include "domain/blob_pack.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/log.h"

#define MOD "blob"
/* Open sealed segments kept beyond those pinned by readers. */
#define PACK_MAX_FDS 64
/* Scan and compaction read this much at a time (a record never spans
 * two reads: the buffer grows to a record's length). */
#define PACK_BUF (1 << 20)
/* A header announcing more is garbage, whatever its checksum says. */
#define PACK_SANE_MAX (64LL << 20)
/* One compaction slice: at most this long, or this many bytes copied. */
#define CMP_SLICE_US	3000
#define CMP_SLICE_BYTES (4 << 20)

/* ---- crc32c ------------------------------------------------------------ */

static uint32_t crc_tab[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		crc_tab[i] = c;
	}
}

static uint32_t crc_sw(uint32_t c, const uint8_t *p, size_t n)
{
	while (n--)
		c = crc_tab[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p, size_t n)
{
	uint64_t c64 = c;
	for (; n >= 8; p += 8, n -= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c64 = __builtin_ia32_crc32di(c64, v);
	}
	c = (uint32_t)c64;
	while (n--)
		c = __builtin_ia32_crc32qi(c, *p++);
	return c;
}
#endif

static uint32_t (*crc_fn)(uint32_t, const uint8_t *, size_t);

static uint32_t crc32c(const void *p, size_t n)
{
	if (!crc_fn) {
		crc_init();
		crc_fn = crc_sw;
#if defined(__x86_64__)
		if (__builtin_cpu_supports("sse4.2"))
			crc_fn = crc_hw;
#endif
	}
	return ~crc_fn(~0u, p, n);
}

/* ---- little-endian fields ---------------------------------------------- */

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static void hdr_fill(uint8_t *h, uint32_t magic, const uint8_t *hash, const uint8_t *data, size_t n)
{
	put32(h, magic);
	put32(h + 8, crc32c(data, n));
	put32(h + 12, 0);
	put64(h + 16, n);
	memcpy(h + 24, hash, DIGEST_HASH_LEN);
	put32(h + 4, crc32c(h + 8, PACK_HDR_LEN - 8));
}

/* ---- the segment table -------------------------------------------------- */

static void seg_name(uint32_t id, char *buf, size_t n)
{
	snprintf(buf, n, "seg-%06" PRIu32, id);
}

static struct pseg *seg_find(struct pack *pk, uint32_t id)
{
	size_t lo = 0, hi = pk->nsegs;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (pk->segs[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < pk->nsegs && pk->segs[lo]->id == id ? pk->segs[lo] : NULL;
}

/* Ids only grow, except at open (sorted afterwards). */
static struct pseg *seg_new(struct pack *pk, uint32_t id)
{
	struct pseg *s = xcalloc(1, sizeof(*s));
	s->id = id;
	s->fd = -1;
	list_init(&s->lru);
	if (pk->nsegs == pk->capsegs) {
		pk->capsegs = pk->capsegs ? 2 * pk->capsegs : 16;
		pk->segs = xrealloc(pk->segs, pk->capsegs * sizeof(*pk->segs));
	}
	pk->segs[pk->nsegs++] = s;
	return s;
}

static void seg_free(struct pack *pk, struct pseg *s)
{
	if (list_linked(&s->lru)) {
		list_del(&s->lru);
		pk->nfds--;
	}
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

/* Unlink s and take it out of the table; it lives on for its readers. */
static void seg_remove(struct disk *k, struct pseg *s)
{
	struct pack *pk = &k->pk;
	char name[32];
	size_t i = 0;
	while (i < pk->nsegs && pk->segs[i] != s)
		i++;
	assert(i < pk->nsegs && s != pk->active);
	memmove(&pk->segs[i], &pk->segs[i + 1], (pk->nsegs - i - 1) * sizeof(*pk->segs));
	pk->nsegs--;
	if (pk->scan_end > i)
		pk->scan_end--;
	seg_name(s->id, name, sizeof(name));
	if (unlinkat(pk->fd, name, 0) < 0 && errno != ENOENT)
		LOGE(MOD, "%s/pack/%s: unlink: %s", k->dir, name, strerror(errno));
	if (s->refs > 0)
		s->gone = true;
	else
		seg_free(pk, s);
}

/* s's descriptor, opened if needed (closing the least recent unpinned
 * one past PACK_MAX_FDS); -1 with errno on failure. */
static int seg_fd(struct disk *k, struct pseg *s)
{
	struct pack *pk = &k->pk;
	if (s->fd >= 0) {
		if (list_linked(&s->lru))
			list_move_tail(&pk->fds, &s->lru);
		return s->fd;
	}
	char name[32];
	seg_name(s->id, name, sizeof(name));
	s->fd = openat(pk->fd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (s->fd < 0) {
		LOGE(MOD, "%s/pack/%s: open: %s", k->dir, name, strerror(errno));
		return -1;
	}
	if (s != pk->active && s->refs == 0) {
		list_add_tail(&pk->fds, &s->lru);
		if (++pk->nfds > PACK_MAX_FDS) {
			struct pseg *old = container_of(list_first(&pk->fds), struct pseg, lru);
			list_del(&old->lru);
			pk->nfds--;
			close(old->fd);
			old->fd = -1;
		}
	}
	return s->fd;
}

static void seg_pin(struct pack *pk, struct pseg *s)
{
	if (s->refs++ == 0 && list_linked(&s->lru)) {
		list_del(&s->lru);
		pk->nfds--;
	}
}

static void seg_unpin(struct pack *pk, struct pseg *s)
{
	assert(s->refs > 0);
	if (--s->refs > 0)
		return;
	if (s->gone)
		seg_free(pk, s);
	else if (s->fd >= 0 && s != pk->active) {
		list_add_tail(&pk->fds, &s->lru);
		if (++pk->nfds > PACK_MAX_FDS) {
			struct pseg *old = container_of(list_first(&pk->fds), struct pseg, lru);
			list_del(&old->lru);
			pk->nfds--;
			close(old->fd);
			old->fd = -1;
		}
	}
}

static bool seg_compactable(const struct pack *pk, const struct pseg *s)
{
	return s != pk->active && pk->compact_pct > 0 &&
	       (s->len == 0 || s->live * 100 < (int64_t)pk->compact_pct * s->len);
}

static void compact_kick(struct disk *k)
{
	struct pack *pk = &k->pk;
	static const struct timeval zero = {0, 0};
	if (pk->cmp_ev && pk->scanned && !evtimer_pending(pk->cmp_ev, NULL))
		evtimer_add(pk->cmp_ev, &zero);
}

/* ---- appending ------------------------------------------------------------ */

static int io_err(int e)
{
	return e == ENOSPC || e == EDQUOT ? -ENOSPC : -EIO;
}

static int sync_active(struct disk *k)
{
	struct pack *pk = &k->pk;
	if (!pk->dirty || !pk->active)
		return 0;
	pk->dirty = false;
	if (fdatasync(pk->active->fd) == 0)
		return 0;
	int e = errno;
	LOGE(MOD, "%s/pack/seg-%06" PRIu32 ": fdatasync: %s", k->dir, pk->active->id, strerror(e));
	return io_err(e);
}

static void seal(struct disk *k)
{
	struct pack *pk = &k->pk;
	struct pseg *s = pk->active;
	if (!s)
		return;
	if (k->fsync)
		(void)sync_active(k);
	pk->active = NULL;
	if (s->refs == 0) {
		list_add_tail(&pk->fds, &s->lru);
		pk->nfds++;
	}
	if (seg_compactable(pk, s))
		compact_kick(k);
}

static int new_active(struct disk *k)
{
	struct pack *pk = &k->pk;
	char name[32];
	uint32_t id = pk->next_id;
	seg_name(id, name, sizeof(name));
	int fd = openat(pk->fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		int e = errno;
		LOGE(MOD, "%s/pack/%s: create: %s", k->dir, name, strerror(e));
		return io_err(e);
	}
	pk->next_id++;
	if (k->fsync && fsync(pk->fd) < 0)
		LOGW(MOD, "%s/pack: fsync: %s", k->dir, strerror(errno));
	struct pseg *s = seg_new(pk, id);
	s->fd = fd;
	s->mtime_us = now_us();
	pk->active = s;
	return 0;
}

/* Append one record (len bytes in iov) to the active segment, sealing it
 * first when the record would take it past the segment size.  The record
 * is complete on return (a failed write is cut off again). */
static int append(struct disk *k, struct iovec *iov, int niov, int64_t len, struct pseg **segp,
		  int64_t *offp)
{
	struct pack *pk = &k->pk;
	if (pk->active && pk->active->len > 0 && pk->active->len + len > pk->seg_size)
		seal(k);
	int rc;
	if (!pk->active && (rc = new_active(k)) < 0)
		return rc;
	struct pseg *s = pk->active;
	ssize_t n;
	do
		n = pwritev(s->fd, iov, niov, s->len);
	while (n < 0 && errno == EINTR);
	if (n != len) {
		int e = n < 0 ? errno : ENOSPC;
		LOGE(MOD, "%s/pack/seg-%06" PRIu32 ": write: %s", k->dir, s->id, strerror(e));
		if (n > 0 && ftruncate(s->fd, s->len) < 0)
			LOGE(MOD, "%s/pack/seg-%06" PRIu32 ": truncate: %s", k->dir, s->id,
			     strerror(errno));
		return io_err(e);
	}
	*segp = s;
	*offp = s->len;
	s->len += len;
	pk->dirty = true;
	if (k->fsync && pk->batch == 0)
		return sync_active(k);
	return 0;
}

int pack_put(struct disk *k, const struct digest *d, const uint8_t *data, char **err)
{
	struct pack *pk = &k->pk;
	uint8_t h[PACK_HDR_LEN];
	hdr_fill(h, PACK_MAGIC_BLOB, d->hash, data, (size_t)d->size);
	struct iovec iov[2] = {{h, PACK_HDR_LEN}, {(void *)data, (size_t)d->size}};
	struct pseg *s;
	int64_t off;
	int rc = append(k, iov, 2, pack_rec_len(d->size), &s, &off);
	if (rc < 0) {
		char ds[DIGEST_STR_LEN];
		if (err)
			*err = xasprintf("cannot store blob %s: %s", digest_str(d, ds, sizeof(ds)),
					 strerror(-rc));
		return rc;
	}
	struct dent *e = disk_index_add(k, d, -1);
	e->seg = s->id;
	e->off = off;
	s->live += pack_rec_len(d->size);
	pk->count++;
	pk->bytes += d->size;
	return 0;
}

/* The index no longer points at the record at (s, off). */
static void mark_dead(struct disk *k, struct pseg *s, int64_t size)
{
	s->live -= pack_rec_len(size);
	assert(s->live >= 0);
	if (seg_compactable(&k->pk, s))
		compact_kick(k);
}

void pack_kill(struct disk *k, struct dent *e)
{
	struct pack *pk = &k->pk;
	struct pseg *s = seg_find(pk, e->seg);
	assert(s);
	uint8_t h[PACK_HDR_LEN], t[PACK_TOMB_LEN];
	put64(t, e->seg);
	put64(t + 8, (uint64_t)e->off);
	put64(t + 16, (uint64_t)e->node.size);
	hdr_fill(h, PACK_MAGIC_TOMB, e->node.hash, t, sizeof(t));
	struct iovec iov[2] = {{h, PACK_HDR_LEN}, {t, sizeof(t)}};
	struct pseg *ts;
	int64_t toff;
	/* Without its tombstone the blob comes back after a restart: still
	 * correct content, so a failure here is only logged. */
	if (append(k, iov, 2, PACK_HDR_LEN + PACK_TOMB_LEN, &ts, &toff) < 0)
		LOGW(MOD, "%s: a deleted packed blob may reappear after a restart", k->dir);
	pk->count--;
	pk->bytes -= e->node.size;
	mark_dead(k, s, e->node.size);
	e->seg = 0;
}

/* ---- reading records -------------------------------------------------------- */

enum rec_state { REC_OK, REC_TORN, REC_BADHDR, REC_BADDATA, REC_IOERR };

struct rec {
	uint32_t magic;
	int64_t size;
	const uint8_t *hdr, *data;
	struct digest d;
};

/* Bytes [off, off+n) of s in pk->buf; NULL past the end (*eof) or on
 * error.  One buffer per store: the scan and compaction never overlap. */

static const uint8_t *buf_at(struct disk *k, struct pseg *s, int64_t off, int64_t n, bool *eof)
{
	struct pack *pk = &k->pk;
	*eof = false;
	if (off + n > s->len) {
		*eof = true;
		return NULL;
	}
	if (pk->buf_seg == s && off >= pk->buf_off && off + n <= pk->buf_off + pk->buf_len)
		return pk->buf + (off - pk->buf_off);
	if ((size_t)n > pk->bufcap) {
		pk->bufcap = (size_t)n;
		free(pk->buf);
		pk->buf = xmalloc(pk->bufcap);
	}
	int fd = seg_fd(k, s);
	if (fd < 0)
		return NULL;
	int64_t want = s->len - off < (int64_t)pk->bufcap ? s->len - off : (int64_t)pk->bufcap;
	int64_t got = 0;
	pk->buf_seg = NULL;
	while (got < want) {
		ssize_t r = pread(fd, pk->buf + got, (size_t)(want - got), off + got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			LOGE(MOD, "%s/pack/seg-%06" PRIu32 ": read: %s", k->dir, s->id,
			     strerror(errno));
			return NULL;
		}
		if (r == 0)
			break;
		got += r;
	}
	pk->buf_seg = s;
	pk->buf_off = off;
	pk->buf_len = got;
	if (got < n) {
		*eof = true;
		return NULL;
	}
	return pk->buf;
}

static enum rec_state rec_read(struct disk *k, struct pseg *s, int64_t off, struct rec *r)
{
	bool eof;
	const uint8_t *h = buf_at(k, s, off, PACK_HDR_LEN, &eof);
	if (!h)
		return eof ? REC_TORN : REC_IOERR;
	r->magic = get32(h);
	if ((r->magic != PACK_MAGIC_BLOB && r->magic != PACK_MAGIC_TOMB) ||
	    get32(h + 4) != crc32c(h + 8, PACK_HDR_LEN - 8))
		return REC_BADHDR;
	uint64_t size = get64(h + 16);
	if (size > PACK_SANE_MAX || (r->magic == PACK_MAGIC_TOMB && size != PACK_TOMB_LEN) ||
	    (r->magic == PACK_MAGIC_BLOB && size == 0))
		return REC_BADHDR;
	r->size = (int64_t)size;
	uint32_t dcrc = get32(h + 8);
	h = buf_at(k, s, off, pack_rec_len(r->size), &eof);
	if (!h)
		return eof ? REC_TORN : REC_IOERR;
	r->hdr = h;
	r->data = h + PACK_HDR_LEN;
	if (crc32c(r->data, (size_t)r->size) != dcrc)
		return REC_BADDATA;
	if (r->magic == PACK_MAGIC_BLOB)
		digest_from_hash(h + 24, r->size, &r->d);
	else
		digest_from_hash(h + 24, (int64_t)get64(r->data + 16), &r->d);
	return REC_OK;
}

static struct dent *find(struct disk *k, const struct digest *d)
{
	struct digest_map_node *n = digest_map_find(&k->index, d);
	return n ? container_of(n, struct dent, node) : NULL;
}

/* ---- the scan at open ----------------------------------------------------------- */

static void truncate_seg(struct disk *k, struct pseg *s, int64_t off, const char *why)
{
	char name[32];
	seg_name(s->id, name, sizeof(name));
	LOGW(MOD, "%s/pack/%s: %s at offset %" PRId64 ": dropping the last %" PRId64 " bytes",
	     k->dir, name, why, off, s->len - off);
	int fd = openat(k->pk.fd, name, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 || ftruncate(fd, off) < 0)
		LOGE(MOD, "%s/pack/%s: truncate: %s", k->dir, name, strerror(errno));
	if (fd >= 0)
		close(fd);
	s->len = off;
	if (k->pk.buf_seg == s)
		k->pk.buf_seg = NULL;
}

static void scan_record(struct disk *k, struct pseg *s, int64_t off, struct rec *r)
{
	struct pack *pk = &k->pk;
	if (r->magic == PACK_MAGIC_TOMB) {
		uint32_t vseg = (uint32_t)get64(r->data);
		int64_t voff = (int64_t)get64(r->data + 8);
		struct dent *e = find(k, &r->d);
		if (e && e->seg == vseg && e->off == voff) {
			struct pseg *vs = seg_find(pk, vseg);
			pk->count--;
			pk->bytes -= e->node.size;
			vs->live -= pack_rec_len(e->node.size);
			disk_index_drop(k, e);
		}
		return;
	}
	struct dent *e = find(k, &r->d);
	if (e && e->seg == 0)
		return; /* a file holds it: this copy is dead */
	if (e) {	/* an older copy (an interrupted compaction): the later wins */
		seg_find(pk, e->seg)->live -= pack_rec_len(r->size);
	} else {
		e = disk_index_add(k, &r->d, s->mtime_us);
		pk->count++;
		pk->bytes += r->size;
	}
	e->seg = s->id;
	e->off = off;
	s->live += pack_rec_len(r->size);
}

bool pack_scan(struct disk *k, int64_t budget_us)
{
	struct pack *pk = &k->pk;
	int64_t deadline = budget_us < 0 ? INT64_MAX : mono_us() + budget_us;
	int n = 0;
	while (!pk->scanned) {
		if (pk->scan_idx >= pk->scan_end) {
			pk->scanned = true;
			pk->buf_seg = NULL;
			if (pk->scan_end)
				LOGI(MOD,
				     "%s: %zu segments indexed: %" PRId64 " packed blobs, %" PRId64
				     " bytes",
				     k->dir, pk->scan_end, pk->count, pk->bytes);
			compact_kick(k);
			break;
		}
		if ((++n & 63) == 0 && mono_us() > deadline)
			break;
		struct pseg *s = pk->segs[pk->scan_idx];
		struct rec r;
		int64_t off = pk->scan_off;
		enum rec_state st = off < s->len ? rec_read(k, s, off, &r) : REC_OK;
		if (off >= s->len) {
			pk->scan_idx++;
			pk->scan_off = 0;
			continue;
		}
		switch (st) {
		case REC_OK:
			scan_record(k, s, off, &r);
			pk->scan_off += pack_rec_len(r.size);
			break;
		case REC_BADDATA:
			if (off + pack_rec_len(r.size) == s->len) {
				truncate_seg(k, s, off, "torn record (checksum) at the end");
			} else {
				LOGW(MOD,
				     "%s/pack/seg-%06" PRIu32 ": record at %" PRId64
				     " fails its checksum: skipped",
				     k->dir, s->id, off);
				pk->scan_off += pack_rec_len(r.size);
			}
			break;
		case REC_TORN: truncate_seg(k, s, off, "torn record"); break;
		case REC_BADHDR: truncate_seg(k, s, off, "unreadable record header"); break;
		case REC_IOERR:
			LOGE(MOD, "%s/pack/seg-%06" PRIu32 ": not indexed past offset %" PRId64,
			     k->dir, s->id, off);
			pk->scan_idx++;
			pk->scan_off = 0;
			break;
		}
	}
	return pk->scanned;
}

/* ---- reads -------------------------------------------------------------------------- */

static int pread_exact(struct disk *k, struct pseg *s, int fd, uint8_t *buf, size_t n, int64_t off)
{
	while (n > 0) {
		ssize_t r = pread(fd, buf, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			LOGE(MOD, "%s/pack/seg-%06" PRIu32 ": read at %" PRId64 ": %s", k->dir,
			     s->id, off, r < 0 ? strerror(errno) : "segment truncated");
			return -EIO;
		}
		buf += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

static void discard(struct disk *k, struct dent *e, const char *why)
{
	char ds[DIGEST_STR_LEN];
	struct digest d;
	digest_from_hash(e->node.hash, e->node.size, &d);
	LOGW(MOD, "%s/pack/seg-%06" PRIu32 ": dropping corrupt blob %s at %" PRId64 ": %s", k->dir,
	     e->seg, digest_str(&d, ds, sizeof(ds)), e->off, why);
	pack_kill(k, e);
	disk_index_drop(k, e);
}

int pack_get(struct disk *k, struct dent *e, uint8_t **data)
{
	struct pseg *s = seg_find(&k->pk, e->seg);
	int fd = s ? seg_fd(k, s) : -1;
	if (fd < 0)
		return -EIO;
	size_t n = (size_t)e->node.size;
	uint8_t *buf = xmalloc(n);
	int rc = pread_exact(k, s, fd, buf, n, e->off + PACK_HDR_LEN);
	if (rc == 0) {
		struct digest want, got;
		digest_from_hash(e->node.hash, e->node.size, &want);
		digest_of(buf, n, &got);
		if (!digest_eq(&got, &want)) {
			discard(k, e, "content does not match its hash");
			rc = -ENOENT;
		}
	}
	if (rc < 0) {
		free(buf);
		return rc;
	}
	*data = buf;
	return 0;
}

int pack_reader_open(struct disk *k, struct dent *e, struct blob_reader *r)
{
	struct pseg *s = seg_find(&k->pk, e->seg);
	int fd = s ? seg_fd(k, s) : -1;
	if (fd < 0)
		return -EIO;
	seg_pin(&k->pk, s);
	r->fd = fd;
	r->ent = s;
	r->base = e->off + PACK_HDR_LEN;
	return 0;
}

void pack_reader_close(struct disk *k, struct blob_reader *r)
{
	seg_unpin(&k->pk, r->ent);
	r->ent = NULL;
	r->fd = -1;
}

void pack_reader_corrupt(struct disk *k, struct blob_reader *r)
{
	struct pseg *s = r->ent;
	struct dent *e = find(k, &r->d);
	if (e && e->seg == s->id && e->off + PACK_HDR_LEN == r->base)
		discard(k, e, "content does not match its hash");
}

/* ---- compaction ------------------------------------------------------------------------ */

static struct pseg *pick_victim(struct pack *pk)
{
	struct pseg *best = NULL;
	for (size_t i = 0; i < pk->nsegs; i++) {
		struct pseg *s = pk->segs[i];
		if (seg_compactable(pk, s) && (!best || s->live * best->len < best->live * s->len))
			best = s;
	}
	return best;
}

static void compact_done(struct disk *k)
{
	struct pack *pk = &k->pk;
	struct pseg *v = pk->victim;
	int64_t freed = v->len;
	LOGD(MOD, "%s: compacted seg-%06" PRIu32 " (%" PRId64 " bytes, %" PRId64 " copied)", k->dir,
	     v->id, v->len, v->live);
	/* What is still live in it failed to copy: it goes with the file. */
	pk->victim = NULL;
	if (pk->buf_seg == v)
		pk->buf_seg = NULL;
	if (k->fsync)
		(void)sync_active(k);
	seg_remove(k, v);
	pk->compactions++;
	pk->reclaimed += freed;
}

/* Copy the record at (v, off), already read into r, to the active
 * segment when the index still points at it (or, a tombstone, while the
 * segment of the record it kills exists). */
static int64_t compact_record(struct disk *k, struct pseg *v, int64_t off, struct rec *r)
{
	struct pack *pk = &k->pk;
	int64_t len = pack_rec_len(r->size);
	struct dent *e = NULL;
	if (r->magic == PACK_MAGIC_BLOB) {
		e = find(k, &r->d);
		if (!e || e->seg != v->id || e->off != off)
			return 0;
	} else {
		uint32_t vseg = (uint32_t)get64(r->data);
		if (vseg == v->id || !seg_find(pk, vseg))
			return 0;
	}
	struct iovec iov = {(void *)r->hdr, (size_t)len};
	struct pseg *s;
	int64_t noff;
	if (append(k, &iov, 1, len, &s, &noff) < 0)
		return -1;
	if (e) {
		v->live -= len;
		e->seg = s->id;
		e->off = noff;
		s->live += len;
	}
	return len;
}

static void compact_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct disk *k = arg;
	struct pack *pk = &k->pk;
	int64_t deadline = mono_us() + CMP_SLICE_US, copied = 0;
	int n = 0;
	for (;;) {
		if (!pk->victim) {
			pk->victim = pick_victim(pk);
			pk->cmp_off = 0;
			if (!pk->victim)
				return;
		}
		if (copied >= CMP_SLICE_BYTES || ((++n & 31) == 0 && mono_us() > deadline))
			break;
		struct pseg *v = pk->victim;
		if (pk->cmp_off >= v->len) {
			compact_done(k);
			continue;
		}
		struct rec r;
		enum rec_state st = rec_read(k, v, pk->cmp_off, &r);
		if (st == REC_IOERR) {
			/* Leave it be: a later kick retries. */
			pk->victim = NULL;
			return;
		}
		if (st != REC_OK && st != REC_BADDATA) {
			LOGW(MOD,
			     "%s/pack/seg-%06" PRIu32 ": unreadable at %" PRId64
			     " while compacting",
			     k->dir, v->id, pk->cmp_off);
			pk->cmp_off = v->len;
			continue;
		}
		int64_t c = st == REC_OK ? compact_record(k, v, pk->cmp_off, &r) : 0;
		if (c < 0) { /* the disk is full or failing: stop for now */
			pk->victim = NULL;
			return;
		}
		copied += c;
		pk->cmp_off += pack_rec_len(r.size);
	}
	static const struct timeval zero = {0, 0};
	evtimer_add(pk->cmp_ev, &zero);
}

/* ---- open, close, stats ------------------------------------------------------------------- */

static int cmp_seg(const void *a, const void *b)
{
	uint32_t x = (*(struct pseg *const *)a)->id, y = (*(struct pseg *const *)b)->id;
	return x < y ? -1 : x > y;
}

int pack_open(struct disk *k, struct event_base *base)
{
	struct pack *pk = &k->pk;
	list_init(&pk->fds);
	pk->next_id = 1;
	pk->bufcap = PACK_BUF;
	pk->buf = xmalloc(pk->bufcap);
	if (pk->seg_size <= 0)
		pk->seg_size = PACK_SEG_DEFAULT;
	if (mkdirat(k->dirfd, "pack", 0755) < 0 && errno != EEXIST)
		return -errno;
	pk->fd = openat(k->dirfd, "pack", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pk->fd < 0)
		return -errno;
	int dfd = dup(pk->fd);
	DIR *dp = dfd >= 0 ? fdopendir(dfd) : NULL;
	if (!dp) {
		int e = errno;
		if (dfd >= 0)
			close(dfd);
		return -e;
	}
	struct dirent *de;
	while ((de = readdir(dp))) {
		unsigned id;
		char tail;
		struct stat st;
		if (sscanf(de->d_name, "seg-%6u%c", &id, &tail) != 1 || id == 0 ||
		    strlen(de->d_name) != 10)
			continue;
		if (fstatat(pk->fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		struct pseg *s = seg_new(pk, id);
		s->len = st.st_size;
		s->mtime_us = (int64_t)st.st_mtim.tv_sec * 1000000 + st.st_mtim.tv_nsec / 1000;
		if (id >= pk->next_id)
			pk->next_id = id + 1;
	}
	closedir(dp);
	if (pk->nsegs)
		qsort(pk->segs, pk->nsegs, sizeof(*pk->segs), cmp_seg);
	pk->scan_end = pk->nsegs;
	pk->scanned = pk->nsegs == 0;
	if (base && !(pk->cmp_ev = evtimer_new(base, compact_cb, k)))
		return -ENOMEM;
	return 0;
}

void pack_close(struct disk *k)
{
	struct pack *pk = &k->pk;
	if (pk->cmp_ev)
		event_free(pk->cmp_ev);
	if (pk->active && k->fsync)
		(void)sync_active(k);
	for (size_t i = 0; i < pk->nsegs; i++) {
		assert(pk->segs[i]->refs == 0);
		seg_free(pk, pk->segs[i]);
	}
	free(pk->segs);
	free(pk->buf);
	if (pk->fd >= 0)
		close(pk->fd);
	memset(pk, 0, sizeof(*pk));
	pk->fd = -1;
}

void pack_stats(struct disk *k, struct blob_stats *st)
{
	struct pack *pk = &k->pk;
	st->packed_count = pk->count;
	st->packed_bytes = pk->bytes;
	st->pack_segments = (int64_t)pk->nsegs;
	for (size_t i = 0; i < pk->nsegs; i++)
		st->pack_file_bytes += pk->segs[i]->len;
	st->pack_compactions = pk->compactions;
	st->pack_reclaimed = pk->reclaimed;
}

int pack_batch_end(struct disk *k)
{
	struct pack *pk = &k->pk;
	assert(pk->batch > 0);
	if (--pk->batch == 0 && k->fsync)
		return sync_active(k);
	return 0;
}
