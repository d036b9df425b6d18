/*
 * reactorctl.c - the command-line client for people.  Speaks gRPC to
 * reactord through the project's own client library.  Commands:
 * capabilities, health, a raw call, and the CAS transfers: upload and
 * download (ByteStream Write/Read, streamed in bounded chunks and verified
 * by SHA-256) and missing (FindMissingBlobs).  Execution and builds come
 * with later issues.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "proto/pb.h"
#include "rpc/client.h"
#include "core/digest.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "rpc/grpc.h"
#include "grpc/health/v1/health.pb-c.h"
#include "core/log.h"
#include "core/util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reactorctl [-v] [-s TARGET] [-i INSTANCE] [-T TIMEOUT] [--tls...]\n"
		"                  [--token-file FILE] COMMAND [ARGS]\n"
		"  -s TARGET    server: HOST:PORT, grpcs://HOST:PORT or unix:PATH (default\n"
		"               127.0.0.1:50051, or $REACTOR_SERVER)\n"
		"  -i INSTANCE  REAPI instance name (default \"\")\n"
		"  -T TIMEOUT   call deadline, e.g. 10s (default 30s)\n"
		"  -v           log connection events (twice: debug)\n" RC_CLIENT_USAGE
		"commands:\n"
		"  capabilities (caps)   print the server's REAPI capabilities\n"
		"  health [SERVICE]      grpc.health.v1 Check; exit 0 only when SERVING\n"
		"  call PATH             send an empty request to PATH, print the status\n"
		"  upload FILE [HASH/SIZE]\n"
		"                        ByteStream Write of FILE; prints HASH/SIZE\n"
		"  download HASH/SIZE [OUT]\n"
		"                        ByteStream Read into OUT (default stdout), verified\n"
		"  missing [HASH/SIZE...]\n"
		"                        FindMissingBlobs (digests from stdin when none given);\n"
		"                        prints the missing ones\n"
		"upload and download have no deadline unless -T is given.  Exit status: 0\n"
		"success, 1 the call failed (the gRPC status is printed), 2 bad usage or a\n"
		"TLS or token file that can't be used.\n");
}

static int fail(int code, const char *msg)
{
	fprintf(stderr, "reactorctl: %s: %s\n", grpc_code_name(code), msg ? msg : "");
	return code == GRPC_OK ? 0 : 1;
}

static int cmd_capabilities(struct rc_client *cl, const char *instance, int64_t to)
{
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
	req.instance_name = (char *)instance;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(cl, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
			    &req.base,
			    &build__bazel__remote__execution__v2__server_capabilities__descriptor,
			    &out, &msg, to);
	if (code != GRPC_OK) {
		int rv = fail(code, msg);
		free(msg);
		return rv;
	}
	free(msg);
	const Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = (const void *)out;
	if (caps->low_api_version && caps->high_api_version)
		printf("api: %d.%d .. %d.%d\n", caps->low_api_version->major,
		       caps->low_api_version->minor, caps->high_api_version->major,
		       caps->high_api_version->minor);
	const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = caps->cache_capabilities;
	if (cc) {
		printf("cache.digest_functions:");
		for (size_t i = 0; i < cc->n_digest_functions; i++) {
			const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
				&build__bazel__remote__execution__v2__digest_function__value__descriptor,
				cc->digest_functions[i]);
			printf(" %s", v ? v->name : "?");
		}
		printf("\ncache.max_batch_total_size_bytes: %lld\n",
		       (long long)cc->max_batch_total_size_bytes);
		printf("cache.action_cache_update_enabled: %s\n",
		       cc->action_cache_update_capabilities &&
				       cc->action_cache_update_capabilities->update_enabled
			       ? "true"
			       : "false");
	}
	if (caps->execution_capabilities)
		printf("execution.exec_enabled: %s\n",
		       caps->execution_capabilities->exec_enabled ? "true" : "false");
	protobuf_c_message_free_unpacked(out, NULL);
	return 0;
}

static int cmd_health(struct rc_client *cl, const char *service, int64_t to)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = (char *)service;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(cl, "/grpc.health.v1.Health/Check", &req.base,
			    &grpc__health__v1__health_check_response__descriptor, &out, &msg, to);
	if (code != GRPC_OK) {
		int rv = fail(code, msg);
		free(msg);
		return rv;
	}
	free(msg);
	const Grpc__Health__V1__HealthCheckResponse *r = (const void *)out;
	const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
		&grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
	printf("%s\n", v ? v->name : "?");
	int rv = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0
											       : 1;
	protobuf_c_message_free_unpacked(out, NULL);
	return rv;
}

struct raw_done {
	bool done;
	int code;
	char *msg;
};

static void raw_done_cb(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct raw_done *r = arg;
	r->done = true;
	r->code = code;
	r->msg = xstrdup(message);
}

static int cmd_call(struct rc_client *cl, struct event_base *base, const char *path, int64_t to)
{
	struct raw_done r = {0};
	struct rc_call *k = rc_call_start(cl, path, to, NULL, 0, NULL, raw_done_cb, &r);
	if (!k)
		return fail(GRPC_UNAVAILABLE, "connection closed");
	rc_call_send(k, (const uint8_t *)"", 0);
	rc_call_close_send(k);
	while (!r.done)
		event_base_loop(base, EVLOOP_ONCE);
	printf("%s: %s\n", grpc_code_name(r.code), r.msg);
	free(r.msg);
	return r.code == GRPC_OK ? 0 : 1;
}

/* ---- CAS transfers ------------------------------------------------------ */

#define BS_READ	 "/google.bytestream.ByteStream/Read"
#define BS_WRITE "/google.bytestream.ByteStream/Write"
#define BS_QUERY "/google.bytestream.ByteStream/QueryWriteStatus"
#define CAS_FIND "/build.bazel.remote.execution.v2.ContentAddressableStorage/FindMissingBlobs"

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
static int parse_digest_arg(const char *arg, char **hash, int64_t *size)
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
	int64_t committed; /* Write: WriteResponse.committed_size, -1 until seen */
	int fd;		   /* Read: output */
	struct hasher *h;  /* Read: hash of what arrived */
	int64_t got;	   /* Read: bytes received */
	int io_errno;	   /* Read: output write failed */
	bool bad_msg;	   /* a response message did not parse */
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
};

/* The file to upload, open; 0 or the exit status. */
static int upload_open(const char *path, int *fd, struct stat *st)
{
	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0 || fstat(*fd, st) != 0) {
		fprintf(stderr, "reactorctl: %s: %s\n", path, strerror(errno));
		if (*fd >= 0)
			close(*fd);
		return 2;
	}
	if (!S_ISREG(st->st_mode)) {
		fprintf(stderr, "reactorctl: %s: not a regular file\n", path);
		close(*fd);
		return 2;
	}
	return 0;
}

/* The digest to upload under: the one given, or the file's.  0 or the
 * exit status. */
static int upload_digest(int fd, const char *path, const char *digest_arg, char **hash,
			 int64_t *size)
{
	if (digest_arg) {
		if (parse_digest_arg(digest_arg, hash, size) != 0) {
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

static int cmd_upload(struct rc_client *cl, struct event_base *base, const char *instance,
		      const char *path, const char *digest_arg, int64_t to)
{
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
	rv = 1;
	if (strlen(name) > WRITE_HEAD_MAX - 64) {
		fprintf(stderr, "reactorctl: instance name too long\n");
		goto out;
	}
	u.k = rc_call_start(cl, BS_WRITE, to, NULL, 0, write_msg, xfer_done, &u.x);
	if (!u.k) {
		fail(GRPC_UNAVAILABLE, "connection is closed");
		goto out;
	}
	upload_send(&u);
	if (u.local_err) {
		rv = 1;
	} else if (u.exists) {
		printf("%s/%" PRId64 "\n", hash, size);
		rv = 0;
	} else if (u.x.code != GRPC_OK) {
		rv = fail(u.x.code, u.x.msg);
	} else if (u.x.bad_msg || u.x.committed != size) {
		fprintf(stderr, "reactorctl: server committed %" PRId64 " of %" PRId64 " bytes\n",
			u.x.committed, size);
	} else {
		printf("%s/%" PRId64 "\n", hash, size);
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

static int cmd_download(struct rc_client *cl, struct event_base *base, const char *instance,
			const char *digest_arg, const char *out_path, int64_t to)
{
	char *hash;
	int64_t size;
	if (parse_digest_arg(digest_arg, &hash, &size) != 0) {
		fprintf(stderr, "reactorctl: bad digest \"%s\": want HASH/SIZE\n", digest_arg);
		return 2;
	}
	bool to_file = out_path && strcmp(out_path, "-") != 0;
	struct xfer x = {.committed = -1, .fd = STDOUT_FILENO};
	if (to_file) {
		x.fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (x.fd < 0) {
			fprintf(stderr, "reactorctl: %s: %s\n", out_path, strerror(errno));
			free(hash);
			return 2;
		}
	}
	x.h = hasher_new();
	char *name = read_resource(instance, hash, size);
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	req.resource_name = name;
	size_t n = google__bytestream__read_request__get_packed_size(&req);
	uint8_t *pb = xmalloc(n ? n : 1);
	google__bytestream__read_request__pack(&req, pb);
	int rv = 1;
	struct rc_call *k = rc_call_start(cl, BS_READ, to, NULL, 0, read_msg, xfer_done, &x);
	if (!k) {
		fail(GRPC_UNAVAILABLE, "connection is closed");
	} else {
		rc_call_send(k, pb, n);
		rc_call_close_send(k);
		while (!x.done)
			event_base_loop(base, EVLOOP_ONCE);
		struct digest d;
		hasher_final(x.h, &d);
		if (x.io_errno) {
			fprintf(stderr, "reactorctl: %s: %s\n", to_file ? out_path : "stdout",
				strerror(x.io_errno));
		} else if (x.bad_msg) {
			fprintf(stderr, "reactorctl: malformed ReadResponse\n");
		} else if (x.code != GRPC_OK) {
			rv = fail(x.code, x.msg);
		} else if (d.size != size || strcmp(d.hex, hash) != 0) {
			fprintf(stderr,
				"reactorctl: received %s/%" PRId64 ", not the requested %s/%" PRId64
				"\n",
				d.hex, d.size, hash, size);
		} else {
			rv = 0;
		}
	}
	if (to_file) {
		if (close(x.fd) != 0 && rv == 0) {
			fprintf(stderr, "reactorctl: %s: %s\n", out_path, strerror(errno));
			rv = 1;
		}
		if (rv != 0)
			unlink(out_path);
	}
	hasher_free(x.h);
	free(x.msg);
	free(pb);
	free(name);
	free(hash);
	return rv;
}

static int cmd_missing(struct rc_client *cl, const char *instance, char **args, int nargs,
		       int64_t to)
{
	size_t n = 0, cap = 16;
	char **list = xmalloc(cap * sizeof(*list));
	char *line = NULL;
	size_t linecap = 0;
	for (int i = 0;; i++) {
		const char *arg;
		if (nargs > 0) {
			if (i >= nargs)
				break;
			arg = args[i];
		} else {
			ssize_t len = getline(&line, &linecap, stdin);
			if (len < 0)
				break;
			while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' ||
					   line[len - 1] == ' '))
				line[--len] = '\0';
			if (len == 0)
				continue;
			arg = line;
		}
		if (n == cap)
			list = xrealloc(list, (cap *= 2) * sizeof(*list));
		list[n++] = xstrdup(arg);
	}
	free(line);
	PbDigest *ds = xcalloc(n ? n : 1, sizeof(*ds));
	PbDigest **dp = xcalloc(n ? n : 1, sizeof(*dp));
	int rv = 2;
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__digest__init(&ds[i]);
		if (parse_digest_arg(list[i], &ds[i].hash, &ds[i].size_bytes) != 0) {
			fprintf(stderr, "reactorctl: bad digest \"%s\": want HASH/SIZE\n", list[i]);
			goto out;
		}
		dp[i] = &ds[i];
	}
	Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__FIND_MISSING_BLOBS_REQUEST__INIT;
	req.instance_name = (char *)instance;
	req.n_blob_digests = n;
	req.blob_digests = dp;
	ProtobufCMessage *out = NULL;
	char *msg = NULL;
	int code = rc_unary(
		cl, CAS_FIND, &req.base,
		&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor, &out,
		&msg, to);
	if (code != GRPC_OK) {
		rv = fail(code, msg);
	} else {
		const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r =
			(const void *)out;
		for (size_t i = 0; i < r->n_missing_blob_digests; i++)
			printf("%s/%" PRId64 "\n", r->missing_blob_digests[i]->hash,
			       r->missing_blob_digests[i]->size_bytes);
		protobuf_c_message_free_unpacked(out, NULL);
		rv = 0;
	}
	free(msg);
out:
	for (size_t i = 0; i < n; i++) {
		free(ds[i].hash == protobuf_c_empty_string ? NULL : ds[i].hash);
		free(list[i]);
	}
	free(ds);
	free(dp);
	free(list);
	return rv;
}

int main(int argc, char **argv)
{
	const char *target = getenv("REACTOR_SERVER");
	const char *instance = "";
	int64_t timeout = 30 * 1000000LL;
	bool timeout_set = false;
	int opt;
	if (!target)
		target = "127.0.0.1:50051";
	int verbose = 0;
	struct rc_client_opts copts = {0};
	static const struct option longs[] = {
		RC_CLIENT_LONGOPTS,
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	while ((opt = getopt_long(argc, argv, "s:i:T:vh", longs, NULL)) != -1) {
		if (rc_client_opt(&copts, opt, optarg))
			continue;
		switch (opt) {
		case 's': target = optarg; break;
		case 'i': instance = optarg; break;
		case 'T':
			if (parse_duration_us(optarg, &timeout) != 0) {
				fprintf(stderr, "reactorctl: bad timeout \"%s\"\n", optarg);
				return 2;
			}
			timeout_set = true;
			break;
		case 'v': verbose++; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	rc_client_opts_env(&copts);
	/* The client library logs connection events at info: noise for a
	 * command-line tool unless asked for. */
	log_set_level(verbose >= 2 ? LOG_DEBUG : verbose ? LOG_INFO : LOG_WARN);
	const char *cmd = argv[optind];
	char **args = argv + optind + 1;
	int nargs = argc - optind - 1;
	/* A server that hangs up (one refusing our certificate does) must
	 * cost a call, not the process. */
	signal(SIGPIPE, SIG_IGN);
	struct event_base *base = event_base_new();
	char *err = NULL;
	struct rc_client *cl = rc_client_connect_opts(base, target, &copts, &err);
	if (!cl) {
		fprintf(stderr, "reactorctl: %s\n", err);
		free(err);
		event_base_free(base);
		return 2;
	}
	int rv;
	if (strcmp(cmd, "capabilities") == 0 || strcmp(cmd, "caps") == 0) {
		rv = cmd_capabilities(cl, instance, timeout);
	} else if (strcmp(cmd, "health") == 0) {
		rv = cmd_health(cl, optind + 1 < argc ? argv[optind + 1] : "", timeout);
	} else if (strcmp(cmd, "call") == 0 && optind + 1 < argc) {
		rv = cmd_call(cl, base, argv[optind + 1], timeout);
	} else if (strcmp(cmd, "upload") == 0 && (nargs == 1 || nargs == 2)) {
		rv = cmd_upload(cl, base, instance, args[0], nargs == 2 ? args[1] : NULL,
				timeout_set ? timeout : 0);
	} else if (strcmp(cmd, "download") == 0 && (nargs == 1 || nargs == 2)) {
		rv = cmd_download(cl, base, instance, args[0], nargs == 2 ? args[1] : NULL,
				  timeout_set ? timeout : 0);
	} else if (strcmp(cmd, "missing") == 0) {
		rv = cmd_missing(cl, instance, args, nargs, timeout);
	} else {
		usage(stderr);
		rv = 2;
	}
	rc_client_free(cl);
	event_base_free(base);
	return rv;
}
