/*
 * check_dirtree.c - unit tests for the input-tree and Command-path rules
 * (domain/dirtree.c): good trees pass; bad names, order and duplicates
 * (within and across the three lists), missing digests, symlink targets
 * (empty, absolute under each strategy, climbing above the root from a
 * given depth), NUL bytes hidden from protobuf-c, garbage bytes; and the
 * lexical checks of working_directory and output paths.  Every refusal
 * asserts the exact message, which names the offending path.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "domain/dirtree.h"
#include "check_run.h"

#define H64 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* A Directory built from compact specs: "f:NAME", "d:NAME", "l:NAME>TARGET". */
struct dir {
	PbDirectory d;
	PbFileNode fn[8], *fp[8];
	PbDirectoryNode dn[8], *dp[8];
	PbSymlinkNode ln[8], *lp[8];
	PbDigest dg;
	char buf[8][64];
};

static void build(struct dir *x, const char *const *spec)
{
	memset(x, 0, sizeof(*x));
	build__bazel__remote__execution__v2__directory__init(&x->d);
	build__bazel__remote__execution__v2__digest__init(&x->dg);
	x->dg.hash = H64;
	for (int i = 0; spec[i]; i++) {
		strcpy(x->buf[i], spec[i] + 2);
		char *name = x->buf[i];
		if (spec[i][0] == 'f') {
			PbFileNode *f = &x->fn[x->d.n_files];
			build__bazel__remote__execution__v2__file_node__init(f);
			f->name = name;
			f->digest = &x->dg;
			x->fp[x->d.n_files++] = f;
		} else if (spec[i][0] == 'd') {
			PbDirectoryNode *n = &x->dn[x->d.n_directories];
			build__bazel__remote__execution__v2__directory_node__init(n);
			n->name = name;
			n->digest = &x->dg;
			x->dp[x->d.n_directories++] = n;
		} else {
			PbSymlinkNode *l = &x->ln[x->d.n_symlinks];
			build__bazel__remote__execution__v2__symlink_node__init(l);
			char *gt = strchr(name, '>');
			*gt = '\0';
			l->name = name;
			l->target = gt + 1;
			x->lp[x->d.n_symlinks++] = l;
		}
	}
	x->d.files = x->fp;
	x->d.directories = x->dp;
	x->d.symlinks = x->lp;
}

/* Check the packed Directory of spec at path; returns the code, *msg set. */
static int check(const char *path, unsigned flags, char **msg, const char *const *spec)
{
	struct dir x;
	build(&x, spec);
	size_t n = protobuf_c_message_get_packed_size(&x.d.base);
	uint8_t *b = malloc(n ? n : 1);
	protobuf_c_message_pack(&x.d.base, b);
	*msg = NULL;
	int rc = dirtree_check(b, n, path, flags, msg);
	free(b);
	return rc;
}

#define OK(path, flags, ...)                                                                       \
	do {                                                                                       \
		char *m_;                                                                          \
		int rc_ = check(path, flags, &m_, (const char *const[]){__VA_ARGS__, NULL});       \
		ck_assert_msg(rc_ == 0, "refused: %s", m_ ? m_ : "");                              \
		ck_assert_ptr_null(m_);                                                            \
	} while (0)

#define BAD(want, path, flags, ...)                                                                \
	do {                                                                                       \
		char *m_;                                                                          \
		int rc_ = check(path, flags, &m_, (const char *const[]){__VA_ARGS__, NULL});       \
		ck_assert_int_eq(rc_, -EINVAL);                                                    \
		ck_assert_ptr_nonnull(m_);                                                         \
		ck_assert_str_eq(m_, want);                                                        \
		free(m_);                                                                          \
	} while (0)

START_TEST(test_good_trees)
{
	char *m = NULL;
	ck_assert_int_eq(dirtree_check((const uint8_t *)"", 0, "", 0, &m), 0); /* empty dir */
	OK("", 0, "f:a", "f:b", "d:c", "d:e", "l:d>a", "l:f>c/../b");
	/* Byte order: "B" < "a" < "b.txt" < "b~". */
	OK("x/y", 0, "f:B", "f:a", "f:b.txt", "f:b~");
	/* Two levels down, a link may climb two levels (and come back). */
	OK("x/y", 0, "l:up>../../z", "l:v>./../.././x/y/../../q");
	OK("", DIRTREE_ABSOLUTE_SYMLINKS, "l:abs>/usr/bin/env");
	/* msg may be NULL. */
	ck_assert_int_eq(dirtree_check((const uint8_t *)"", 0, NULL, 0, NULL), 0);
}
END_TEST

START_TEST(test_bad_names)
{
	BAD("input tree: \"a/..\": directory name \"..\" is not allowed", "a", 0, "d:..");
	BAD("input tree: \".\": file name \".\" is not allowed", "", 0, "f:.");
	BAD("input tree: \"a/b/c/d\": symlink name \"c/d\" contains \"/\"", "a/b", 0, "l:c/d>x");
	BAD("input tree: \"a/b\": a file has an empty name", "a/b", 0, "f:");
	BAD("input tree: \".\": a directory has an empty name", "", 0, "d:");
}
END_TEST

START_TEST(test_order_and_duplicates)
{
	BAD("input tree: \"p/a\": files are not sorted by name (\"a\" is listed after \"b\")", "p",
	    0, "f:b", "f:a");
	BAD("input tree: \"B\": directories are not sorted by name (\"B\" is listed after \"a\")",
	    "", 0, "d:a", "d:B");
	BAD("input tree: \"x\": two files have this name", "", 0, "f:x", "f:x");
	BAD("input tree: \"x\": two symlinks have this name", "", 0, "l:x>a", "l:x>b");
	/* Across the lists: each one sorted, one name in two of them. */
	BAD("input tree: \"d/x\": the name is used by both a file and a symlink", "d", 0, "f:a",
	    "f:x", "l:b>a", "l:x>/etc");
	BAD("input tree: \"m\": the name is used by both a file and a directory", "", 0, "f:m",
	    "d:a", "d:m", "l:z>a");
	BAD("input tree: \"m\": the name is used by both a directory and a symlink", "", 0, "f:z",
	    "d:m", "l:a>b", "l:m>b");
}
END_TEST

START_TEST(test_symlink_targets)
{
	BAD("input tree: \"abs\": symlink target \"/etc/passwd\" is absolute, and this server's "
	    "symlink_absolute_path_strategy is DISALLOWED",
	    "", 0, "l:abs>/etc/passwd");
	BAD("input tree: \"up\": symlink target \"..\" leads above the input root", "", 0,
	    "l:up>..");
	BAD("input tree: \"a/b/up\": symlink target \"../../../x\" leads above the input root",
	    "a/b", 0, "l:up>../../../x");
	/* Climbing out and back in is still out for a moment. */
	BAD("input tree: \"a/l\": symlink target \"x/../../../a\" leads above the input root", "a",
	    0, "l:l>x/../../../a");
	BAD("input tree: \"e\": symlink target \"\" is empty", "", 0, "l:e>");
	/* The allowance is only for absolute targets. */
	BAD("input tree: \"up\": symlink target \"../x\" leads above the input root", "",
	    DIRTREE_ABSOLUTE_SYMLINKS, "l:up>../x");
}
END_TEST

START_TEST(test_digests_and_bytes)
{
	struct dir x;
	build(&x, (const char *const[]){"f:a", "d:b", NULL});
	x.fn[0].digest = NULL;
	uint8_t b[256];
	size_t n = protobuf_c_message_pack(&x.d.base, b);
	char *m = NULL;
	ck_assert_int_eq(dirtree_check(b, n, "q", 0, &m), -EINVAL);
	ck_assert_str_eq(m, "input tree: \"q/a\": the file has no valid digest");
	free(m);
	x.fn[0].digest = &x.dg;
	x.dg.hash = "abc";
	n = protobuf_c_message_pack(&x.d.base, b);
	ck_assert_int_eq(dirtree_check(b, n, "", 0, &m), -EINVAL);
	ck_assert_str_eq(m, "input tree: \"a\": the file has no valid digest");
	free(m);
	/* Garbage. */
	ck_assert_int_eq(dirtree_check((const uint8_t *)"\x0a\x05zz", 4, "g", 0, &m), -EINVAL);
	ck_assert_str_eq(m, "input tree: \"g\": not a valid Directory message");
	free(m);
	/* A NUL inside a name: protobuf-c would hand back "a" alone. */
	static const uint8_t nul[] = {0x1a, 0x08, 0x0a, 0x03, 'a', 0, 'b', 0x12, 0x01, 'x'};
	ck_assert_int_eq(dirtree_check(nul, sizeof nul, "", 0, &m), -EINVAL);
	ck_assert_str_eq(m, "input tree: \".\": a symlink's name or target contains a NUL byte");
	free(m);
	static const uint8_t nult[] = {0x1a, 0x08, 0x0a, 0x01, 'l', 0x12, 0x03, 'x', 0, '/'};
	ck_assert_int_eq(dirtree_check(nult, sizeof nult, "s", 0, &m), -EINVAL);
	ck_assert_str_eq(m, "input tree: \"s\": a symlink's name or target contains a NUL byte");
	free(m);
	/* Unknown fields are skipped, as protobuf requires. */
	static const uint8_t unk[] = {0x38, 0x01, 0x42, 0x00};
	ck_assert_int_eq(dirtree_check(unk, sizeof unk, "", 0, &m), 0);
}
END_TEST

START_TEST(test_relpaths)
{
	char *m = NULL;
	ck_assert_int_eq(dirtree_check_relpath("working_directory", "", true, &m), 0);
	ck_assert_int_eq(dirtree_check_relpath("output_paths[0]", "a/b.c/d", false, &m), 0);
	ck_assert_int_eq(dirtree_check_relpath("output_paths[0]", "..a/b..", false, &m), 0);
	static const struct {
		const char *p, *want;
	} bad[] = {
		{"", "output_files[1] is empty"},
		{"/etc", "output_files[1] \"/etc\" is absolute: it must be relative"},
		{"../x", "output_files[1] \"../x\": \"..\" is not allowed"},
		{"a/../../x", "output_files[1] \"a/../../x\": \"..\" is not allowed"},
		{"a/..", "output_files[1] \"a/..\": \"..\" is not allowed"},
		{"./a", "output_files[1] \"./a\": \".\" is not allowed"},
		{"a//b", "output_files[1] \"a//b\" has an empty component"},
		{"a/", "output_files[1] \"a/\" has an empty component"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		ck_assert_int_eq(dirtree_check_relpath("output_files[1]", bad[i].p, false, &m),
				 -EINVAL);
		ck_assert_str_eq(m, bad[i].want);
		free(m);
		m = NULL;
	}
	ck_assert_int_eq(dirtree_check_relpath("working_directory", "w/../..", true, NULL),
			 -EINVAL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dirtree");
	TCase *tc = tcase_create("domain");
	tcase_add_test(tc, test_good_trees);
	tcase_add_test(tc, test_bad_names);
	tcase_add_test(tc, test_order_and_duplicates);
	tcase_add_test(tc, test_symlink_targets);
	tcase_add_test(tc, test_digests_and_bytes);
	tcase_add_test(tc, test_relpaths);
	suite_add_tcase(s, tc);
	return check_run(s);
}
