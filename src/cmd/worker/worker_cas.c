/*
 * worker_cas.c - reactor-worker's CAS access (worker_cas.h): the programs'
 * CAS client (domain/cas_client.c) does the RPCs; this file adds where
 * the worker's files come from and go to (worker_path.h) and turns its
 * errors into WCAS_MISSING / WCAS_EIO.
 */
#include "cmd/worker/worker_cas.h"
#include "cmd/worker/worker_path.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"

#define RPC_TIMEOUT_US (120 * 1000000LL)

static int wrc(int rc)
{
	return rc == 0 ? 0 : rc == -ENOENT ? WCAS_MISSING : WCAS_EIO;
}

/* Open a blob's file for reading: beneath b->at, never through a
 * symlink at the end.  fd or -1 with *err. */
static int open_blob(const struct casc_blob *b, char **err)
{
	int fd = b->at == AT_FDCWD
			 ? open(b->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
			 : wpath_open(b->at, b->path, O_RDONLY | O_NOFOLLOW, 0, WPATH_BENEATH);
	if (fd < 0) {
		int e = b->at == AT_FDCWD ? -errno : fd;
		*err = xasprintf("cannot open %s: %s", b->path, wpath_strerror(e));
		return -1;
	}
	return fd;
}

int wcas_init(struct wcas *w, struct event_base *base, struct rc_client *cl, const char *instance,
	      char **err)
{
	casc_init(&w->c, base, cl, instance);
	w->c.timeout_us = RPC_TIMEOUT_US;
	w->c.stream_us = RPC_TIMEOUT_US * 5;
	w->c.open_blob = open_blob;
	int rc = casc_caps(&w->c, err);
	w->max_batch = w->c.max_batch;
	w->absolute_symlinks = w->c.absolute_symlinks;
	return wrc(rc);
}

int wcas_read_many(struct wcas *w, const struct digest *d, size_t n, uint8_t **out, size_t *lens,
		   char **err)
{
	return wrc(casc_read_many(&w->c, d, n, out, lens, err));
}

/* ---- files ----------------------------------------------------------------------- */

/* A new file of the input tree: created beneath at, never through a
 * symlink, never over something that exists.  fd or -1 with *err. */
static int create_input(int at, const char *path, bool exec, char **err)
{
	int fd = wpath_open(at, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, exec ? 0755 : 0644,
			    WPATH_NO_SYMLINKS);
	if (fd < 0) {
		*err = xasprintf("cannot create %s: %s", path, wpath_strerror(fd));
		return -1;
	}
	return fd;
}

static int write_file(int at, const char *path, const uint8_t *data, size_t len, bool exec,
		      char **err)
{
	int fd = create_input(at, path, exec, err);
	if (fd < 0)
		return WCAS_EIO;
	while (len > 0) {
		ssize_t n = write(fd, data, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			*err = xasprintf("cannot write %s: %s", path, strerror(errno));
			close(fd);
			return WCAS_EIO;
		}
		data += n;
		len -= (size_t)n;
	}
	if (close(fd) != 0) {
		*err = xasprintf("cannot write %s: %s", path, strerror(errno));
		return WCAS_EIO;
	}
	return 0;
}

static int copy_file(int at, const char *from, const char *to, bool exec, char **err)
{
	int in = wpath_open(at, from, O_RDONLY | O_NOFOLLOW, 0, WPATH_NO_SYMLINKS);
	if (in < 0) {
		*err = xasprintf("cannot open %s: %s", from, wpath_strerror(in));
		return WCAS_EIO;
	}
	int out = create_input(at, to, exec, err);
	if (out < 0) {
		close(in);
		return WCAS_EIO;
	}
	char buf[65536];
	ssize_t n;
	int rc = 0;
	while ((n = read(in, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
		if (n < 0)
			continue;
		if (write(out, buf, (size_t)n) != n) {
			*err = xasprintf("cannot write %s: %s", to, strerror(errno));
			rc = WCAS_EIO;
			break;
		}
	}
	close(in);
	if (close(out) != 0 && rc == 0) {
		*err = xasprintf("cannot write %s: %s", to, strerror(errno));
		rc = WCAS_EIO;
	}
	return rc;
}

/* wcas_fetch_files' sink: the distinct files, by index into f. */
struct fetch {
	int at;
	const struct wcas_file *f;
	const size_t *idx;
};

static int fetch_data(void *arg, size_t i, const uint8_t *bytes, size_t len, char **err)
{
	struct fetch *x = arg;
	const struct wcas_file *f = &x->f[x->idx[i]];
	return write_file(x->at, f->path, bytes, len, f->exec, err);
}

static int fetch_fd(void *arg, size_t i, char **err)
{
	struct fetch *x = arg;
	const struct wcas_file *f = &x->f[x->idx[i]];
	return create_input(x->at, f->path, f->exec, err);
}

static int fetch_fd_done(void *arg, size_t i, int fd, char **err)
{
	struct fetch *x = arg;
	if (close(fd) != 0 && err) {
		*err = xasprintf("cannot write %s: %s", x->f[x->idx[i]].path, strerror(errno));
		return WCAS_EIO;
	}
	return 0;
}

int wcas_fetch_files(struct wcas *w, int at, const struct wcas_file *f, size_t n, char **err)
{
	/* first[i]: index of the first entry with the same digest. */
	size_t *first = xcalloc(n ? n : 1, sizeof(*first));
	size_t *idx = xcalloc(n ? n : 1, sizeof(*idx));
	struct digest *d = xcalloc(n ? n : 1, sizeof(*d));
	size_t nd = 0;
	for (size_t i = 0; i < n; i++) {
		first[i] = i;
		for (size_t j = 0; j < i; j++)
			if (first[j] == j && digest_eq(&f[j].d, &f[i].d)) {
				first[i] = j;
				break;
			}
		if (first[i] == i) {
			idx[nd] = i;
			d[nd++] = f[i].d;
		}
	}
	static const struct casc_sink sink = {fetch_data, fetch_fd, fetch_fd_done};
	struct fetch x = {at, f, idx};
	int rc = wrc(casc_fetch(&w->c, d, nd, &sink, &x, err));
	for (size_t i = 0; i < n && rc == 0; i++)
		if (first[i] != i)
			rc = copy_file(at, f[first[i]].path, f[i].path, f[i].exec, err);
	free(first);
	free(idx);
	free(d);
	return rc;
}

int wcas_digest_file(const char *path, struct digest *out)
{
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = wcas_digest_fd(fd, out);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int wcas_digest_fd(int fd, struct digest *out)
{
	struct hasher *h = hasher_new();
	char buf[65536];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
		if (n > 0)
			hasher_update(h, buf, (size_t)n);
	int saved = errno;
	hasher_final(h, out);
	hasher_free(h);
	if (n < 0) {
		errno = saved;
		return -1;
	}
	return 0;
}

/* ---- uploads ------------------------------------------------------------------- */

int wcas_upload(struct wcas *w, const struct wcas_blob *b, size_t n, char **err)
{
	*err = NULL;
	struct casc_blob *cb = xcalloc(n ? n : 1, sizeof(*cb));
	for (size_t i = 0; i < n; i++)
		cb[i] = (struct casc_blob){
			.d = b[i].d, .data = b[i].data, .path = b[i].path, .at = b[i].at};
	int rc = wrc(casc_upload(&w->c, cb, n, NULL, NULL, err));
	free(cb);
	return rc;
}
