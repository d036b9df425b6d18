/*
 * worker_path.h - path resolution that never leaves a directory, for
 * reactor-worker's staging and output collection.  Every path an action
 * can influence (the working directory, output paths, files inside an
 * output directory) is resolved beneath the action's exec root with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS), so an input symlink
 * (or one the action made) pointing outside can never make the worker
 * create, read or upload anything there.  On kernels without openat2 the
 * same calls walk the path one component at a time with O_NOFOLLOW,
 * refusing every symlink on the way (stricter, never looser).
 */
#ifndef REACTOR_WORKER_PATH_H
#define REACTOR_WORKER_PATH_H

#include <stdbool.h>
#include <sys/types.h>

/* Resolution modes of wpath_open(). */
enum {
	WPATH_BENEATH = 0,	   /* symlinks followed while they stay beneath */
	WPATH_NO_SYMLINKS = 1 << 0 /* no symlink anywhere in the path */
};

/* Open `rel` (relative, already checked lexically: no "..", no empty
 * component; "" or "." is root itself) beneath the directory fd `root`,
 * with open(2) `flags` (O_CLOEXEC is added) and `mode`.  Pass O_NOFOLLOW
 * in flags to refuse a symlink as the last component.  Returns the fd or
 * a negative errno: -EXDEV when the path would leave root (an absolute
 * symlink, or ".." above it), -ELOOP for a refused symlink, -ENOENT,
 * -ENOTDIR... */
int wpath_open(int root, const char *rel, int flags, mode_t mode, int how);

/* Create the directory `rel` and its missing parents beneath root (mode
 * 0755; existing ones are fine when they resolve beneath root).  Returns
 * 0 or a negative errno; *bad gets the prefix of rel that failed
 * (malloc'd; the caller frees it) so the message can name it. */
int wpath_mkdirs(int root, const char *rel, char **bad);

/* What a negative code from the calls above means, for messages:
 * "leads outside the exec root (through a symlink)" for -EXDEV, ... */
const char *wpath_strerror(int code);

/* REACTOR_WORKER_NO_OPENAT2=1 in the environment makes the calls above
 * use the walk even where openat2 exists (for tests). */

#endif
