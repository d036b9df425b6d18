/*
 * cas_client.c - the programs' synchronous CAS client (cas_client.h):
 * capabilities, FindMissingBlobs, batched or streamed uploads, verified
 * reads.  Every RPC runs the client's loop until it ends; callbacks only
 * record, the caller looks at the record after each loop pass.
 */
#include "domain/cas_client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "google/bytestream/bytestream.pb-c.h"
#include "google/rpc/code.pb-c.h"
#include "proto/pb.h"
#include "rpc/client.h"

#define CAS_PFX	 "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define BS_READ	 "/google.bytestream.ByteStream/Read"
#define BS_WRITE "/google.bytestream.ByteStream/Write"
#define BS_QUERY "/google.bytestream.ByteStream/QueryWriteStatus"

#define ST_OK	     GOOGLE__RPC__CODE__OK
#define ST_NOT_FOUND GOOGLE__RPC__CODE__NOT_FOUND

/* Data bytes per WriteRequest. */
#define WRITE_CHUNK (1 << 20)
/* The client library queues what flow control holds back, so a Write
 * keeps at most this many bytes beyond what the server reports committed
 * (QueryWriteStatus on the same connection): memory stays bounded
 * whatever the blob size. */
#define UPLOAD_AHEAD (32 << 20)
/* How long to let the loop send before asking for the committed size again. */
#define UPLOAD_POLL_US 2000
/* Room before the data for the WriteRequest fields. */
#define WRITE_HEAD_MAX 1024
/* Per-entry framing a batch adds to the blob bytes (digest, status, tags),
 * and the room kept for the request's own fields. */
#define ENTRY_OVERHEAD 200
#define BATCH_SLACK    1024
#define BATCH_MAX_N    1000
/* Digests per FindMissingBlobs request (under the message size limit). */
#define FIND_SLICE 5000

void casc_init(struct casc *c, struct event_base *base, struct rc_client *cl, const char *instance)
{
	memset(c, 0, sizeof(*c));
	c->base = base;
	c->cl = cl;
	c->instance = instance;
	c->max_batch = 4 << 20;
}

void casc_fini(struct casc *c)
{
	free(c->status_msg);
	c->status_msg = NULL;
}

/* Record a failed RPC: its status for c, a message for *msg. */
static int rpc_fail(struct casc *c, int code, const char *smsg, char **msg, const char *fmt, ...)
	PRINTF_LIKE(5, 6);
static int rpc_fail(struct casc *c, int code, const char *smsg, char **msg, const char *fmt, ...)
{
	free(c->status_msg);
	c->status = code;
	c->status_msg = xstrdup(smsg ? smsg : "");
	va_list ap;
	va_start(ap, fmt);
	char *what = xvasprintf(fmt, ap);
	va_end(ap);
	*msg = xasprintf("%s: status %d: %s", what, code, smsg ? smsg : "");
	free(what);
	return code == ST_NOT_FOUND ? -ENOENT : -EIO;
}

static void reset(struct casc *c)
{
	c->status = 0;
	free(c->status_msg);
	c->status_msg = NULL;
}

static void pb_digest(PbDigest *pd, const struct digest *d)
{
	build__bazel__remote__execution__v2__digest__init(pd);
	pd->hash = (char *)d->hex;
	pd->size_bytes = d->size;
}

static char *missing_msg(const char *hash, int64_t size)
{
	return xasprintf("blobs/%s/%" PRId64, hash, size);
}

char *casc_read_name(const struct casc *c, const char *hash, int64_t size)
{
	return xasprintf("%s%sblobs/%s/%" PRId64, c->instance, *c->instance ? "/" : "", hash, size);
}

char *casc_write_name(const struct casc *c, const char *hash, int64_t size)
{
	char *uuid = uuid4();
	char *r = xasprintf("%s%suploads/%s/blobs/%s/%" PRId64, c->instance,
			    *c->instance ? "/" : "", uuid, hash, size);
	free(uuid);
	return r;
}

int casc_caps(struct casc *c, char **msg)
{
	reset(c);
	if (c->have_caps)
		return 0;
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
		REV2(GET_CAPABILITIES_REQUEST__INIT);
	req.instance_name = (char *)c->instance;
	ProtobufCMessage *resp = NULL;
	char *smsg = NULL;
	int code = rc_unary(c->cl, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
			    &req.base,
			    &build__bazel__remote__execution__v2__server_capabilities__descriptor,
			    &resp, &smsg, c->timeout_us);
	if (code != ST_OK) {
		int rc = rpc_fail(c, code, smsg, msg, "GetCapabilities");
		free(smsg);
		return rc == -ENOENT ? -EIO : rc;
	}
	free(smsg);
	const Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = (const void *)resp;
	const Build__Bazel__Remote__Execution__V2__CacheCapabilities *cc = caps->cache_capabilities;
	if (cc && cc->max_batch_total_size_bytes > 0)
		c->max_batch = cc->max_batch_total_size_bytes;
	c->absolute_symlinks = cc && cc->symlink_absolute_path_strategy ==
					     REV2(SYMLINK_ABSOLUTE_PATH_STRATEGY__VALUE__ALLOWED);
	c->have_caps = true;
	protobuf_c_message_free_unpacked(resp, NULL);
	return 0;
}

/* Blobs that go through ByteStream instead of a batch. */
static bool too_big(const struct casc *c, int64_t size)
{
	return size + ENTRY_OVERHEAD + BATCH_SLACK > c->max_batch;
}

/* Whether a batch of nb entries and `total` bytes has room for `add` more. */
static bool batch_full(const struct casc *c, size_t nb, int64_t total, int64_t add)
{
	return nb && (total + add > c->max_batch - BATCH_SLACK || nb >= BATCH_MAX_N);
}

int casc_find_missing(struct casc *c, const struct digest *d, size_t n, bool *missing, char **msg)
{
	reset(c);
	for (size_t i = 0; i < n; i++)
		missing[i] = false;
	for (size_t off = 0; off < n; off += FIND_SLICE) {
		size_t m = n - off < FIND_SLICE ? n - off : FIND_SLICE;
		PbDigest *ds = xcalloc(m, sizeof(*ds));
		PbDigest **dp = xcalloc(m, sizeof(*dp));
		for (size_t i = 0; i < m; i++) {
			pb_digest(&ds[i], &d[off + i]);
			dp[i] = &ds[i];
		}
		PbFindMissing req = REV2(FIND_MISSING_BLOBS_REQUEST__INIT);
		req.instance_name = (char *)c->instance;
		req.n_blob_digests = m;
		req.blob_digests = dp;
		ProtobufCMessage *out = NULL;
		char *smsg = NULL;
		int code = rc_unary(
			c->cl, CAS_PFX "FindMissingBlobs", &req.base,
			&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
			&out, &smsg, c->timeout_us);
		free(ds);
		free(dp);
		if (code != ST_OK) {
			int rc = rpc_fail(c, code, smsg, msg, "FindMissingBlobs");
			free(smsg);
			return rc == -ENOENT ? -EIO : rc;
		}
		free(smsg);
		const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r =
			(const void *)out;
		for (size_t j = 0; j < r->n_missing_blob_digests; j++)
			for (size_t i = 0; i < m; i++)
				if (!missing[off + i] &&
				    strcmp(r->missing_blob_digests[j]->hash, d[off + i].hex) == 0 &&
				    r->missing_blob_digests[j]->size_bytes == d[off + i].size)
					missing[off + i] = true;
		protobuf_c_message_free_unpacked(out, NULL);
	}
	return 0;
}

/* ---- ByteStream --------------------------------------------------------- */

/* A Write or Read in flight. */
struct xfer {
	struct casc *c;
	bool done;
	int code;
	char *msg;
	int64_t committed; /* Write: WriteResponse.committed_size, -1 until seen */
	int fd;		   /* Read: output, or -1: */
	uint8_t *buf;	   /* Read: collected here */
	size_t len, cap;
	struct hasher *h; /* Read: hash of what arrived */
	int io_errno;	  /* Read: output write failed */
	bool bad_msg;	  /* a response message did not parse */
};

static void xfer_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct xfer *x = arg;
	x->done = true;
	x->code = code;
	x->msg = xstrdup(message ? message : "");
}

static void progress_begin(struct casc *c, const char *verb, const char *path, int64_t total)
{
	if (c->progress && c->progress->begin)
		c->progress->begin(c->progress_arg, verb, path, total);
}

static void progress_add(struct casc *c, int64_t n)
{
	if (c->progress && c->progress->add)
		c->progress->add(c->progress_arg, n);
}

static void progress_end(struct casc *c)
{
	if (c->progress && c->progress->end)
		c->progress->end(c->progress_arg);
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
static int query_write(struct casc *c, const char *name, int64_t *committed, bool *complete)
{
	Google__Bytestream__QueryWriteStatusRequest req =
		GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_REQUEST__INIT;
	req.resource_name = (char *)name;
	ProtobufCMessage *out = NULL;
	int code = rc_unary(c->cl, BS_QUERY, &req.base,
			    &google__bytestream__query_write_status_response__descriptor, &out,
			    NULL, c->stream_us);
	if (code == ST_OK) {
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

/* An upload in flight: the source, the Write call and how far both got. */
struct upload {
	struct casc *c;
	struct rc_call *k;
	struct xfer x;
	const char *path, *name;
	int fd;		     /* the source, or -1: */
	const uint8_t *data; /* the bytes */
	int64_t size;	     /* bytes to send */
	int64_t off;	     /* bytes sent */
	int64_t acked;	     /* bytes the server reported committed */
	bool window;	     /* QueryWriteStatus works: pace by it */
	bool exists;	     /* someone else stored the blob meanwhile */
	char *local_err;     /* reading the source failed */
};

/* Over the limit: let the server drain to half of it before queueing
 * more, polling every UPLOAD_POLL_US, not every RTT.  False when the
 * upload must stop sending (the blob exists, or the Write ended). */
static bool upload_pace(struct upload *u)
{
	if (!u->window || u->off - u->acked < UPLOAD_AHEAD)
		return true;
	for (;;) {
		bool complete = false;
		int code = query_write(u->c, u->name, &u->acked, &complete);
		if (complete) {
			u->exists = true;
			rc_call_cancel(u->k);
			return false;
		}
		if (code == ST_NOT_FOUND && (u->x.done || u->x.committed >= 0))
			return false; /* the Write ended: its status tells */
		if (code == ST_NOT_FOUND) {
			/* The server has not seen the Write's first message yet
			 * (it is still in flow control behind what we queued):
			 * nothing committed so far; ask again shortly. */
			loop_for(u->c->base, UPLOAD_POLL_US);
			continue;
		}
		if (code != ST_OK) {
			u->window = false; /* no QueryWriteStatus: unpaced */
			return true;
		}
		if (u->off - u->acked <= UPLOAD_AHEAD / 2 || u->x.done || u->x.committed >= 0)
			return true;
		loop_for(u->c->base, UPLOAD_POLL_US);
	}
}

/* The next chunk of the source at data; its length, or -1 with local_err. */
static ssize_t upload_read(struct upload *u, uint8_t *data)
{
	int64_t left = u->size - u->off;
	size_t want = left < WRITE_CHUNK ? (size_t)left : WRITE_CHUNK;
	if (u->data) {
		memcpy(data, u->data + u->off, want);
		return (ssize_t)want;
	}
	size_t got = 0;
	while (got < want) {
		ssize_t n = read(u->fd, data + got, want - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			u->local_err =
				xasprintf("%s: %s", u->path,
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

/* Send the source while the server has not answered: an early
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
			rc_call_cancel(u->k);
			break;
		}
		bool last = u->off + got >= u->size;
		/* Fields in front of the data, right-aligned against it. */
		uint8_t head[WRITE_HEAD_MAX];
		size_t hl = upload_head(u, head, (size_t)got, last);
		memcpy(data - hl, head, hl);
		if (rc_call_send(u->k, data - hl, hl + (size_t)got) != 0)
			break; /* the call ended; its status says why */
		u->off += got;
		progress_add(u->c, got);
		event_base_loop(u->c->base, EVLOOP_NONBLOCK);
		if (last)
			break;
	}
	if (!u->x.done)
		rc_call_close_send(u->k);
	while (!u->x.done)
		event_base_loop(u->c->base, EVLOOP_ONCE);
	free(buf);
}

/* One ByteStream Write of fd's len bytes (fd >= 0) or data's. */
static int bs_write(struct casc *c, const char *hash, int64_t size, int fd, const uint8_t *data,
		    int64_t len, const char *path, char **msg)
{
	char *name = casc_write_name(c, hash, size);
	if (strlen(name) > WRITE_HEAD_MAX - 64) {
		free(name);
		*msg = xstrdup("instance name too long");
		return -EIO;
	}
	struct upload u = {
		.c = c,
		.x = {.c = c, .committed = -1, .fd = -1},
		.path = path,
		.name = name,
		.fd = fd,
		.data = data,
		.size = len,
		.window = true,
	};
	int rc = -EIO;
	progress_begin(c, "upload", path, len);
	u.k = rc_call_start(c->cl, BS_WRITE, c->stream_us, NULL, 0, write_msg, xfer_done, &u.x);
	if (!u.k) {
		rc = rpc_fail(c, GOOGLE__RPC__CODE__UNAVAILABLE, "connection is closed", msg,
			      "ByteStream Write %s", name);
		progress_end(c);
		goto out;
	}
	upload_send(&u);
	progress_end(c);
	if (u.local_err) {
		*msg = u.local_err;
		u.local_err = NULL;
	} else if (u.exists) {
		rc = 0;
	} else if (u.x.code != ST_OK) {
		rc = rpc_fail(c, u.x.code, u.x.msg, msg, "ByteStream Write %s", name);
		if (rc == -ENOENT)
			rc = -EIO;
	} else if (u.x.bad_msg || u.x.committed != size) {
		*msg = xasprintf("server committed %" PRId64 " of %" PRId64 " bytes", u.x.committed,
				 size);
	} else {
		rc = 0;
	}
out:
	free(u.local_err);
	free(u.x.msg);
	free(name);
	return rc;
}

int casc_write_fd(struct casc *c, const char *hash, int64_t size, int fd, int64_t len,
		  const char *path, char **msg)
{
	reset(c);
	return bs_write(c, hash, size, fd, NULL, len, path, msg);
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
	progress_add(x->c, (int64_t)n);
	if (x->fd < 0) {
		if (x->len + n > x->cap) {
			x->cap = (x->len + n) * 2;
			x->buf = xrealloc(x->buf, x->cap);
		}
		memcpy(x->buf + x->len, data, n);
		x->len += n;
		return;
	}
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

/* ByteStream Read of HASH/SIZE into fd (>= 0) or memory (*buf, *len). */
static int bs_read(struct casc *c, const char *hash, int64_t size, int fd, const char *what,
		   uint8_t **buf, size_t *len, char **msg)
{
	struct xfer x = {.c = c, .committed = -1, .fd = fd, .h = hasher_new()};
	char *name = casc_read_name(c, hash, size);
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	req.resource_name = name;
	size_t n = google__bytestream__read_request__get_packed_size(&req);
	uint8_t *pb = xmalloc(n ? n : 1);
	google__bytestream__read_request__pack(&req, pb);
	int rc = -EIO;
	progress_begin(c, "download", NULL, size);
	struct rc_call *k =
		rc_call_start(c->cl, BS_READ, c->stream_us, NULL, 0, read_msg, xfer_done, &x);
	if (!k) {
		progress_end(c);
		rc = rpc_fail(c, GOOGLE__RPC__CODE__UNAVAILABLE, "connection is closed", msg,
			      "ByteStream Read %s", name);
		goto out;
	}
	rc_call_send(k, pb, n);
	rc_call_close_send(k);
	while (!x.done)
		event_base_loop(c->base, EVLOOP_ONCE);
	progress_end(c);
	struct digest d;
	hasher_final(x.h, &d);
	if (x.io_errno) {
		*msg = xasprintf("%s: %s", what, strerror(x.io_errno));
	} else if (x.bad_msg) {
		*msg = xstrdup("malformed ReadResponse");
	} else if (x.code != ST_OK) {
		rc = rpc_fail(c, x.code, x.msg, msg, "ByteStream Read %s", name);
		if (rc == -ENOENT) {
			free(*msg);
			*msg = missing_msg(hash, size);
		}
	} else if (d.size != size || strcmp(d.hex, hash) != 0) {
		*msg = xasprintf("received %s/%" PRId64 ", not the requested %s/%" PRId64, d.hex,
				 d.size, hash, size);
	} else {
		rc = 0;
		if (buf) {
			*buf = x.buf ? x.buf : xmalloc(1);
			*len = x.len;
			x.buf = NULL;
		}
	}
out:
	hasher_free(x.h);
	free(x.buf);
	free(x.msg);
	free(pb);
	free(name);
	return rc;
}

int casc_read_fd(struct casc *c, const char *hash, int64_t size, int fd, const char *what,
		 char **msg)
{
	reset(c);
	return bs_read(c, hash, size, fd, what, NULL, NULL, msg);
}

int casc_read_mem(struct casc *c, const struct digest *d, uint8_t **buf, size_t *len, char **msg)
{
	reset(c);
	*buf = NULL;
	*len = 0;
	return bs_read(c, d->hex, d->size, -1, "memory", buf, len, msg);
}

/* ---- batches ------------------------------------------------------------ */

/* One BatchReadBlobs of d[idx[0..n)] (small, distinct), handed to sink. */
static int batch_read(struct casc *c, const struct digest *d, const size_t *idx, size_t n,
		      const struct casc_sink *sink, void *arg, char **msg)
{
	PbBatchRead req = REV2(BATCH_READ_BLOBS_REQUEST__INIT);
	PbDigest *pds = xcalloc(n, sizeof(*pds));
	PbDigest **pp = xcalloc(n, sizeof(*pp));
	bool *got = xcalloc(n, sizeof(*got));
	for (size_t i = 0; i < n; i++) {
		pb_digest(&pds[i], &d[idx[i]]);
		pp[i] = &pds[i];
	}
	req.instance_name = (char *)c->instance;
	req.n_digests = n;
	req.digests = pp;
	ProtobufCMessage *resp = NULL;
	char *smsg = NULL;
	int code = rc_unary(
		c->cl, CAS_PFX "BatchReadBlobs", &req.base,
		&build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor, &resp,
		&smsg, c->timeout_us);
	free(pds);
	free(pp);
	if (code != ST_OK) {
		int rc = rpc_fail(c, code, smsg, msg, "BatchReadBlobs");
		free(smsg);
		free(got);
		return rc == -ENOENT ? -EIO : rc;
	}
	free(smsg);
	const Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse *r = (const void *)resp;
	int rc = 0;
	for (size_t j = 0; j < r->n_responses && rc == 0; j++) {
		const Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response *e =
			r->responses[j];
		struct digest dg;
		if (!e->digest || digest_parse(e->digest->hash, e->digest->size_bytes, &dg, NULL)) {
			*msg = xstrdup("BatchReadBlobs: response with a bad digest");
			rc = -EIO;
			break;
		}
		size_t i;
		for (i = 0; i < n && !(digest_eq(&d[idx[i]], &dg) && !got[i]); i++)
			;
		if (i == n)
			continue;
		const struct digest *want = &d[idx[i]];
		int st = e->status ? e->status->code : 0;
		if (st != ST_OK) {
			rc = rpc_fail(c, st, e->status->message, msg, "BatchReadBlobs %s",
				      want->hex);
			if (rc == -ENOENT) {
				free(*msg);
				*msg = missing_msg(want->hex, want->size);
			}
			break;
		}
		digest_of(e->data.data, e->data.len, &dg);
		if (!digest_eq(&dg, want)) {
			*msg = xasprintf("BatchReadBlobs: blob %s has the wrong content",
					 want->hex);
			rc = -EIO;
			break;
		}
		got[i] = true;
		rc = sink->data(arg, idx[i], e->data.data, e->data.len, msg);
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		if (!got[i]) {
			*msg = xasprintf("BatchReadBlobs: no answer for blob %s", d[idx[i]].hex);
			rc = -EIO;
		}
	protobuf_c_message_free_unpacked(resp, NULL);
	free(got);
	return rc;
}

int casc_fetch(struct casc *c, const struct digest *d, size_t n, const struct casc_sink *sink,
	       void *arg, char **msg)
{
	reset(c);
	int rc = casc_caps(c, msg);
	if (rc != 0)
		return rc;
	/* Indices of pending small blobs, sent when the next would overflow. */
	size_t *idx = xcalloc(n ? n : 1, sizeof(*idx));
	size_t nb = 0;
	int64_t total = 0;
	for (size_t i = 0; i <= n && rc == 0; i++) {
		bool last = i == n;
		if (!last && digest_is_empty(&d[i])) {
			rc = sink->data(arg, i, (const uint8_t *)"", 0, msg);
			continue;
		}
		if (!last && too_big(c, d[i].size)) {
			int fd = sink->fd(arg, i, msg);
			if (fd < 0) {
				rc = -EIO;
				continue;
			}
			rc = bs_read(c, d[i].hex, d[i].size, fd, "output", NULL, NULL, msg);
			int crc = sink->fd_done(arg, i, fd, rc == 0 ? msg : NULL);
			if (rc == 0)
				rc = crc;
			continue;
		}
		int64_t add = last ? 0 : d[i].size + ENTRY_OVERHEAD;
		if (nb && (last || batch_full(c, nb, total, add))) {
			rc = batch_read(c, d, idx, nb, sink, arg, msg);
			nb = 0;
			total = 0;
		}
		if (!last && rc == 0) {
			idx[nb++] = i;
			total += add;
		}
	}
	free(idx);
	return rc;
}

/* casc_read_many's sink: distinct blobs into out[]. */
struct many {
	uint8_t **out;
	size_t *lens;
};

static int many_data(void *arg, size_t i, const uint8_t *bytes, size_t len, char **msg)
{
	(void)msg;
	struct many *m = arg;
	m->out[i] = xmalloc(len ? len : 1);
	memcpy(m->out[i], bytes, len);
	m->lens[i] = len;
	return 0;
}

int casc_read_many(struct casc *c, const struct digest *d, size_t n, uint8_t **out, size_t *lens,
		   char **msg)
{
	reset(c);
	for (size_t i = 0; i < n; i++)
		out[i] = NULL;
	/* Each digest once; the others are copied after. */
	struct digest *dd = xcalloc(n ? n : 1, sizeof(*dd));
	size_t *first = xcalloc(n ? n : 1, sizeof(*first)); /* index into dd */
	size_t nd = 0;
	for (size_t i = 0; i < n; i++) {
		size_t j;
		for (j = 0; j < nd && !digest_eq(&dd[j], &d[i]); j++)
			;
		if (j == nd)
			dd[nd++] = d[i];
		first[i] = j;
	}
	uint8_t **dout = xcalloc(nd ? nd : 1, sizeof(*dout));
	size_t *dlen = xcalloc(nd ? nd : 1, sizeof(*dlen));
	int rc = 0;
	/* Big ones go to memory too: read them one by one. */
	for (size_t j = 0; j < nd && rc == 0; j++)
		if (!digest_is_empty(&dd[j]) && (rc = casc_caps(c, msg)) == 0 &&
		    too_big(c, dd[j].size))
			rc = bs_read(c, dd[j].hex, dd[j].size, -1, "memory", &dout[j], &dlen[j],
				     msg);
	/* The rest in batches (the streamed ones are skipped: already there). */
	size_t *rest = xcalloc(nd ? nd : 1, sizeof(*rest));
	struct digest *rd = xcalloc(nd ? nd : 1, sizeof(*rd));
	size_t nr = 0;
	for (size_t j = 0; j < nd && rc == 0; j++)
		if (!dout[j]) {
			rest[nr] = j;
			rd[nr++] = dd[j];
		}
	uint8_t **rout = xcalloc(nr ? nr : 1, sizeof(*rout));
	size_t *rlen = xcalloc(nr ? nr : 1, sizeof(*rlen));
	struct many rm = {rout, rlen};
	static const struct casc_sink sink = {.data = many_data};
	if (rc == 0)
		rc = casc_fetch(c, rd, nr, &sink, &rm, msg);
	for (size_t k = 0; k < nr; k++) {
		dout[rest[k]] = rout[k];
		dlen[rest[k]] = rlen[k];
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		out[i] = xmalloc(dlen[first[i]] ? dlen[first[i]] : 1);
		memcpy(out[i], dout[first[i]], dlen[first[i]]);
		lens[i] = dlen[first[i]];
	}
	if (rc != 0)
		for (size_t i = 0; i < n; i++) {
			free(out[i]);
			out[i] = NULL;
		}
	for (size_t j = 0; j < nd; j++)
		free(dout[j]);
	free(dout);
	free(dlen);
	free(rout);
	free(rlen);
	free(rest);
	free(rd);
	free(dd);
	free(first);
	return rc;
}

/* ---- uploads ------------------------------------------------------------- */

static int open_blob(struct casc *c, const struct casc_blob *b, char **msg)
{
	if (c->open_blob)
		return c->open_blob(b, msg);
	int fd = open(b->path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		*msg = xasprintf("%s: %s", b->path, strerror(errno));
	return fd;
}

/* Bytes of file blob b, read whole (a small one: it goes in a batch). */
static uint8_t *slurp(struct casc *c, const struct casc_blob *b, char **msg)
{
	size_t want = (size_t)b->d.size;
	int fd = open_blob(c, b, msg);
	if (fd < 0)
		return NULL;
	uint8_t *buf = xmalloc(want ? want : 1);
	size_t got = 0;
	while (got < want) {
		ssize_t m = read(fd, buf + got, want - got);
		if (m < 0 && errno == EINTR)
			continue;
		if (m <= 0) {
			*msg = xasprintf("%s: %s", b->path,
					 m < 0 ? strerror(errno) : "file shrank while uploading");
			break;
		}
		got += (size_t)m;
	}
	close(fd);
	if (got < want) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* One BatchUpdateBlobs of b[idx[0..n)]. */
static int batch_update(struct casc *c, const struct casc_blob *b, const size_t *idx, size_t n,
			char **msg)
{
	PbBatchUpdate req = REV2(BATCH_UPDATE_BLOBS_REQUEST__INIT);
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *rs =
		xcalloc(n, sizeof(*rs));
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request **rp =
		xcalloc(n, sizeof(*rp));
	PbDigest *pds = xcalloc(n, sizeof(*pds));
	uint8_t **owned = xcalloc(n, sizeof(*owned));
	int rc = 0;
	for (size_t i = 0; i < n && rc == 0; i++) {
		const struct casc_blob *e = &b[idx[i]];
		build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(
			&rs[i]);
		pb_digest(&pds[i], &e->d);
		rs[i].digest = &pds[i];
		const uint8_t *data = e->data;
		if (!data && !(data = owned[i] = slurp(c, e, msg)))
			rc = -EIO;
		rs[i].data.data = (uint8_t *)data;
		rs[i].data.len = (size_t)e->d.size;
		rp[i] = &rs[i];
	}
	if (rc == 0) {
		req.instance_name = (char *)c->instance;
		req.n_requests = n;
		req.requests = rp;
		ProtobufCMessage *resp = NULL;
		char *smsg = NULL;
		int code = rc_unary(
			c->cl, CAS_PFX "BatchUpdateBlobs", &req.base,
			&build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
			&resp, &smsg, c->timeout_us);
		if (code != ST_OK) {
			rc = rpc_fail(c, code, smsg, msg, "BatchUpdateBlobs");
		} else {
			const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *r =
				(const void *)resp;
			for (size_t j = 0; j < r->n_responses && rc == 0; j++) {
				const PbUpdateResp *e = r->responses[j];
				if (e->status && e->status->code != ST_OK)
					rc = rpc_fail(c, e->status->code, e->status->message, msg,
						      "BatchUpdateBlobs %s/%" PRId64,
						      e->digest ? e->digest->hash : "?",
						      e->digest ? e->digest->size_bytes : 0);
			}
			protobuf_c_message_free_unpacked(resp, NULL);
		}
		free(smsg);
		if (rc == -ENOENT)
			rc = -EIO;
	}
	for (size_t i = 0; i < n; i++)
		free(owned[i]);
	free(owned);
	free(rs);
	free(rp);
	free(pds);
	return rc;
}

/* Stream blob b with ByteStream Write. */
static int stream_blob(struct casc *c, const struct casc_blob *b, char **msg)
{
	if (b->data)
		return bs_write(c, b->d.hex, b->d.size, -1, b->data, b->d.size, NULL, msg);
	int fd = open_blob(c, b, msg);
	if (fd < 0)
		return -EIO;
	int rc = bs_write(c, b->d.hex, b->d.size, fd, NULL, b->d.size, b->path, msg);
	close(fd);
	return rc;
}

int casc_upload(struct casc *c, const struct casc_blob *b, size_t n, int64_t *sent, int64_t *bytes,
		char **msg)
{
	reset(c);
	if (sent)
		*sent = 0;
	if (bytes)
		*bytes = 0;
	int rc = casc_caps(c, msg);
	if (rc != 0)
		return rc;
	/* Each digest once; the empty blob is always there. */
	struct digest *ds = xcalloc(n ? n : 1, sizeof(*ds));
	size_t *which = xcalloc(n ? n : 1, sizeof(*which));
	size_t nd = 0;
	struct digest_map seen;
	digest_map_init(&seen);
	struct digest_map_node *nodes = xcalloc(n ? n : 1, sizeof(*nodes));
	for (size_t i = 0; i < n; i++) {
		if (b[i].d.size == 0 || digest_map_find(&seen, &b[i].d))
			continue;
		memcpy(nodes[i].hash, b[i].d.hash, DIGEST_HASH_LEN);
		nodes[i].size = b[i].d.size;
		digest_map_insert(&seen, &nodes[i]);
		ds[nd] = b[i].d;
		which[nd++] = i;
	}
	bool *missing = xcalloc(nd ? nd : 1, sizeof(*missing));
	rc = casc_find_missing(c, ds, nd, missing, msg);
	int64_t nsent = 0, nbytes = 0;
	size_t *batch = xcalloc(nd ? nd : 1, sizeof(*batch));
	size_t nb = 0;
	int64_t total = 0;
	for (size_t k = 0; k <= nd && rc == 0; k++) {
		bool last = k == nd;
		if (!last && !missing[k])
			continue;
		const struct casc_blob *e = last ? NULL : &b[which[k]];
		if (e) {
			nsent++;
			nbytes += e->d.size;
		}
		if (e && too_big(c, e->d.size)) {
			rc = stream_blob(c, e, msg);
			continue;
		}
		int64_t add = last ? 0 : e->d.size + ENTRY_OVERHEAD;
		if (nb && (last || batch_full(c, nb, total, add))) {
			rc = batch_update(c, b, batch, nb, msg);
			nb = 0;
			total = 0;
		}
		if (!last && rc == 0) {
			batch[nb++] = which[k];
			total += add;
		}
	}
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
	return rc;
}
