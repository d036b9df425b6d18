/*
 * svc_bytestream.c - google.bytestream.ByteStream over the CAS: Read
 * (streamed in chunks sized to HTTP/2 flow control, never the whole blob
 * in memory), Write (streaming hash, digest verified on finish_write,
 * resumable uploads) and QueryWriteStatus.
 *
 * Uploads live in a table keyed by their resource name so that a Write
 * broken off mid-way can be resumed by the next Write at the committed
 * offset (as QueryWriteStatus reports it).  Partial uploads are bounded:
 * at most uploads.max-open in all and uploads.max-per-connection per
 * connection (the one that wrote last), else RESOURCE_EXHAUSTED naming
 * the limit; their bytes count against the store's storage-max-size (see
 * blob_writer_write).  An upload whose stream ended keeps its temp file
 * for a resume but no descriptor (blob_writer_suspend), and a timer drops
 * it once nobody touched it for uploads.abandon-timeout.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/cfg.h"
#include "core/list.h"
#include "core/pbwire.h"
#include "domain/blob.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "services/cas_remote.h"
#include "services/inst.h"
#include "core/log.h"
#include "services/reapi.h"
#include "services/resname.h"
#include "services/svc.h"

#define READ_CHUNK (1 << 20) /* bytes per ReadResponse */
#define READ_AHEAD (2 << 20) /* stop reading while this much is queued */
/* Bytes all Read streams together read and frame per loop pass.  Once it
 * is spent, a stream waits on read_waiters; one zero timer (pass_ev, armed
 * by the first bytes a pass spends) runs next pass, after the loop polled:
 * it refills the budget and resumes the waiters in order, so the streams
 * take turns.  A per-stream share refilled each time the h2 output drained
 * let 8 streams read 6 MiB each in one pass (60+ ms); a strict 256 KiB per
 * stream and pass held a lone stream to 1.1 GB/s.  2 MiB a pass is ~3 ms
 * of pread, framing and socket writes here.  A chunk smaller than READ_MIN
 * waits for the next pass. */
#define READ_PASS (2 << 20)
#define READ_MIN  (64 << 10)
/* The abandon sweep runs every quarter of uploads.abandon-timeout, within
 * these bounds (microseconds). */
#define SWEEP_MIN_US (100 * 1000LL)
#define SWEEP_MAX_US (30 * 1000000LL)

struct upload {
	char *name;
	struct digest d;
	struct blob_writer *w;
	struct call *owner; /* the Write call appending now, or NULL */
	uint64_t conn;	    /* connection that wrote last (call_conn_id) */
	int64_t last_active;
	struct list link; /* on uploads */
};

static struct list uploads = LIST_INIT(uploads);
static size_t nuploads;
static struct event *sweep_ev;

/* ---- resource names ------------------------------------------------------ */

/* Parse a name and resolve its instance and digest; finishes the call with
 * a precise status on any problem. */
static struct inst *resolve(struct call *c, const char *name, bool upload, struct digest *d)
{
	struct resname r;
	char *err = NULL;
	if (resname_parse(name, upload, &r, &err) != 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "%s", err);
		free(err);
		return NULL;
	}
	struct inst *in = NULL;
	if (r.compressor) {
		call_finish(c, GRPC_UNIMPLEMENTED,
			    "compressed-blobs/%s is not supported: this server advertises no "
			    "compressors; use blobs/",
			    r.compressor);
	} else if (r.digest_function && strcmp(r.digest_function, "sha256") != 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "digest function %s is not supported: this server uses SHA256",
			    r.digest_function);
	} else if (digest_parse(r.hash, r.size, d, &err) != 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "resource name \"%s\": %s", name, err);
		free(err);
	} else {
		in = inst_lookup(c, r.instance);
	}
	resname_free(&r);
	return in;
}

/* ---- Read ---------------------------------------------------------------- */

struct rstate {
	struct blob_reader *r;
	int64_t remaining;
	struct list wait; /* on read_waiters: out of this pass's budget */
	struct call *c;
};

static struct event *pass_ev;
static size_t pass_left = READ_PASS;
static struct list read_waiters = LIST_INIT(read_waiters);

static void read_pump(struct call *c);

/* Next pass: a new budget, and the streams that ran out resume in order
 * (one that runs out again queues up for the pass after). */
static void pass_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what, (void)arg;
	pass_left = READ_PASS;
	struct list todo = LIST_INIT(todo);
	if (!list_empty(&read_waiters)) {
		/* splice: todo takes the whole queue */
		list_insert_between(&todo, read_waiters.prev, read_waiters.next);
		list_init(&read_waiters);
	}
	while (!list_empty(&todo)) {
		struct rstate *st = container_of(list_first(&todo), struct rstate, wait);
		list_del(&st->wait);
		struct call *c = st->c;
		call_ref(c);
		read_pump(c);
		call_unref(c);
	}
}

static void read_close(struct call *c)
{
	struct rstate *st = call_data(c);
	if (!st)
		return;
	if (st->r)
		blob_reader_close(st->r);
	list_del(&st->wait);
	free(st);
	call_set_data(c, NULL);
}

/* Send chunks until the stream's buffer is full or the blob is done.
 * Each ReadResponse is framed by hand (field 10, bytes) so the data is read
 * straight into the buffer that goes on the wire. */
static void read_pump(struct call *c)
{
	struct rstate *st = call_data(c);
	if (st && list_linked(&st->wait))
		return; /* waiting for the next pass's budget */
	while (st && !call_done(c) && st->remaining > 0 && call_pending(c) < READ_AHEAD) {
		size_t want = st->remaining < READ_CHUNK ? (size_t)st->remaining : READ_CHUNK;
		if (pass_ev) {
			if (pass_left < want && pass_left < READ_MIN) {
				list_add_tail(&read_waiters, &st->wait);
				return;
			}
			if (want > pass_left)
				want = pass_left;
			if (pass_left == READ_PASS && !evtimer_pending(pass_ev, NULL)) {
				static const struct timeval now = {0, 0};
				evtimer_add(pass_ev, &now); /* refill next pass */
			}
			pass_left -= want;
		}
		uint8_t *buf = xmalloc(5 + 1 + 10 + want);
		uint8_t hdr[11];
		hdr[0] = 10 << 3 | 2; /* ReadResponse.data: field 10, bytes */
		size_t hl = 1 + pb_varint_put(hdr + 1, want);
		uint8_t *data = buf + 5 + hl;
		size_t got = 0;
		while (got < want) {
			ssize_t n = blob_reader_read(st->r, data + got, want - got);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		if (got != want) {
			free(buf);
			read_close(c);
			call_finish(c, GRPC_DATA_LOSS, "blob ended early or could not be read");
			return;
		}
		memcpy(buf + 5, hdr, hl);
		st->remaining -= (int64_t)want;
		if (call_send_owned(c, buf, hl + want) != 0)
			break;
	}
	if (st && st->remaining == 0 && !call_done(c)) {
		read_close(c);
		call_finish(c, GRPC_OK, NULL);
	}
}

void svc_bs_read(struct call *c, const ProtobufCMessage *msg)
{
	if (cas_remote_bs_read(c, msg))
		return;
	const Google__Bytestream__ReadRequest *req = (const void *)msg;
	struct digest d;
	struct inst *in = resolve(c, req->resource_name, false, &d);
	if (!in)
		return;
	if (req->read_offset < 0 || req->read_offset > d.size) {
		call_finish(c, GRPC_OUT_OF_RANGE,
			    "read_offset %lld is outside blob %s of %lld bytes",
			    (long long)req->read_offset, d.hex, (long long)d.size);
		return;
	}
	if (req->read_limit < 0) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "read_limit %lld is negative",
			    (long long)req->read_limit);
		return;
	}
	int64_t remaining = d.size - req->read_offset;
	if (req->read_limit > 0 && req->read_limit < remaining)
		remaining = req->read_limit;
	if (digest_is_empty(&d) || (remaining == 0 && blob_has(in->cas, &d))) {
		call_finish(c, GRPC_OK, NULL);
		return;
	}
	struct blob_reader *r = NULL;
	int rv = blob_reader_open(in->cas, &d, req->read_offset, &r);
	if (rv == -ENOENT) {
		call_finish(c, GRPC_NOT_FOUND, "blob %s/%lld not found", d.hex, (long long)d.size);
		return;
	}
	if (rv == -ERANGE) {
		call_finish(c, GRPC_OUT_OF_RANGE, "read_offset %lld is past the end of blob %s",
			    (long long)req->read_offset, d.hex);
		return;
	}
	if (rv != 0) {
		call_finish(c, GRPC_INTERNAL, "cannot open blob %s", d.hex);
		return;
	}
	struct rstate *st = xcalloc(1, sizeof(*st));
	st->r = r;
	st->remaining = remaining;
	st->c = c;
	list_init(&st->wait);
	call_set_data(c, st);
	read_pump(c);
}

void svc_bs_read_writable(struct call *c)
{
	if (cas_remote_writable(c))
		return;
	read_pump(c);
}

void svc_bs_read_cancel(struct call *c)
{
	if (cas_remote_cancel(c))
		return;
	read_close(c);
}

/* ---- uploads table ---------------------------------------------------------- */

static struct upload *upload_find(const char *name)
{
	struct list *pos;
	list_for_each (pos, &uploads) {
		struct upload *u = container_of(pos, struct upload, link);
		if (strcmp(u->name, name) == 0)
			return u;
	}
	return NULL;
}

static void upload_drop(struct upload *u)
{
	list_del(&u->link);
	nuploads--;
	if (u->w)
		blob_writer_abort(u->w);
	free(u->name);
	free(u);
}

static int64_t abandon_us(void)
{
	const struct cfg *cfg = svc_config();
	return cfg ? cfg->uploads_abandon_timeout_us : 600 * 1000000LL;
}

static void sweep_arm(void)
{
	int64_t us = abandon_us() / 4;
	us = us < SWEEP_MIN_US ? SWEEP_MIN_US : us > SWEEP_MAX_US ? SWEEP_MAX_US : us;
	struct timeval tv = {us / 1000000, us % 1000000};
	evtimer_add(sweep_ev, &tv);
}

static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	int64_t now = mono_us(), idle = abandon_us();
	struct list *pos, *tmp;
	list_for_each_safe (pos, tmp, &uploads) {
		struct upload *u = container_of(pos, struct upload, link);
		if (!u->owner && now - u->last_active > idle) {
			LOGI("bytestream",
			     "dropping abandoned upload %s at %lld of %lld bytes "
			     "(uploads.abandon-timeout)",
			     u->name, (long long)blob_writer_offset(u->w), (long long)u->d.size);
			upload_drop(u);
		}
	}
	sweep_arm();
}

void svc_bytestream_init(struct event_base *base)
{
	pass_ev = evtimer_new(base, pass_cb, NULL);
	sweep_ev = evtimer_new(base, sweep_cb, NULL);
	sweep_arm();
}

void svc_bytestream_shutdown(void)
{
	while (!list_empty(&uploads))
		upload_drop(container_of(list_first(&uploads), struct upload, link));
	if (sweep_ev)
		event_free(sweep_ev);
	sweep_ev = NULL;
	if (pass_ev)
		event_free(pass_ev);
	pass_ev = NULL;
	assert(list_empty(&read_waiters));
}

/* ---- Write --------------------------------------------------------------------- */

struct wstate {
	struct upload *up;
	struct inst *in;
	bool finished; /* finish_write seen */
};

static void write_reply(struct call *c, int64_t committed)
{
	Google__Bytestream__WriteResponse resp = GOOGLE__BYTESTREAM__WRITE_RESPONSE__INIT;
	resp.committed_size = committed;
	call_reply(c, &resp.base);
}

static void write_release(struct call *c)
{
	struct wstate *st = call_data(c);
	if (!st)
		return;
	if (st->up) {
		/* Parked for a resume: no descriptor meanwhile.  A failure
		 * shows up as the error of the next write or commit. */
		st->up->owner = NULL;
		st->up->last_active = mono_us();
		if (st->up->w)
			(void)blob_writer_suspend(st->up->w);
	}
	free(st);
	call_set_data(c, NULL);
}

/* A new upload (fresh) or one moving to c's connection would pass a cap:
 * finish c RESOURCE_EXHAUSTED naming it and return true. */
static bool over_limits(struct call *c, bool fresh)
{
	const struct cfg *cfg = svc_config();
	if (!cfg)
		return false;
	if (fresh && nuploads >= (size_t)cfg->uploads_max_open) {
		call_finish(c, GRPC_RESOURCE_EXHAUSTED,
			    "too many partial uploads open (limit %d, config uploads.max-open); "
			    "finish or abandon some first",
			    cfg->uploads_max_open);
		return true;
	}
	uint64_t conn = call_conn_id(c);
	size_t mine = 0;
	struct list *pos;
	list_for_each (pos, &uploads) {
		if (container_of(pos, struct upload, link)->conn == conn)
			mine++;
	}
	if (mine >= (size_t)cfg->uploads_max_per_conn) {
		call_finish(c, GRPC_RESOURCE_EXHAUSTED,
			    "too many partial uploads on this connection (limit %d, config "
			    "uploads.max-per-connection)",
			    cfg->uploads_max_per_conn);
		return true;
	}
	return false;
}

/* First message: find or create the upload. */
static int write_begin(struct call *c, const Google__Bytestream__WriteRequest *req)
{
	struct digest d;
	struct inst *in = resolve(c, req->resource_name, true, &d);
	if (!in)
		return -1;
	if (digest_is_empty(&d) || blob_has(in->cas, &d)) {
		/* Already stored: tell the client at once, it may stop sending. */
		write_reply(c, d.size);
		return -1;
	}
	struct upload *u = upload_find(req->resource_name);
	if (u && u->owner) {
		call_finish(c, GRPC_ABORTED, "upload %s is being written by another stream",
			    req->resource_name);
		return -1;
	}
	if (u && req->write_offset == 0 && blob_writer_offset(u->w) != 0) {
		upload_drop(u); /* a fresh start of the same upload */
		u = NULL;
	}
	int64_t have = u ? blob_writer_offset(u->w) : 0;
	if (req->write_offset != have) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "write_offset %lld does not match the %lld bytes committed for %s",
			    (long long)req->write_offset, (long long)have, req->resource_name);
		return -1;
	}
	if ((!u || u->conn != call_conn_id(c)) && over_limits(c, !u))
		return -1;
	if (!u) {
		u = xcalloc(1, sizeof(*u));
		u->name = xstrdup(req->resource_name);
		u->d = d;
		u->w = blob_writer_open(in->cas, &d);
		list_add_head(&uploads, &u->link);
		nuploads++;
	}
	u->conn = call_conn_id(c);
	u->owner = c;
	u->last_active = mono_us();
	struct wstate *st = xcalloc(1, sizeof(*st));
	st->up = u;
	st->in = in;
	call_set_data(c, st);
	return 0;
}

/* WriteRequest decoded by hand (the dispatch row's decode hook): data
 * points into the received message instead of being copied out of it (a
 * 1 MiB chunk cost a malloc and a copy on top of the hash and the write).
 * on_message runs before those bytes go away and never keeps them. */
ProtobufCMessage *svc_bs_write_decode(struct call *c, const uint8_t *data, size_t len,
				      const char **bad_string)
{
	Google__Bytestream__WriteRequest *q = call_alloc(c, sizeof(*q));
	google__bytestream__write_request__init(q);
	struct pbw r;
	struct pbw_field f;
	const char *bad = NULL; /* reported once the whole message is known sound */
	int rc;
	pbw_init(&r, data, len);
	while ((rc = pbw_next(&r, &f)) > 0) {
		switch (f.num) {
		case 1:
			if (f.wt != PBW_LEN)
				return NULL;
			if (!call_string_ok(f.data, f.len))
				bad = "resource_name";
			else
				q->resource_name = call_strndup(c, (const char *)f.data, f.len);
			break;
		case 2:
			if (f.wt != PBW_VARINT)
				return NULL;
			q->write_offset = (int64_t)f.v;
			break;
		case 3:
			if (f.wt != PBW_VARINT)
				return NULL;
			q->finish_write = f.v != 0;
			break;
		case 10:
			if (f.wt != PBW_LEN)
				return NULL;
			q->data.data = (uint8_t *)f.data;
			q->data.len = f.len;
			break;
		default: break;
		}
	}
	if (rc < 0)
		return NULL;
	if (bad) {
		*bad_string = bad;
		return NULL;
	}
	return &q->base;
}

void svc_bs_write(struct call *c, const ProtobufCMessage *msg)
{
	if (cas_remote_bs_write(c, msg))
		return;
	const Google__Bytestream__WriteRequest *req = (const void *)msg;
	struct wstate *st = call_data(c);
	if (!st) {
		if (write_begin(c, req) != 0)
			return;
		st = call_data(c);
	} else if (st->finished) {
		write_release(c);
		call_finish(c, GRPC_INVALID_ARGUMENT, "data after finish_write");
		return;
	} else if (req->resource_name[0] && strcmp(req->resource_name, st->up->name) != 0) {
		write_release(c);
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "resource_name changed within one Write: \"%s\" after \"%s\"",
			    req->resource_name, st->up->name);
		return;
	} else if (req->write_offset != blob_writer_offset(st->up->w)) {
		int64_t have = blob_writer_offset(st->up->w);
		write_release(c);
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "write_offset %lld does not match the %lld bytes committed",
			    (long long)req->write_offset, (long long)have);
		return;
	}
	struct upload *u = st->up;
	if (req->data.len > 0) {
		int rv = blob_writer_write(u->w, req->data.data, req->data.len);
		if (rv != 0) {
			int64_t size = u->d.size;
			struct blob_store *cas = st->in->cas;
			struct blob_stats bs;
			blob_get_stats(cas, &bs);
			int64_t max_size = bs.max_size, held = blob_tmp_bytes(cas);
			write_release(c);
			upload_drop(u);
			if (rv == -EFBIG)
				call_finish(c, GRPC_INVALID_ARGUMENT,
					    "more data than the %lld bytes the digest declares",
					    (long long)size);
			else if (rv == -ENOSPC)
				call_finish(c, GRPC_RESOURCE_EXHAUSTED,
					    "blob of %lld bytes does not fit in this instance's "
					    "storage-max-size",
					    (long long)size);
			else if (rv == -EDQUOT)
				call_finish(c, GRPC_RESOURCE_EXHAUSTED,
					    "uploads in progress hold %lld bytes: %zu more would "
					    "pass this instance's storage-max-size (%lld bytes)",
					    (long long)held, req->data.len, (long long)max_size);
			else
				call_finish(c, GRPC_INTERNAL, "writing the upload failed");
			return;
		}
	}
	u->last_active = mono_us();
	if (!req->finish_write)
		return;
	st->finished = true;
	char *err = NULL;
	struct blob_writer *w = u->w;
	u->w = NULL;
	int64_t size = u->d.size;
	int rv = blob_writer_commit(w, &err);
	write_release(c);
	upload_drop(u);
	if (rv == 0) {
		write_reply(c, size);
	} else if (rv == -EINVAL) {
		call_finish(c, GRPC_INVALID_ARGUMENT, "%s; nothing was stored",
			    err ? err : "digest mismatch");
	} else if (rv == -ENOSPC) {
		call_finish(c, GRPC_RESOURCE_EXHAUSTED, "%s", err ? err : "CAS is full");
	} else {
		call_finish(c, GRPC_INTERNAL, "%s", err ? err : "storing the blob failed");
	}
	free(err);
}

void svc_bs_write_end(struct call *c)
{
	if (cas_remote_half_close(c))
		return;
	struct wstate *st = call_data(c);
	if (!st) {
		if (!call_done(c))
			call_finish(c, GRPC_INVALID_ARGUMENT, "Write carried no request message");
		return;
	}
	int64_t have = blob_writer_offset(st->up->w);
	write_release(c);
	call_finish(c, GRPC_INVALID_ARGUMENT,
		    "stream ended without finish_write; %lld bytes are committed, resume "
		    "with write_offset %lld",
		    (long long)have, (long long)have);
}

void svc_bs_write_cancel(struct call *c)
{
	if (cas_remote_cancel(c))
		return;
	write_release(c);
}

void svc_bs_query(struct call *c, const ProtobufCMessage *msg)
{
	if (cas_remote_bs_query(c, msg))
		return;
	const Google__Bytestream__QueryWriteStatusRequest *req = (const void *)msg;
	struct digest d;
	struct inst *in = resolve(c, req->resource_name, true, &d);
	if (!in)
		return;
	Google__Bytestream__QueryWriteStatusResponse resp =
		GOOGLE__BYTESTREAM__QUERY_WRITE_STATUS_RESPONSE__INIT;
	if (digest_is_empty(&d) || blob_has(in->cas, &d)) {
		resp.committed_size = d.size;
		resp.complete = true;
	} else {
		struct upload *u = upload_find(req->resource_name);
		if (!u) {
			call_finish(c, GRPC_NOT_FOUND, "no upload %s in progress",
				    req->resource_name);
			return;
		}
		resp.committed_size = blob_writer_offset(u->w);
	}
	call_reply(c, &resp.base);
}
