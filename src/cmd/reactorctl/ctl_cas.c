/*
 * ctl_cas.c - reactorctl's caps, health and cas commands: the server's
 * capabilities, grpc.health.v1 Check, and the CAS transfers (ByteStream
 * Write/Read streamed in bounded chunks and verified by SHA-256,
 * FindMissingBlobs).
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
#include "cmd/reactorctl/ctl.h"

#define CAPS_GET "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities"

static const char *enum_name(const ProtobufCEnumDescriptor *d, int v)
{
	const ProtobufCEnumValue *e = protobuf_c_enum_descriptor_get_value(d, v);
	return e ? e->name : "?";
}

/* GetCapabilities: CTL_OK with *caps, or the exit code. */
static int get_caps(struct ctl *c, Build__Bazel__Remote__Execution__V2__ServerCapabilities **caps)
{
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
		BUILD__BAZEL__REMOTE__EXECUTION__V2__GET_CAPABILITIES_REQUEST__INIT;
	req.instance_name = (char *)c->instance;
	ProtobufCMessage *out;
	int rv = ctl_unary(c, CAPS_GET, &req.base,
			   &build__bazel__remote__execution__v2__server_capabilities__descriptor,
			   &out);
	*caps = (void *)out;
	return rv;
}

static void caps_json(const Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps)
{
	struct ctl_json *j = ctl_json_new();
	ctl_json_obj(j);
	char v[32];
	if (caps->low_api_version) {
		snprintf(v, sizeof(v), "%d.%d", caps->low_api_version->major,
			 caps->low_api_version->minor);
		ctl_json_kstr(j, "low_api_version", v);
	}
	if (caps->high_api_version) {
		snprintf(v, sizeof(v), "%d.%d", caps->high_api_version->major,
			 caps->high_api_version->minor);
		ctl_json_kstr(j, "high_api_version", v);
	}
	const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = caps->cache_capabilities;
	if (cc) {
		ctl_json_key(j, "cache");
		ctl_json_obj(j);
		ctl_json_key(j, "digest_functions");
		ctl_json_arr(j);
		for (size_t i = 0; i < cc->n_digest_functions; i++)
			ctl_json_str(
				j,
				enum_name(
					&build__bazel__remote__execution__v2__digest_function__value__descriptor,
					cc->digest_functions[i]));
		ctl_json_end(j);
		ctl_json_kint(j, "max_batch_total_size_bytes", cc->max_batch_total_size_bytes);
		ctl_json_kbool(j, "action_cache_update_enabled",
			       cc->action_cache_update_capabilities &&
				       cc->action_cache_update_capabilities->update_enabled);
		ctl_json_kstr(
			j, "symlink_absolute_path_strategy",
			enum_name(
				&build__bazel__remote__execution__v2__symlink_absolute_path_strategy__value__descriptor,
				cc->symlink_absolute_path_strategy));
		ctl_json_end(j);
	}
	if (caps->execution_capabilities) {
		ctl_json_key(j, "execution");
		ctl_json_obj(j);
		ctl_json_kbool(j, "exec_enabled", caps->execution_capabilities->exec_enabled);
		ctl_json_kstr(
			j, "digest_function",
			enum_name(
				&build__bazel__remote__execution__v2__digest_function__value__descriptor,
				caps->execution_capabilities->digest_function));
		ctl_json_end(j);
	}
	ctl_json_end(j);
	ctl_json_print(j);
}

static int cmd_caps(struct ctl *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return ctl_usage(c);
	Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps;
	int rv = get_caps(c, &caps);
	if (rv != CTL_OK)
		return rv;
	if (c->json) {
		caps_json(caps);
		protobuf_c_message_free_unpacked(&caps->base, NULL);
		return CTL_OK;
	}
	if (caps->low_api_version && caps->high_api_version)
		printf("api: %d.%d .. %d.%d\n", caps->low_api_version->major,
		       caps->low_api_version->minor, caps->high_api_version->major,
		       caps->high_api_version->minor);
	const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = caps->cache_capabilities;
	if (cc) {
		printf("cache.digest_functions:");
		for (size_t i = 0; i < cc->n_digest_functions; i++)
			printf(" %s",
			       enum_name(
				       &build__bazel__remote__execution__v2__digest_function__value__descriptor,
				       cc->digest_functions[i]));
		char b[16];
		printf("\ncache.max_batch_total_size_bytes: %lld (%s)\n",
		       (long long)cc->max_batch_total_size_bytes,
		       ctl_bytes(b, sizeof(b), cc->max_batch_total_size_bytes));
		printf("cache.action_cache_update_enabled: %s\n",
		       cc->action_cache_update_capabilities &&
				       cc->action_cache_update_capabilities->update_enabled
			       ? "true"
			       : "false");
		printf("cache.symlink_absolute_path_strategy: %s\n",
		       enum_name(
			       &build__bazel__remote__execution__v2__symlink_absolute_path_strategy__value__descriptor,
			       cc->symlink_absolute_path_strategy));
	}
	if (caps->execution_capabilities)
		printf("execution.exec_enabled: %s\n",
		       caps->execution_capabilities->exec_enabled ? "true" : "false");
	protobuf_c_message_free_unpacked(&caps->base, NULL);
	return CTL_OK;
}

static int cmd_health(struct ctl *c, int argc, char **argv)
{
	if (argc > 2)
		return ctl_usage(c);
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	req.service = argc == 2 ? argv[1] : "";
	ProtobufCMessage *out;
	int rv = ctl_unary(c, "/grpc.health.v1.Health/Check", &req.base,
			   &grpc__health__v1__health_check_response__descriptor, &out);
	if (rv != CTL_OK)
		return rv;
	const Grpc__Health__V1__HealthCheckResponse *r = (const void *)out;
	const char *name = enum_name(
		&grpc__health__v1__health_check_response__serving_status__descriptor, r->status);
	bool ok = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	if (c->json) {
		struct ctl_json *j = ctl_json_new();
		ctl_json_obj(j);
		ctl_json_kstr(j, "service", req.service);
		ctl_json_kstr(j, "status", name);
		ctl_json_end(j);
		ctl_json_print(j);
	} else {
		printf("%s%s%s\n", ctl_col(c, ok ? CTL_GREEN : CTL_RED), name,
		       ctl_col(c, CTL_RESET));
	}
	protobuf_c_message_free_unpacked(out, NULL);
	return ok ? CTL_OK : CTL_FAIL;
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

static int old_upload(struct ctl *c, struct rc_client *cl, struct event_base *base,
		      const char *instance, const char *path, const char *digest_arg, int64_t to)
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
		rv = ctl_status(c, GRPC_UNAVAILABLE, "connection is closed");
		goto out;
	}
	upload_send(&u);
	if (u.local_err) {
		rv = 1;
	} else if (u.exists) {
		printf("%s/%" PRId64 "\n", hash, size);
		rv = 0;
	} else if (u.x.code != GRPC_OK) {
		rv = ctl_status(c, u.x.code, u.x.msg);
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

static int old_download(struct ctl *c, struct rc_client *cl, struct event_base *base,
			const char *instance, const char *digest_arg, const char *out_path,
			int64_t to)
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
		rv = ctl_status(c, GRPC_UNAVAILABLE, "connection is closed");
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
			rv = ctl_status(c, x.code, x.msg);
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

static int old_missing(struct ctl *c, struct rc_client *cl, const char *instance, char **args,
		       int nargs, int64_t to)
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
		rv = ctl_status(c, code, msg);
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

/* The flat commands of earlier versions, kept as hidden aliases. */
static int cmd_upload(struct ctl *c, int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return ctl_usage(c);
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	return old_upload(c, cl, c->base, c->instance, argv[1], argc == 3 ? argv[2] : NULL,
			  c->timeout_set ? c->timeout_us : 0);
}

static int cmd_download(struct ctl *c, int argc, char **argv)
{
	if (argc != 2 && argc != 3)
		return ctl_usage(c);
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	return old_download(c, cl, c->base, c->instance, argv[1], argc == 3 ? argv[2] : NULL,
			    c->timeout_set ? c->timeout_us : 0);
}

static int cmd_missing(struct ctl *c, int argc, char **argv)
{
	struct rc_client *cl = ctl_client(c);
	if (!cl)
		return c->fail_rc;
	return old_missing(c, cl, c->instance, argv + 1, argc - 1, c->timeout_us);
}

const struct ctl_cmd ctl_cmds_cas[] = {
	{"caps", "", "print the server's REAPI capabilities",
	 "GetCapabilities of the instance (-i): API versions, digest functions, the\n"
	 "batch size limit, whether the action cache takes updates and whether\n"
	 "remote execution is enabled.  With --json, one object.\n"
	 "\n"
	 "example:\n"
	 "  reactorctl -s unix:/var/lib/reactord/grpc.sock caps\n",
	 cmd_caps},
	{"capabilities", "", NULL, NULL, cmd_caps},
	{"health", "[SERVICE]", "grpc.health.v1 Check; exit 0 only when SERVING",
	 "Asks the server's health service about SERVICE (default: the server as a\n"
	 "whole) and prints the answer: SERVING, NOT_SERVING...  Exit 0 only when\n"
	 "SERVING, 1 otherwise (NOT_FOUND for a service the server does not have).\n"
	 "\n"
	 "example:\n"
	 "  reactorctl health build.bazel.remote.execution.v2.Execution\n",
	 cmd_health},
	{"upload", "FILE [HASH/SIZE]", NULL, NULL, cmd_upload},
	{"download", "HASH/SIZE [OUT]", NULL, NULL, cmd_download},
	{"missing", "[HASH/SIZE...]", NULL, NULL, cmd_missing},
	{0},
};
