/*
 * check_resname.c - ByteStream resource names: every form the REAPI
 * comments describe, and malformed ones.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "services/resname.h"
#include "check_run.h"

#define H "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct resname ok(const char *name, bool upload)
{
	struct resname r;
	char *err = NULL;
	int rv = resname_parse(name, upload, &r, &err);
	ck_assert_msg(rv == 0, "%s: %s", name, err ? err : "");
	return r;
}

static char *bad(const char *name, bool upload)
{
	struct resname r;
	char *err = NULL;
	ck_assert_int_eq(resname_parse(name, upload, &r, &err), -1);
	ck_assert_ptr_nonnull(err);
	return err;
}

START_TEST(test_reads)
{
	struct resname r = ok("blobs/" H "/42", false);
	ck_assert_str_eq(r.instance, "");
	ck_assert_str_eq(r.hash, H);
	ck_assert_int_eq(r.size, 42);
	ck_assert_ptr_null(r.compressor);
	ck_assert_ptr_null(r.digest_function);
	resname_free(&r);

	r = ok("my/inst/blobs/" H "/0", false);
	ck_assert_str_eq(r.instance, "my/inst");
	ck_assert_int_eq(r.size, 0);
	resname_free(&r);

	r = ok("inst/blobs/blake3/" H "/7", false);
	ck_assert_str_eq(r.digest_function, "blake3");
	resname_free(&r);

	r = ok("inst/compressed-blobs/zstd/" H "/9", false);
	ck_assert_str_eq(r.compressor, "zstd");
	ck_assert_str_eq(r.instance, "inst");
	resname_free(&r);

	r = ok("compressed-blobs/zstd/sha256tree/" H "/9", false);
	ck_assert_str_eq(r.compressor, "zstd");
	ck_assert_str_eq(r.digest_function, "sha256tree");
	resname_free(&r);
}
END_TEST

START_TEST(test_uploads)
{
	struct resname r = ok("uploads/u-1/blobs/" H "/10", true);
	ck_assert_str_eq(r.instance, "");
	ck_assert_str_eq(r.uuid, "u-1");
	ck_assert_int_eq(r.size, 10);
	ck_assert_ptr_null(r.metadata);
	resname_free(&r);

	r = ok("a/b/uploads/u/blobs/" H "/10/some/meta/data", true);
	ck_assert_str_eq(r.instance, "a/b");
	ck_assert_str_eq(r.metadata, "some/meta/data");
	resname_free(&r);

	r = ok("x/uploads/u/compressed-blobs/zstd/blake3/" H "/10/m", true);
	ck_assert_str_eq(r.compressor, "zstd");
	ck_assert_str_eq(r.digest_function, "blake3");
	ck_assert_str_eq(r.metadata, "m");
	resname_free(&r);
}
END_TEST

START_TEST(test_bad)
{
	const char *reads[] = {
		"",
		"blobs",
		"blobs/" H,
		"blobs/" H "/-1",
		"blobs/" H "/1x",
		"blobs/" H "/1/extra",
		"inst//blobs/" H "/1",
		"compressed-blobs/" H "/1",
		"nothing/here",
		"blobs/" H "/99999999999999999999999",
	};
	for (size_t i = 0; i < ARRAY_LEN(reads); i++)
		free(bad(reads[i], false));
	const char *writes[] = {
		"blobs/" H "/1",     "uploads/blobs/" H "/1", "uploads//blobs/" H "/1",
		"uploads/u/" H "/1", "uploads/u/blobs/" H,    "uploads/u/compressed-blobs",
	};
	for (size_t i = 0; i < ARRAY_LEN(writes); i++)
		free(bad(writes[i], true));
	char *e = bad("blobs/" H "/-1", false);
	ck_assert_ptr_nonnull(strstr(e, "-1"));
	free(e);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("resname");
	TCase *tc = tcase_create("core");
	tcase_add_test(tc, test_reads);
	tcase_add_test(tc, test_uploads);
	tcase_add_test(tc, test_bad);
	suite_add_tcase(s, tc);
	return check_run(s);
}
