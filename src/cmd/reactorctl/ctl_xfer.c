/*
 * ctl_xfer.c - reactorctl's CAS transfers (see ctl_cas.h), over the
 * programs' one CAS client (domain/cas_client.h): this file turns its
 * errors into reactorctl's exit codes and messages, draws the progress
 * bar, and keeps what only a command line has (digest arguments, the
 * `upload` of a file under a digest given by hand, downloads to a path).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/reactorctl/ctl.h"
#include "cmd/reactorctl/ctl_cas.h"
#include "core/digest.h"
#include "core/util.h"
#include "domain/cas_client.h"
#include "rpc/grpc.h"

/* Data bytes hashed per read. */
#define HASH_CHUNK (1 << 20)

/* "HASH/SIZE": the hash is passed through unchecked (the server validates
 * digests, and the tests want bad ones to reach it); SIZE must be an
 * integer, negative allowed for the same reason. */
int cas_parse_digest_arg(const char *arg, char **hash, int64_t *size)
{
	const char *slash = strrchr(arg, '/');
	if (!slash || !slash[1])
		return -1;
	char *end;
	errno = 0;
	long long v = strtoll(slash + 1, &end, 10);
	if (errno || *end)
		return -1;
	*hash = xstrndup(arg, (size_t)(slash - arg));
	*size = v;
	return 0;
}

/* The progress bar of the transfer in flight: downloads draw one only
 * when the caller asked (want), uploads always. */
static struct {
	struct ctl *c;
	bool want, active;
	struct ctl_progress p;
} prog;

static void prog_begin(void *arg, const char *verb, const char *path, int64_t total)
{
	(void)arg;
	bool up = strcmp(verb, "upload") == 0;
	if (up && path && prog.want)
		ctl_info(prog.c, "streaming %s", path);
	prog.active = up || prog.want;
	if (prog.active)
		ctl_progress_start(&prog.p, prog.c, verb, total);
}

static void prog_add(void *arg, int64_t n)
{
	(void)arg;
	if (prog.active)
		ctl_progress_add(&prog.p, n);
}

static void prog_end(void *arg)
{
	(void)arg;
	if (prog.active)
		ctl_progress_end(&prog.p);
	prog.active = false;
}

static const struct casc_progress prog_ops = {prog_begin, prog_add, prog_end};

/* The CAS client on ctl_client(), or NULL (c->fail_rc says why). */
static struct casc *cas_of(struct ctl *c)
{
	static struct casc cas;
	static bool ready;
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return NULL;
	if (!ready) {
		casc_init(&cas, c->base, cl, c->instance);
		cas.timeout_us = c->timeout_us;
		cas.stream_us = c->timeout_set ? c->timeout_us : 0;
		cas.progress = &prog_ops;
		ready = true;
	}
	prog.c = c;
	prog.want = false;
	return &cas;
}

/* A cas_client result as an exit code, its error printed: the server's
 * status as "CODE: message", a local failure as it is. */
static int cas_rv(struct ctl *c, struct casc *cas, int rc, char *msg)
{
	int rv;
	if (rc == 0)
		rv = ctl_status(c, GRPC_OK, NULL);
	else if (cas->status)
		rv = ctl_status(c, cas->status, cas->status_msg);
	else
		rv = ctl_err(CTL_FAIL, "%s", msg ? msg : "failed");
	free(msg);
	return rv;
}

static int hash_file(int fd, const char *path, struct digest *d)
{
	struct hasher *h = hasher_new();
	uint8_t *buf = xmalloc(HASH_CHUNK);
	ssize_t n;
	while ((n = read(fd, buf, HASH_CHUNK)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "reactorctl: %s: %s\n", path, strerror(errno));
			free(buf);
			hasher_free(h);
			return -1;
		}
		hasher_update(h, buf, (size_t)n);
	}
	hasher_final(h, d);
	hasher_free(h);
	free(buf);
	return lseek(fd, 0, SEEK_SET) == 0 ? 0 : -1;
}

/* The file to upload, open; 0 or the exit status. */
static int upload_open(const char *path, int *fd, struct stat *st)
{
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0 || fstat(*fd, st) != 0) {
		fprintf(stderr, "reactorctl: %s: %s\n", path, strerror(errno));
		if (*fd >= 0)
			close(*fd);
		return CTL_FAIL;
	}
	if (!S_ISREG(st->st_mode)) {
		fprintf(stderr, "reactorctl: %s: not a regular file\n", path);
		close(*fd);
		return CTL_FAIL;
	}
	return 0;
}

/* The digest to upload under: the one given, or the file's.  0 or the
 * exit status. */
static int upload_digest(int fd, const char *path, const char *digest_arg, char **hash,
			 int64_t *size)
{
	if (digest_arg) {
		if (cas_parse_digest_arg(digest_arg, hash, size) != 0) {
			fprintf(stderr, "reactorctl: bad digest \"%s\": want HASH/SIZE\n",
				digest_arg);
			return 2;
		}
		return 0;
	}
	struct digest d;
	if (hash_file(fd, path, &d) != 0)
		return 1;
	*hash = xstrdup(d.hex);
	*size = d.size;
	return 0;
}

int cas_write_file(struct ctl *c, const char *path, const char *digest_arg, char **out)
{
	*out = NULL;
	struct casc *cas = cas_of(c);
	if (!cas)
		return c->fail_rc;
	int fd;
	struct stat st;
	int rv = upload_open(path, &fd, &st);
	if (rv != 0)
		return rv;
	char *hash;
	int64_t size;
	rv = upload_digest(fd, path, digest_arg, &hash, &size);
	if (rv != 0) {
		close(fd);
		return rv;
	}
	char *msg = NULL;
	int rc = casc_write_fd(cas, hash, size, fd, st.st_size, path, &msg);
	rv = cas_rv(c, cas, rc, msg);
	if (rv == CTL_OK)
		*out = xasprintf("%s/%" PRId64, hash, size);
	free(hash);
	close(fd);
	return rv;
}

int cas_read_fd(struct ctl *c, const char *hash, int64_t size, int fd, const char *what,
		bool progress)
{
	struct casc *cas = cas_of(c);
	if (!cas)
		return c->fail_rc;
	prog.want = progress;
	char *msg = NULL;
	int rc = casc_read_fd(cas, hash, size, fd, what, &msg);
	prog.want = false;
	return cas_rv(c, cas, rc, msg);
}

int cas_parse_digest(const char *arg, struct digest *d)
{
	char *hash;
	int64_t size;
	char *err = NULL;
	if (cas_parse_digest_arg(arg, &hash, &size) != 0)
		return ctl_err(-1, "bad digest '%s': want HASH/SIZE", arg);
	int rv = digest_parse(hash, size, d, &err);
	free(hash);
	if (rv != 0) {
		ctl_err(0, "bad digest '%s': %s", arg, err ? err : "not a SHA-256 digest");
		free(err);
		return -1;
	}
	return 0;
}

int cas_max_batch(struct ctl *c, int64_t *max_batch)
{
	struct casc *cas = cas_of(c);
	if (!cas)
		return c->fail_rc;
	char *msg = NULL;
	int rv = cas_rv(c, cas, casc_caps(cas, &msg), msg);
	*max_batch = cas->max_batch;
	return rv;
}

int cas_read_mem(struct ctl *c, const struct digest *d, uint8_t **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	struct casc *cas = cas_of(c);
	if (!cas)
		return c->fail_rc;
	char *msg = NULL;
	int rc = casc_read_mem(cas, d, buf, len, &msg);
	return cas_rv(c, cas, rc, msg);
}

int cas_get_to_path(struct ctl *c, const struct digest *d, const char *path, bool exec,
		    bool progress)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? xstrndup(path, (size_t)(slash - path) + 1) : xstrdup("");
	char *tmp = xasprintf("%s.%s.reactorctl-XXXXXX", dir, slash ? slash + 1 : path);
	free(dir);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		int rv = ctl_err(CTL_FAIL, "%s: %s", path, strerror(errno));
		free(tmp);
		return rv;
	}
	int rv = cas_read_fd(c, d->hex, d->size, fd, path, progress);
	mode_t um = umask(0);
	umask(um);
	if (rv == CTL_OK && fchmod(fd, (exec ? 0777 : 0666) & ~um) != 0)
		rv = ctl_err(CTL_FAIL, "%s: %s", path, strerror(errno));
	if (close(fd) != 0 && rv == CTL_OK)
		rv = ctl_err(CTL_FAIL, "%s: %s", path, strerror(errno));
	if (rv == CTL_OK && rename(tmp, path) != 0)
		rv = ctl_err(CTL_FAIL, "%s: %s", path, strerror(errno));
	if (rv != CTL_OK)
		unlink(tmp);
	free(tmp);
	return rv;
}

int cas_find_missing(struct ctl *c, const struct digest *d, size_t n, bool *missing)
{
	struct casc *cas = cas_of(c);
	if (!cas)
		return c->fail_rc;
	char *msg = NULL;
	int rc = casc_find_missing(cas, d, n, missing, &msg);
	return cas_rv(c, cas, rc, msg);
}

void cas_blobs_file(struct cas_blobs *s, const char *path, const struct digest *d)
{
	if (s->n == s->cap)
		s->b = xrealloc(s->b, (s->cap = s->cap ? s->cap * 2 : 64) * sizeof(*s->b));
	s->b[s->n++] = (struct cas_blob){.d = *d, .path = xstrdup(path)};
}

void cas_blobs_mem(struct cas_blobs *s, uint8_t *data, size_t len, struct digest *out)
{
	digest_of(data, len, out);
	if (s->n == s->cap)
		s->b = xrealloc(s->b, (s->cap = s->cap ? s->cap * 2 : 64) * sizeof(*s->b));
	s->b[s->n++] = (struct cas_blob){.d = *out, .data = data};
}

void cas_blobs_free(struct cas_blobs *s)
{
	for (size_t i = 0; i < s->n; i++) {
		free(s->b[i].path);
		free(s->b[i].data);
	}
	free(s->b);
	memset(s, 0, sizeof(*s));
}

int cas_blobs_upload(struct ctl *c, struct cas_blobs *s, int64_t *sent, int64_t *bytes)
{
	struct casc *cas = cas_of(c);
	if (!cas)
		return c->fail_rc;
	struct casc_blob *b = xcalloc(s->n ? s->n : 1, sizeof(*b));
	for (size_t i = 0; i < s->n; i++)
		b[i] = (struct casc_blob){
			.d = s->b[i].d, .data = s->b[i].data, .path = s->b[i].path};
	/* Announce each streamed file at -v. */
	prog.want = true;
	char *msg = NULL;
	int rc = casc_upload(cas, b, s->n, sent, bytes, &msg);
	prog.want = false;
	free(b);
	return cas_rv(c, cas, rc, msg);
}
