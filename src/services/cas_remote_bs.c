/*
 * cas_remote_bs.c - ByteStream for remote and sharded instances (see
 * cas_remote.h): Read, Write and QueryWriteStatus of a blob this reactord
 * does not own go to its owner, chunk by chunk, never holding a whole blob.
 *
 * Read asks the owner for one segment (READ_SEG bytes, read_offset /
 * read_limit) at a time and passes each chunk on as it arrives; the next
 * segment is asked for only once the client's queue is under READ_AHEAD,
 * so a slow client holds at most a segment plus that much here.
 * Write opens one Write stream to the owner and passes every message on;
 * while more than WRITE_HIWAT bytes wait to go out to the owner, the
 * client's input is held (its flow-control window stays shut) until the
 * owner drained them.  The owner's answer (OK with committed_size, or an
 * error) ends the client's call.  Digests this reactord owns are left to
 * the local handlers (the hooks return false).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/pbwire.h"
#include "domain/blob.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "services/cas_remote.h"
#include "services/cas_remote_int.h"
#include "services/inst.h"
#include "services/resname.h"
#include "services/svc.h"

#define READ_SEG    (4 << 20)
#define READ_AHEAD  (2 << 20)
#define WRITE_HIWAT (1 << 20)

/* Parse a resource name of a remote instance: NULL when the instance is
 * local or unknown (the local handler answers), else the remote CAS with
 * *d; *bad is set (and the call finished) when the name is invalid. */
static struct cas_remote *bs_resolve(struct call *c, const char *name, bool upload,
				     struct digest *d, bool *bad)
{
	struct resname rn;
	char *err = NULL;
	*bad = false;
	if (!*name)
		return NULL; /* a later message of a local Write */
	if (resname_parse(name, upload, &rn, &err) != 0) {
		free(err); /* the local handler says what is wrong */
		return NULL;
	}
	struct cas_remote *r = cas_remote_of(rn.instance);
	if (r &&
	    (rn.compressor || (rn.digest_function && strcmp(rn.digest_function, "sha256") != 0)))
		r = NULL; /* unsupported: the local handler answers */
	else if (r && digest_parse(rn.hash, rn.size, d, &err) != 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "resource name \"%s\": %s", name, err);
		free(err);
		*bad = true;
	}
	resname_free(&rn);
	return r;
}

/* Route a ByteStream call on resource `name`: NULL when the local handler
 * serves it (a local instance, a digest this reactord owns, the empty
 * blob) or when it was answered (*bad); else the remote CAS, with *d and
 * its owner *s. */
static struct cas_remote *bs_route(struct call *c, const char *name, bool upload, struct digest *d,
				   struct shard **s, bool *bad)
{
	struct cas_remote *r = bs_resolve(c, name, upload, d, bad);
	if (!r || *bad)
		return NULL;
	*s = cas_remote_owner(r, d);
	return (*s)->self || digest_is_empty(d) ? NULL : r;
}

/* ---- Read ---------------------------------------------------------------- */

struct bread {
	struct rcall rc;
	struct call *c;
	struct cas_remote *r;
	struct shard *s;
	struct digest d;
	char *name; /* the owner's read resource name */
	int64_t off, left;
	int64_t seg_left; /* bytes the segment in flight still owes */
	struct rc_call *k;
	bool paused;
	uint8_t *keep; /* a whole small blob read for the cache, or NULL */
};

/* One ReadResponse with n bytes of data, framed by hand after the 5 gRPC
 * bytes. */
static void bs_send_data(struct call *c, const uint8_t *data, size_t n)
{
	uint8_t *buf = xmalloc(5 + 11 + n);
	buf[5] = 10 << 3 | 2;
	size_t hl = 1 + pb_varint_put(buf + 6, n);
	memcpy(buf + 5 + hl, data, n);
	call_send_owned(c, buf, hl + n);
}

static void bread_free(struct bread *b)
{
	rcall_del(&b->rc);
	free(b->keep);
	free(b->name);
	call_unref(b->c);
	free(b);
}

static void bread_pump(struct bread *b);

static void bread_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct bread *b = arg;
	Google__Bytestream__ReadResponse *r =
		google__bytestream__read_response__unpack(NULL, len, msg);
	if (!r)
		return;
	size_t n = r->data.len;
	if ((int64_t)n <= b->seg_left && !call_done(b->c) && n > 0) {
		if (b->keep)
			memcpy(b->keep + b->off, r->data.data, n);
		bs_send_data(b->c, r->data.data, n);
		b->seg_left -= (int64_t)n;
		b->off += (int64_t)n;
		b->left -= (int64_t)n;
	} else if ((int64_t)n > b->seg_left) {
		b->seg_left = -1; /* more than asked: DATA_LOSS at the end */
	}
	google__bytestream__read_response__free_unpacked(r, NULL);
}

static void bread_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct bread *b = arg;
	b->k = NULL;
	if (call_done(b->c)) {
		bread_free(b);
		return;
	}
	if (code != GRPC_OK) {
		shard_finish_call(b->c, b->s, code, message);
		bread_free(b);
		return;
	}
	shard_check_down(b->s, code, message);
	if (b->seg_left != 0) {
		call_finish(b->c, GRPC_DATA_LOSS,
			    "CAS shard %s sent %s bytes than asked for blob %s", b->s->name,
			    b->seg_left < 0 ? "more" : "fewer", b->d.hex);
		bread_free(b);
		return;
	}
	if (b->left == 0) {
		if (b->keep)
			cache_fill(b->r, &b->d, b->keep, (size_t)b->d.size);
		call_finish(b->c, GRPC_OK, NULL);
		bread_free(b);
		return;
	}
	bread_pump(b);
}

static void bread_pump(struct bread *b)
{
	if (b->k || call_done(b->c))
		return;
	if (call_pending(b->c) >= READ_AHEAD) {
		b->paused = true;
		call_want_writable(b->c);
		return;
	}
	b->paused = false;
	const char *why = NULL;
	struct rc_client *cl = shard_client(b->s, &why);
	b->k = cl ? rc_call_start(cl, "/google.bytestream.ByteStream/Read", 0, NULL, 0, bread_msg,
				  bread_done, b)
		  : NULL;
	if (!b->k) {
		shard_fail_call(b->c, b->s, shard_start_failed(b->s, cl, why));
		bread_free(b);
		return;
	}
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	req.resource_name = b->name;
	req.read_offset = b->off;
	req.read_limit = b->left < READ_SEG ? b->left : READ_SEG;
	b->seg_left = req.read_limit;
	size_t n = google__bytestream__read_request__get_packed_size(&req);
	uint8_t *buf = xmalloc(n + 1);
	google__bytestream__read_request__pack(&req, buf);
	rc_call_send(b->k, buf, n);
	rc_call_close_send(b->k);
	free(buf);
}

bool cas_remote_bs_read(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Bytestream__ReadRequest *req = (const void *)msg;
	struct digest d;
	struct shard *s;
	bool bad;
	struct cas_remote *r = bs_route(c, req->resource_name, false, &d, &s, &bad);
	if (!r)
		return bad;
	if (req->read_offset < 0 || req->read_offset > d.size) {
		call_finish(c, GRPC_OUT_OF_RANGE,
			    "read_offset %lld is outside blob %s of %lld bytes",
			    (long long)req->read_offset, d.hex, (long long)d.size);
		return true;
	}
	if (req->read_limit < 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "read_limit %lld is negative",
			    (long long)req->read_limit);
		return true;
	}
	int64_t left = d.size - req->read_offset;
	if (req->read_limit > 0 && req->read_limit < left)
		left = req->read_limit;
	uint8_t *data = NULL;
	if (left > 0 && cache_read(r, &d, &data)) {
		bs_send_data(c, data + req->read_offset, (size_t)left); /* cached: <= 1 MiB */
		free(data);
		left = 0;
	}
	if (left == 0) {
		call_finish(c, GRPC_OK, NULL);
		return true;
	}
	struct bread *b = xcalloc(1, sizeof(*b));
	b->c = c;
	call_ref(c);
	b->r = r;
	b->s = s;
	b->d = d;
	b->name = *r->instance
			  ? xasprintf("%s/blobs/%s/%lld", r->instance, d.hex, (long long)d.size)
			  : xasprintf("blobs/%s/%lld", d.hex, (long long)d.size);
	b->off = req->read_offset;
	b->left = left;
	if (r->cache && left == d.size && d.size <= r->cache_blob_max)
		b->keep = xmalloc((size_t)d.size);
	rcall_add(&b->rc, c, RK_READ);
	bread_pump(b);
	return true;
}

/* ---- Write --------------------------------------------------------------- */

struct bwrite {
	struct rcall rc;
	struct call *c;
	struct shard *s;
	struct rc_call *k;
	int64_t committed;
	bool got_resp;
	bool held;
};

static void bwrite_free(struct bwrite *w)
{
	rcall_del(&w->rc);
	if (w->held)
		call_hold_input(w->c, false);
	call_unref(w->c);
	free(w);
}

static void bwrite_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct bwrite *w = arg;
	Google__Bytestream__WriteResponse *r =
		google__bytestream__write_response__unpack(NULL, len, msg);
	if (!r)
		return;
	w->committed = r->committed_size;
	w->got_resp = true;
	google__bytestream__write_response__free_unpacked(r, NULL);
}

static void bwrite_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct bwrite *w = arg;
	w->k = NULL;
	if (!call_done(w->c)) {
		if (code == GRPC_OK && w->got_resp) {
			shard_check_down(w->s, code, message);
			Google__Bytestream__WriteResponse resp =
				GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
			resp.committed_size = w->committed;
			call_reply(w->c, &resp.base);
		} else if (code == GRPC_OK) {
			call_finish(w->c, GRPC_INTERNAL,
				    "CAS shard %s answered Write without a "
				    "WriteResponse",
				    w->s->name);
		} else {
			shard_finish_call(w->c, w->s, code, message);
		}
	}
	bwrite_free(w);
}

static void bwrite_writable(struct rc_call *k, void *arg)
{
	(void)k;
	struct bwrite *w = arg;
	if (w->held) {
		w->held = false;
		call_hold_input(w->c, false);
	}
}

static void bwrite_forward(struct bwrite *w, const ProtobufCMessage *msg)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	uint8_t *buf = xmalloc(n + 1);
	protobuf_c_message_pack(msg, buf);
	rc_call_send(w->k, buf, n);
	free(buf);
	if (!w->held && rc_call_pending(w->k) > WRITE_HIWAT) {
		w->held = true;
		call_hold_input(w->c, true);
		rc_call_on_writable(w->k, bwrite_writable);
	}
}

bool cas_remote_bs_write(struct call *c, const ProtobufCMessage *msg)
{
	struct rcall *rc = rcall_find(c);
	if (rc) {
		struct bwrite *w = container_of(rc, struct bwrite, rc);
		if (w->k)
			bwrite_forward(w, msg);
		return true;
	}
	const Google__Bytestream__WriteRequest *req = (const void *)msg;
	struct digest d;
	struct shard *s;
	bool bad;
	if (!bs_route(c, req->resource_name, true, &d, &s, &bad))
		return bad;
	struct bwrite *w = xcalloc(1, sizeof(*w));
	w->c = c;
	call_ref(c);
	w->s = s;
	rcall_add(&w->rc, c, RK_WRITE);
	const char *why = NULL;
	struct rc_client *cl = shard_client(s, &why);
	w->k = cl ? rc_call_start(cl, "/google.bytestream.ByteStream/Write", 0, NULL, 0, bwrite_msg,
				  bwrite_done, w)
		  : NULL;
	if (!w->k) {
		shard_fail_call(c, s, shard_start_failed(s, cl, why));
		bwrite_free(w);
		return true;
	}
	bwrite_forward(w, msg);
	return true;
}

/* ---- QueryWriteStatus ---------------------------------------------------- */

struct bquery {
	struct call *c;
	struct shard *s;
};

static void bquery_done(int code, const char *message, ProtobufCMessage *resp, void *arg)
{
	struct bquery *q = arg;
	if (!call_done(q->c)) {
		if (code == GRPC_OK) {
			shard_check_down(q->s, code, message);
			call_reply(q->c, resp);
		} else {
			shard_finish_call(q->c, q->s, code, message);
		}
	}
	call_unref(q->c);
	free(q);
}

bool cas_remote_bs_query(struct call *c, const ProtobufCMessage *msg)
{
	const Google__Bytestream__QueryWriteStatusRequest *req = (const void *)msg;
	struct digest d;
	struct shard *s;
	bool bad;
	if (!bs_route(c, req->resource_name, true, &d, &s, &bad))
		return bad;
	const char *why = NULL;
	struct rc_client *cl = shard_client(s, &why);
	struct bquery *q = xcalloc(1, sizeof(*q));
	q->c = c;
	q->s = s;
	call_ref(c);
	if (!cl || rc_unary_start(cl, "/google.bytestream.ByteStream/QueryWriteStatus", msg,
				  &google__bytestream__query_write_status_response__descriptor,
				  shard_timeout(c), bquery_done, q) != 0) {
		shard_fail_call(c, s, shard_start_failed(s, cl, why));
		call_unref(c);
		free(q);
	}
	return true;
}

/* ---- the calls' life ------------------------------------------------------ */

void cas_remote_bs_cancel(struct call *c, struct rcall *rc)
{
	(void)c;
	if (rc->kind == RK_READ) {
		struct bread *b = container_of(rc, struct bread, rc);
		if (b->k)
			rc_call_cancel(b->k); /* bread_done frees b */
		else
			bread_free(b);
	} else {
		struct bwrite *w = container_of(rc, struct bwrite, rc);
		if (w->k)
			rc_call_cancel(w->k); /* bwrite_done frees w */
		else
			bwrite_free(w);
	}
}

void cas_remote_bs_writable(struct call *c, struct rcall *rc)
{
	(void)c;
	struct bread *b = container_of(rc, struct bread, rc);
	if (b->paused)
		bread_pump(b);
}

void cas_remote_bs_half_close(struct call *c, struct rcall *rc)
{
	(void)c;
	struct bwrite *w = container_of(rc, struct bwrite, rc);
	if (w->k)
		rc_call_close_send(w->k); /* the owner's answer ends the call */
}
