/*
 * check_arena.c - unit tests for arena.c: alignment of every allocation,
 * growth across chunks with earlier data intact, big allocations in their
 * own chunks, reset and reuse through the chunk cache (bounded), and
 * protobuf-c messages decoded into an arena.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "check_run.h"

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"

START_TEST(test_alignment)
{
	struct arena a;
	arena_init(&a);
	/* Odd sizes, including 0, all aligned; distinct and writable. */
	uint8_t *prev = NULL;
	for (size_t n = 0; n < 300; n++) {
		uint8_t *p = arena_alloc(&a, n);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_eq((uintptr_t)p % ARENA_ALIGN, 0);
		ck_assert_ptr_ne(p, prev);
		memset(p, 0xab, n);
		prev = p;
	}
	arena_free(&a);
}
END_TEST

START_TEST(test_growth_keeps_data)
{
	struct arena a;
	arena_init(&a);
	/* Far more than one chunk in small pieces: each keeps its bytes. */
	enum { N = 20000 };
	uint32_t **ps = malloc(N * sizeof(*ps));
	for (uint32_t i = 0; i < N; i++) {
		ps[i] = arena_alloc(&a, 24);
		ps[i][0] = i;
		ps[i][5] = ~i;
	}
	for (uint32_t i = 0; i < N; i++) {
		ck_assert_uint_eq(ps[i][0], i);
		ck_assert_uint_eq(ps[i][5], ~i);
	}
	ck_assert_uint_eq(arena_used(&a), (size_t)N * 32); /* 24 rounded up to 16s */
	free(ps);
	arena_free(&a);
	ck_assert_uint_eq(arena_used(&a), 0);
}
END_TEST

START_TEST(test_big)
{
	struct arena a;
	arena_init(&a);
	char *small = arena_alloc(&a, 10);
	strcpy(small, "before");
	/* Over a quarter of the largest class: its own chunk, and the small
	 * allocations after it still come from the current chunk. */
	size_t bign = (size_t)ARENA_CHUNK_MAX * 3;
	uint8_t *big = arena_alloc(&a, bign);
	ck_assert_uint_eq((uintptr_t)big % ARENA_ALIGN, 0);
	memset(big, 0x5a, bign);
	char *after = arena_alloc(&a, 10);
	strcpy(after, "after");
	ck_assert_uint_eq((size_t)(after - small), 16); /* same chunk, next slot */
	ck_assert_uint_eq(big[0], 0x5a);
	ck_assert_uint_eq(big[bign - 1], 0x5a);
	ck_assert_str_eq(small, "before");
	/* A big chunk is never cached. */
	arena_cache_drain();
	arena_reset(&a);
	ck_assert_uint_eq(arena_cached_bytes(), ARENA_CHUNK);
	arena_free(&a);
}
END_TEST

START_TEST(test_reset_reuses)
{
	arena_cache_drain();
	struct arena a;
	arena_init(&a);
	char *p1 = arena_alloc(&a, 100);
	strcpy(p1, "x");
	arena_reset(&a);
	ck_assert_uint_eq(arena_used(&a), 0);
	ck_assert_uint_eq(arena_cached_bytes(), ARENA_CHUNK);
	/* The next arena (another call) gets the same chunk back. */
	struct arena b;
	arena_init(&b);
	char *p2 = arena_alloc(&b, 100);
	ck_assert_ptr_eq(p1, p2);
	ck_assert_uint_eq(arena_cached_bytes(), 0);
	arena_free(&b);
	/* Reset of an empty arena, twice, is harmless. */
	arena_reset(&a);
	arena_reset(&a);
	ck_assert_uint_eq(arena_used(&a), 0);
}
END_TEST

START_TEST(test_cache_bounded)
{
	arena_cache_drain();
	/* Many arenas full at once, then all reset: the cache keeps at most
	 * ARENA_CACHE_BYTES, the rest goes back to malloc. */
	enum { N = 64 };
	struct arena as[N];
	for (int i = 0; i < N; i++) {
		arena_init(&as[i]);
		for (int k = 0; k < 200; k++)
			memset(arena_alloc(&as[i], 1000), k, 1000);
	}
	for (int i = 0; i < N; i++)
		arena_reset(&as[i]);
	ck_assert_uint_gt(arena_cached_bytes(), 0);
	ck_assert_uint_le(arena_cached_bytes(), ARENA_CACHE_BYTES);
	arena_cache_drain();
	ck_assert_uint_eq(arena_cached_bytes(), 0);
}
END_TEST

static void *pb_alloc(void *ud, size_t n)
{
	return arena_alloc(ud, n);
}
static void pb_free(void *ud, void *p)
{
	(void)ud, (void)p;
}

START_TEST(test_protobuf_unpack)
{
	/* A FindMissingBlobsRequest of 1,000 digests decoded into an arena:
	 * every string and sub-message from it, nothing to free one by one. */
	enum { N = 1000 };
	Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
	Build__Bazel__Remote__Execution__V2__Digest *ds = calloc(N, sizeof(*ds));
	Build__Bazel__Remote__Execution__V2__Digest **dp = calloc(N, sizeof(*dp));
	char(*hex)[65] = calloc(N, 65);
	for (int i = 0; i < N; i++) {
		build__bazel__remote__execution__v2__digest__init(&ds[i]);
		for (int k = 0; k < 64; k++)
			hex[i][k] = "0123456789abcdef"[(i * 7 + k) & 15];
		ds[i].hash = hex[i];
		ds[i].size_bytes = i;
		dp[i] = &ds[i];
	}
	req.n_blob_digests = N;
	req.blob_digests = dp;
	req.instance_name = "inst";
	size_t len =
		build__bazel__remote__execution__v2__find_missing_blobs_request__get_packed_size(
			&req);
	uint8_t *buf = malloc(len);
	build__bazel__remote__execution__v2__find_missing_blobs_request__pack(&req, buf);

	struct arena a;
	arena_init(&a);
	ProtobufCAllocator al = {pb_alloc, pb_free, &a};
	for (int round = 0; round < 3; round++) {
		Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest *got =
			build__bazel__remote__execution__v2__find_missing_blobs_request__unpack(
				&al, len, buf);
		ck_assert_ptr_nonnull(got);
		ck_assert_uint_eq(got->n_blob_digests, N);
		ck_assert_str_eq(got->instance_name, "inst");
		for (int i = 0; i < N; i++) {
			ck_assert_str_eq(got->blob_digests[i]->hash, hex[i]);
			ck_assert_int_eq(got->blob_digests[i]->size_bytes, i);
		}
		ck_assert_uint_gt(arena_used(&a), (size_t)N * 65);
		/* Freeing through the allocator is a no-op; reset frees. */
		protobuf_c_message_free_unpacked(&got->base, &al);
		arena_reset(&a);
	}
	arena_free(&a);
	free(buf);
	free(hex);
	free(dp);
	free(ds);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("arena");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_alignment);
	tcase_add_test(tc, test_growth_keeps_data);
	tcase_add_test(tc, test_big);
	tcase_add_test(tc, test_reset_reuses);
	tcase_add_test(tc, test_cache_bounded);
	tcase_add_test(tc, test_protobuf_unpack);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return check_run(suite());
}
