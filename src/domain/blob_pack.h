/*
 * blob_pack.h - internals shared by the disk store (blob_disk.c) and its
 * packed small blobs (blob_pack.c); nothing else includes this.  It holds
 * the store's struct, the index entry both kinds of blob share (so one
 * recency order and one byte count cover files and packed records), and
 * the segment layer's entry points.
 *
 * Segments: dir/pack/seg-NNNNNN, append-only, written by this process only
 * after open (each open appends to a new segment, so an earlier run's
 * torn tail never sits in front of new records).  A record is a 56-byte
 * header and its data:
 *
 *   0  magic  u32   PACK_MAGIC_BLOB or PACK_MAGIC_TOMB
 *   4  hcrc   u32   crc32c of bytes 8..55
 *   8  dcrc   u32   crc32c of the data
 *   12 flags  u32   0
 *   16 size   u64   data length (a blob's size; 24 for a tombstone)
 *   24 hash   32    SHA-256 of the blob (tombstone: of the blob it kills)
 *   56 data
 *
 * all little-endian.  A tombstone's data is the killed record's segment
 * id, offset and blob size (3 x u64): deletions and evictions survive a
 * restart, and a tombstone names one record, so a blob stored again after
 * its deletion is unaffected.  The index maps a digest to (segment,
 * offset); a record the index does not point at is dead, and a segment
 * whose live share falls below the compaction threshold has its live
 * records (and still-needed tombstones) copied to the active segment in
 * slices on the loop, then is unlinked.
 */
#ifndef REACTOR_BLOB_PACK_H
#define REACTOR_BLOB_PACK_H

#ifndef BLOB_BACKEND
#error "blob_pack.h is internal to the disk store"
#endif

#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/digest.h"
#include "core/list.h"
#include "domain/blob.h"

struct event;

#define PACK_HDR_LEN	56
#define PACK_TOMB_LEN	24
#define PACK_MAGIC_BLOB 0x31504252u /* "RBP1" */
#define PACK_MAGIC_TOMB 0x31544252u /* "RBT1" */
/* Defaults (instance keys storage-small-blob-size, storage-segment-size,
 * storage-compact-live-percent); blob_open_disk itself packs nothing
 * until blob_disk_set_pack. */
#define PACK_SMALL_MAX	 (1 << 20) /* largest threshold accepted */
#define PACK_SEG_DEFAULT (64LL << 20)

/* One index entry: a file under cas/ (seg == 0) or a packed record. */
struct dent {
	struct digest_map_node node;
	struct blob_rnode rec;
	uint32_t seg; /* segment id; 0: a file */
	int64_t off;  /* record offset in the segment */
};

static inline int64_t pack_rec_len(int64_t size)
{
	return PACK_HDR_LEN + size;
}

struct pseg {
	uint32_t id;
	int fd;		  /* -1 while closed (fd LRU) */
	int refs;	  /* open readers; pinned segments keep their fd */
	bool gone;	  /* unlinked by compaction: freed with its last reader */
	int64_t len;	  /* bytes of records (file length) */
	int64_t live;	  /* bytes of records the index points at */
	int64_t mtime_us; /* file time at open: the "cold" rank of its blobs */
	struct list lru;  /* on pack.fds while open and not active */
};

struct pack {
	int fd; /* dir/pack */
	int64_t small_max, seg_size;
	int compact_pct;
	struct pseg **segs; /* sorted by id */
	size_t nsegs, capsegs;
	struct pseg *active; /* appended to; NULL until the first append */
	uint32_t next_id;
	struct list fds; /* open sealed segments, least recent first */
	int nfds;
	bool dirty;	      /* appended since the last fdatasync */
	int batch;	      /* blob_batch_begin depth */
	int64_t count, bytes; /* live packed blobs, their data bytes */
	int64_t compactions, reclaimed;
	/* scan of the segments found at open */
	size_t scan_idx, scan_end;
	int64_t scan_off;
	bool scanned;
	/* compaction in progress */
	struct pseg *victim;
	int64_t cmp_off;
	struct event *cmp_ev;
	uint8_t *buf; /* scan and compaction read buffer */
	size_t bufcap;
	struct pseg *buf_seg; /* what buf holds: buf_len bytes at buf_off */
	int64_t buf_off, buf_len;
};

struct disk {
	struct blob_store base;
	char *dir;
	int dirfd, casfd, tmpfd, lockfd;
	bool fsync, verify_streams;
	struct digest_map index;
	struct blob_recency rec;
	int64_t bytes, evictions;
	uint64_t tmpseq;
	/* background scan */
	struct event *scan_ev;
	DIR *scan_dir;
	int scan_sub; /* fan-out directory being read */
	bool complete;
	struct pack pk;
};

/* blob_disk.c: index primitives the segment layer uses. */
struct dent *disk_index_add(struct disk *k, const struct digest *d, int64_t cold);
void disk_index_drop(struct disk *k, struct dent *e);

/* Open dir/pack, list its segments (not read yet).  0 or -errno. */
int pack_open(struct disk *k, struct event_base *base);
void pack_close(struct disk *k);
/* Index some more of the segments found at open: up to budget_us (< 0:
 * all of them).  Returns true when done. */
bool pack_scan(struct disk *k, int64_t budget_us);
/* The size a new blob of this digest is packed at. */
static inline bool pack_wants(const struct disk *k, int64_t size)
{
	return size > 0 && size <= k->pk.small_max;
}
/* Append a verified blob (data, d->size bytes) and index it.  0, -ENOSPC
 * or -EIO (*err set when err is non-NULL). */
int pack_put(struct disk *k, const struct digest *d, const uint8_t *data, char **err);
/* e (packed) is being dropped: write its tombstone, update the segment's
 * live bytes.  The caller then drops e from the index. */
void pack_kill(struct disk *k, struct dent *e);
/* Read a packed blob whole and verify its hash; -ENOENT (corrupt: killed
 * and dropped), -EIO. */
int pack_get(struct disk *k, struct dent *e, uint8_t **data);
/* Readers: pin e's segment; r->fd and r->base point at the data. */
int pack_reader_open(struct disk *k, struct dent *e, struct blob_reader *r);
void pack_reader_close(struct disk *k, struct blob_reader *r);
/* A verified stream of r found the hash wrong: drop the blob if the
 * index still points at the record r read. */
void pack_reader_corrupt(struct disk *k, struct blob_reader *r);
/* blob_batch_end: the last one syncs the active segment (fsync on). */
int pack_batch_end(struct disk *k);
void pack_stats(struct disk *k, struct blob_stats *st);

#endif
