/*
 * check_blob.c - unit tests for the blob stores (blob.c, blob_mem.c,
 * blob_disk.c): verified writes, reads at offsets, LRU eviction in both
 * backends, atomic publication through tmp/, crash leftovers, the
 * incremental disk index after reopen, concurrent uploads of one digest,
 * readers outliving their blob, corruption handling, and a 64 MiB
 * streamed round trip in bounded memory.  Every test works in its own
 * directory under a per-run root that the parent process removes.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/event.h>

#include "domain/blob.h"
#include "core/log.h"
#include "check_run.h"

static char root[] = "/tmp/check_blob.XXXXXX";

/* Unchecked fixtures run in the parent, so the root goes away even when
 * a forked test dies half-way. */
static void root_setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(root));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)st;
	(void)flag;
	(void)f;
	return remove(p);
}

static void rm_rf(const char *dir)
{
	nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void root_teardown(void)
{
	rm_rf(root);
}

/* Test data and paths live until the test's teardown (drop_all), so
 * tests need not free them one by one. */
static void **kept;
static size_t nkept, capkept;

static void *keep(void *p)
{
	if (nkept == capkept) {
		capkept = capkept ? 2 * capkept : 256;
		kept = xrealloc(kept, capkept * sizeof(*kept));
	}
	return kept[nkept++] = p;
}

static void drop_all(void)
{
	while (nkept)
		free(kept[--nkept]);
	free(kept);
	kept = NULL;
	capkept = 0;
}

static char *new_dir(void)
{
	char *d = keep(xasprintf("%s/s.XXXXXX", root));
	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

static int nfiles;
static int count_one(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	(void)p;
	(void)f;
	if (flag == FTW_F && S_ISREG(st->st_mode))
		nfiles++;
	return 0;
}

/* Regular files under dir/sub. */
static int count_files(const char *dir, const char *sub)
{
	char *p = xasprintf("%s/%s", dir, sub);
	nfiles = 0;
	nftw(p, count_one, 16, FTW_PHYS);
	free(p);
	return nfiles;
}

static char *cas_path(const char *dir, const struct digest *d)
{
	return xasprintf("%s/cas/%.2s/%s-%lld", dir, d->hex, d->hex, (long long)d->size);
}

static bool file_exists(const char *dir, const struct digest *d)
{
	char *p = cas_path(dir, d);
	bool ok = access(p, F_OK) == 0;
	free(p);
	return ok;
}

/* Deterministic pseudo-random bytes, resumable for streamed data. */
static void gen(uint64_t *x, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		*x ^= *x << 13;
		*x ^= *x >> 7;
		*x ^= *x << 17;
		p[i] = (uint8_t)(*x >> 24);
	}
}

struct blob {
	uint8_t *p;
	size_t n;
	struct digest d;
};

static struct blob mk(size_t n, uint64_t seed)
{
	struct blob b = {.p = keep(xmalloc(n)), .n = n};
	uint64_t x = seed * 2654435761u + 1;
	gen(&x, b.p, n);
	digest_of(b.p, n, &b.d);
	return b;
}

static void put_ok(struct blob_store *s, const struct blob *b)
{
	char *err = NULL;
	int rc = blob_put(s, &b->d, b->p, b->n, &err);
	ck_assert_msg(rc == 0, "blob_put: %d %s", rc, err ? err : "");
	ck_assert_ptr_null(err);
}

static void get_eq(struct blob_store *s, const struct blob *b)
{
	uint8_t *data = NULL;
	ck_assert_int_eq(blob_get(s, &b->d, &data), 0);
	ck_assert(memcmp(data, b->p, b->n) == 0);
	free(data);
}

static struct blob_stats stats(struct blob_store *s)
{
	struct blob_stats st;
	blob_get_stats(s, &st);
	return st;
}

/* Run the loop until the disk index is complete; returns loop passes. */
static int run_until_indexed(struct event_base *base, struct blob_store *s)
{
	int passes = 0;
	while (!stats(s).index_complete) {
		ck_assert_int_lt(passes, 100000);
		event_base_loop(base, EVLOOP_ONCE);
		passes++;
	}
	return passes;
}

static struct blob_store *open_disk(struct event_base *base, const char *dir, int64_t max)
{
	char *err = NULL;
	struct blob_store *s = blob_open_disk(base, dir, max, &err);
	ck_assert_msg(s != NULL, "open %s: %s", dir, err ? err : "");
	return s;
}

/* Both backends run the shared tests: _i is 0 for memory, 1 for disk
 * (one file per blob), 2 for disk with every blob up to 1 MiB packed in
 * segments of 256 KiB (so most blobs seal a segment). */
struct fixture {
	struct event_base *base;
	char *dir;
	struct blob_store *s;
	bool files; /* blobs are files under dir/cas */
};
#define PACKED_SEG (256 * 1024)

static struct fixture fx_open(int kind, int64_t max)
{
	struct fixture f = {0};
	if (kind == 0) {
		f.s = blob_open_memory(max);
	} else {
		f.base = event_base_new();
		f.dir = new_dir();
		f.s = open_disk(f.base, f.dir, max);
		if (kind == 2)
			blob_disk_set_pack(f.s, 1 << 20, PACKED_SEG, 50);
		f.files = kind == 1;
		run_until_indexed(f.base, f.s);
	}
	return f;
}

static void fx_close(struct fixture *f)
{
	blob_close(f->s);
	if (f->base)
		event_base_free(f->base);
}

/* ---- shared behaviour ------------------------------------------------- */

START_TEST(test_put_get_has)
{
	struct fixture f = fx_open(_i, 0);
	struct blob a = mk(1000, 1), b = mk(1, 2);
	ck_assert(!blob_has(f.s, &a.d));
	uint8_t *data = NULL;
	ck_assert_int_eq(blob_get(f.s, &a.d, &data), -ENOENT);
	put_ok(f.s, &a);
	put_ok(f.s, &b);
	put_ok(f.s, &a); /* again: fine, stored once */
	ck_assert(blob_has(f.s, &a.d));
	get_eq(f.s, &a);
	get_eq(f.s, &b);
	struct blob_stats st = stats(f.s);
	ck_assert_int_eq(st.count, 2);
	ck_assert_int_eq(st.bytes, 1001);
	ck_assert_int_ge(st.hits, 3);
	ck_assert_int_ge(st.misses, 2);
	if (f.files) {
		ck_assert(file_exists(f.dir, &a.d));
		ck_assert_int_eq(count_files(f.dir, "cas"), 2);
		ck_assert_int_eq(count_files(f.dir, "tmp"), 0);
	} else if (f.dir) { /* packed: one segment, no file per blob */
		ck_assert_int_eq(count_files(f.dir, "cas"), 0);
		ck_assert_int_eq(count_files(f.dir, "tmp"), 0);
		ck_assert_int_eq(count_files(f.dir, "pack"), 1);
		ck_assert_int_eq(st.packed_count, 2);
		ck_assert_int_eq(st.packed_bytes, 1001);
		ck_assert_int_eq(st.pack_file_bytes, 1001 + 2 * 56);
	}
	/* Same hash, wrong size: a different (absent) digest. */
	struct digest other = a.d;
	other.size = 999;
	ck_assert(!blob_has(f.s, &other));
	ck_assert_int_eq(blob_delete(f.s, &a.d), 0);
	ck_assert_int_eq(blob_delete(f.s, &a.d), -ENOENT);
	ck_assert(!blob_has(f.s, &a.d));
	ck_assert_int_eq(stats(f.s).bytes, 1);
	if (f.files)
		ck_assert(!file_exists(f.dir, &a.d));
	/* The empty blob: always there, never stored. */
	ck_assert(blob_has(f.s, &digest_empty));
	ck_assert_int_eq(blob_get(f.s, &digest_empty, &data), 0);
	ck_assert_ptr_nonnull(data);
	free(data);
	ck_assert_int_eq(blob_put(f.s, &digest_empty, "", 0, NULL), 0);
	struct blob_writer *w = blob_writer_open(f.s, &digest_empty);
	ck_assert_int_eq(blob_writer_write(w, "x", 1), -EFBIG);
	ck_assert_int_eq(blob_writer_commit(w, NULL), 0);
	ck_assert_int_eq(stats(f.s).count, 1);
	fx_close(&f);
}
END_TEST

START_TEST(test_put_wrong_hash)
{
	struct fixture f = fx_open(_i, 0);
	struct blob a = mk(5000, 3), b = mk(5000, 4);
	char *err = NULL;
	ck_assert_int_eq(blob_put(f.s, &a.d, b.p, b.n, &err), -EINVAL);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, "digest mismatch") && strstr(err, a.d.hex) &&
			      strstr(err, b.d.hex),
		      "%s", err);
	free(err);
	ck_assert(!blob_has(f.s, &a.d));
	ck_assert(!blob_has(f.s, &b.d));
	ck_assert_int_eq(stats(f.s).count, 0);
	fx_close(&f);
}
END_TEST

START_TEST(test_reader_offsets)
{
	struct fixture f = fx_open(_i, 0);
	struct blob a = mk(300000, 5);
	put_ok(f.s, &a);
	struct blob_reader *r;
	ck_assert_int_eq(blob_reader_open(f.s, &a.d, -1, &r), -ERANGE);
	ck_assert_int_eq(blob_reader_open(f.s, &a.d, (int64_t)a.n + 1, &r), -ERANGE);
	struct blob missing = mk(10, 6);
	ck_assert_int_eq(blob_reader_open(f.s, &missing.d, 0, &r), -ENOENT);
	ck_assert_int_eq(blob_reader_open(f.s, &missing.d, 11, &r), -ERANGE);
	int64_t offs[] = {0, 1, 65536, 299999, 300000};
	uint8_t *buf = xmalloc(a.n);
	for (size_t i = 0; i < ARRAY_LEN(offs); i++) {
		ck_assert_int_eq(blob_reader_open(f.s, &a.d, offs[i], &r), 0);
		size_t got = 0;
		ssize_t n;
		while ((n = blob_reader_read(r, buf + got, 7000)) > 0) {
			ck_assert_int_le(n, 7000);
			got += (size_t)n;
		}
		ck_assert_int_eq(n, 0);
		ck_assert_uint_eq(got, a.n - (size_t)offs[i]);
		ck_assert(memcmp(buf, a.p + offs[i], got) == 0);
		ck_assert_int_eq(blob_reader_offset(r), (int64_t)a.n);
		ck_assert_int_eq(blob_reader_read(r, buf, 10), 0);
		blob_reader_close(r);
	}
	ck_assert_int_eq(blob_reader_open(f.s, &digest_empty, 0, &r), 0);
	ck_assert_int_eq(blob_reader_read(r, buf, 10), 0);
	blob_reader_close(r);
	free(buf);
	fx_close(&f);
}
END_TEST

/* Streamed upload with a wrong hash or size: -EINVAL, nothing visible. */
START_TEST(test_commit_mismatch)
{
	struct fixture f = fx_open(_i, 0);
	/* Big enough that the disk writer has spilled to a temp file. */
	struct blob a = mk(600000, 7), b = mk(600000, 8);
	struct blob_writer *w = blob_writer_open(f.s, &a.d);
	ck_assert_int_eq(blob_writer_write(w, b.p, 400000), 0);
	ck_assert_int_eq(blob_writer_write(w, b.p + 400000, 200000), 0);
	ck_assert_int_eq(blob_writer_offset(w), 600000);
	ck_assert_int_eq(blob_writer_write(w, "x", 1), -EFBIG);
	ck_assert_int_eq(blob_writer_offset(w), 600000);
	if (f.files)
		ck_assert_int_eq(count_files(f.dir, "tmp"), 1);
	char *err = NULL;
	ck_assert_int_eq(blob_writer_commit(w, &err), -EINVAL);
	ck_assert_msg(strstr(err, "digest mismatch") != NULL, "%s", err);
	free(err);
	ck_assert(!blob_has(f.s, &a.d));
	ck_assert(!blob_has(f.s, &b.d));
	if (f.files) {
		ck_assert_int_eq(count_files(f.dir, "cas"), 0);
		ck_assert_int_eq(count_files(f.dir, "tmp"), 0);
	}
	/* Short upload. */
	w = blob_writer_open(f.s, &a.d);
	ck_assert_int_eq(blob_writer_write(w, a.p, 1000), 0);
	err = NULL;
	ck_assert_int_eq(blob_writer_commit(w, &err), -EINVAL);
	ck_assert_msg(strstr(err, "size mismatch") != NULL, "%s", err);
	free(err);
	ck_assert(!blob_has(f.s, &a.d));
	/* And the right data in odd chunks goes through. */
	w = blob_writer_open(f.s, &a.d);
	for (size_t off = 0; off < a.n; off += 16384)
		ck_assert_int_eq(
			blob_writer_write(w, a.p + off, a.n - off < 16384 ? a.n - off : 16384), 0);
	ck_assert_int_eq(blob_writer_commit(w, NULL), 0);
	get_eq(f.s, &a);
	if (f.files)
		ck_assert_int_eq(count_files(f.dir, "tmp"), 0);
	fx_close(&f);
}
END_TEST

/* Two uploads of one digest at once: both succeed, one copy stored. */
START_TEST(test_concurrent_writers)
{
	struct fixture f = fx_open(_i, 0);
	struct blob a = mk(700000, 9);
	struct blob_writer *w1 = blob_writer_open(f.s, &a.d);
	struct blob_writer *w2 = blob_writer_open(f.s, &a.d);
	for (size_t off = 0; off < a.n; off += 100000) {
		ck_assert_int_eq(blob_writer_write(w1, a.p + off, 100000), 0);
		ck_assert_int_eq(blob_writer_write(w2, a.p + off, 100000), 0);
	}
	if (f.files)
		ck_assert_int_eq(count_files(f.dir, "tmp"), 2);
	ck_assert_int_eq(blob_writer_commit(w2, NULL), 0);
	ck_assert_int_eq(blob_writer_commit(w1, NULL), 0);
	get_eq(f.s, &a);
	ck_assert_int_eq(stats(f.s).count, 1);
	ck_assert_int_eq(stats(f.s).bytes, (int64_t)a.n);
	if (f.files) {
		ck_assert_int_eq(count_files(f.dir, "tmp"), 0);
		ck_assert_int_eq(count_files(f.dir, "cas"), 1);
	}
	/* An aborted upload leaves nothing behind. */
	struct blob b = mk(700000, 10);
	struct blob_writer *w = blob_writer_open(f.s, &b.d);
	ck_assert_int_eq(blob_writer_write(w, b.p, 500000), 0);
	blob_writer_abort(w);
	blob_writer_abort(NULL);
	ck_assert(!blob_has(f.s, &b.d));
	if (f.files)
		ck_assert_int_eq(count_files(f.dir, "tmp"), 0);
	fx_close(&f);
}
END_TEST

/* A reader keeps its data through deletion (and, disk, eviction). */
START_TEST(test_reader_survives_delete)
{
	struct fixture f = fx_open(_i, 0);
	struct blob a = mk(200000, 11);
	put_ok(f.s, &a);
	struct blob_reader *r;
	ck_assert_int_eq(blob_reader_open(f.s, &a.d, 0, &r), 0);
	uint8_t *buf = xmalloc(a.n);
	ck_assert_int_eq(blob_reader_read(r, buf, 1000), 1000);
	ck_assert_int_eq(blob_delete(f.s, &a.d), 0);
	ck_assert(!blob_has(f.s, &a.d));
	size_t got = 1000;
	ssize_t n;
	while ((n = blob_reader_read(r, buf + got, 65536)) > 0)
		got += (size_t)n;
	ck_assert_int_eq(n, 0);
	ck_assert_uint_eq(got, a.n);
	ck_assert(memcmp(buf, a.p, a.n) == 0);
	blob_reader_close(r);
	blob_reader_close(NULL);
	ck_assert_int_eq(stats(f.s).bytes, 0);
	free(buf);
	fx_close(&f);
}
END_TEST

/* LRU under a byte budget: the least recently used goes first. */
START_TEST(test_lru_eviction)
{
	struct fixture f = fx_open(_i, 1000);
	struct blob b[11];
	for (int i = 0; i < 11; i++)
		b[i] = mk(100, 100 + (uint64_t)i);
	for (int i = 0; i < 10; i++)
		put_ok(f.s, &b[i]);
	ck_assert_int_eq(stats(f.s).bytes, 1000);
	ck_assert_int_eq(stats(f.s).evictions, 0);
	/* Use 0 and 1 (has and get): 2 is now the oldest. */
	ck_assert(blob_has(f.s, &b[0].d));
	get_eq(f.s, &b[1]);
	put_ok(f.s, &b[10]);
	struct blob_stats st = stats(f.s);
	ck_assert_int_eq(st.evictions, 1);
	ck_assert_int_eq(st.bytes, 1000);
	ck_assert_int_eq(st.count, 10);
	ck_assert_int_eq(st.max_size, 1000);
	ck_assert(!blob_has(f.s, &b[2].d));
	if (f.files)
		ck_assert(!file_exists(f.dir, &b[2].d));
	ck_assert(blob_has(f.s, &b[0].d));
	ck_assert(blob_has(f.s, &b[1].d));
	/* A 250-byte blob evicts three: 3, 4, 5. */
	struct blob big = mk(250, 200);
	put_ok(f.s, &big);
	ck_assert_int_eq(stats(f.s).evictions, 4);
	for (int i = 3; i <= 5; i++)
		ck_assert(!blob_has(f.s, &b[i].d));
	for (int i = 6; i <= 10; i++)
		ck_assert(blob_has(f.s, &b[i].d));
	ck_assert_int_le(stats(f.s).bytes, 1000);
	/* Larger than the whole budget: refused up front. */
	struct blob huge = mk(1001, 201);
	char *err = NULL;
	ck_assert_int_eq(blob_put(f.s, &huge.d, huge.p, huge.n, &err), -ENOSPC);
	ck_assert_msg(strstr(err, "larger than") != NULL, "%s", err);
	free(err);
	struct blob_writer *w = blob_writer_open(f.s, &huge.d);
	ck_assert_int_eq(blob_writer_write(w, huge.p, 10), -ENOSPC);
	ck_assert_int_eq(blob_writer_commit(w, NULL), -ENOSPC);
	ck_assert(blob_has(f.s, &b[10].d));
	fx_close(&f);
}
END_TEST

/* ---- memory store ----------------------------------------------------- */

START_TEST(test_mem_pinned_not_evicted)
{
	struct blob_store *s = blob_open_memory(300);
	struct blob b[4], x = mk(100, 399);
	for (int i = 0; i < 4; i++)
		b[i] = mk(100, 300 + (uint64_t)i);
	for (int i = 0; i < 3; i++)
		put_ok(s, &b[i]);
	/* Pin 0, then make it the least recently used: order 0, 1, 2. */
	struct blob_reader *r[3];
	ck_assert_int_eq(blob_reader_open(s, &b[0].d, 0, &r[0]), 0);
	ck_assert(blob_has(s, &b[1].d));
	ck_assert(blob_has(s, &b[2].d));
	put_ok(s, &b[3]); /* must skip pinned 0 and evict 1 */
	ck_assert_int_eq(stats(s).evictions, 1);
	ck_assert(!blob_has(s, &b[1].d));
	ck_assert(blob_has(s, &b[0].d));
	ck_assert(blob_has(s, &b[2].d));
	/* Everything pinned: no room. */
	ck_assert_int_eq(blob_reader_open(s, &b[2].d, 0, &r[1]), 0);
	ck_assert_int_eq(blob_reader_open(s, &b[3].d, 0, &r[2]), 0);
	char *err = NULL;
	ck_assert_int_eq(blob_put(s, &x.d, x.p, x.n, &err), -ENOSPC);
	ck_assert_msg(strstr(err, "pinned") != NULL, "%s", err);
	free(err);
	ck_assert_int_eq(stats(s).count, 3);
	uint8_t buf[100];
	ck_assert_int_eq(blob_reader_read(r[0], buf, 100), 100);
	ck_assert(memcmp(buf, b[0].p, 100) == 0);
	for (int i = 0; i < 3; i++)
		blob_reader_close(r[i]);
	put_ok(s, &x);
	ck_assert_int_eq(stats(s).evictions, 2);
	blob_close(s);
}
END_TEST

/* ---- disk store ------------------------------------------------------- */

/* A crash mid-upload leaves a temp file: reopen removes it, and the blob
 * it would have been is absent.  The "crash" is a child that _exit()s. */
START_TEST(test_disk_crash_leftovers)
{
	char *dir = new_dir();
	struct blob a = mk(1 << 20, 12);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *err = NULL;
		struct blob_store *s = blob_open_disk(NULL, dir, 0, &err);
		if (!s)
			_exit(2);
		struct blob_writer *w = blob_writer_open(s, &a.d);
		if (blob_writer_write(w, a.p, a.n - 1) != 0)
			_exit(3);
		_exit(0); /* no commit, no abort, no close */
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(count_files(dir, "tmp"), 1);
	/* And a leftover written by hand, named like a blob. */
	char *junk = keep(xasprintf("%s/tmp/%s-%zu", dir, a.d.hex, a.n));
	FILE *fp = fopen(junk, "w");
	fwrite(a.p, 1, a.n, fp);
	fclose(fp);
	struct event_base *base = event_base_new();
	struct blob_store *s = open_disk(base, dir, 0);
	ck_assert_int_eq(count_files(dir, "tmp"), 0);
	ck_assert(!blob_has(s, &a.d));
	run_until_indexed(base, s);
	ck_assert(!blob_has(s, &a.d));
	ck_assert_int_eq(count_files(dir, "cas"), 0);
	/* One process per store. */
	char *err = NULL;
	ck_assert_ptr_null(blob_open_disk(base, dir, 0, &err));
	ck_assert_msg(strstr(err, "in use") != NULL, "%s", err);
	free(err);
	blob_close(s);
	event_base_free(base);
}
END_TEST

/* Reopen: blobs persist, the index fills in slices, and until it is done
 * has() answers by stat(). */
START_TEST(test_disk_reopen_incremental)
{
	enum { N = 3000 };
	char *dir = new_dir();
	struct blob_store *s = open_disk(NULL, dir, 0);
	struct blob *b = keep(xcalloc(N, sizeof(*b)));
	int64_t total = 0;
	for (int i = 0; i < N; i++) {
		b[i] = mk(1 + (size_t)i % 97, 1000 + (uint64_t)i);
		put_ok(s, &b[i]);
		total += (int64_t)b[i].n;
	}
	ck_assert(!stats(s).index_complete); /* no loop: never scans */
	blob_close(s);
	/* Without a loop, every lookup falls back to stat(). */
	s = open_disk(NULL, dir, 0);
	ck_assert(blob_has(s, &b[42].d));
	get_eq(s, &b[43]);
	ck_assert_int_eq(stats(s).count, 2);
	blob_close(s);

	struct event_base *base = event_base_new();
	s = open_disk(base, dir, 0);
	struct blob_stats st = stats(s);
	ck_assert(!st.index_complete);
	ck_assert_int_eq(st.count, 0);
	ck_assert(blob_has(s, &b[17].d)); /* stat fallback */
	ck_assert_int_eq(stats(s).count, 1);
	struct blob missing = mk(50, 7777);
	ck_assert(!blob_has(s, &missing.d));
	get_eq(s, &b[18]);
	ck_assert_int_eq(stats(s).count, 2);
	int passes = run_until_indexed(base, s);
	ck_assert_int_ge(passes, 3); /* sliced, not one long pass */
	st = stats(s);
	ck_assert_int_eq(st.count, N);
	ck_assert_int_eq(st.bytes, total);
	for (int i = 0; i < N; i += 101)
		ck_assert(blob_has(s, &b[i].d));
	get_eq(s, &b[N - 1]);
	blob_close(s);
	event_base_free(base);
}
END_TEST

static void set_time(const char *dir, const struct digest *d, time_t t)
{
	char *p = cas_path(dir, d);
	struct timespec ts[2] = {{t, 0}, {t, 0}};
	ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
	free(p);
}

/* After reopen, blobs rank by file time, and anything used since open
 * outranks them all; an over-budget store is trimmed once indexed. */
START_TEST(test_disk_reopen_lru)
{
	char *dir = new_dir();
	struct blob_store *s = open_disk(NULL, dir, 0);
	struct blob b[8];
	/* Times: b[i] at base + order[i] days; b[5] oldest, then b[2]... */
	const int order[8] = {7, 4, 1, 6, 3, 0, 5, 2};
	time_t t0 = time(NULL) - 30 * 86400;
	for (int i = 0; i < 8; i++) {
		b[i] = mk(100, 500 + (uint64_t)i);
		put_ok(s, &b[i]);
		set_time(dir, &b[i].d, t0 + order[i] * 86400);
	}
	blob_close(s);

	struct event_base *base = event_base_new();
	s = open_disk(base, dir, 800);
	run_until_indexed(base, s);
	ck_assert(blob_has(s, &b[2].d)); /* second oldest, now recently used */
	struct blob n1 = mk(100, 600), n2 = mk(200, 601);
	put_ok(s, &n1);
	ck_assert(!blob_has(s, &b[5].d)); /* oldest file */
	ck_assert(blob_has(s, &b[2].d));
	put_ok(s, &n2); /* next oldest unused: b[7] (order 2), b[4] (3) */
	ck_assert(!blob_has(s, &b[7].d));
	ck_assert(!blob_has(s, &b[4].d));
	ck_assert(blob_has(s, &b[1].d));
	ck_assert_int_eq(stats(s).evictions, 3);
	ck_assert_int_eq(stats(s).bytes, 800);
	ck_assert_int_eq(count_files(dir, "cas"), 7);
	blob_close(s);

	/* Reopen with half the budget: trimmed to it, oldest file first.
	 * b[2]'s use above was in memory only (blob_has reads no file), so
	 * its file is still the oldest: it goes with b[1], b[6] and b[3]
	 * (orders 1, 4, 5, 6), leaving b[0] (order 7), n1 and n2. */
	s = open_disk(base, dir, 400);
	run_until_indexed(base, s);
	for (int i = 0; i < 100 && stats(s).bytes > 400; i++)
		event_base_loop(base, EVLOOP_ONCE);
	ck_assert_int_eq(stats(s).bytes, 400);
	ck_assert_int_eq(stats(s).evictions, 4);
	ck_assert_int_eq(count_files(dir, "cas"), 3);
	ck_assert(!blob_has(s, &b[2].d));
	ck_assert(!blob_has(s, &b[1].d));
	ck_assert(!blob_has(s, &b[6].d));
	ck_assert(!blob_has(s, &b[3].d));
	ck_assert(blob_has(s, &b[0].d));
	ck_assert(blob_has(s, &n1.d));
	ck_assert(blob_has(s, &n2.d));
	blob_close(s);
	event_base_free(base);
}
END_TEST

START_TEST(test_disk_open_errors)
{
	char *dir = new_dir();
	char *file = keep(xasprintf("%s/plain", dir));
	FILE *fp = fopen(file, "w");
	fclose(fp);
	char *err = NULL;
	ck_assert_ptr_null(blob_open_disk(NULL, file, 0, &err));
	ck_assert_msg(err && strstr(err, file), "%s", err ? err : "(null)");
	free(err);
	char *below = keep(xasprintf("%s/sub", file));
	err = NULL;
	ck_assert_ptr_null(blob_open_disk(NULL, below, 0, &err));
	ck_assert_ptr_nonnull(err);
	free(err);
	ck_assert_ptr_null(blob_open_disk(NULL, below, 0, NULL));
	/* Parents are created. */
	char *deep = keep(xasprintf("%s/a/b/c", dir));
	struct blob_store *s = open_disk(NULL, deep, 0);
	blob_close(s);
	char *lock = keep(xasprintf("%s/LOCK", deep));
	ck_assert_int_eq(access(lock, F_OK), 0);
}
END_TEST

static void overwrite(const char *dir, const struct digest *d, const void *p, size_t n)
{
	char *path = cas_path(dir, d);
	FILE *fp = fopen(path, "w");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(p, 1, n, fp), n);
	fclose(fp);
	free(path);
}

/* A damaged file is deleted and reported missing, never served. */
START_TEST(test_disk_corrupt)
{
	struct fixture f = fx_open(1, 0);
	struct blob a = mk(100000, 13), b = mk(100000, 14), c = mk(3000, 15);
	put_ok(f.s, &a);
	put_ok(f.s, &b);
	put_ok(f.s, &c);
	overwrite(f.dir, &a.d, b.p, b.n); /* right size, wrong bytes */
	uint8_t *data = NULL;
	ck_assert_int_eq(blob_get(f.s, &a.d, &data), -ENOENT);
	ck_assert(!file_exists(f.dir, &a.d));
	ck_assert(!blob_has(f.s, &a.d));
	/* Streamed (with verify-reads on): the last chunk is withheld and the
	 * read fails. */
	blob_disk_set_verify_streams(f.s, true);
	overwrite(f.dir, &b.d, a.p, a.n);
	struct blob_reader *r;
	ck_assert_int_eq(blob_reader_open(f.s, &b.d, 0, &r), 0);
	uint8_t *buf = xmalloc(b.n);
	ssize_t n, got = 0;
	while ((n = blob_reader_read(r, buf, 30000)) > 0)
		got += n;
	ck_assert_int_eq(n, -EIO);
	ck_assert_int_lt(got, (ssize_t)b.n);
	blob_reader_close(r);
	ck_assert(!file_exists(f.dir, &b.d));
	ck_assert(!blob_has(f.s, &b.d));
	/* Truncated: wrong size, same outcome. */
	overwrite(f.dir, &c.d, c.p, 100);
	ck_assert_int_eq(blob_get(f.s, &c.d, &data), -ENOENT);
	ck_assert(!file_exists(f.dir, &c.d));
	/* Removed behind our back: the index learns on the next open. */
	put_ok(f.s, &c);
	char *p = cas_path(f.dir, &c.d);
	unlink(p);
	free(p);
	ck_assert_int_eq(blob_reader_open(f.s, &c.d, 0, &r), -ENOENT);
	ck_assert(!blob_has(f.s, &c.d));
	ck_assert_int_eq(stats(f.s).count, 0);
	/* Re-upload after all that works. */
	put_ok(f.s, &a);
	get_eq(f.s, &a);
	/* With fsync on, publishing still works. */
	blob_disk_set_fsync(f.s, true);
	put_ok(f.s, &b);
	get_eq(f.s, &b);
	free(buf);
	fx_close(&f);
}
END_TEST

static long rss_kib(void)
{
	FILE *fp = fopen("/proc/self/statm", "r");
	long size, res = 0;
	if (fp) {
		if (fscanf(fp, "%ld %ld", &size, &res) != 2)
			res = 0;
		fclose(fp);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* 64 MiB through a writer and back through a reader, 1 MiB at a time,
 * without the process growing by anything like the blob size. */
START_TEST(test_disk_stream_64mib)
{
	const size_t total = 64u << 20, chunk = 1u << 20;
	struct fixture f = fx_open(1, 0);
	uint8_t *buf = xmalloc(chunk), *back = xmalloc(chunk);
	struct hasher *h = hasher_new();
	uint64_t x = 42;
	for (size_t off = 0; off < total; off += chunk) {
		gen(&x, buf, chunk);
		hasher_update(h, buf, chunk);
	}
	struct digest d;
	hasher_final(h, &d);
	hasher_free(h);
	long rss0 = rss_kib(), peak = rss0;

	struct blob_writer *w = blob_writer_open(f.s, &d);
	x = 42;
	for (size_t off = 0; off < total; off += chunk) {
		gen(&x, buf, chunk);
		ck_assert_int_eq(blob_writer_write(w, buf, chunk), 0);
		long r = rss_kib();
		peak = r > peak ? r : peak;
	}
	char *err = NULL;
	ck_assert_int_eq(blob_writer_commit(w, &err), 0);
	ck_assert(blob_has(f.s, &d));

	struct blob_reader *r;
	ck_assert_int_eq(blob_reader_open(f.s, &d, 0, &r), 0);
	x = 42;
	size_t got = 0;
	ssize_t n;
	while ((n = blob_reader_read(r, back, chunk)) > 0) {
		ck_assert_int_eq(n, (ssize_t)chunk);
		gen(&x, buf, chunk);
		ck_assert(memcmp(buf, back, chunk) == 0);
		got += (size_t)n;
		long m = rss_kib();
		peak = m > peak ? m : peak;
	}
	ck_assert_int_eq(n, 0);
	ck_assert_uint_eq(got, total);
	blob_reader_close(r);
	ck_assert_msg(peak - rss0 < 16 * 1024, "RSS grew by %ld KiB", peak - rss0);
	free(buf);
	free(back);
	fx_close(&f);
}
END_TEST

/* ---- disk store, packed small blobs ------------------------------------ */

#define HDR 56 /* record header (blob_pack.h) */

static struct blob_store *open_packed(struct event_base *base, const char *dir, int64_t max,
				      int64_t small, int64_t seg)
{
	struct blob_store *s = open_disk(base, dir, max);
	blob_disk_set_pack(s, small, seg, 50);
	if (base)
		run_until_indexed(base, s);
	return s;
}

static char *seg_path(const char *dir, int id)
{
	return keep(xasprintf("%s/pack/seg-%06d", dir, id));
}

static off_t file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? st.st_size : -1;
}

static void run_until_compacted(struct event_base *base, struct blob_store *s, int64_t n)
{
	for (int i = 0; stats(s).pack_compactions < n; i++) {
		ck_assert_int_lt(i, 100000);
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
}

/* Small blobs packed, large ones files; one LRU order and one budget. */
START_TEST(test_pack_mixed)
{
	struct event_base *base = event_base_new();
	char *dir = new_dir();
	struct blob_store *s = open_packed(base, dir, 20000, 4096, 1 << 20);
	struct blob sm[10], lg[3];
	for (int i = 0; i < 10; i++)
		sm[i] = mk(1000, 500 + (uint64_t)i);
	for (int i = 0; i < 3; i++)
		lg[i] = mk(5000, 600 + (uint64_t)i);
	put_ok(s, &lg[0]);
	for (int i = 0; i < 10; i++)
		put_ok(s, &sm[i]);
	put_ok(s, &lg[1]);
	ck_assert_int_eq(count_files(dir, "cas"), 2);
	ck_assert_int_eq(count_files(dir, "pack"), 1);
	struct blob_stats st = stats(s);
	ck_assert_int_eq(st.count, 12);
	ck_assert_int_eq(st.bytes, 20000);
	ck_assert_int_eq(st.packed_count, 10);
	ck_assert_int_eq(st.packed_bytes, 10000);
	for (int i = 0; i < 10; i++)
		get_eq(s, &sm[i]);
	/* Recency now: lg0, lg1, sm0..9 (gets touched them in order).  A
	 * 5,000-byte blob evicts lg0 (file); the next one lg1; then small
	 * ones in order. */
	get_eq(s, &lg[0]);
	put_ok(s, &lg[2]); /* evicts lg1 (oldest now) */
	ck_assert(!blob_has(s, &lg[1].d));
	ck_assert(!file_exists(dir, &lg[1].d));
	struct blob mid = mk(3000, 700); /* packed; evicts sm0..sm2 */
	put_ok(s, &mid);
	for (int i = 0; i < 3; i++)
		ck_assert(!blob_has(s, &sm[i].d));
	for (int i = 3; i < 10; i++)
		ck_assert(blob_has(s, &sm[i].d));
	st = stats(s);
	ck_assert_int_le(st.bytes, 20000);
	ck_assert_int_eq(st.evictions, 4);
	ck_assert_int_eq(st.packed_count, 8);
	/* Tombstones and dead records show in the file bytes, not in bytes. */
	ck_assert_int_gt(st.pack_file_bytes, st.packed_bytes + st.packed_count * HDR);
	/* Delete across both kinds. */
	ck_assert_int_eq(blob_delete(s, &sm[5].d), 0);
	ck_assert_int_eq(blob_delete(s, &sm[5].d), -ENOENT);
	ck_assert_int_eq(blob_delete(s, &lg[2].d), 0);
	ck_assert(!file_exists(dir, &lg[2].d));
	/* Reopen: the same set, deletions and evictions included. */
	blob_close(s);
	s = open_packed(base, dir, 20000, 4096, 1 << 20);
	for (int i = 0; i < 10; i++)
		ck_assert_int_eq(blob_has(s, &sm[i].d), i >= 3 && i != 5);
	ck_assert(blob_has(s, &lg[0].d));
	ck_assert(!blob_has(s, &lg[1].d));
	ck_assert(!blob_has(s, &lg[2].d));
	get_eq(s, &mid);
	get_eq(s, &sm[9]);
	st = stats(s);
	ck_assert_int_eq(st.packed_count, 7);
	ck_assert_int_eq(st.count, 8);
	ck_assert_int_eq(st.bytes, 7 * 1000 - 1000 + 3000 + 5000);
	/* Stored again after deletion: back, and stays after a reopen. */
	put_ok(s, &sm[5]);
	blob_close(s);
	/* Without a loop: the first miss finishes the segment scan. */
	s = open_packed(NULL, dir, 0, 4096, 1 << 20);
	struct blob absent = mk(100, 701);
	ck_assert(!blob_has(s, &absent.d));
	get_eq(s, &sm[5]);
	ck_assert_int_eq(stats(s).packed_count, 8);
	blob_close(s);
	event_base_free(base);
}
END_TEST

/* Reads of packed blobs: streamed at offsets, and a reader outlives the
 * deletion of its blob and the compaction of its segment. */
START_TEST(test_pack_reader_survives_compaction)
{
	struct event_base *base = event_base_new();
	char *dir = new_dir();
	struct blob_store *s = open_packed(base, dir, 0, 65536, 64 * 1024);
	struct blob b[40];
	for (int i = 0; i < 40; i++)
		b[i] = mk(10000, 800 + (uint64_t)i);
	for (int i = 0; i < 40; i++)
		put_ok(s, &b[i]);
	ck_assert_int_ge(stats(s).pack_segments, 6);
	struct blob_reader *r, *r2;
	ck_assert_int_eq(blob_reader_open(s, &b[0].d, 0, &r), 0);
	ck_assert_int_eq(blob_reader_open(s, &b[1].d, 1234, &r2), 0);
	uint8_t buf[10000];
	ck_assert_int_eq(blob_reader_read(r, buf, 100), 100);
	ck_assert(memcmp(buf, b[0].p, 100) == 0);
	/* Kill b0 and most of its segment's neighbours: it is compacted away
	 * (b1 survives, copied), and its file unlinked. */
	ck_assert_int_eq(blob_delete(s, &b[0].d), 0);
	for (int i = 2; i < 6; i++)
		ck_assert_int_eq(blob_delete(s, &b[i].d), 0);
	run_until_compacted(base, s, 1);
	ck_assert_int_eq(file_size(seg_path(dir, 1)), -1);
	ck_assert_int_gt(stats(s).pack_reclaimed, 0);
	ssize_t n;
	size_t got = 100;
	while ((n = blob_reader_read(r, buf + got, 3000)) > 0)
		got += (size_t)n;
	ck_assert_int_eq(n, 0);
	ck_assert_uint_eq(got, 10000);
	ck_assert(memcmp(buf, b[0].p, 10000) == 0);
	ck_assert_int_eq(blob_reader_read(r2, buf, 10000), 10000 - 1234);
	ck_assert(memcmp(buf, b[1].p + 1234, 10000 - 1234) == 0);
	blob_reader_close(r);
	blob_reader_close(r2);
	get_eq(s, &b[1]);
	ck_assert(!blob_has(s, &b[0].d));
	blob_close(s);
	event_base_free(base);
}
END_TEST

/* Compaction copies live records byte for byte and frees the space; a
 * reopen sees the same set (tombstones carried while still needed). */
START_TEST(test_pack_compaction)
{
	struct event_base *base = event_base_new();
	char *dir = new_dir();
	struct blob_store *s = open_packed(base, dir, 0, 4096, 32 * 1024);
	enum { N = 300 };
	struct blob *b = keep(xcalloc(N, sizeof(*b)));
	for (int i = 0; i < N; i++)
		b[i] = mk(100 + (size_t)(i % 7) * 300, 900 + (uint64_t)i);
	for (int i = 0; i < N; i++)
		put_ok(s, &b[i]);
	struct blob_stats st0 = stats(s);
	ck_assert_int_ge(st0.pack_segments, 10);
	for (int i = 0; i < N; i++)
		if (i % 4)
			ck_assert_int_eq(blob_delete(s, &b[i].d), 0);
	run_until_compacted(base, s, st0.pack_segments - 1);
	/* Let it finish whatever it started. */
	for (int i = 0; i < 1000; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	struct blob_stats st = stats(s);
	ck_assert_int_eq(st.packed_count, N / 4);
	ck_assert_msg(st.pack_file_bytes < st0.pack_file_bytes / 2,
		      "segments hold %lld bytes, were %lld", (long long)st.pack_file_bytes,
		      (long long)st0.pack_file_bytes);
	ck_assert_int_eq(count_files(dir, "pack"), st.pack_segments);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(blob_has(s, &b[i].d), i % 4 == 0);
		if (i % 4 == 0)
			get_eq(s, &b[i]);
	}
	blob_close(s);
	s = open_packed(base, dir, 0, 4096, 32 * 1024);
	ck_assert_int_eq(stats(s).packed_count, N / 4);
	for (int i = 0; i < N; i++) {
		ck_assert_int_eq(blob_has(s, &b[i].d), i % 4 == 0);
		if (i % 4 == 0)
			get_eq(s, &b[i]);
	}
	blob_close(s);
	event_base_free(base);
}
END_TEST

static void *slurp(const char *path, size_t *n)
{
	FILE *fp = fopen(path, "rb");
	ck_assert_ptr_nonnull(fp);
	fseek(fp, 0, SEEK_END);
	*n = (size_t)ftell(fp);
	rewind(fp);
	void *p = keep(xmalloc(*n ? *n : 1));
	ck_assert_uint_eq(fread(p, 1, *n, fp), *n);
	fclose(fp);
	return p;
}

static void spill(const char *path, const void *p, size_t n)
{
	FILE *fp = fopen(path, "wb");
	ck_assert_ptr_nonnull(fp);
	ck_assert_uint_eq(fwrite(p, 1, n, fp), n);
	fclose(fp);
}

/* A segment cut at every byte of its last record (a crash mid-append),
 * or with a wrong byte in it: the record is dropped, the file truncated
 * to the records before it, and those all survive. */
START_TEST(test_pack_torn_tail)
{
	char *dir = new_dir();
	struct blob_store *s = open_packed(NULL, dir, 0, 4096, 1 << 20);
	struct blob b[4];
	for (int i = 0; i < 4; i++)
		b[i] = mk(i == 3 ? 150 : 700, 1000 + (uint64_t)i);
	for (int i = 0; i < 4; i++)
		put_ok(s, &b[i]);
	blob_close(s);
	char *seg = seg_path(dir, 1);
	size_t len;
	uint8_t *img = slurp(seg, &len);
	size_t last = len - (HDR + 150);
	ck_assert_uint_eq(last, 3 * (HDR + 700));
	for (size_t cut = last; cut <= len; cut++) {
		spill(seg, img, cut);
		struct event_base *base = cut % 2 ? event_base_new() : NULL;
		s = open_packed(base, dir, 0, 4096, 1 << 20);
		ck_assert_int_eq(blob_has(s, &b[3].d), cut == len);
		for (int i = 0; i < 3; i++)
			ck_assert(blob_has(s, &b[i].d));
		get_eq(s, &b[2]);
		ck_assert_int_eq(file_size(seg), (off_t)(cut == len ? len : last));
		ck_assert_int_eq(stats(s).packed_count, cut == len ? 4 : 3);
		blob_close(s);
		if (base)
			event_base_free(base);
	}
	/* A flipped byte in the last record's data or header: same. */
	size_t flips[] = {last + 2, last + 20, last + HDR + 75, len - 1};
	for (size_t i = 0; i < ARRAY_LEN(flips); i++) {
		img[flips[i]] ^= 0x40;
		spill(seg, img, len);
		img[flips[i]] ^= 0x40;
		s = open_packed(NULL, dir, 0, 4096, 1 << 20);
		ck_assert(!blob_has(s, &b[3].d));
		get_eq(s, &b[0]);
		get_eq(s, &b[2]);
		ck_assert_int_eq(file_size(seg), (off_t)last);
		/* Stored again: into a new segment, after the good records. */
		put_ok(s, &b[3]);
		ck_assert_int_eq(file_size(seg_path(dir, 2)), HDR + 150);
		blob_close(s);
		unlink(seg_path(dir, 2));
	}
}
END_TEST

/* A record damaged in the middle of a segment: missing (its hash or its
 * checksum says so), never served; the records after it survive. */
START_TEST(test_pack_corrupt_middle)
{
	struct event_base *base = event_base_new();
	char *dir = new_dir();
	struct blob_store *s = open_packed(base, dir, 0, 4096, 1 << 20);
	struct blob b[5];
	for (int i = 0; i < 5; i++)
		b[i] = mk(1000, 1100 + (uint64_t)i);
	for (int i = 0; i < 5; i++)
		put_ok(s, &b[i]);
	char *seg = seg_path(dir, 1);
	/* While open: b1's data gets a wrong byte behind the store's back. */
	int fd = open(seg, O_RDWR);
	ck_assert_int_ge(fd, 0);
	uint8_t x = (uint8_t)(b[1].p[500] ^ 1);
	off_t rec1 = HDR + 1000;
	ck_assert_int_eq(pwrite(fd, &x, 1, rec1 + HDR + 500), 1);
	uint8_t *data = NULL;
	ck_assert_int_eq(blob_get(s, &b[1].d, &data), -ENOENT);
	ck_assert(!blob_has(s, &b[1].d));
	/* Streamed with verify-reads: the last chunk is withheld. */
	blob_disk_set_verify_streams(s, true);
	x = (uint8_t)(b[2].p[10] ^ 1);
	ck_assert_int_eq(pwrite(fd, &x, 1, 2 * rec1 + HDR + 10), 1);
	struct blob_reader *r;
	ck_assert_int_eq(blob_reader_open(s, &b[2].d, 0, &r), 0);
	uint8_t buf[1000];
	ck_assert_int_eq(blob_reader_read(r, buf, 1000), -EIO);
	blob_reader_close(r);
	ck_assert(!blob_has(s, &b[2].d));
	get_eq(s, &b[3]);
	blob_close(s);
	/* Closed: b3's data is damaged; the scan skips it by its checksum. */
	x = (uint8_t)(b[3].p[0] ^ 1);
	ck_assert_int_eq(pwrite(fd, &x, 1, 3 * rec1 + HDR), 1);
	close(fd);
	s = open_packed(base, dir, 0, 4096, 1 << 20);
	ck_assert(blob_has(s, &b[0].d));
	ck_assert(!blob_has(s, &b[1].d));
	ck_assert(!blob_has(s, &b[2].d));
	ck_assert(!blob_has(s, &b[3].d));
	get_eq(s, &b[4]);
	ck_assert_int_eq(stats(s).packed_count, 2);
	put_ok(s, &b[3]);
	get_eq(s, &b[3]);
	blob_close(s);
	event_base_free(base);
}
END_TEST

/* A small upload parked half-way (blob_writer_suspend) holds no buffer:
 * its data goes to tmp/, and it is published as a file. */
START_TEST(test_pack_suspended_upload)
{
	char *dir = new_dir();
	struct blob_store *s = open_packed(NULL, dir, 0, 65536, 1 << 20);
	struct blob a = mk(5000, 1300), b = mk(5000, 1301);
	struct blob_writer *w = blob_writer_open(s, &a.d);
	ck_assert_int_eq(blob_writer_write(w, a.p, 2000), 0);
	ck_assert_int_eq(count_files(dir, "tmp"), 0);
	ck_assert_int_eq(blob_writer_suspend(w), 0);
	ck_assert_int_eq(count_files(dir, "tmp"), 1);
	ck_assert_int_eq(blob_writer_write(w, a.p + 2000, 3000), 0);
	ck_assert_int_eq(blob_writer_commit(w, NULL), 0);
	ck_assert(file_exists(dir, &a.d));
	get_eq(s, &a);
	/* Not parked: packed, nothing in tmp/ or cas/ for it. */
	w = blob_writer_open(s, &b.d);
	ck_assert_int_eq(blob_writer_suspend(w), 0);
	ck_assert_int_eq(blob_writer_write(w, b.p, 5000), 0);
	ck_assert_int_eq(blob_writer_commit(w, NULL), 0);
	ck_assert(!file_exists(dir, &b.d));
	ck_assert_int_eq(stats(s).packed_count, 1);
	ck_assert_int_eq(count_files(dir, "tmp"), 0);
	get_eq(s, &b);
	blob_close(s);
}
END_TEST

/* fsync on: each packed blob is synced, or once per batch. */
START_TEST(test_pack_fsync_batch)
{
	char *dir = new_dir();
	struct blob_store *s = open_packed(NULL, dir, 0, 4096, 1 << 20);
	blob_disk_set_fsync(s, true);
	struct blob b[20];
	for (int i = 0; i < 20; i++)
		b[i] = mk(500, 1200 + (uint64_t)i);
	put_ok(s, &b[0]);
	blob_batch_begin(s);
	blob_batch_begin(s);
	for (int i = 1; i < 20; i++)
		put_ok(s, &b[i]);
	ck_assert_int_eq(blob_batch_end(s), 0);
	ck_assert_int_eq(blob_batch_end(s), 0);
	for (int i = 0; i < 20; i++)
		get_eq(s, &b[i]);
	blob_close(s);
	struct blob_store *m = blob_open_memory(0);
	blob_batch_begin(m);
	ck_assert_int_eq(blob_batch_end(m), 0);
	blob_close(m);
}
END_TEST

int main(void)
{
	log_set_level(LOG_ERROR);
	Suite *s = suite_create("blob");
	TCase *tc = tcase_create("both");
	tcase_add_unchecked_fixture(tc, root_setup, root_teardown);
	tcase_add_checked_fixture(tc, NULL, drop_all);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, test_put_get_has, 0, 3);
	tcase_add_loop_test(tc, test_put_wrong_hash, 0, 3);
	tcase_add_loop_test(tc, test_reader_offsets, 0, 3);
	tcase_add_loop_test(tc, test_commit_mismatch, 0, 3);
	tcase_add_loop_test(tc, test_concurrent_writers, 0, 3);
	tcase_add_loop_test(tc, test_reader_survives_delete, 0, 3);
	tcase_add_loop_test(tc, test_lru_eviction, 0, 3);
	tcase_add_test(tc, test_mem_pinned_not_evicted);
	tcase_add_test(tc, test_disk_open_errors);
	tcase_add_test(tc, test_disk_crash_leftovers);
	tcase_add_test(tc, test_disk_reopen_incremental);
	tcase_add_test(tc, test_disk_reopen_lru);
	tcase_add_test(tc, test_disk_corrupt);
	tcase_add_test(tc, test_disk_stream_64mib);
	tcase_add_test(tc, test_pack_mixed);
	tcase_add_test(tc, test_pack_reader_survives_compaction);
	tcase_add_test(tc, test_pack_compaction);
	tcase_add_test(tc, test_pack_torn_tail);
	tcase_add_test(tc, test_pack_corrupt_middle);
	tcase_add_test(tc, test_pack_suspended_upload);
	tcase_add_test(tc, test_pack_fsync_batch);
	suite_add_tcase(s, tc);
	return check_run(s);
}
