/*
 * check_util.c - unit tests for util.c: base64 (padded and unpadded, bad
 * input), duration and size parsing.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "check_run.h"

START_TEST(test_b64_roundtrip)
{
	const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	const char *padded[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	const char *bare[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	for (size_t i = 0; i < ARRAY_LEN(in); i++) {
		char *p = b64_encode((const uint8_t *)in[i], strlen(in[i]), true);
		ck_assert_str_eq(p, padded[i]);
		free(p);
		char *b = b64_encode((const uint8_t *)in[i], strlen(in[i]), false);
		ck_assert_str_eq(b, bare[i]);
		free(b);
		size_t n;
		uint8_t *d = b64_decode(padded[i], strlen(padded[i]), &n);
		ck_assert_ptr_nonnull(d);
		ck_assert_uint_eq(n, strlen(in[i]));
		ck_assert(memcmp(d, in[i], n) == 0);
		free(d);
		d = b64_decode(bare[i], strlen(bare[i]), &n);
		ck_assert_ptr_nonnull(d);
		ck_assert_uint_eq(n, strlen(in[i]));
		ck_assert(memcmp(d, in[i], n) == 0);
		free(d);
	}
}
END_TEST

START_TEST(test_b64_invalid)
{
	size_t n;
	ck_assert_ptr_null(b64_decode("!!!!", 4, &n));
	ck_assert_ptr_null(b64_decode("Zm9vY", 5, &n)); /* 1 char in last quantum */
	ck_assert_ptr_null(b64_decode("Zm 9v", 5, &n));
}
END_TEST

START_TEST(test_durations)
{
	int64_t v;
	ck_assert_int_eq(parse_duration_us("10s", &v), 0);
	ck_assert_int_eq(v, 10000000);
	ck_assert_int_eq(parse_duration_us("1m", &v), 0);
	ck_assert_int_eq(v, 60000000);
	ck_assert_int_eq(parse_duration_us("250ms", &v), 0);
	ck_assert_int_eq(v, 250000);
	ck_assert_int_eq(parse_duration_us("2h", &v), 0);
	ck_assert_int_eq(v, 7200000000LL);
	ck_assert_int_eq(parse_duration_us("3", &v), 0);
	ck_assert_int_eq(v, 3000000);
	ck_assert_int_eq(parse_duration_us("10x", &v), -1);
	ck_assert_int_eq(parse_duration_us("", &v), -1);
	ck_assert_int_eq(parse_duration_us("-1s", &v), -1);
}
END_TEST

START_TEST(test_sizes)
{
	int64_t v;
	ck_assert_int_eq(parse_size("4MiB", &v), 0);
	ck_assert_int_eq(v, 4 << 20);
	ck_assert_int_eq(parse_size("16KiB", &v), 0);
	ck_assert_int_eq(v, 16384);
	ck_assert_int_eq(parse_size("1GB", &v), 0);
	ck_assert_int_eq(v, 1000000000);
	ck_assert_int_eq(parse_size("100", &v), 0);
	ck_assert_int_eq(v, 100);
	ck_assert_int_eq(parse_size("4 MiB", &v), -1);
	ck_assert_int_eq(parse_size("MiB", &v), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_b64_roundtrip);
	tcase_add_test(tc, test_b64_invalid);
	tcase_add_test(tc, test_durations);
	tcase_add_test(tc, test_sizes);
	suite_add_tcase(s, tc);
	return check_run(s);
}
