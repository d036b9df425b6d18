/*
 * check_digest.c - unit tests for digest.c: validation of client digests
 * and its messages, the empty-blob constant, streaming vs one-shot
 * SHA-256, and the digest table across incremental rehashing.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/digest.h"
#include "check_run.h"

static const char *const abc_hex =
	"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

START_TEST(test_parse_good)
{
	struct digest d;
	char *err = NULL;
	ck_assert_int_eq(digest_parse(abc_hex, 3, &d, &err), 0);
	ck_assert_ptr_null(err);
	ck_assert_str_eq(d.hex, abc_hex);
	ck_assert_int_eq(d.size, 3);
	ck_assert_uint_eq(d.hash[0], 0xba);
	ck_assert_uint_eq(d.hash[31], 0xad);
	struct digest o;
	digest_of("abc", 3, &o);
	ck_assert(digest_eq(&d, &o));
	ck_assert_str_eq(o.hex, abc_hex);
	char buf[DIGEST_STR_LEN];
	ck_assert_str_eq(digest_str(&d, buf, sizeof(buf)),
			 "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad/3");
	/* Same hash, other size: a different digest. */
	o.size = 4;
	ck_assert(!digest_eq(&d, &o));
}
END_TEST

/* Every byte value at every position: accepted exactly when it is a
 * lowercase hex digit, and decoded to its value (the 8-at-a-time parser
 * must agree with the definition). */
START_TEST(test_parse_every_byte)
{
	static const char xd[] = "0123456789abcdef";
	for (int pos = 0; pos < 64; pos++) {
		for (int ch = 1; ch < 256; ch++) {
			char hex[65];
			memcpy(hex, abc_hex, 65);
			hex[pos] = (char)ch;
			struct digest d, e;
			int want_ok = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
			ck_assert_int_eq(digest_parse(hex, 7, &d, NULL) == 0, want_ok);
			ck_assert_int_eq(digest_parse_n(hex, 64, 7, &e) == 0, want_ok);
			if (!want_ok)
				continue;
			int v = (int)(strchr(xd, ch) - xd);
			int byte = pos / 2;
			int nib = pos % 2 ? d.hash[byte] & 15 : d.hash[byte] >> 4;
			ck_assert_int_eq(nib, v);
			ck_assert(digest_eq(&d, &e));
			ck_assert_str_eq(e.hex, hex);
		}
	}
	struct digest d;
	ck_assert_int_eq(digest_parse_n(abc_hex, 63, 1, &d), -1);
	ck_assert_int_eq(digest_parse_n(abc_hex, 64, -1, &d), -1);
	ck_assert_int_eq(digest_parse_n(abc_hex, 64, 3, &d), 0);
	ck_assert_uint_eq(d.hash[0], 0xba);
	ck_assert_uint_eq(d.hash[31], 0xad);
}
END_TEST

static void expect_bad(const char *hex, int64_t size, const char *want)
{
	struct digest d;
	char *err = NULL;
	ck_assert_int_eq(digest_parse(hex, size, &d, &err), -1);
	ck_assert_ptr_nonnull(err);
	ck_assert_msg(strstr(err, want) != NULL, "message \"%s\" lacks \"%s\"", err, want);
	free(err);
}

START_TEST(test_parse_bad)
{
	char h63[64], h65[66], upper[65], nonhex[65];
	memcpy(h63, abc_hex, 63);
	h63[63] = '\0';
	memcpy(h65, abc_hex, 64);
	strcpy(h65 + 64, "0");
	strcpy(upper, abc_hex);
	upper[0] = 'B';
	strcpy(nonhex, abc_hex);
	nonhex[10] = 'g';
	const char *want = "want 64 lowercase hex characters";
	expect_bad(h63, 3, want);
	expect_bad(h65, 3, want);
	expect_bad(upper, 3, want);
	expect_bad(nonhex, 3, want);
	expect_bad("", 0, "invalid digest hash \"\"");
	expect_bad(NULL, 0, want);
	expect_bad("xyz", 0, "invalid digest hash \"xyz\": want 64");
	expect_bad(abc_hex, -1, "invalid digest size -1 for ba7816bf");
	expect_bad(abc_hex, -1, "must be >= 0");
	/* A hostile hash is quoted short and printable. */
	char evil[300];
	memset(evil, 'a', sizeof(evil) - 1);
	evil[sizeof(evil) - 1] = '\0';
	evil[5] = '\n';
	evil[6] = '"';
	struct digest d;
	char *err = NULL;
	ck_assert_int_eq(digest_parse(evil, 1, &d, &err), -1);
	ck_assert(strlen(err) < 160);
	ck_assert(strchr(err, '\n') == NULL);
	ck_assert(strstr(err, "...") != NULL);
	free(err);
	/* err is optional. */
	ck_assert_int_eq(digest_parse("zz", 1, &d, NULL), -1);
}
END_TEST

START_TEST(test_empty_constant)
{
	struct digest d;
	digest_of("", 0, &d);
	ck_assert(digest_eq(&d, &digest_empty));
	ck_assert_str_eq(d.hex, digest_empty.hex);
	ck_assert_int_eq(digest_empty.size, 0);
	ck_assert(digest_is_empty(&d));
	/* hex and hash of the constant agree with each other. */
	struct digest p;
	ck_assert_int_eq(digest_parse(digest_empty.hex, 0, &p, NULL), 0);
	ck_assert(memcmp(p.hash, digest_empty.hash, DIGEST_HASH_LEN) == 0);
	struct hasher *h = hasher_new();
	hasher_final(h, &p);
	hasher_free(h);
	ck_assert(digest_is_empty(&p));
	/* Empty hash with a nonzero size is not the empty blob. */
	p.size = 1;
	ck_assert(!digest_is_empty(&p));
}
END_TEST

START_TEST(test_streaming_matches_oneshot)
{
	size_t n = 1 << 20;
	uint8_t *buf = malloc(n);
	uint64_t x = 88172645463325252ULL;
	for (size_t i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)x;
	}
	struct digest one, two;
	digest_of(buf, n, &one);
	struct hasher *h = hasher_new();
	/* Odd chunk sizes cross SHA-256's 64-byte blocks everywhere. */
	size_t off = 0, step = 1;
	while (off < n) {
		size_t k = step < n - off ? step : n - off;
		hasher_update(h, buf + off, k);
		off += k;
		step = step * 3 + 1;
		if (step > 100000)
			step = 7;
	}
	hasher_final(h, &two);
	ck_assert(digest_eq(&one, &two));
	ck_assert_int_eq(two.size, (int64_t)n);
	/* final resets the hash and the count: the hasher is reusable. */
	hasher_update(h, "abc", 3);
	hasher_final(h, &two);
	ck_assert_str_eq(two.hex, abc_hex);
	ck_assert_int_eq(two.size, 3);
	hasher_free(h);
	hasher_free(NULL);
	free(buf);
}
END_TEST

struct item {
	struct digest_map_node node;
	int id;
};

static void key_for(int i, struct digest *d)
{
	digest_of(&i, sizeof(i), d);
}

START_TEST(test_map)
{
	enum { N = 50000 };
	struct item *items = calloc(N, sizeof(*items));
	struct digest_map m;
	digest_map_init(&m);
	struct digest d;
	key_for(0, &d);
	ck_assert_ptr_null(digest_map_find(&m, &d));
	for (int i = 0; i < N; i++) {
		key_for(i, &d);
		memcpy(items[i].node.hash, d.hash, DIGEST_HASH_LEN);
		items[i].node.size = i;
		items[i].id = i;
		digest_map_insert(&m, &items[i].node);
		/* Every earlier key stays findable while chains move. */
		if (i % 997 == 0)
			for (int j = 0; j <= i; j += 101) {
				key_for(j, &d);
				d.size = j;
				ck_assert_ptr_eq(digest_map_find(&m, &d), &items[j].node);
			}
	}
	ck_assert_uint_eq(digest_map_count(&m), N);
	/* Size is part of the key. */
	key_for(7, &d);
	d.size = 8;
	ck_assert_ptr_null(digest_map_find(&m, &d));
	for (int i = 0; i < N; i += 2)
		digest_map_remove(&m, &items[i].node);
	ck_assert_uint_eq(digest_map_count(&m), N / 2);
	for (int i = 0; i < N; i++) {
		key_for(i, &d);
		d.size = i;
		struct digest_map_node *n = digest_map_find(&m, &d);
		if (i % 2)
			ck_assert_ptr_eq(n, &items[i].node);
		else
			ck_assert_ptr_null(n);
	}
	for (int i = 1; i < N; i += 2)
		digest_map_remove(&m, &items[i].node);
	ck_assert_uint_eq(digest_map_count(&m), 0);
	digest_map_destroy(&m);
	/* clear forgets nodes without touching them. */
	digest_map_init(&m);
	digest_map_insert(&m, &items[0].node);
	digest_map_clear(&m);
	ck_assert_uint_eq(digest_map_count(&m), 0);
	free(items);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("digest");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_parse_good);
	tcase_add_test(tc, test_parse_every_byte);
	tcase_add_test(tc, test_parse_bad);
	tcase_add_test(tc, test_empty_constant);
	tcase_add_test(tc, test_streaming_matches_oneshot);
	tcase_add_test(tc, test_map);
	suite_add_tcase(s, tc);
	return check_run(s);
}
