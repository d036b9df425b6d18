/*
 * worker_path.c - beneath-the-root path resolution (worker_path.h):
 * openat2 when the kernel has it, else a component walk with O_NOFOLLOW.
 */
#define _GNU_SOURCE
#include "cmd/worker/worker_path.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/util.h"

/* -1: not decided yet; REACTOR_WORKER_NO_OPENAT2=1 in the environment
 * forces the walk (tests cover both ways with it). */
static int no_openat2 = -1;

static bool walk_only(void)
{
	if (no_openat2 < 0) {
		const char *e = getenv("REACTOR_WORKER_NO_OPENAT2");
		no_openat2 = e && *e && strcmp(e, "0") != 0;
	}
	return no_openat2 == 1;
}

/* The walk: every directory on the way is opened with O_NOFOLLOW, so any
 * symlink stops it (-ELOOP); ".." cannot occur (the caller checked) and
 * is refused anyway. */
static int walk(int root, const char *rel, int flags, mode_t mode)
{
	int cur = openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (cur < 0)
		return -errno;
	const char *s = rel;
	for (;;) {
		size_t l = strcspn(s, "/");
		bool last = s[l] == '\0';
		char *comp = xstrndup(s, l);
		int fd;
		if (!strcmp(comp, "..")) {
			fd = -1;
			errno = EXDEV;
		} else if (last) {
			fd = openat(cur, *comp ? comp : ".", flags | O_NOFOLLOW | O_CLOEXEC, mode);
		} else if (!*comp || !strcmp(comp, ".")) {
			free(comp);
			s += l + 1;
			continue;
		} else {
			fd = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		int e = errno;
		struct stat st;
		if (fd < 0 && (e == ENOTDIR || e == ELOOP) &&
		    fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
			e = ELOOP;
		free(comp);
		close(cur);
		if (fd < 0)
			return -e;
		if (last)
			return fd;
		cur = fd;
		s += l + 1;
	}
}

int wpath_open(int root, const char *rel, int flags, mode_t mode, int how)
{
	if (!rel || !*rel)
		rel = ".";
	if (!walk_only()) {
		struct open_how oh = {
			.flags = (uint64_t)(flags | O_CLOEXEC),
			.mode = (flags & O_CREAT) ? mode : 0,
			.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
				   ((how & WPATH_NO_SYMLINKS) ? RESOLVE_NO_SYMLINKS : 0),
		};
		for (int tries = 0; tries < 8; tries++) {
			long fd = syscall(SYS_openat2, root, rel, &oh, sizeof(oh));
			if (fd >= 0)
				return (int)fd;
			if (errno == EAGAIN || errno == EINTR)
				continue; /* a rename raced the lookup */
			if (errno != ENOSYS)
				return -errno;
			no_openat2 = 1;
			break;
		}
		if (no_openat2 != 1)
			return -EAGAIN;
	}
	return walk(root, rel, flags, mode);
}

int wpath_mkdirs(int root, const char *rel, char **bad)
{
	*bad = NULL;
	char *p = xstrdup(rel ? rel : "");
	int rc = 0;
	for (char *s = p; *s && rc == 0;) {
		size_t l = strcspn(s, "/");
		char save = s[l];
		/* p up to s is the parent; s[0..l) the component to make. */
		char *comp = xstrndup(s, l);
		char *parent = xstrndup(p, (size_t)(s - p) ? (size_t)(s - p) - 1 : 0);
		int pfd = wpath_open(root, parent, O_PATH | O_DIRECTORY, 0, WPATH_BENEATH);
		if (pfd < 0) {
			rc = pfd;
			*bad = parent;
			parent = NULL;
		} else {
			if (mkdirat(pfd, comp, 0755) != 0 && errno != EEXIST) {
				rc = -errno;
				s[l] = '\0';
				*bad = xstrdup(p);
				s[l] = save;
			}
			close(pfd);
		}
		free(parent);
		free(comp);
		s += l + (save == '/');
	}
	if (rc == 0) {
		int fd = wpath_open(root, p, O_PATH | O_DIRECTORY, 0, WPATH_BENEATH);
		if (fd < 0) {
			rc = fd;
			*bad = xstrdup(p);
		} else {
			close(fd);
		}
	}
	free(p);
	return rc;
}

const char *wpath_strerror(int code)
{
	switch (-code) {
	case EXDEV: return "leads outside the exec root (through a symlink)";
	case ELOOP: return "goes through a symlink where none is allowed";
	case ENOTDIR: return "is not a directory";
	case EEXIST: return "exists already";
	default: return strerror(-code);
	}
}
