/*
 * check_util.c - unit tests for util.c: base64 (padded and unpadded, bad
 * input), duration and size parsing.
 */
#include <check.h>
#include <stdlib.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/child.h"
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

START_TEST(test_mkdir_p)
{
	char tmpl[] = "/tmp/check_util.XXXXXX";
	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	char *deep = xasprintf("%s/a/b/c", tmpl);
	ck_assert_int_eq(mkdir_p(deep, 0700), 0);
	struct stat st;
	ck_assert_int_eq(stat(deep, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	mode_t um = umask(0);
	umask(um);
	ck_assert_int_eq(st.st_mode & 0777, 0700 & ~um);
	ck_assert_int_eq(mkdir_p(deep, 0700), 0); /* exists: fine */
	char *file = xasprintf("%s/f", tmpl);
	FILE *f = fopen(file, "w");
	ck_assert_ptr_nonnull(f);
	fclose(f);
	ck_assert_int_eq(mkdir_p(file, 0755), -ENOTDIR);
	char *under = xasprintf("%s/f/x", tmpl);
	ck_assert_int_eq(mkdir_p(under, 0755), -ENOTDIR);
	ck_assert_int_eq(errno, ENOTDIR);
	ck_assert_int_eq(mkdir_p("", 0755), -ENOENT);
	unlink(file);
	rmdir(deep);
	*strrchr(deep, '/') = '\0';
	rmdir(deep);
	*strrchr(deep, '/') = '\0';
	rmdir(deep);
	ck_assert_int_eq(rmdir(tmpl), 0);
	free(deep);
	free(file);
	free(under);
}
END_TEST

START_TEST(test_varint)
{
	static const struct {
		uint64_t v;
		size_t len;
		uint8_t enc[10];
	} cases[] = {
		{0, 1, {0x00}},
		{1, 1, {0x01}},
		{127, 1, {0x7f}},
		{128, 2, {0x80, 0x01}},
		{300, 2, {0xac, 0x02}},
		{UINT64_MAX, 10, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	};
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		uint8_t buf[PB_VARINT_MAX];
		size_t n = pb_varint_put(buf, cases[i].v);
		ck_assert_uint_eq(n, cases[i].len);
		ck_assert_mem_eq(buf, cases[i].enc, n);
		const uint8_t *p = buf;
		uint64_t v = 1234;
		ck_assert_int_eq(pb_varint_get(&p, buf + n, &v), 0);
		ck_assert(v == cases[i].v);
		ck_assert_ptr_eq(p, buf + n);
		/* Cut short: an error, and *p stays put. */
		p = buf;
		ck_assert_int_eq(pb_varint_get(&p, buf + n - 1, &v), -1);
		ck_assert_ptr_eq(p, buf);
	}
	/* Eleven continuation bytes: too long. */
	uint8_t longv[11];
	memset(longv, 0x80, sizeof longv);
	const uint8_t *p = longv;
	uint64_t v;
	ck_assert_int_eq(pb_varint_get(&p, longv + sizeof longv, &v), -1);
}
END_TEST

/* RFC 4122 version 4: 8-4-4-4-12 lower-case hex, version nibble 4,
 * variant bits 10. */
START_TEST(test_uuid4)
{
	char *a = uuid4(), *b = uuid4();
	ck_assert_uint_eq(strlen(a), 36);
	for (int i = 0; i < 36; i++) {
		if (i == 8 || i == 13 || i == 18 || i == 23)
			ck_assert_int_eq(a[i], '-');
		else
			ck_assert_ptr_nonnull(strchr("0123456789abcdef", a[i]));
	}
	ck_assert_int_eq(a[14], '4');
	ck_assert_ptr_nonnull(strchr("89ab", a[19]));
	ck_assert_str_ne(a, b);
	free(a);
	free(b);
}
END_TEST

START_TEST(test_utf8)
{
	static const struct {
		const char *s;
		size_t len;
		bool ok;
	} v[] = {
		{"", 0, true},
		{"plain ascii", 11, true},
		{"\xc3\xa9", 2, true},		/* U+00E9 */
		{"\xe2\x82\xac", 3, true},	/* U+20AC */
		{"\xf0\x9f\x98\x80", 4, true},	/* U+1F600 */
		{"\xf4\x8f\xbf\xbf", 4, true},	/* U+10FFFF, the last */
		{"a\0b", 3, false},		/* NUL */
		{"\xc0\xaf", 2, false},		/* overlong '/' */
		{"\xe0\x80\xaf", 3, false},	/* overlong, 3 bytes */
		{"\xf0\x80\x80\xaf", 4, false}, /* overlong, 4 bytes */
		{"\xed\xa0\x80", 3, false},	/* surrogate U+D800 */
		{"\xf4\x90\x80\x80", 4, false}, /* U+110000 */
		{"\xf5\x80\x80\x80", 4, false}, /* lead byte past F4 */
		{"\x80", 1, false},		/* stray continuation */
		{"\xc3", 1, false},		/* truncated */
		{"\xe2\x82", 2, false},		/* truncated */
		{"\xe2\x28\xa1", 3, false},	/* bad continuation */
		{"ok\xff", 3, false},		/* never valid */
	};
	for (size_t i = 0; i < ARRAY_LEN(v); i++)
		ck_assert_msg(utf8_valid(v[i].s, v[i].len) == v[i].ok, "case %zu", i);
	const unsigned char *e = (const unsigned char *)"\xe2\x82\xac!";
	ck_assert_uint_eq(utf8_seq_len(e, e + 4), 3);
	ck_assert_uint_eq(utf8_seq_len(e + 3, e + 4), 1);
	ck_assert_uint_eq(utf8_seq_len(e, e + 2), 0);
}
END_TEST

/* A real child's waitpid() status, so the W* macros decode it. */
static int child_status(int how)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (how)
			raise(how);
		_exit(3);
	}
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return st;
}

START_TEST(test_child_status)
{
	char buf[64];
	ck_assert_str_eq(child_status_str(child_status(0), buf, sizeof buf),
			 "exited with status 3");
	ck_assert_str_eq(child_status_str(child_status(SIGKILL), buf, sizeof buf),
			 "was killed by signal 9 (Killed)");
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
	tcase_add_test(tc, test_mkdir_p);
	tcase_add_test(tc, test_varint);
	tcase_add_test(tc, test_uuid4);
	tcase_add_test(tc, test_utf8);
	tcase_add_test(tc, test_child_status);
	suite_add_tcase(s, tc);
	return check_run(s);
}
