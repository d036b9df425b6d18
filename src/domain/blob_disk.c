/*
 * blob_disk.c - the disk blob store: one file per blob under a fan-out
 * tree, uploads in a temp directory renamed into place once verified, and
 * an in-memory index (digest table + recency order) that a background
 * scan fills in bounded slices so opening a store with millions of blobs
 * costs nothing up front.  It owns the store's directory fds, the lock
 * file, the index entries and the scan event.  Blobs the scan finds enter
 * the recency order as "cold" (ranked by file time, see blob.h), blobs
 * used since open as most recent.
 */
#define BLOB_BACKEND
#include "domain/blob_pack.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "core/log.h"

#define MOD "blob"
/* One scan slice reads at most this many directory entries (each costs
 * a stat) and stops early after this much time. */
#define SCAN_SLICE_ENTRIES 1024
#define SCAN_SLICE_US	   4000
/* Evictions per slice when the finished scan finds the store over budget. */
#define TRIM_SLICE 256
/* Write-combining buffer: small chunks (Bazel sends 16 KiB) are gathered
 * into one write(2); chunks at least this big go straight to the file. */
#define WBUF_MAX (256 * 1024)
#define FANOUT	 256
/* "ab/" + 64 hex + "-" + up to 19 digits + NUL */
#define PATH_LEN 96

static const struct blob_backend disk_backend;
static const struct timeval zero_tv = {0, 0};

static struct disk *disk_of(struct blob_store *s)
{
	return container_of(s, struct disk, base);
}

static struct dent *dent_of(struct digest_map_node *n)
{
	return n ? container_of(n, struct dent, node) : NULL;
}

static void path_of(const struct digest *d, char *buf)
{
	snprintf(buf, PATH_LEN, "%.2s/%s-%" PRId64, d->hex, d->hex, d->size);
}

/* ---- index ------------------------------------------------------------ */

/* cold < 0: used now; else a scanned file's time. */
struct dent *disk_index_add(struct disk *k, const struct digest *d, int64_t cold)
{
	struct dent *e = xcalloc(1, sizeof(*e));
	memcpy(e->node.hash, d->hash, DIGEST_HASH_LEN);
	e->node.size = d->size;
	digest_map_insert(&k->index, &e->node);
	blob_rec_add(&k->rec, &e->rec, cold);
	k->bytes += d->size;
	return e;
}

void disk_index_drop(struct disk *k, struct dent *e)
{
	digest_map_remove(&k->index, &e->node);
	blob_rec_remove(&k->rec, &e->rec);
	k->bytes -= e->node.size;
	free(e);
}

/* The file under d's name is wrong (size or hash): it must never be
 * served, and deleting it lets the next upload replace it. */
static void discard_corrupt(struct disk *k, const struct digest *d, const char *why)
{
	char path[PATH_LEN], ds[DIGEST_STR_LEN];
	path_of(d, path);
	LOGW(MOD, "%s/cas/%s: deleting corrupt blob %s: %s", k->dir, path,
	     digest_str(d, ds, sizeof(ds)), why);
	if (unlinkat(k->casfd, path, 0) < 0 && errno != ENOENT)
		LOGE(MOD, "%s/cas/%s: unlink: %s", k->dir, path, strerror(errno));
	struct dent *e = dent_of(digest_map_find(&k->index, d));
	if (e)
		disk_index_drop(k, e);
}

/* d's entry.  A miss before the segments are all indexed finishes that
 * scan first: a packed blob must never look missing. */
static struct dent *find_any(struct disk *k, const struct digest *d)
{
	struct dent *e = dent_of(digest_map_find(&k->index, d));
	if (!e && !k->pk.scanned && pack_scan(k, -1))
		e = dent_of(digest_map_find(&k->index, d));
	return e;
}

/* Find d and mark it used.  Before the scan is done, a miss stat()s the
 * file and indexes what it finds. */
static struct dent *lookup(struct disk *k, const struct digest *d)
{
	struct dent *e = find_any(k, d);
	if (e) {
		blob_rec_touch(&k->rec, &e->rec);
		return e;
	}
	if (k->complete)
		return NULL;
	char path[PATH_LEN];
	path_of(d, path);
	struct stat st;
	if (fstatat(k->casfd, path, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno != ENOENT)
			LOGW(MOD, "%s/cas/%s: stat: %s", k->dir, path, strerror(errno));
		return NULL;
	}
	if (!S_ISREG(st.st_mode))
		return NULL;
	if (st.st_size != d->size) {
		discard_corrupt(k, d, "wrong size");
		return NULL;
	}
	return disk_index_add(k, d, -1);
}

/* Open d's file for reading, checking it against the index: a file that
 * vanished is dropped from the index, a file of the wrong size deleted. */
static int open_blob(struct disk *k, const struct digest *d, int *fdp)
{
	struct dent *e = dent_of(digest_map_find(&k->index, d));
	if (!e && k->complete)
		return -ENOENT;
	char path[PATH_LEN];
	path_of(d, path);
	int fd = openat(k->casfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		if (errno == ENOENT) {
			if (e)
				disk_index_drop(k, e);
			return -ENOENT;
		}
		LOGE(MOD, "%s/cas/%s: open: %s", k->dir, path, strerror(errno));
		return -EIO;
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		LOGE(MOD, "%s/cas/%s: fstat: %s", k->dir, path, strerror(errno));
		close(fd);
		return -EIO;
	}
	if (!S_ISREG(st.st_mode) || st.st_size != d->size) {
		close(fd);
		discard_corrupt(k, d, "wrong size");
		return -ENOENT;
	}
	if (e)
		blob_rec_touch(&k->rec, &e->rec);
	else
		disk_index_add(k, d, -1);
	*fdp = fd;
	return 0;
}

static int evict_one(struct disk *k)
{
	struct blob_rnode *n = blob_rec_oldest(&k->rec);
	if (!n)
		return -1;
	struct dent *e = container_of(n, struct dent, rec);
	char path[PATH_LEN], ds[DIGEST_STR_LEN];
	struct digest d;
	digest_from_hash(e->node.hash, e->node.size, &d);
	LOGD(MOD, "%s: evicting %s", k->dir, digest_str(&d, ds, sizeof(ds)));
	k->evictions++;
	if (e->seg) {
		pack_kill(k, e);
		disk_index_drop(k, e);
		return 0;
	}
	path_of(&d, path);
	/* Open readers keep their fd, so unlinking under them is safe. */
	if (unlinkat(k->casfd, path, 0) < 0 && errno != ENOENT)
		LOGE(MOD, "%s/cas/%s: unlink: %s", k->dir, path, strerror(errno));
	disk_index_drop(k, e);
	return 0;
}

/* Evict until `need` more bytes fit.  Blobs the scan has not reached yet
 * are not counted (nor evictable) until it does. */
static void make_room(struct disk *k, int64_t need)
{
	if (k->base.max_size <= 0)
		return;
	while (k->bytes + need > k->base.max_size && evict_one(k) == 0)
		;
}

/* ---- background scan -------------------------------------------------- */

/* Parse "<64 hex>-<size>" in fan-out directory `sub`; 0 or -1. */
static int parse_name(const char *name, int sub, struct digest *d)
{
	char hex[DIGEST_HEX_LEN + 1], want[3];
	if (strnlen(name, DIGEST_HEX_LEN + 1) < DIGEST_HEX_LEN + 1 || name[DIGEST_HEX_LEN] != '-')
		return -1;
	const char *num = name + DIGEST_HEX_LEN + 1;
	size_t nd = strlen(num);
	if (nd == 0 || nd > 18 || strspn(num, "0123456789") != nd)
		return -1;
	memcpy(hex, name, DIGEST_HEX_LEN);
	hex[DIGEST_HEX_LEN] = '\0';
	snprintf(want, sizeof(want), "%02x", sub);
	if (memcmp(hex, want, 2) != 0)
		return -1;
	return digest_parse(hex, strtoll(num, NULL, 10), d, NULL);
}

static void scan_entry(struct disk *k, const char *name)
{
	struct digest d;
	if (name[0] == '.' || parse_name(name, k->scan_sub, &d) < 0) {
		if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0)
			LOGD(MOD, "%s/cas/%02x/%s: not a blob, ignored", k->dir, k->scan_sub, name);
		return;
	}
	/* Already indexed by a lookup, a commit, or a stat fallback. */
	if (digest_map_find(&k->index, &d))
		return;
	struct stat st;
	if (fstatat(dirfd(k->scan_dir), name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
		return; /* deleted since readdir, or not ours */
	if (st.st_size != d.size) {
		discard_corrupt(k, &d, "wrong size");
		return;
	}
	int64_t at = (int64_t)st.st_atim.tv_sec * 1000000 + st.st_atim.tv_nsec / 1000;
	int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000 + st.st_mtim.tv_nsec / 1000;
	disk_index_add(k, &d, at > mt ? at : mt);
}

/* One slice: at most SCAN_SLICE_ENTRIES entries or SCAN_SLICE_US. */
static void scan_slice(struct disk *k)
{
	int64_t deadline = mono_us() + SCAN_SLICE_US;
	for (int n = 0; !k->complete && n < SCAN_SLICE_ENTRIES; n++) {
		if ((n & 63) == 63 && mono_us() > deadline)
			break;
		if (!k->scan_dir) {
			if (k->scan_sub == FANOUT) {
				k->complete = true;
				LOGI(MOD, "%s: index complete: %zu blobs, %" PRId64 " bytes",
				     k->dir, digest_map_count(&k->index), k->bytes);
				break;
			}
			char sub[3];
			snprintf(sub, sizeof(sub), "%02x", k->scan_sub);
			int fd = openat(k->casfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			k->scan_dir = fd >= 0 ? fdopendir(fd) : NULL;
			if (!k->scan_dir) {
				if (errno != ENOENT)
					LOGW(MOD, "%s/cas/%s: %s", k->dir, sub, strerror(errno));
				if (fd >= 0)
					close(fd);
				k->scan_sub++;
			}
			continue;
		}
		struct dirent *de = readdir(k->scan_dir);
		if (!de) {
			closedir(k->scan_dir);
			k->scan_dir = NULL;
			k->scan_sub++;
			continue;
		}
		scan_entry(k, de->d_name);
	}
}

static void scan_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct disk *k = arg;
	if (!k->pk.scanned) { /* segments first: files fill in the gaps */
		if (!pack_scan(k, SCAN_SLICE_US)) {
			evtimer_add(k->scan_ev, &zero_tv);
			return;
		}
	}
	scan_slice(k);
	/* Over budget only once the scan counted what was already there;
	 * trimming earlier would evict by partial knowledge. */
	bool over = k->complete && k->base.max_size > 0 && k->bytes > k->base.max_size;
	for (int i = 0; over && i < TRIM_SLICE; i++) {
		evict_one(k);
		over = k->bytes > k->base.max_size;
	}
	/* A zero timeout runs the next slice after the loop polls I/O. */
	if (!k->complete || over)
		evtimer_add(k->scan_ev, &zero_tv);
}

/* ---- lookups ---------------------------------------------------------- */

static bool disk_has(struct blob_store *s, const struct digest *d)
{
	return lookup(disk_of(s), d) != NULL;
}

/* pread exactly n bytes at off; -EIO on error or early end of file. */
static int pread_all(struct disk *k, int fd, const struct digest *d, uint8_t *buf, size_t n,
		     int64_t off)
{
	while (n > 0) {
		ssize_t r = pread(fd, buf, n, off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			char ds[DIGEST_STR_LEN];
			LOGE(MOD, "%s: reading %s at %" PRId64 ": %s", k->dir,
			     digest_str(d, ds, sizeof(ds)), off,
			     r < 0 ? strerror(errno) : "file truncated");
			return -EIO;
		}
		buf += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

static int disk_get(struct blob_store *s, const struct digest *d, uint8_t **data)
{
	struct disk *k = disk_of(s);
	struct dent *e = find_any(k, d);
	if (e && e->seg) {
		blob_rec_touch(&k->rec, &e->rec);
		return pack_get(k, e, data);
	}
	int fd;
	int rc = open_blob(k, d, &fd);
	if (rc < 0)
		return rc;
	uint8_t *buf = xmalloc((size_t)d->size);
	rc = pread_all(k, fd, d, buf, (size_t)d->size, 0);
	close(fd);
	if (rc == 0) { /* always: a parsed blob must be what its digest says */
		struct digest got;
		digest_of(buf, (size_t)d->size, &got);
		if (!digest_eq(&got, d)) {
			discard_corrupt(k, d, "content does not match its hash");
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

static int disk_del(struct blob_store *s, const struct digest *d)
{
	struct disk *k = disk_of(s);
	char path[PATH_LEN];
	path_of(d, path);
	struct dent *e = find_any(k, d);
	if (e && e->seg) {
		pack_kill(k, e);
		disk_index_drop(k, e);
		return 0;
	}
	int rc = unlinkat(k->casfd, path, 0) < 0 ? -errno : 0;
	if (rc < 0 && rc != -ENOENT)
		LOGE(MOD, "%s/cas/%s: unlink: %s", k->dir, path, strerror(-rc));
	if (e)
		disk_index_drop(k, e);
	return e || rc == 0 ? 0 : -ENOENT;
}

static void disk_stats(struct blob_store *s, struct blob_stats *st)
{
	struct disk *k = disk_of(s);
	st->bytes = k->bytes;
	st->count = (int64_t)digest_map_count(&k->index);
	st->evictions = k->evictions;
	st->index_complete = k->complete;
	pack_stats(k, st);
}

/* ---- readers ---------------------------------------------------------- */

static int disk_reader_open(struct blob_store *s, struct blob_reader *r)
{
	struct disk *k = disk_of(s);
	struct dent *e = find_any(k, &r->d);
	int rc;
	if (e && e->seg) {
		blob_rec_touch(&k->rec, &e->rec);
		rc = pack_reader_open(k, e, r);
	} else {
		rc = open_blob(k, &r->d, &r->fd);
		if (rc == 0)
			posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	}
	if (rc < 0)
		return rc;
	if (k->verify_streams && r->off == 0)
		r->verify = hasher_new();
	return 0;
}

/* A streamed blob hashed wrong.  Delete it only if its name still points
 * at the file we read: it may have been deleted and re-uploaded since. */
static void discard_if_same(struct disk *k, struct blob_reader *r)
{
	char path[PATH_LEN];
	struct stat a, b;
	path_of(&r->d, path);
	if (fstat(r->fd, &a) == 0 && fstatat(k->casfd, path, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
	    a.st_ino == b.st_ino && a.st_dev == b.st_dev)
		discard_corrupt(k, &r->d, "content does not match its hash");
}

static ssize_t disk_reader_read(struct blob_reader *r, void *buf, size_t n)
{
	struct disk *k = disk_of(r->s);
	if (pread_all(k, r->fd, &r->d, buf, n, r->base + r->off) < 0)
		return -EIO;
	if (r->verify) {
		hasher_update(r->verify, buf, n);
		if (r->off + (int64_t)n == r->d.size) {
			struct digest got;
			hasher_final(r->verify, &got);
			/* Withhold the last chunk so the client sees an error
			 * instead of a complete wrong blob. */
			if (!digest_eq(&got, &r->d)) {
				if (r->ent)
					pack_reader_corrupt(k, r);
				else
					discard_if_same(k, r);
				return -EIO;
			}
		}
	}
	return (ssize_t)n;
}

static void disk_reader_close(struct blob_reader *r)
{
	if (r->ent)
		pack_reader_close(disk_of(r->s), r);
	else
		close(r->fd);
	hasher_free(r->verify);
}

/* ---- writers ---------------------------------------------------------- */

static int io_error(int e)
{
	return e == ENOSPC || e == EDQUOT ? -ENOSPC : -EIO;
}

static int open_tmp(struct disk *k, struct blob_writer *w)
{
	for (int tries = 0; tries < 16; tries++) {
		snprintf(w->tmpname, sizeof(w->tmpname), "%" PRIu64 ".tmp", k->tmpseq++);
		w->fd = openat(k->tmpfd, w->tmpname, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		if (w->fd >= 0)
			return 0;
		if (errno != EEXIST)
			break;
	}
	int e = errno;
	LOGE(MOD, "%s/tmp/%s: create: %s", k->dir, w->tmpname, strerror(e));
	w->tmpname[0] = '\0';
	return io_error(e);
}

/* A suspended writer's temp file, opened again. */
static int reopen_tmp(struct disk *k, struct blob_writer *w)
{
	w->fd = openat(k->tmpfd, w->tmpname, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (w->fd >= 0)
		return 0;
	int e = errno;
	LOGE(MOD, "%s/tmp/%s: reopen: %s", k->dir, w->tmpname, strerror(e));
	return io_error(e);
}

static int write_file(struct disk *k, struct blob_writer *w, const uint8_t *p, size_t n)
{
	if (w->fd < 0) {
		int rc = w->tmpname[0] ? reopen_tmp(k, w) : open_tmp(k, w);
		if (rc < 0)
			return rc;
	}
	while (n > 0) {
		ssize_t r = write(w->fd, p, n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int e = errno;
			LOGE(MOD, "%s/tmp/%s: write: %s", k->dir, w->tmpname, strerror(e));
			return io_error(e);
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int flush(struct disk *k, struct blob_writer *w)
{
	if (w->buflen == 0)
		return 0;
	int rc = write_file(k, w, w->buf, w->buflen);
	w->buflen = 0;
	return rc;
}

static int disk_writer_write(struct blob_writer *w, const void *data, size_t n)
{
	struct disk *k = disk_of(w->s);
	const uint8_t *p = data;
	if (!w->bufcap)
		w->bufcap =
			(uint64_t)w->expected.size < WBUF_MAX ? (size_t)w->expected.size : WBUF_MAX;
	while (n > 0) {
		if (w->buflen == 0 && n >= w->bufcap)
			return write_file(k, w, p, n);
		if (!w->buf)
			w->buf = xmalloc(w->bufcap);
		size_t take = w->bufcap - w->buflen < n ? w->bufcap - w->buflen : n;
		memcpy(w->buf + w->buflen, p, take);
		w->buflen += take;
		p += take;
		n -= take;
		if (w->buflen == w->bufcap) {
			int rc = flush(k, w);
			if (rc < 0)
				return rc;
		}
	}
	return 0;
}

static int sync_fanout_dir(struct disk *k, const char *path)
{
	char sub[3] = {path[0], path[1], '\0'};
	int fd = openat(k->casfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd >= 0 && fsync(fd) == 0 ? 0 : -errno;
	if (fd >= 0)
		close(fd);
	return rc;
}

/* A blob to pack is gathered whole in w->buf (at most small_max bytes)
 * and appended as one record at publish; nothing goes to tmp/. */
static int pack_writer_write(struct blob_writer *w, const void *data, size_t n)
{
	if (!w->buf) {
		w->bufcap = (size_t)w->expected.size;
		w->buf = xmalloc(w->bufcap);
	}
	assert(w->buflen + n <= w->bufcap);
	memcpy(w->buf + w->buflen, data, n);
	w->buflen += n;
	return 0;
}

/* A parked small upload went to a temp file (disk_writer_suspend): it
 * continues there and is published as a file. */
static bool packing(struct disk *k, const struct blob_writer *w)
{
	return pack_wants(k, w->expected.size) && !w->tmpname[0];
}

static int disk_write_any(struct blob_writer *w, const void *data, size_t n)
{
	if (packing(disk_of(w->s), w))
		return pack_writer_write(w, data, n);
	return disk_writer_write(w, data, n);
}

static int disk_writer_publish(struct blob_writer *w, char **err)
{
	struct disk *k = disk_of(w->s);
	const struct digest *d = &w->expected;
	char path[PATH_LEN], ds[DIGEST_STR_LEN];
	/* Stored meanwhile by another writer: ours is a duplicate. */
	if (lookup(k, d))
		return 0;
	if (packing(k, w) && w->buf && w->buflen == (size_t)d->size) {
		make_room(k, d->size);
		return pack_put(k, d, w->buf, err);
	}
	int rc = flush(k, w);
	if (rc == 0 && k->fsync && w->fd < 0 && w->tmpname[0])
		rc = reopen_tmp(k, w); /* suspended, nothing written since */
	if (rc == 0 && k->fsync && fdatasync(w->fd) < 0) {
		int e = errno;
		LOGE(MOD, "%s/tmp/%s: fdatasync: %s", k->dir, w->tmpname, strerror(e));
		rc = io_error(e);
	}
	if (rc < 0)
		goto fail;
	make_room(k, d->size);
	path_of(d, path);
	if (renameat(k->tmpfd, w->tmpname, k->casfd, path) < 0) {
		int e = errno;
		/* A fan-out directory removed behind our back: recreate. */
		char sub[3] = {path[0], path[1], '\0'};
		if (e != ENOENT || mkdirat(k->casfd, sub, 0755) < 0 ||
		    renameat(k->tmpfd, w->tmpname, k->casfd, path) < 0) {
			LOGE(MOD, "%s: rename tmp/%s to cas/%s: %s", k->dir, w->tmpname, path,
			     strerror(e));
			rc = io_error(e);
			goto fail;
		}
	}
	w->tmpname[0] = '\0';
	if (k->fsync && (rc = sync_fanout_dir(k, path)) < 0)
		LOGW(MOD, "%s/cas/%.2s: fsync: %s", k->dir, path, strerror(-rc));
	disk_index_add(k, d, -1);
	return 0;
fail:
	if (err)
		*err = xasprintf("cannot store blob %s: %s", digest_str(d, ds, sizeof(ds)),
				 strerror(-rc));
	return rc;
}

static void disk_writer_release(struct blob_writer *w)
{
	struct disk *k = disk_of(w->s);
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmpname[0] && unlinkat(k->tmpfd, w->tmpname, 0) < 0 && errno != ENOENT)
		LOGW(MOD, "%s/tmp/%s: unlink: %s", k->dir, w->tmpname, strerror(errno));
	free(w->buf);
	w->buf = NULL;
	w->fd = -1;
}

/* Idle upload: data to the file, then no descriptor or buffer held. */
static int disk_writer_suspend(struct blob_writer *w)
{
	struct disk *k = disk_of(w->s);
	if (packing(k, w) && w->buflen == 0)
		return 0; /* nothing held yet */
	/* A small upload too: parked uploads hold no memory (its data goes to
	 * tmp/ and it finishes as a file). */
	int rc = flush(k, w);
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	free(w->buf);
	w->buf = NULL;
	return rc;
}

static void disk_reserve(struct blob_store *s, int64_t need)
{
	make_room(disk_of(s), need);
}

/* ---- open and close --------------------------------------------------- */

static int open_subdir(int dirfd, const char *name)
{
	if (mkdirat(dirfd, name, 0755) < 0 && errno != EEXIST)
		return -1;
	return openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* Whatever is in tmp/ was being written when the last owner died. */
static int clean_tmp(struct disk *k)
{
	int fd = openat(k->tmpfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = fd >= 0 ? fdopendir(fd) : NULL;
	if (!dp) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		errno = e;
		return -1;
	}
	int n = 0;
	struct dirent *de;
	while ((de = readdir(dp))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (unlinkat(k->tmpfd, de->d_name, 0) == 0)
			n++;
		else
			LOGW(MOD, "%s/tmp/%s: unlink: %s", k->dir, de->d_name, strerror(errno));
	}
	closedir(dp);
	if (n)
		LOGI(MOD, "%s: removed %d unfinished upload%s left by an earlier run", k->dir, n,
		     n == 1 ? "" : "s");
	return 0;
}

static void disk_close(struct blob_store *s)
{
	struct disk *k = disk_of(s);
	pack_close(k);
	if (k->scan_ev)
		event_free(k->scan_ev);
	if (k->scan_dir)
		closedir(k->scan_dir);
	struct blob_rnode *n;
	while ((n = blob_rec_oldest(&k->rec))) {
		blob_rec_remove(&k->rec, n);
		free(container_of(n, struct dent, rec));
	}
	blob_rec_destroy(&k->rec);
	digest_map_clear(&k->index);
	int fds[] = {k->tmpfd, k->casfd, k->dirfd, k->lockfd};
	for (size_t i = 0; i < ARRAY_LEN(fds); i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(k->dir);
	free(k);
}

struct blob_store *blob_open_disk(struct event_base *base, const char *dir, int64_t max_size,
				  char **err)
{
	struct disk *k = xcalloc(1, sizeof(*k));
	k->base.be = &disk_backend;
	k->base.max_size = max_size;
	k->dir = xstrdup(dir);
	k->dirfd = k->casfd = k->tmpfd = k->lockfd = k->pk.fd = -1;
	blob_rec_init(&k->rec);
	digest_map_init(&k->index);
	const char *what = "mkdir";
	char *msg = NULL;
	int rc = mkdir_p(dir, 0755);
	if (rc < 0)
		goto fail;
	what = "open";
	if ((k->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		goto fail_errno;
	what = "LOCK";
	k->lockfd = openat(k->dirfd, "LOCK", O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (k->lockfd < 0)
		goto fail_errno;
	if (flock(k->lockfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			msg = xasprintf("%s: blob store is in use by another "
					"process (LOCK is held)",
					dir);
			goto out;
		}
		goto fail_errno;
	}
	what = "cas";
	if ((k->casfd = open_subdir(k->dirfd, "cas")) < 0)
		goto fail_errno;
	what = "tmp";
	if ((k->tmpfd = open_subdir(k->dirfd, "tmp")) < 0 || clean_tmp(k) < 0)
		goto fail_errno;
	what = "cas/<fan-out>";
	for (int i = 0; i < FANOUT; i++) {
		char sub[3];
		snprintf(sub, sizeof(sub), "%02x", i);
		if (mkdirat(k->casfd, sub, 0755) < 0 && errno != EEXIST)
			goto fail_errno;
	}
	what = "pack";
	if ((rc = pack_open(k, base)) < 0)
		goto fail;
	if (base) {
		k->scan_ev = evtimer_new(base, scan_cb, k);
		if (!k->scan_ev) {
			msg = xasprintf("%s: cannot create the index scan event", dir);
			goto out;
		}
		evtimer_add(k->scan_ev, &zero_tv);
	}
	LOGI(MOD, "%s: disk blob store open, max_size %" PRId64 "%s", dir, max_size,
	     base ? ", indexing in the background" : "");
	return &k->base;
fail_errno:
	rc = -errno;
fail:
	msg = xasprintf("%s: %s: %s", dir, what, strerror(-rc));
out:
	if (err)
		*err = msg;
	else
		free(msg);
	disk_close(&k->base);
	return NULL;
}

void blob_disk_set_fsync(struct blob_store *s, bool on)
{
	if (s->be == &disk_backend)
		disk_of(s)->fsync = on;
}

void blob_disk_set_pack(struct blob_store *s, int64_t small_max, int64_t seg_size, int compact_pct)
{
	if (s->be != &disk_backend)
		return;
	struct pack *pk = &disk_of(s)->pk;
	pk->small_max = small_max < 0 ? 0 : small_max > PACK_SMALL_MAX ? PACK_SMALL_MAX : small_max;
	pk->seg_size = seg_size > 0 ? seg_size : PACK_SEG_DEFAULT;
	pk->compact_pct = compact_pct < 0 ? 0 : compact_pct > 100 ? 100 : compact_pct;
}

void blob_batch_begin(struct blob_store *s)
{
	if (s->be == &disk_backend)
		disk_of(s)->pk.batch++;
}

int blob_batch_end(struct blob_store *s)
{
	return s->be == &disk_backend ? pack_batch_end(disk_of(s)) : 0;
}

void blob_disk_set_verify_streams(struct blob_store *s, bool on)
{
	if (s->be == &disk_backend)
		disk_of(s)->verify_streams = on;
}

static const struct blob_backend disk_backend = {
	.close = disk_close,
	.has = disk_has,
	.get = disk_get,
	.del = disk_del,
	.stats = disk_stats,
	.reader_open = disk_reader_open,
	.reader_read = disk_reader_read,
	.reader_close = disk_reader_close,
	.writer_write = disk_write_any,
	.writer_publish = disk_writer_publish,
	.writer_release = disk_writer_release,
	.writer_suspend = disk_writer_suspend,
	.reserve = disk_reserve,
};
