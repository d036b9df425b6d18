/*
 * fuzz_dirtree.c - libFuzzer target for the input-tree rules
 * (src/domain/dirtree.c).  The first byte chooses what the rest is: a
 * Directory message checked at a depth and with a symlink policy, or a
 * Command path.  Besides "no crash, no leak", the rules must be monotone:
 * a tree accepted where absolute symlinks are refused is accepted where
 * they are allowed, and one accepted at the root is accepted deeper down
 * (a deeper symlink may climb further); a refusal always says why.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "domain/dirtree.h"
#include "core/util.h"

/* One verdict: 0, or -EINVAL with a non-empty message. */
static int verdict(int rc, char *msg)
{
	CHECK(rc == 0 || rc == -EINVAL);
	CHECK((rc == 0) == (msg == NULL));
	if (msg)
		CHECK(msg[0] != '\0');
	free(msg);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t mode = data[0];
	data++, size--;
	char *msg = NULL;
	if (mode & 0x80) {
		/* A Command path, as a C string (NULs end it, as protobuf-c's do). */
		char *p = xmalloc(size + 1);
		memcpy(p, data, size);
		p[size] = '\0';
		bool allow_empty = mode & 1;
		int rc = verdict(dirtree_check_relpath("output_paths[0]", p, allow_empty, &msg),
				 msg);
		if (rc == 0) {
			CHECK(p[0] != '/');
			CHECK(!strstr(p, "//"));
			CHECK(p[0] != '\0' || allow_empty);
		}
		free(p);
		return 0;
	}
	static const char *const depths[] = {"", "a", "a/b", "a/b/c/d"};
	const char *path = depths[mode & 3];
	unsigned strict = 0, lax = DIRTREE_ABSOLUTE_SYMLINKS;
	msg = NULL;
	int r_strict = verdict(dirtree_check(data, size, path, strict, &msg), msg);
	msg = NULL;
	int r_lax = verdict(dirtree_check(data, size, path, lax, &msg), msg);
	if (r_strict == 0)
		CHECK(r_lax == 0);
	if ((mode & 3) == 0 && r_strict == 0) {
		msg = NULL;
		CHECK(verdict(dirtree_check(data, size, "x/y/z", strict, &msg), msg) == 0);
	}
	/* msg may be NULL. */
	(void)dirtree_check(data, size, path, strict, NULL);
	return 0;
}
