/*
 * ctl_xfer.c - reactorctl's CAS transfers (see ctl_cas.h): ByteStream
 * Write of a file, streamed in bounded chunks and paced by
 * QueryWriteStatus; ByteStream Read into a file descriptor, hashed as it
 * arrives and verified against the digest; both with a progress bar.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "cmd/reactorctl/ctl.h"
#include "cmd/reactorctl/ctl_cas.h"
#include "core/digest.h"
#include "core/util.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "proto/pb.h"
#include "rpc/client.h"
#include "rpc/grpc.h"

/* ---- CAS transfers ------------------------------------------------------ */

#define BS_READ	 "/google.bytestream.ByteStream/Read"
#define BS_WRITE "/google.bytestream.ByteStream/Write"
#define BS_QUERY "/google.bytestream.ByteStream/QueryWriteStatus"
#define CAS_FIND "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"
#define CAS_BATCH_UPDATE                                                                           \
	"/build.bazel.remote.execution.v2.ContentAddressableStorage/BatchUpdateBlobs"

/* Data bytes per WriteRequest.  Reads arrive in whatever chunks the
 * server picks. */
#define WRITE_CHUNK (1 << 20)
/* The client library has no per-stream backpressure, so an upload keeps
 * at most this many bytes beyond what the server reports committed
 * (QueryWriteStatus on the same connection); client memory stays bounded
 * whatever the file size. */
#define UPLOAD_AHEAD (32 << 20)
/* How long to let the loop send before asking for the committed size again. */
#define UPLOAD_POLL_US 2000
/* Room before the data for the gRPC prefix and the WriteRequest fields. */
#define WRITE_HEAD_MAX 1024

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

static char *read_resource(const char *instance, const char *hash, int64_t size)
{
	return xasprintf("%s%sblobs/%s/%" PRId64, instance, *instance ? "/" : "", hash, size);
}

static char *write_resource(const char *instance, const char *hash, int64_t size)
{
	char *uuid = uuid4();
	char *r = xasprintf("%s%suploads/%s/blobs/%s/%" PRId64, instance, *instance ? "/" : "",
			    uuid, hash, size);
	free(uuid);
	return r;
}

/* A Write or Read in flight.  Callbacks only record; the command loops
 * look at the record after each pass of the event loop. */
struct xfer {
	bool done;
	int code;
	char *msg;
	int64_t committed;	  /* Write: WriteResponse.committed_size, -1 until seen */
	int fd;			  /* Read: output */
	struct hasher *h;	  /* Read: hash of what arrived */
	int64_t got;		  /* Read: bytes received */
	int io_errno;		  /* Read: output write failed */
	bool bad_msg;		  /* a response message did not parse */
	struct ctl_progress prog; /* Read */
};

static void xfer_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct xfer *x = arg;
	x->done = true;
	x->code = code;
	x->msg = xstrdup(message);
}

static void write_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct xfer *x = arg;
	Google__Bytestream__WriteResponse *r =
		google__bytestream__write_response__unpack(NULL, len, msg);
	if (!r) {
		x->bad_msg = true;
		return;
	}
	x->committed = r->committed_size;
	google__bytestream__write_response__free_unpacked(r, NULL);
}

/* QueryWriteStatus on the upload: returns the gRPC code. */
static int query_write(struct rc_client *cl, const char *name, int64_t to, int64_t *committed,
		       bool *complete)
{
	Google__Bytestream__QueryWriteStatusRequest req =
		GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_REQUEST__INIT;
	req.resource_name = (char *)name;
	ProtobufCMessage *out = NULL;
	int code = rc_unary(cl, BS_QUERY, &req.base,
			    &google__bytestream__query_write_status_response__descriptor, &out,
			    NULL, to);
	if (code == GRPC_OK) {
		const Google__Bytestream__QueryWriteStatusResponse *r = (const void *)out;
		*committed = r->committed_size;
		*complete = r->complete;
		protobuf_c_message_free_unpacked(out, NULL);
	}
	return code;
}

/* Run the event loop for `us` microseconds. */
static void loop_for(struct event_base *base, int64_t us)
{
	struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static int hash_file(int fd, const char *path, struct digest *d)
{
	struct hasher *h = hasher_new();
	uint8_t *buf = xmalloc(WRITE_CHUNK);
	ssize_t n;
	while ((n = read(fd, buf, WRITE_CHUNK)) != 0) {
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

/* An upload in flight: the file, the Write call and how far both got. */
struct upload {
	struct rc_client *cl;
	struct event_base *base;
	struct rc_call *k;
	struct xfer x;
	const char *path, *name;
	int fd;
	int64_t to, size; /* size of the file */
	int64_t off;	  /* bytes sent */
	int64_t acked;	  /* bytes the server reported committed */
	bool window;	  /* QueryWriteStatus works: pace by it */
	bool local_err;	  /* reading the file failed */
	bool exists;	  /* someone else stored the blob meanwhile */
	struct ctl_progress prog;
};

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

/* Over the limit: let the server drain to half of it before queueing
 * more, polling every UPLOAD_POLL_US, not every RTT.  False when the
 * upload must stop sending (the blob exists, or the Write ended). */
static bool upload_pace(struct upload *u)
{
	if (!u->window || u->off - u->acked < UPLOAD_AHEAD)
		return true;
	for (;;) {
		bool complete = false;
		int code = query_write(u->cl, u->name, u->to, &u->acked, &complete);
		if (complete) {
			u->exists = true;
			rc_call_cancel(u->k);
			return false;
		}
		if (code == GRPC_NOT_FOUND)
			return false; /* the Write ended: its status tells */
		if (code != GRPC_OK) {
			u->window = false; /* no QueryWriteStatus: unpaced */
			return true;
		}
		if (u->off - u->acked <= UPLOAD_AHEAD / 2 || u->x.done || u->x.committed >= 0)
			return true;
		loop_for(u->base, UPLOAD_POLL_US);
	}
}

/* The next chunk of the file into data; its length, or -1. */
static ssize_t upload_read(struct upload *u, uint8_t *data)
{
	int64_t left = u->size - u->off;
	size_t want = left < WRITE_CHUNK ? (size_t)left : WRITE_CHUNK;
	size_t got = 0;
	while (got < want) {
		ssize_t n = read(u->fd, data + got, want - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "reactorctl: %s: %s\n", u->path,
				n < 0 ? strerror(errno) : "file shrank while uploading");
			return -1;
		}
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* The WriteRequest fields in front of `got` data bytes at offset u->off
 * (resource_name = 1 on the first, write_offset = 2, finish_write = 3,
 * data = 10), into head; their length. */
static size_t upload_head(const struct upload *u, uint8_t *head, size_t got, bool last)
{
	size_t hl = 0;
	if (u->off == 0) {
		size_t nl = strlen(u->name);
		head[hl++] = 1 << 3 | 2;
		hl += pb_varint_put(head + hl, nl);
		memcpy(head + hl, u->name, nl);
		hl += nl;
	}
	if (u->off) {
		head[hl++] = 2 << 3;
		hl += pb_varint_put(head + hl, (uint64_t)u->off);
	}
	if (last) {
		head[hl++] = 3 << 3;
		head[hl++] = 1;
	}
	if (got) {
		head[hl++] = 10 << 3 | 2;
		hl += pb_varint_put(head + hl, got);
	}
	return hl;
}

/* Send the file while the server has not answered: an early
 * WriteResponse (the blob exists) or a failure ends the upload.  Then
 * wait for the Write's status. */
static void upload_send(struct upload *u)
{
	uint8_t *buf = xmalloc(WRITE_HEAD_MAX + WRITE_CHUNK);
	uint8_t *data = buf + WRITE_HEAD_MAX;
	while (!u->x.done && u->x.committed < 0) {
		if (!upload_pace(u))
			break;
		if (u->x.done || u->x.committed >= 0)
			break;
		ssize_t got = upload_read(u, data);
		if (got < 0) {
			u->local_err = true;
			rc_call_cancel(u->k);
			break;
		}
		bool last = u->off + got >= u->size;
		/* Fields in front of the data, right-aligned against it. */
		uint8_t head[WRITE_HEAD_MAX];
		size_t hl = upload_head(u, head, (size_t)got, last);
		uint8_t *msg = data - hl - 5;
		memcpy(data - hl, head, hl);
		grpc_prefix(msg, false, (uint32_t)(hl + (size_t)got));
		if (rc_call_send_raw(u->k, msg, 5 + hl + (size_t)got) != 0)
			break;
		u->off += got;
		ctl_progress_add(&u->prog, got);
		event_base_loop(u->base, EVLOOP_NONBLOCK);
		if (last)
			break;
	}
	if (!u->x.done)
		rc_call_close_send(u->k);
	while (!u->x.done)
		event_base_loop(u->base, EVLOOP_ONCE);
	free(buf);
}

int cas_write_file(struct ctl *c, const char *path, const char *digest_arg, char **out)
{
	*out = NULL;
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	struct event_base *base = c->base;
	const char *instance = c->instance;
	int64_t to = c->timeout_set ? c->timeout_us : 0;
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
	char *name = write_resource(instance, hash, size);
	struct upload u = {
		.cl = cl,
		.base = base,
		.x = {.committed = -1},
		.path = path,
		.name = name,
		.fd = fd,
		.to = to,
		.size = st.st_size,
		.window = true,
	};
	ctl_progress_start(&u.prog, c, "upload", st.st_size);
	rv = 1;
	if (strlen(name) > WRITE_HEAD_MAX - 64) {
		fprintf(stderr, "reactorctl: instance name too long\n");
		goto out;
	}
	u.k = rc_call_start(cl, BS_WRITE, to, NULL, 0, write_msg, xfer_done, &u.x);
	if (!u.k) {
		rv = ctl_status(c, GRPC_UNAVAILABLE, "connection is closed");
		goto out;
	}
	upload_send(&u);
	ctl_progress_end(&u.prog);
	if (u.local_err) {
		rv = 1;
	} else if (u.exists) {
		*out = xasprintf("%s/%" PRId64, hash, size);
		rv = 0;
	} else if (u.x.code != GRPC_OK) {
		rv = ctl_status(c, u.x.code, u.x.msg);
	} else if (u.x.bad_msg || u.x.committed != size) {
		fprintf(stderr, "reactorctl: server committed %" PRId64 " of %" PRId64 " bytes\n",
			u.x.committed, size);
	} else {
		*out = xasprintf("%s/%" PRId64, hash, size);
		rv = 0;
	}
out:
	free(u.x.msg);
	free(name);
	free(hash);
	close(fd);
	return rv;
}

/* The data field of a ReadResponse, found in place: a 1 MiB message is
 * not worth a protobuf-c unpack (an allocation and a copy each).  Unknown
 * fields are skipped as the wire format says.  Returns 0 or -1. */
static int read_response_data(const uint8_t *p, size_t len, const uint8_t **data, size_t *n)
{
	const uint8_t *end = p + len;
	*data = NULL;
	*n = 0;
	while (p < end) {
		uint64_t key, v;
		if (pb_varint_get(&p, end, &key) != 0)
			return -1;
		switch (key & 7) {
		case 0:
			if (pb_varint_get(&p, end, &v) != 0)
				return -1;
			break;
		case 1:
		case 5: {
			size_t w = (key & 7) == 1 ? 8 : 4;
			if ((size_t)(end - p) < w)
				return -1;
			p += w;
			break;
		}
		case 2:
			if (pb_varint_get(&p, end, &v) != 0 || v > (uint64_t)(end - p))
				return -1;
			if (key >> 3 == 10) { /* bytes data = 10; the last one wins */
				*data = p;
				*n = (size_t)v;
			}
			p += v;
			break;
		default: return -1;
		}
	}
	return 0;
}

static void read_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	struct xfer *x = arg;
	const uint8_t *data;
	size_t n;
	if (x->bad_msg || x->io_errno)
		return;
	if (read_response_data(msg, len, &data, &n) != 0) {
		x->bad_msg = true;
		rc_call_cancel(k);
		return;
	}
	hasher_update(x->h, data, n);
	x->got += (int64_t)n;
	ctl_progress_add(&x->prog, (int64_t)n);
	size_t off = 0;
	while (off < n) {
		ssize_t w = write(x->fd, data + off, n - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			x->io_errno = errno;
			rc_call_cancel(k);
			break;
		}
		off += (size_t)w;
	}
}

int cas_read_fd(struct ctl *c, const char *hash, int64_t size, int fd, const char *what,
		bool progress)
{
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	struct xfer x = {.committed = -1, .fd = fd};
	if (progress)
		ctl_progress_start(&x.prog, c, "download", size);
	x.h = hasher_new();
	char *name = read_resource(c->instance, hash, size);
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	req.resource_name = name;
	size_t n = google__bytestream__read_request__get_packed_size(&req);
	uint8_t *pb = xmalloc(n ? n : 1);
	google__bytestream__read_request__pack(&req, pb);
	int rv = CTL_FAIL;
	struct rc_call *k = rc_call_start(cl, BS_READ, c->timeout_set ? c->timeout_us : 0, NULL, 0,
					  read_msg, xfer_done, &x);
	if (!k) {
		rv = ctl_status(c, GRPC_UNAVAILABLE, "connection is closed");
	} else {
		rc_call_send(k, pb, n);
		rc_call_close_send(k);
		while (!x.done)
			event_base_loop(c->base, EVLOOP_ONCE);
		ctl_progress_end(&x.prog);
		struct digest d;
		hasher_final(x.h, &d);
		if (x.io_errno) {
			ctl_err(0, "%s: %s", what, strerror(x.io_errno));
		} else if (x.bad_msg) {
			ctl_err(0, "malformed ReadResponse");
		} else if (x.code != GRPC_OK) {
			rv = ctl_status(c, x.code, x.msg);
		} else if (d.size != size || strcmp(d.hex, hash) != 0) {
			ctl_err(0, "received %s/%" PRId64 ", not the requested %s/%" PRId64, d.hex,
				d.size, hash, size);
		} else {
			rv = CTL_OK;
		}
	}
	hasher_free(x.h);
	free(x.msg);
	free(pb);
	free(name);
	return rv;
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
	static int64_t cached = -1;
	if (cached < 0) {
		Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
			REV2(GET_CAPABILITIES_REQUEST__INIT);
		req.instance_name = (char *)c->instance;
		ProtobufCMessage *out;
		int rv = ctl_unary(
			c, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
			&req.base,
			&build__bazel__remote__execution__v2__server_capabilities__descriptor,
			&out);
		if (rv != CTL_OK)
			return rv;
		Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = (void *)out;
		cached = 4 << 20;
		if (caps->cache_capabilities &&
		    caps->cache_capabilities->max_batch_total_size_bytes > 0)
			cached = caps->cache_capabilities->max_batch_total_size_bytes;
		protobuf_c_message_free_unpacked(out, NULL);
	}
	*max_batch = cached;
	return CTL_OK;
}

int cas_read_mem(struct ctl *c, const struct digest *d, uint8_t **buf, size_t *len)
{
	*buf = NULL;
	*len = 0;
	FILE *f = tmpfile();
	if (!f)
		return ctl_err(CTL_FAIL, "temporary file: %s", strerror(errno));
	int rv = cas_read_fd(c, d->hex, d->size, fileno(f), "temporary file", false);
	if (rv == CTL_OK) {
		*buf = xmalloc((size_t)d->size + 1);
		if (pread(fileno(f), *buf, (size_t)d->size, 0) != (ssize_t)d->size) {
			rv = ctl_err(CTL_FAIL, "temporary file: %s", strerror(errno));
			free(*buf);
			*buf = NULL;
		} else {
			*len = (size_t)d->size;
		}
	}
	fclose(f);
	return rv;
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
	/* In slices: a request must stay under the message size limit. */
	enum { SLICE = 10000 };
	for (size_t i = 0; i < n; i++)
		missing[i] = false;
	for (size_t off = 0; off < n; off += SLICE) {
		size_t m = n - off < SLICE ? n - off : SLICE;
		PbDigest *ds = xcalloc(m, sizeof(*ds));
		PbDigest **dp = xcalloc(m, sizeof(*dp));
		for (size_t i = 0; i < m; i++) {
			build__bazel__remote__execution__v2__digest__init(&ds[i]);
			ds[i].hash = (char *)d[off + i].hex;
			ds[i].size_bytes = d[off + i].size;
			dp[i] = &ds[i];
		}
		PbFindMissing req = REV2(FIND_MISSING_BLOBS_REQUEST__INIT);
		req.instance_name = (char *)c->instance;
		req.n_blob_digests = m;
		req.blob_digests = dp;
		ProtobufCMessage *out;
		int rv = ctl_unary(
			c, CAS_FIND, &req.base,
			&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
			&out);
		free(ds);
		free(dp);
		if (rv != CTL_OK)
			return rv;
		const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r =
			(void *)out;
		for (size_t j = 0; j < r->n_missing_blob_digests; j++)
			for (size_t i = 0; i < m; i++)
				if (!missing[off + i] &&
				    strcmp(r->missing_blob_digests[j]->hash, d[off + i].hex) == 0 &&
				    r->missing_blob_digests[j]->size_bytes == d[off + i].size)
					missing[off + i] = true;
		protobuf_c_message_free_unpacked(out, NULL);
	}
	return CTL_OK;
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

/* Bytes of blob b, read whole (a small one: it goes in a batch). */
static uint8_t *blob_bytes(const struct cas_blob *b)
{
	uint8_t *buf = xmalloc((size_t)b->d.size + 1);
	if (b->data) {
		memcpy(buf, b->data, (size_t)b->d.size);
		return buf;
	}
	int fd = open(b->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	size_t got = 0;
	while (fd >= 0 && got < (size_t)b->d.size) {
		ssize_t n = read(fd, buf + got, (size_t)b->d.size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			break;
		}
		got += (size_t)n;
	}
	if (fd < 0 || got < (size_t)b->d.size) {
		ctl_err(0, "%s: %s", b->path,
			fd < 0 || errno != EIO ? strerror(errno) : "file shrank while uploading");
		if (fd >= 0)
			close(fd);
		free(buf);
		return NULL;
	}
	close(fd);
	return buf;
}

/* One BatchUpdateBlobs of s->b[idx[0..n)]. */
static int batch_update(struct ctl *c, struct cas_blobs *s, const size_t *idx, size_t n)
{
	PbBatchUpdate req = REV2(BATCH_UPDATE_BLOBS_REQUEST__INIT);
	req.instance_name = (char *)c->instance;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *rs =
		xcalloc(n, sizeof(*rs));
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request **rp =
		xcalloc(n, sizeof(*rp));
	PbDigest *ds = xcalloc(n, sizeof(*ds));
	int rv = CTL_OK;
	size_t made = 0;
	for (; made < n; made++) {
		const struct cas_blob *b = &s->b[idx[made]];
		build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(
			&rs[made]);
		build__bazel__remote__execution__v2__digest__init(&ds[made]);
		ds[made].hash = (char *)b->d.hex;
		ds[made].size_bytes = b->d.size;
		rs[made].digest = &ds[made];
		uint8_t *data = blob_bytes(b);
		if (!data) {
			rv = CTL_FAIL;
			break;
		}
		rs[made].data.data = data;
		rs[made].data.len = (size_t)b->d.size;
		rp[made] = &rs[made];
	}
	if (rv == CTL_OK) {
		req.n_requests = n;
		req.requests = rp;
		ProtobufCMessage *out;
		rv = ctl_unary(
			c, CAS_BATCH_UPDATE, &req.base,
			&build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
			&out);
		if (rv == CTL_OK) {
			const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *r =
				(void *)out;
			for (size_t i = 0; i < r->n_responses && rv == CTL_OK; i++) {
				const PbUpdateResp *e = r->responses[i];
				if (e->status && e->status->code != GRPC_OK)
					rv = ctl_err(CTL_FAIL, "%s: %s/%" PRId64 ": %s",
						     grpc_code_name(e->status->code),
						     e->digest ? e->digest->hash : "?",
						     e->digest ? e->digest->size_bytes : 0,
						     e->status->message);
			}
			protobuf_c_message_free_unpacked(out, NULL);
		}
	}
	for (size_t i = 0; i < made; i++)
		free(rs[i].data.data);
	free(rs);
	free(rp);
	free(ds);
	return rv;
}

int cas_blobs_upload(struct ctl *c, struct cas_blobs *s, int64_t *sent, int64_t *bytes)
{
	int64_t max_batch;
	int rv = cas_max_batch(c, &max_batch);
	if (rv != CTL_OK)
		return rv;
	/* Each digest once; the empty blob is always there. */
	struct digest *ds = xcalloc(s->n ? s->n : 1, sizeof(*ds));
	size_t *which = xcalloc(s->n ? s->n : 1, sizeof(*which));
	size_t nd = 0;
	struct digest_map seen;
	digest_map_init(&seen);
	struct digest_map_node *nodes = xcalloc(s->n ? s->n : 1, sizeof(*nodes));
	for (size_t i = 0; i < s->n; i++) {
		if (s->b[i].d.size == 0 || digest_map_find(&seen, &s->b[i].d))
			continue;
		memcpy(nodes[i].hash, s->b[i].d.hash, DIGEST_HASH_LEN);
		nodes[i].size = s->b[i].d.size;
		digest_map_insert(&seen, &nodes[i]);
		ds[nd] = s->b[i].d;
		which[nd++] = i;
	}
	bool *missing = xcalloc(nd ? nd : 1, sizeof(*missing));
	rv = cas_find_missing(c, ds, nd, missing);
	int64_t nsent = 0, nbytes = 0;
	/* Room for the framing of each entry in a batch. */
	const int64_t overhead = 200;
	size_t *batch = xcalloc(nd ? nd : 1, sizeof(*batch));
	size_t nb = 0;
	int64_t batch_bytes = 0;
	for (size_t k = 0; k < nd && rv == CTL_OK; k++) {
		if (!missing[k])
			continue;
		struct cas_blob *b = &s->b[which[k]];
		nsent++;
		nbytes += b->d.size;
		if (b->d.size + overhead > max_batch - 1024 && b->path) {
			char *dstr = xasprintf("%s/%" PRId64, b->d.hex, b->d.size);
			char *out = NULL;
			ctl_info(c, "streaming %s (%s)", b->path, dstr);
			rv = cas_write_file(c, b->path, dstr, &out);
			free(dstr);
			free(out);
			continue;
		}
		if (nb && batch_bytes + b->d.size + overhead > max_batch - 1024) {
			rv = batch_update(c, s, batch, nb);
			nb = 0;
			batch_bytes = 0;
		}
		batch[nb++] = which[k];
		batch_bytes += b->d.size + overhead;
	}
	if (rv == CTL_OK && nb)
		rv = batch_update(c, s, batch, nb);
	if (sent)
		*sent = nsent;
	if (bytes)
		*bytes = nbytes;
	digest_map_clear(&seen);
	digest_map_destroy(&seen);
	free(nodes);
	free(batch);
	free(missing);
	free(which);
	free(ds);
	return rv;
}
