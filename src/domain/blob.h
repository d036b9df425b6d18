/*
 * blob.h - the content-addressable blob store behind CAS and ByteStream:
 * presence checks, whole-blob and streaming reads, streaming verified
 * writes with atomic publication, and LRU eviction under a byte budget.
 * Two backends share this API: a disk store (one file per blob, or small
 * blobs packed in segment files; index in memory, built in the
 * background) and a memory store.
 *
 * Everything runs on the caller's thread and never waits for anything but
 * bounded local disk I/O: reads are chunked by the caller, writes are
 * appended as they arrive, and the disk index scan runs in small slices on
 * the event loop.  Error codes are negative errno values; the service
 * layer maps them to gRPC status (ENOENT -> NOT_FOUND, ERANGE ->
 * OUT_OF_RANGE, EINVAL -> INVALID_ARGUMENT, ENOSPC/EFBIG ->
 * RESOURCE_EXHAUSTED / INVALID_ARGUMENT, EIO -> INTERNAL).
 *
 * Lifetimes: every reader and writer must be closed, committed or aborted
 * before blob_close (asserted).  The empty blob is always present and
 * never touches storage.
 */
#ifndef REACTOR_BLOB_H
#define REACTOR_BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/digest.h"
#include "core/util.h"

struct blob_store;
struct blob_reader;
struct blob_writer;
struct event_base;

/* ---- opening and closing --------------------------------------------- */

/* Disk store rooted at dir (created, with parents, if missing):
 *   dir/LOCK                  flock'd while open: one process per store
 *   dir/cas/ab/<hex>-<size>   blobs, fanned out on the first hex byte
 *   dir/tmp/                  uploads in progress, emptied at open
 *   dir/pack/seg-NNNNNN       small blobs packed in segments, when
 *                             blob_disk_set_pack turns packing on
 * A blob file appears in cas/ only by rename(2) after its hash and size
 * were verified, so a crash never leaves a wrong blob visible under its
 * name.  Files are not fsync'd by default (a process crash loses nothing;
 * a power loss may leave torn files, which reads detect by hash and
 * delete); see blob_disk_set_fsync.
 *
 * max_size > 0 bounds the bytes stored: commits evict least recently used
 * blobs.  Recency is in-memory (has/get/read/commit); blobs found on disk
 * at open rank by max(atime, mtime), older than anything touched since.
 *
 * Open does not read the cas tree: the index is filled by a scan that runs
 * in slices (bounded in entries and time) on `base`.  Until it completes,
 * a lookup that misses the index stat()s the file and indexes it, and the
 * byte count (hence eviction) only covers indexed blobs.  base may be
 * NULL: then nothing scans and misses always fall back to stat().
 *
 * Returns the store, or NULL with *err (malloc'd, caller frees; err may
 * be NULL) naming the path and the reason, e.g. when another process
 * holds the store. */
struct blob_store *blob_open_disk(struct event_base *base, const char *dir, int64_t max_size,
				  char **err);

/* Disk store only (no-op for memory): fsync each blob before its rename
 * and the fan-out directory after it, so a published blob survives power
 * loss.  Off by default: fsync on the loop costs milliseconds per blob. */
void blob_disk_set_fsync(struct blob_store *s, bool on);

/* The disk store always verifies the hash of whole-blob reads (blob_get)
 * and deletes a blob that fails.  This turns the same on for streamed
 * readers opened at offset 0 (ByteStream.Read).  Off by default: it caps
 * reads at SHA-256 speed, and clients verify digests themselves; the
 * instance key verify-reads turns it on. */
void blob_disk_set_verify_streams(struct blob_store *s, bool on);

/* Disk store only (no-op for memory): keep blobs of 1..small_max bytes
 * (at most 1 MiB; 0 turns packing off for new blobs) packed as records
 * in append-only segment files, dir/pack/seg-NNNNNN, of about seg_size
 * bytes (<= 0: 64 MiB) instead of one file each; a sealed segment whose
 * live records fall below compact_pct percent of it (0: never) is
 * compacted on the loop.  Packed blobs share the index, recency order
 * and max_size with file blobs; reads pread from segment descriptors kept
 * open.  Segments already on disk are indexed whatever small_max is
 * (blob_pack.h describes the format and the crash rules).  Call right
 * after open. */
void blob_disk_set_pack(struct blob_store *s, int64_t small_max, int64_t seg_size,
			int compact_pct);

/* Group commit for the disk store with fsync on: between begin and end
 * (nestable), packed blobs are appended without an fdatasync each, and
 * the outermost end syncs the segment once.  A caller acknowledges what
 * it stored only after end returned 0 (-EIO/-ENOSPC: the sync failed).
 * No-ops (returning 0) for the memory store and with fsync off. */
void blob_batch_begin(struct blob_store *s);
int blob_batch_end(struct blob_store *s) WARN_UNUSED;

/* Memory store, LRU under max_size bytes (<= 0: unbounded).  Never NULL. */
struct blob_store *blob_open_memory(int64_t max_size);

/* Free the store (NULL is a no-op).  No reader or writer may be open. */
void blob_close(struct blob_store *s);

/* ---- lookups and whole-blob access ----------------------------------- */

/* True when the blob is stored; marks it recently used.  One hash lookup
 * and no I/O once the disk index is complete. */
bool blob_has(struct blob_store *s, const struct digest *d);

/* Read a whole blob into *data (malloc'd, d->size bytes, caller frees;
 * non-NULL even for size 0).  Meant for small blobs: it allocates d->size
 * bytes once the blob is found, so callers check d->size against their
 * message limit first and stream anything bigger.  Returns 0, -ENOENT
 * when missing (also when the disk file was corrupt: it is deleted and
 * reported missing), -EIO on I/O error. */
int blob_get(struct blob_store *s, const struct digest *d, uint8_t **data);

/* Store a whole buffer after verifying it hashes to d (no storage touched
 * when it does not).  Same returns and *err rules as blob_writer_commit,
 * plus -ENOSPC before hashing when d->size > max_size and -EDQUOT when
 * the uploads in progress leave no room for it (see blob_writer_write). */
int blob_put(struct blob_store *s, const struct digest *d, const void *data, size_t len,
	     char **err);

/* Remove a blob.  Returns 0, or -ENOENT when it was not stored.  Open
 * readers of it keep working. */
int blob_delete(struct blob_store *s, const struct digest *d);

struct blob_stats {
	int64_t bytes, count; /* indexed blobs */
	int64_t max_size;     /* <= 0: unbounded */
	int64_t evictions;    /* blobs evicted for space since open */
	int64_t hits, misses; /* has/get/reader_open outcomes */
	bool index_complete;  /* disk scan done (always true for memory) */
	/* Disk store, packed small blobs (included in bytes and count): */
	int64_t packed_count, packed_bytes; /* live packed blobs, their data */
	int64_t pack_segments;		    /* segment files */
	int64_t pack_file_bytes;	    /* their size: live data plus record
					       headers, dead records, tombstones */
	int64_t pack_compactions;	    /* segments compacted since open */
	int64_t pack_reclaimed;		    /* bytes freed by those */
};
void blob_get_stats(struct blob_store *s, struct blob_stats *st);

/* ---- streaming reads ------------------------------------------------- */

/* Open d for reading from offset.  Returns 0 with *out set, -ERANGE when
 * offset < 0 or offset > d->size (checked first), -ENOENT when missing,
 * -EIO on I/O error.  The reader keeps its data alive: a disk reader holds
 * the file open, a memory reader pins the blob (pinned blobs are never
 * evicted; a deleted one is freed when its last reader closes). */
int blob_reader_open(struct blob_store *s, const struct digest *d, int64_t offset,
		     struct blob_reader **out) WARN_UNUSED;

/* Copy up to n bytes at the current offset into buf, advancing it.
 * Returns the count (n, or less only at the end of the blob), 0 at the
 * end, or -EIO (the disk file was truncated, or a verified read found the
 * hash wrong: the blob is then deleted and its last chunk withheld).
 * Reads min(n, remaining) bytes in one go: callers bound n (~1 MiB). */
ssize_t blob_reader_read(struct blob_reader *r, void *buf, size_t n);

int64_t blob_reader_offset(const struct blob_reader *r);
/* Frees r (NULL is a no-op). */
void blob_reader_close(struct blob_reader *r);

/* ---- streaming writes ------------------------------------------------ */

/* Start an upload of `expected`.  Never NULL; nothing is created on disk
 * until data arrives, so failures show up as -EIO from write/commit.  A
 * writer may live across many loop passes (resumable ByteStream uploads)
 * and several writers of the same digest may run at once. */
struct blob_writer *blob_writer_open(struct blob_store *s, const struct digest *expected);

/* Append n bytes, hashing them on the way.  Returns 0; -EFBIG when the
 * data would go past expected->size (nothing consumed); -ENOSPC when
 * expected->size exceeds the store's max_size (rejected before buffering
 * anything) or the disk is full; -EDQUOT when the bytes all open writers
 * hold would pass max_size (nothing consumed; see blob_tmp_bytes); -EIO
 * on I/O error.  After -EIO/-ENOSPC from the disk the writer is dead:
 * later calls fail the same way.
 *
 * Uploads in progress count against max_size: before taking bytes, a
 * write evicts stored blobs (least recent first) so that stored bytes
 * plus every writer's bytes stay within it where it can. */
int blob_writer_write(struct blob_writer *w, const void *data, size_t n);

/* Bytes held by writers not yet committed or aborted (temp files on disk,
 * buffers in memory). */
int64_t blob_tmp_bytes(const struct blob_store *s);

/* The writer will be idle for a while (a resumable upload whose stream
 * ended): give back what it need not hold meanwhile.  The disk writer
 * writes out its buffer and closes its temp file, reopening it with the
 * next write.  Returns 0, or the error that write would have (the writer
 * is then dead, as after a failed write). */
int blob_writer_suspend(struct blob_writer *w);

/* Bytes accepted so far (where a resumed upload continues). */
int64_t blob_writer_offset(const struct blob_writer *w);

/* Verify size and hash, then publish atomically; frees w.  Returns 0 (also
 * when the blob was already stored: this copy is dropped), -EINVAL when
 * size or hash differ from expected (nothing stored), -ENOSPC when the
 * blob cannot fit (larger than max_size, or the memory store's other
 * blobs are all pinned by readers, or the disk is full), -EIO.  On any
 * error *err is set (malloc'd, caller frees) when err is non-NULL. */
int blob_writer_commit(struct blob_writer *w, char **err);

/* Drop an upload and its temp data; frees w (NULL is a no-op). */
void blob_writer_abort(struct blob_writer *w);

/* ---- backend interface: blob.c, blob_disk.c and blob_mem.c only ------ */
#ifdef BLOB_BACKEND

/* Recency order for eviction, shared by the backends (blob.c).  Entries
 * used since open are on an LRU list in use order; entries known only
 * from the disk scan sit in a min-heap keyed by their file time.  Those
 * were all last used before this process started, so the heap drains
 * first, oldest first.  The scan sees files in directory order a slice at
 * a time, so it cannot sort them up front; the heap keeps each insert and
 * each eviction O(log n).  Nodes are embedded in the backends' entries. */
#define BLOB_NOT_IN_HEAP UINT32_MAX
struct blob_rnode {
	struct blob_rnode *prev, *next; /* list links; NULL when not listed */
	int64_t cold;			/* heap key, microseconds */
	uint32_t hidx;			/* heap slot, or BLOB_NOT_IN_HEAP */
};
struct blob_recency {
	struct blob_rnode list; /* sentinel: list.next is least recent */
	struct blob_rnode **heap;
	size_t nheap, heapcap;
};
void blob_rec_init(struct blob_recency *r);
/* Frees the heap array; the nodes belong to the caller. */
void blob_rec_destroy(struct blob_recency *r);
/* cold < 0: used now (list tail); else a past use time (heap). */
void blob_rec_add(struct blob_recency *r, struct blob_rnode *n, int64_t cold);
/* Mark n used now. */
void blob_rec_touch(struct blob_recency *r, struct blob_rnode *n);
void blob_rec_remove(struct blob_recency *r, struct blob_rnode *n);
/* The least recently used node, or NULL when empty. */
struct blob_rnode *blob_rec_oldest(const struct blob_recency *r);

/* Called by blob.c after the shared checks: never for the empty blob,
 * readers are within range, writes are within the expected size. */
struct blob_backend {
	void (*close)(struct blob_store *s);
	bool (*has)(struct blob_store *s, const struct digest *d);
	int (*get)(struct blob_store *s, const struct digest *d, uint8_t **data);
	int (*del)(struct blob_store *s, const struct digest *d);
	void (*stats)(struct blob_store *s, struct blob_stats *st);
	/* Fill r's backend fields for r->d at r->off. */
	int (*reader_open)(struct blob_store *s, struct blob_reader *r);
	/* 0 < n <= remaining; must return n or an error. */
	ssize_t (*reader_read)(struct blob_reader *r, void *buf, size_t n);
	void (*reader_close)(struct blob_reader *r);
	/* Store data (n > 0); w->off is the offset of data[0]. */
	int (*writer_write)(struct blob_writer *w, const void *data, size_t n);
	/* Content verified: make it visible (or notice it already is). */
	int (*writer_publish)(struct blob_writer *w, char **err);
	/* Called exactly once per non-empty writer, after publish or instead
	 * of it: release fd, temp file, buffers. */
	void (*writer_release)(struct blob_writer *w);
	/* Optional: close what an idle writer need not hold. */
	int (*writer_suspend)(struct blob_writer *w);
	/* Optional: evict (best effort) until stored + need fits max_size. */
	void (*reserve)(struct blob_store *s, int64_t need);
};

struct blob_store {
	const struct blob_backend *be;
	int64_t max_size;
	int64_t hits, misses;
	int open_readers, open_writers;
	int64_t tmp_bytes; /* accepted by open writers */
};

struct blob_reader {
	struct blob_store *s;
	struct digest d;
	int64_t off;
	int fd;		       /* disk */
	struct hasher *verify; /* disk, whole-blob reads */
	void *ent;	       /* memory: the pinned entry; disk: the pinned segment */
	int64_t base;	       /* disk, packed: offset of the data in the segment */
};

struct blob_writer {
	struct blob_store *s;
	struct digest expected;
	struct hasher *h; /* NULL when the caller verified (blob_put) */
	int64_t off;
	int err; /* sticky backend error */
	/* disk: temp file and write-combining buffer */
	int fd;
	char tmpname[32];
	uint8_t *buf;
	size_t buflen, bufcap;
	/* memory: the blob being assembled, handed to the store on publish */
	uint8_t *data;
	size_t datacap;
};

#endif /* BLOB_BACKEND */

#endif
