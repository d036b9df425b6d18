/*
 * check_map.c - the one hash map (core/map.h): many entries through an
 * incremental rehash with lookups in between, equal hashes found through
 * map_first/map_next while the table grows, map_foreach visiting each
 * node once, and the seeded string hash.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/map.h"
#include "core/util.h"
#include "check_run.h"

struct ent {
	struct map_node node;
	uint64_t key;
	int visits;
};

static bool ent_eq(const struct map_node *n, const void *key)
{
	return container_of(n, struct ent, node)->key == *(const uint64_t *)key;
}

static struct ent *find(struct map *m, uint64_t key)
{
	struct map_node *n = map_find(m, map_hash_u64(key), ent_eq, &key);
	return n ? container_of(n, struct ent, node) : NULL;
}

#define N 100000

START_TEST(test_insert_find_remove_during_rehash)
{
	struct map m;
	map_init(&m);
	struct ent *e = xcalloc(N, sizeof(*e));
	size_t in = 0;
	for (size_t i = 0; i < N; i++) {
		e[i].key = i * 7919 + 1;
		map_insert(&m, &e[i].node, map_hash_u64(e[i].key));
		ck_assert_uint_eq(map_count(&m), ++in);
		/* Lookups between inserts: what is in is found (old and new
		 * entries, whichever table holds them), what is not is not. */
		ck_assert_ptr_eq(find(&m, e[i].key), &e[i]);
		size_t j = i / 2 - (i / 2 % 3 == 1); /* an older entry still in */
		ck_assert_ptr_eq(find(&m, e[j].key), &e[j]);
		ck_assert_ptr_null(find(&m, (i + 1) * 7919 + 1));
		if (i % 3 == 2) { /* some removals while the table grows */
			map_remove(&m, &e[i - 1].node);
			in--;
		}
	}
	for (size_t i = 0; i < N; i++) {
		bool removed = i % 3 == 1 && i + 1 < N;
		ck_assert_ptr_eq(find(&m, e[i].key), removed ? NULL : &e[i]);
	}
	size_t left = map_count(&m);
	for (size_t i = 0; i < N; i++) {
		if (i % 3 == 1 && i + 1 < N)
			continue;
		map_remove(&m, &e[i].node);
		left--;
		ck_assert_uint_eq(map_count(&m), left);
		ck_assert_ptr_null(find(&m, e[i].key));
		if (i + 1 < N) /* the last entry stays until the end */
			ck_assert_ptr_eq(find(&m, e[N - 1].key), &e[N - 1]);
	}
	ck_assert_uint_eq(map_count(&m), 0);
	map_destroy(&m);
	free(e);
}
END_TEST

START_TEST(test_equal_hashes_across_rehash)
{
	struct map m;
	map_init(&m);
	enum { SAME = 500, OTHER = 5000 };
	struct ent *same = xcalloc(SAME, sizeof(*same));
	struct ent *other = xcalloc(OTHER, sizeof(*other));
	const uint64_t h = 0x1234567890abcdefULL;
	/* Interleave: the entries of one hash are inserted while the table
	 * grows many times for the others. */
	for (size_t i = 0; i < OTHER; i++) {
		other[i].key = i;
		map_insert(&m, &other[i].node, map_hash_u64(i));
		if (i % (OTHER / SAME) == 0) {
			size_t k = i / (OTHER / SAME);
			same[k].key = k;
			map_insert(&m, &same[k].node, h);
		}
		if (i % 97 == 0) {
			int seen = 0;
			for (struct map_node *n = map_first(&m, h); n; n = map_next(&m, n)) {
				ck_assert_uint_eq(n->hash, h);
				seen++;
			}
			ck_assert_int_eq(seen, (int)(i / (OTHER / SAME)) + 1);
		}
	}
	for (struct map_node *n = map_first(&m, h); n; n = map_next(&m, n))
		container_of(n, struct ent, node)->visits++;
	for (size_t k = 0; k < SAME; k++)
		ck_assert_int_eq(same[k].visits, 1);
	for (size_t i = 0; i < OTHER; i++)
		ck_assert_int_eq(other[i].visits, 0);
	map_clear(&m);
	free(same);
	free(other);
}
END_TEST

static void visit(struct map_node *n, void *arg)
{
	container_of(n, struct ent, node)->visits++;
	(*(size_t *)arg)++;
}

START_TEST(test_foreach_visits_each_once)
{
	struct map m;
	map_init(&m);
	enum { K = 20000 };
	struct ent *e = xcalloc(K, sizeof(*e));
	bool mid = false;
	for (size_t i = 0; i < K; i++) {
		e[i].key = i;
		/* Small hashes: many collide in a small table. */
		map_insert(&m, &e[i].node, i % 1000);
		if (m.rehash >= 0 && i > K / 4 && !mid) {
			/* Both tables in use: each node still visited once. */
			size_t calls = 0;
			map_foreach(&m, visit, &calls);
			ck_assert_uint_eq(calls, i + 1);
			for (size_t k = 0; k <= i; k++) {
				ck_assert_int_eq(e[k].visits, 1);
				e[k].visits = 0;
			}
			mid = true;
		}
	}
	ck_assert(mid);
	size_t calls = 0;
	map_foreach(&m, visit, &calls);
	ck_assert_uint_eq(calls, K);
	for (size_t i = 0; i < K; i++)
		ck_assert_int_eq(e[i].visits, 1);
	map_clear(&m);
	ck_assert_uint_eq(map_count(&m), 0);
	calls = 0;
	map_foreach(&m, visit, &calls);
	ck_assert_uint_eq(calls, 0);
	map_destroy(&m);
	free(e);
}
END_TEST

START_TEST(test_hash_str)
{
	ck_assert(map_hash_str("abc") == map_hash_str("abc"));
	ck_assert(map_hash_str("abc") != map_hash_str("abd"));
	ck_assert(map_hash_str("abc") != map_hash_str("ab"));
	ck_assert(map_hash_str("") != map_hash_str("a"));
	ck_assert(map_hash_str("abc") == map_hash_bytes("abc", 3));
	/* Many short keys: no collisions among them. */
	enum { K = 4096 };
	uint64_t *h = xcalloc(K, sizeof(*h));
	for (int i = 0; i < K; i++) {
		char buf[16];
		snprintf(buf, sizeof buf, "k%d", i);
		h[i] = map_hash_str(buf);
		for (int j = 0; j < i; j++)
			ck_assert(h[i] != h[j]);
	}
	free(h);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("map");
	TCase *tc = tcase_create("core");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_insert_find_remove_during_rehash);
	tcase_add_test(tc, test_equal_hashes_across_rehash);
	tcase_add_test(tc, test_foreach_visits_each_once);
	tcase_add_test(tc, test_hash_str);
	suite_add_tcase(s, tc);
	return check_run(s);
}
