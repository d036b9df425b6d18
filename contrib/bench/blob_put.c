/*
 * blob_put.c - the blob stores alone, no RPC: blob_put then blob_get of
 * N blobs of SIZE bytes into a memory store, a disk store with small blobs
 * packed in segments and (fewer blobs: it is slow) a disk store with one
 * file per blob, on the calling thread.  Prints blobs/s per store; run by
 * contrib/bench/batch.sh pinned to one core.
 *
 * usage: blob_put DIR [N [SIZE]]   (DIR: an empty scratch directory)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/log.h"
#include "domain/blob.h"

static void run(const char *name, struct blob_store *s, int n, size_t size, const uint8_t *data,
		const struct digest *d)
{
	int64_t t0 = mono_us();
	for (int i = 0; i < n; i++)
		if (blob_put(s, &d[i], data + (size_t)i * size, size, NULL) != 0) {
			fprintf(stderr, "blob_put: %s: failed\n", name);
			exit(1);
		}
	int64_t t1 = mono_us();
	for (int i = 0; i < n; i++) {
		uint8_t *out;
		if (blob_get(s, &d[i], &out) != 0) {
			fprintf(stderr, "blob_get: %s: failed\n", name);
			exit(1);
		}
		free(out);
	}
	int64_t t2 = mono_us();
	printf("%-7s %8d blobs  put %9.0f blobs/s (%6.2f us)  get %9.0f blobs/s (%6.2f us)\n", name,
	       n, n * 1e6 / (double)(t1 - t0), (double)(t1 - t0) / n, n * 1e6 / (double)(t2 - t1),
	       (double)(t2 - t1) / n);
}

static struct blob_store *disk(struct event_base *base, const char *root, const char *sub,
			       int64_t small)
{
	char *dir = xasprintf("%s/%s", root, sub), *err = NULL;
	struct blob_store *s = blob_open_disk(base, dir, 0, &err);
	if (!s) {
		fprintf(stderr, "blob_put: %s\n", err);
		exit(1);
	}
	free(dir);
	blob_disk_set_pack(s, small, 0, 50);
	struct blob_stats st;
	do { /* the index scan of an empty store: a few loop passes */
		event_base_loop(base, EVLOOP_ONCE);
		blob_get_stats(s, &st);
	} while (!st.index_complete);
	return s;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: blob_put DIR [N [SIZE]]\n");
		return 2;
	}
	int n = argc > 2 ? atoi(argv[2]) : 100000;
	size_t size = argc > 3 ? (size_t)atol(argv[3]) : 1024;
	log_set_level(LOG_ERROR);
	uint8_t *data = xmalloc((size_t)n * size);
	uint64_t x = 88172645463325252ULL;
	for (size_t i = 0; i < (size_t)n * size; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		data[i] = (uint8_t)(x >> 24);
	}
	struct digest *d = xmalloc((size_t)n * sizeof(*d));
	for (int i = 0; i < n; i++)
		digest_of(data + (size_t)i * size, size, &d[i]);
	struct event_base *base = event_base_new();
	struct blob_store *s = blob_open_memory(0);
	run("memory", s, n, size, data, d);
	blob_close(s);
	s = disk(base, argv[1], "packed", 1 << 20);
	run("packed", s, n, size, data, d);
	blob_close(s);
	s = disk(base, argv[1], "files", 0);
	run("files", s, n / 20 ? n / 20 : 1, size, data, d);
	blob_close(s);
	event_base_free(base);
	free(data);
	free(d);
	return 0;
}
