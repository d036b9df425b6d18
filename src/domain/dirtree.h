/*
 * dirtree.h - the rules a REAPI input tree and a Command's paths must obey
 * before anything is staged or run: pure checks on one Directory message
 * (or its bytes) and on one relative path, each answering 0 or -EINVAL
 * with a message that names the offending path.  No I/O, no state: the
 * worker runs them before it creates a file, reactord may run them on a
 * tree it is handed, and a fuzz target can feed them any bytes.
 */
#ifndef REACTOR_DOMAIN_DIRTREE_H
#define REACTOR_DOMAIN_DIRTREE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"
#include "proto/pb.h"

/* Flags of dirtree_check(). */
enum {
	/* Absolute symlink targets are allowed (the server advertises
	 * symlink_absolute_path_strategy ALLOWED); without it they are
	 * refused, as DISALLOWED promises clients. */
	DIRTREE_ABSOLUTE_SYMLINKS = 1u << 0,
};

/* Check one Directory message, the bytes buf[0..len), found at `path`
 * (relative to the input root, "" for the root itself; its number of
 * components is the depth the symlink check starts from).  The rules:
 *  - it decodes as a Directory;
 *  - every name is one path component: not empty, not "." or "..", no
 *    "/" and no NUL byte;
 *  - files, directories and symlinks are each sorted by name (bytewise,
 *    strictly: so no name repeats within a list), and no name is used in
 *    two of the lists;
 *  - every FileNode and DirectoryNode has a well-formed digest;
 *  - every symlink target is non-empty and has no NUL byte; an absolute
 *    one is refused unless flags has DIRTREE_ABSOLUTE_SYMLINKS; a relative
 *    one may not climb above the input root through ".." (counted from
 *    the symlink's own depth, lexically).
 * Returns 0, or -EINVAL with *msg (malloc'd; msg may be NULL) naming the
 * offending path, e.g. `input tree: "a/b/..": name ".." is not allowed`.
 * Safe on any bytes: this is the libFuzzer entry point. */
int dirtree_check(const uint8_t *buf, size_t len, const char *path, unsigned flags,
		  char **msg) WARN_UNUSED;

/* The same for a caller that already unpacked buf into d (both must be
 * the same message: buf is still read, for NUL bytes protobuf-c's strings
 * would hide). */
int dirtree_check_dir(const PbDirectory *d, const uint8_t *buf, size_t len, const char *path,
		      unsigned flags, char **msg) WARN_UNUSED;

/* Check a relative path of a Command (working_directory, an output path):
 * not absolute, no empty, "." or ".." component (so no "//" and no
 * trailing "/").  An empty path is accepted only with allow_empty (the
 * working_directory's default, the input root).  `field` names the field
 * in the message, e.g. "output_paths[2]".  Returns 0 or -EINVAL with
 * *msg, e.g. `output_paths[2] "../x": ".." is not allowed`. */
int dirtree_check_relpath(const char *field, const char *p, bool allow_empty,
			  char **msg) WARN_UNUSED;

#endif
