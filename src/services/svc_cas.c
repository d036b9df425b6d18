/*
 * svc_cas.c - build.bazel.remote.execution.v2.ContentAddressableStorage:
 * FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs and GetTree over the
 * instance's blob store.  Batch calls answer per blob (the call itself is
 * OK); whole-request problems (unknown instance, batch over the advertised
 * limit, unsupported digest function) fail the call.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "domain/blob.h"
#include "google/rpc/status.pb-c.h"
#include "services/cas_remote.h"
#include "services/inst.h"
#include "core/log.h"
#include "core/pbwire.h"
#include "services/reapi.h"
#include "services/svc.h"
#include "proto/pb.h"

/* ---- batch calls in slices ---------------------------------------------- */

/* FindMissingBlobs, BatchUpdateBlobs and BatchReadBlobs work through their
 * request a slice per loop pass: up to `per` items or SLICE_US, then a zero
 * timer lets the loop serve sockets (10,000 digests or 1,000 small files
 * in one pass held every other client for 10-20 ms).  The request is taken
 * from the call layer (it stays in the call's arena until the call is
 * freed, and the job holds a reference); the reply goes out after the last
 * slice.  A cancelled call frees the job (svc_cas_*_cancel). */
#define SLICE_US 2000

struct slice_job;
struct slice_ops {
	/* Handle item i; false when the call was finished (stop). */
	bool (*one)(struct slice_job *j, size_t i);
	/* All items done: reply. */
	void (*done)(struct slice_job *j);
	/* Free what the kind added to the job (not the job). */
	void (*fini)(struct slice_job *j);
	size_t per; /* items per slice */
	/* Optional: the items of one slice are stored as a group (blob
	 * batch: one sync for all with fsync on); called after the group's
	 * sync with its result, to turn the OK answers of items from..next-1
	 * into errors when it failed.  Nothing is acknowledged before. */
	void (*synced)(struct slice_job *j, size_t from, int rv);
};

struct slice_job {
	const struct slice_ops *ops;
	struct call *c;
	ProtobufCMessage *req; /* taken from the call layer (in its arena) */
	struct inst *in;
	size_t n, next;
	struct event *ev;
};

static struct event_base *cas_base;

void svc_cas_init(struct event_base *base)
{
	cas_base = base;
}

static void slice_free(struct slice_job *j)
{
	call_set_data(j->c, NULL);
	if (j->ev)
		event_free(j->ev);
	j->ops->fini(j);
	call_unref(j->c); /* j->req lives in its arena until the call is freed */
	free(j);
}

static void slice_step(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct slice_job *j = arg;
	int64_t until = mono_us() + SLICE_US;
	size_t from = j->next;
	if (j->ops->synced)
		blob_batch_begin(j->in->cas);
	for (size_t k = 0; j->next < j->n; k++) {
		/* The clock every 16 items: reading it per digest cost as much
		 * as the lookup. */
		if (j->ev && (k >= j->ops->per || ((k & 15) == 15 && mono_us() >= until))) {
			if (j->ops->synced)
				j->ops->synced(j, from, blob_batch_end(j->in->cas));
			/* A zero timer, not event_active: active events run in
			 * the same pass, before the loop polls sockets again. */
			static const struct timeval now = {0, 0};
			evtimer_add(j->ev, &now);
			return;
		}
		if (!j->ops->one(j, j->next++)) {
			if (j->ops->synced && blob_batch_end(j->in->cas) != 0)
				LOGW("cas", "syncing the blob store failed"); /* the call is over */
			slice_free(j);
			return;
		}
	}
	if (j->ops->synced)
		j->ops->synced(j, from, blob_batch_end(j->in->cas));
	j->ops->done(j);
	slice_free(j);
}

/* Start job j (zeroed, ops set, kind fields filled) for call c: takes the
 * request, runs the first slice now. */
static void slice_start(struct slice_job *j, struct call *c, const ProtobufCMessage *req,
			struct inst *in, size_t n)
{
	j->c = c;
	call_ref(c);
	call_take_request(c);
	j->req = (ProtobufCMessage *)req;
	j->in = in;
	j->n = n;
	call_set_data(c, j);
	if (cas_base) /* else no loop to yield to: all in one go */
		j->ev = evtimer_new(cas_base, slice_step, j);
	if (j->ev && n > j->ops->per) {
		/* A large request already cost this pass its unpack (10,000
		 * digests: ~3.5 ms, and ~1 ms of UTF-8 checks): start next pass. */
		static const struct timeval now = {0, 0};
		evtimer_add(j->ev, &now);
		return;
	}
	slice_step(-1, 0, j);
}

static void slice_cancel(struct call *c)
{
	struct slice_job *j = call_data(c);
	if (j)
		slice_free(j);
}

void svc_cas_find_missing_cancel(struct call *c)
{
	if (cas_remote_cancel(c))
		return;
	slice_cancel(c);
}

void svc_cas_batch_update_cancel(struct call *c)
{
	if (cas_remote_cancel(c))
		return;
	slice_cancel(c);
}

void svc_cas_batch_read_cancel(struct call *c)
{
	if (cas_remote_cancel(c))
		return;
	slice_cancel(c);
}

/* ---- FindMissingBlobs ----------------------------------------------------- */

/* The request, decoded by hand (the dispatch row's decode hook): one walk
 * over the wire bytes checks the structure and the strings and parses
 * every hash from hex to its 32 bytes, where protobuf-c's unpack, the
 * call layer's UTF-8 walk and a digest_parse per digest took three passes
 * and most of the ~1 us a digest cost.  `pb` is the complete message (its
 * Digest hashes point at ds[i].hex), so the authorization hook and anything
 * else that reads the request see what protobuf-c would have given. */
struct find_req {
	PbFindMissing pb;
	struct digest *ds; /* parsed blob_digests; valid below `bad` */
	size_t bad;	   /* first invalid digest (pb.n_blob_digests: none) */
	const char *bad_msg;
};

static size_t pb_varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* One Digest message into pd (and d when valid).  Returns 0, -1 when
 * malformed, or 1 when its hash is no NUL-free UTF-8. */
static int find_digest(struct call *c, const uint8_t *p, size_t len, PbDigest *pd, struct digest *d,
		       bool *valid)
{
	struct pbw r;
	struct pbw_field f;
	const uint8_t *hash = (const uint8_t *)"";
	size_t hlen = 0;
	uint64_t size = 0;
	int rc = 0;
	pbw_init(&r, p, len);
	/* What every client sends: hash (64 bytes), then size if not 0. */
	if (len >= 2 + DIGEST_HEX_LEN && p[0] == (1 << 3 | 2) && p[1] == DIGEST_HEX_LEN &&
	    (len == 2 + DIGEST_HEX_LEN || p[2 + DIGEST_HEX_LEN] == 2 << 3)) {
		hash = p + 2;
		hlen = DIGEST_HEX_LEN;
		r.p = p + 2 + DIGEST_HEX_LEN;
		const uint8_t *q = r.p + 1;
		if (r.p < r.end && pb_varint_get(&q, r.end, &size) >= 0 && q == r.end)
			r.p = q; /* and the size, which ends it */
	}
	while ((rc = pbw_next(&r, &f)) > 0) {
		if (f.num == 1) {
			if (f.wt != PBW_LEN)
				return -1;
			hash = f.data;
			hlen = f.len;
		} else if (f.num == 2) {
			if (f.wt != PBW_VARINT)
				return -1;
			size = f.v;
		}
	}
	if (rc < 0)
		return -1;
	build__bazel__remote__execution__v2__digest__init(pd);
	pd->size_bytes = (int64_t)size;
	*valid = digest_parse_n((const char *)hash, hlen, (int64_t)size, d) == 0;
	if (*valid) {
		pd->hash = d->hex;
		return 0;
	}
	if (!call_string_ok(hash, hlen))
		return 1;
	pd->hash = hlen ? call_strndup(c, (const char *)hash, hlen) : (char *)"";
	return 0;
}

ProtobufCMessage *svc_cas_find_missing_decode(struct call *c, const uint8_t *data, size_t len,
					      const char **bad_string)
{
	struct pbw r;
	struct pbw_field f;
	size_t n = 0;
	int rc;
	/* First the top level alone: its shape, and how many digests.  A
	 * digest field with a one-byte length (all real ones) is skipped
	 * without the general walk. */
	pbw_init(&r, data, len);
	for (;;) {
		while (r.end - r.p >= 2 && r.p[0] == (2 << 3 | 2) && r.p[1] < 0x80 &&
		       r.p[1] <= r.end - r.p - 2) {
			n++;
			r.p += 2 + r.p[1];
		}
		if ((rc = pbw_next(&r, &f)) <= 0)
			break;
		if ((f.num == 1 || f.num == 2) && f.wt != PBW_LEN)
			return NULL;
		if (f.num == 3 && f.wt != PBW_VARINT)
			return NULL;
		n += f.num == 2;
	}
	if (rc < 0)
		return NULL;
	struct find_req *q = call_alloc(c, sizeof(*q));
	build__bazel__remote__execution__v2__find_missing_blobs_request__init(&q->pb);
	q->ds = call_alloc(c, (n ? n : 1) * sizeof(*q->ds));
	PbDigest *pds = call_alloc(c, (n ? n : 1) * sizeof(*pds));
	q->pb.blob_digests = call_alloc(c, (n ? n : 1) * sizeof(*q->pb.blob_digests));
	q->pb.n_blob_digests = n;
	q->bad = n;
	q->bad_msg = NULL;
	const char *bad = NULL; /* a bad string: reported once all is known well-formed */
	size_t i = 0;
	pbw_init(&r, data, len);
	for (;;) {
		/* A digest with a one-byte length (the usual), without the
		 * general walk; anything else through it. */
		if (r.end - r.p >= 2 && r.p[0] == (2 << 3 | 2) && r.p[1] < 0x80 &&
		    r.p[1] <= r.end - r.p - 2) {
			f.num = 2;
			f.data = r.p + 2;
			f.len = r.p[1];
			r.p += 2 + f.len;
		} else if (pbw_next(&r, &f) <= 0) {
			break;
		}
		if (f.num == 1) {
			if (!call_string_ok(f.data, f.len))
				bad = bad ? bad : "instance_name";
			else
				q->pb.instance_name = call_strndup(c, (const char *)f.data, f.len);
		} else if (f.num == 3) {
			q->pb.digest_function = (int)(uint32_t)f.v;
		} else if (f.num == 2) {
			bool valid;
			q->pb.blob_digests[i] = &pds[i];
			rc = find_digest(c, f.data, f.len, &pds[i], &q->ds[i], &valid);
			if (rc < 0)
				return NULL;
			if (rc > 0) {
				bad = bad ? bad : "hash";
				pds[i].hash = (char *)"";
			} else if (!valid && q->bad == n) {
				struct digest d;
				char *err = NULL;
				if (digest_parse(pds[i].hash, pds[i].size_bytes, &d, &err) == 0)
					abort(); /* digest_parse_n and digest_parse disagree */
				q->bad = i;
				q->bad_msg = call_strndup(c, err, strlen(err));
				free(err);
			}
			i++;
		}
	}
	if (bad) {
		*bad_string = bad;
		return NULL;
	}
	return &q->pb.base;
}

struct find_job {
	struct slice_job j;
	const struct find_req *q;
	uint32_t *missing; /* indexes into q->ds */
	size_t nmiss;
};

static bool find_one(struct slice_job *j, size_t i)
{
	struct find_job *f = (struct find_job *)j;
	if (i == f->q->bad) {
		call_finish(j->c, GRPC_INVALID_ARGUMENT, "blob_digests[%zu]: %s", i, f->q->bad_msg);
		return false;
	}
	if (!blob_has(j->in->cas, &f->q->ds[i]))
		f->missing[f->nmiss++] = (uint32_t)i;
	return true;
}

/* FindMissingBlobsResponse{repeated Digest missing_blob_digests = 2},
 * written straight into the buffer that goes on the wire. */
static void find_done(struct slice_job *j)
{
	struct find_job *f = (struct find_job *)j;
	size_t total = 0;
	for (size_t k = 0; k < f->nmiss; k++) {
		const struct digest *d = &f->q->ds[f->missing[k]];
		size_t dl =
			2 + DIGEST_HEX_LEN + (d->size ? 1 + pb_varint_len((uint64_t)d->size) : 0);
		total += 1 + pb_varint_len(dl) + dl;
	}
	uint8_t *buf = xmalloc(5 + total), *o = buf + 5;
	for (size_t k = 0; k < f->nmiss; k++) {
		const struct digest *d = &f->q->ds[f->missing[k]];
		size_t dl =
			2 + DIGEST_HEX_LEN + (d->size ? 1 + pb_varint_len((uint64_t)d->size) : 0);
		*o++ = 2 << 3 | 2;
		o += pb_varint_put(o, dl);
		*o++ = 1 << 3 | 2;
		*o++ = DIGEST_HEX_LEN;
		memcpy(o, d->hex, DIGEST_HEX_LEN);
		o += DIGEST_HEX_LEN;
		if (d->size) {
			*o++ = 2 << 3;
			o += pb_varint_put(o, (uint64_t)d->size);
		}
	}
	assert((size_t)(o - buf) == 5 + total);
	if (call_send_owned(j->c, buf, total) == 0)
		call_finish(j->c, GRPC_OK, NULL);
}

static void find_fini(struct slice_job *j)
{
	(void)j; /* all in the call's arena */
}

/* A digest costs an index lookup (~0.1 us) once decoded. */
static const struct slice_ops find_ops = {find_one, find_done, find_fini, 4096, NULL};

void svc_cas_find_missing(struct call *c, const ProtobufCMessage *msg)
{
	/* The sharded/remote CAS reads the protobuf form, the first member. */
	if (cas_remote_find_missing(c, msg))
		return;
	const struct find_req *q = (const void *)msg;
	/* Only ever handed the hand-decoded form (the dispatch row). */
	assert(call_method(c)->decode == svc_cas_find_missing_decode);
	struct inst *in = inst_lookup(c, q->pb.instance_name);
	if (!in || reapi_digest_function(c, q->pb.digest_function) != 0)
		return;
	size_t n = q->pb.n_blob_digests;
	struct find_job *f = xcalloc(1, sizeof(*f));
	f->j.ops = &find_ops;
	f->q = q;
	f->missing = call_alloc(c, (n ? n : 1) * sizeof(*f->missing));
	slice_start(&f->j, c, msg, in, n);
}

/* ---- BatchUpdateBlobs / BatchReadBlobs ---------------------------------- */

/* Per-blob statuses own their message strings. */
struct statuses {
	Google__Rpc__Status *st;
	size_t n;
};

static Google__Rpc__Status *status_set(struct statuses *s, size_t i, int code, char *msg)
{
	Google__Rpc__Status *st = &s->st[i];
	google__rpc__status__init(st);
	st->code = code;
	st->message = msg ? msg : (char *)"";
	return st;
}

static void statuses_free(struct statuses *s)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->st[i].message && s->st[i].message != protobuf_c_empty_string &&
		    s->st[i].message[0])
			free(s->st[i].message);
	free(s->st);
}

static int put_error_code(int rv)
{
	switch (rv) {
	case -EINVAL: return GRPC_INVALID_ARGUMENT;
	case -ENOSPC: return GRPC_RESOURCE_EXHAUSTED;
	case -EDQUOT: return GRPC_RESOURCE_EXHAUSTED; /* uploads in progress fill the budget */
	default: return GRPC_INTERNAL;
	}
}

struct batch_update {
	struct slice_job j;
	struct statuses sts;
	PbUpdateResp *rs;
	PbUpdateResp **rp;
};

static bool batch_update_one(struct slice_job *j, size_t i)
{
	struct batch_update *b = (struct batch_update *)j;
	const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *r =
		((PbBatchUpdate *)j->req)->requests[i];
	struct statuses *sts = &b->sts;
	PbUpdateResp *rs = b->rs;
	struct digest d;
	char *err = NULL;
	if (reapi_digest_err(r->digest, &d, &err) != 0) {
		rs[i].status = status_set(sts, i, GRPC_INVALID_ARGUMENT, err);
		return true;
	}
	if (r->compressor != REV2(COMPRESSOR__VALUE__IDENTITY)) {
		rs[i].status = status_set(
			sts, i, GRPC_INVALID_ARGUMENT,
			xstrdup("compressed batch uploads are not supported; send identity"));
		return true;
	}
	if ((int64_t)r->data.len != d.size) {
		rs[i].status = status_set(sts, i, GRPC_INVALID_ARGUMENT,
					  xasprintf("digest %s/%lld: got %zu bytes of data", d.hex,
						    (long long)d.size, r->data.len));
		return true;
	}
	int rv = blob_put(j->in->cas, &d, r->data.data, r->data.len, &err);
	if (rv != 0)
		rs[i].status = status_set(sts, i, put_error_code(rv),
					  err ? err : xasprintf("storing %s failed", d.hex));
	else
		rs[i].status = status_set(sts, i, GRPC_OK, NULL);
	return true;
}

static void batch_update_done(struct slice_job *j)
{
	struct batch_update *b = (struct batch_update *)j;
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse resp =
		REV2(BATCH_UPDATE_BLOBS_RESPONSE__INIT);
	resp.n_responses = j->n;
	resp.responses = b->rp;
	call_reply(j->c, &resp.base);
}

static void batch_update_fini(struct slice_job *j)
{
	struct batch_update *b = (struct batch_update *)j;
	statuses_free(&b->sts);
	free(b->rs);
	free(b->rp);
}

/* The group's sync failed (fsync on): what it stored is not durable, so
 * none of it is acknowledged. */
static void batch_update_synced(struct slice_job *j, size_t from, int rv)
{
	struct batch_update *b = (struct batch_update *)j;
	if (rv == 0)
		return;
	for (size_t i = from; i < j->next; i++)
		if (b->rs[i].status && b->rs[i].status->code == GRPC_OK)
			b->rs[i].status = status_set(&b->sts, i, put_error_code(rv),
						     xasprintf("syncing the blob store failed: %s",
							       strerror(-rv)));
}

/* A batch of small blobs: 64 per slice (a file creation each for blobs
 * stored as files), synced as a group. */
static const struct slice_ops batch_update_ops = {batch_update_one, batch_update_done,
						  batch_update_fini, 64, batch_update_synced};

void svc_cas_batch_update(struct call *c, const ProtobufCMessage *msg)
{
	if (cas_remote_batch_update(c, msg))
		return;
	const PbBatchUpdate *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in || reapi_digest_function(c, req->digest_function) != 0)
		return;
	int64_t total = 0, limit = inst_max_batch(in);
	for (size_t i = 0; i < req->n_requests; i++)
		total += (int64_t)req->requests[i]->data.len;
	if (total > limit) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "batch of %lld bytes exceeds max_batch_total_size_bytes %lld; "
			    "use ByteStream.Write for large blobs",
			    (long long)total, (long long)limit);
		return;
	}
	size_t n = req->n_requests;
	struct batch_update *b = xcalloc(1, sizeof(*b));
	b->j.ops = &batch_update_ops;
	b->sts.st = xcalloc(n ? n : 1, sizeof(Google__Rpc__Status));
	b->sts.n = n;
	b->rs = xcalloc(n ? n : 1, sizeof(*b->rs));
	b->rp = xcalloc(n ? n : 1, sizeof(*b->rp));
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__batch_update_blobs_response__response__init(
			&b->rs[i]);
		b->rs[i].digest = req->requests[i]->digest;
		b->rp[i] = &b->rs[i];
	}
	slice_start(&b->j, c, msg, in, n);
}

struct batch_read {
	struct slice_job j;
	struct statuses sts;
	PbReadResp *rs;
	PbReadResp **rp;
};

static bool batch_read_one(struct slice_job *j, size_t i)
{
	struct batch_read *b = (struct batch_read *)j;
	PbReadResp *rs = b->rs;
	struct digest d;
	char *err = NULL;
	if (reapi_digest_err(((PbBatchRead *)j->req)->digests[i], &d, &err) != 0) {
		rs[i].status = status_set(&b->sts, i, GRPC_INVALID_ARGUMENT, err);
		return true;
	}
	uint8_t *data = NULL;
	int rv = digest_is_empty(&d) ? 0 : blob_get(j->in->cas, &d, &data);
	if (rv == -ENOENT) {
		rs[i].status =
			status_set(&b->sts, i, GRPC_NOT_FOUND,
				   xasprintf("blob %s/%lld not found", d.hex, (long long)d.size));
	} else if (rv != 0) {
		rs[i].status = status_set(&b->sts, i, GRPC_INTERNAL,
					  xasprintf("reading blob %s failed", d.hex));
	} else {
		rs[i].data.data = data;
		rs[i].data.len = (size_t)d.size;
		rs[i].status = status_set(&b->sts, i, GRPC_OK, NULL);
	}
	return true;
}

static void batch_read_done(struct slice_job *j)
{
	struct batch_read *b = (struct batch_read *)j;
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse resp =
		REV2(BATCH_READ_BLOBS_RESPONSE__INIT);
	resp.n_responses = j->n;
	resp.responses = b->rp;
	call_reply(j->c, &resp.base);
}

static void batch_read_fini(struct slice_job *j)
{
	struct batch_read *b = (struct batch_read *)j;
	for (size_t i = 0; i < j->n; i++)
		free(b->rs[i].data.data);
	statuses_free(&b->sts);
	free(b->rs);
	free(b->rp);
}

/* A blob costs an open, a read and a hash check on disk. */
static const struct slice_ops batch_read_ops = {batch_read_one, batch_read_done, batch_read_fini,
						64, NULL};

void svc_cas_batch_read(struct call *c, const ProtobufCMessage *msg)
{
	if (cas_remote_batch_read(c, msg))
		return;
	const PbBatchRead *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in || reapi_digest_function(c, req->digest_function) != 0)
		return;
	int64_t total = 0, limit = inst_max_batch(in);
	for (size_t i = 0; i < req->n_digests && total <= limit; i++) {
		int64_t sz = req->digests[i] ? req->digests[i]->size_bytes : 0;
		/* Saturate: sizes near INT64_MAX must not wrap the sum. */
		if (sz > 0)
			total = sz > limit - total ? limit + 1 : total + sz;
	}
	if (total > limit) {
		call_finish(
			c, GRPC_INVALID_ARGUMENT,
			"batch read of more than %lld bytes exceeds max_batch_total_size_bytes; "
			"use ByteStream.Read for large blobs",
			(long long)limit);
		return;
	}
	size_t n = req->n_digests;
	struct batch_read *b = xcalloc(1, sizeof(*b));
	b->j.ops = &batch_read_ops;
	b->sts.st = xcalloc(n ? n : 1, sizeof(Google__Rpc__Status));
	b->sts.n = n;
	b->rs = xcalloc(n ? n : 1, sizeof(*b->rs));
	b->rp = xcalloc(n ? n : 1, sizeof(*b->rp));
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__batch_read_blobs_response__response__init(
			&b->rs[i]);
		b->rs[i].digest = req->digests[i];
		b->rp[i] = &b->rs[i];
	}
	slice_start(&b->j, c, msg, in, n);
}

/* ---- GetTree ----------------------------------------------------------- */

/* The walk is depth-first, preorder, children in the order each Directory
 * lists them; a directory reached twice within one call is sent once.  It
 * runs in slices (TREE_SLICE_DIRS directories or TREE_SLICE_US, then a
 * zero timer lets the loop serve sockets) and pauses while TREE_PENDING
 * bytes or more wait for the client: the next page is produced only from
 * on_writable, so a client that stops reading holds at most one page
 * (TREE_MSG_BYTES) plus that much.
 *
 * The page token is where to resume, with no server state and no re-walk:
 * "t1:<first 16 hex of the root hash>:<i0>.<i1>...", one index per
 * directory on the path from the root to the next one to visit (i = how
 * many of that directory's children were visited).  Resuming reads just
 * the directories on that path, so the token is bounded by the depth
 * (TREE_MAX_DEPTH) and every index is checked against the tree: a forged
 * or foreign token is INVALID_ARGUMENT.  A resumed call does not know what
 * was sent before the token, so a subtree shared with that part may be
 * sent again.
 *
 * Directories are sent as stored (never re-encoded, so each hashes to its
 * digest) and only their child digests are decoded, by a wire scan.  A
 * Directory over DIRECTORY_MAX fails the call: 4 MiB is ~40,000 entries,
 * matches the default batch limit (max-batch-size, just under 4 MiB), and
 * with a page cut at TREE_MSG_BYTES a page stays under the 16 MiB
 * max-send-message-size. */
#define DIRECTORY_MAX	(4 << 20)
#define TREE_MSG_BYTES	(2 << 20)
#define TREE_PENDING	(256 << 10)
#define TREE_SLICE_DIRS 256
#define TREE_SLICE_US	3000
#define TREE_MAX_DEPTH	2048
#define TREE_TOKEN_MAX	(TREE_MAX_DEPTH * 11 + 32)

struct tree_frame {
	struct digest *kids; /* child directory digests, in order */
	size_t nkids, next;  /* next: children visited so far */
};

struct tree_seen {
	struct digest_map_node node;
};

struct tree_walk {
	struct call *c;
	struct inst *in;
	struct digest root;
	size_t page_size;
	struct tree_frame *stack;
	size_t depth;
	struct digest_map seen;
	struct tree_seen **seen_nodes;
	size_t nseen, seen_cap;
	uint8_t *page; /* 5-byte gRPC prefix room, then GetTreeResponse */
	size_t page_len, page_cap, page_dirs;
	bool sent_any;
	bool paused; /* waiting for on_writable */
	struct event *ev;
};

/* The child directory digests of a serialized Directory (invalid child
 * digests are skipped, as a missing subtree is).  Returns 0 or -1 when
 * the bytes are no Directory message. */
static int dir_children(const uint8_t *buf, size_t len, struct tree_frame *f)
{
	struct pbw r, rn, rd;
	struct pbw_field fl, fn, fd;
	size_t cap = 0;
	int rc;
	pbw_init(&r, buf, len);
	while ((rc = pbw_next(&r, &fl)) > 0) {
		/* files, directories, symlinks, node_properties are messages */
		if ((fl.num <= 3 || fl.num == 5) && fl.wt != PBW_LEN)
			return -1;
		if (fl.num != 2)
			continue;
		const uint8_t *hash = NULL;
		size_t hlen = 0;
		int64_t size = 0;
		pbw_init(&rn, fl.data, fl.len);
		while ((rc = pbw_next(&rn, &fn)) > 0) {
			if (fn.num != 2 || fn.wt != PBW_LEN)
				continue;
			pbw_init(&rd, fn.data, fn.len);
			while ((rc = pbw_next(&rd, &fd)) > 0) {
				if (fd.num == 1 && fd.wt == PBW_LEN) {
					hash = fd.data;
					hlen = fd.len;
				} else if (fd.num == 2 && fd.wt == PBW_VARINT) {
					size = (int64_t)fd.v;
				}
			}
			if (rc < 0)
				return -1;
		}
		if (rc < 0)
			return -1;
		char hex[DIGEST_HEX_LEN + 1];
		struct digest d;
		if (hlen != DIGEST_HEX_LEN)
			continue;
		memcpy(hex, hash, hlen);
		hex[hlen] = '\0';
		if (digest_parse(hex, size, &d, NULL) != 0)
			continue;
		if (f->nkids == cap)
			f->kids = xrealloc(f->kids, (cap = cap ? cap * 2 : 8) * sizeof(*f->kids));
		f->kids[f->nkids++] = d;
	}
	return rc;
}

static bool tree_seen(struct tree_walk *w, const struct digest *d)
{
	return digest_map_find(&w->seen, d) != NULL;
}

static void tree_mark(struct tree_walk *w, const struct digest *d)
{
	struct tree_seen *n = xcalloc(1, sizeof(*n));
	memcpy(n->node.hash, d->hash, DIGEST_HASH_LEN);
	n->node.size = d->size;
	digest_map_insert(&w->seen, &n->node);
	if (w->nseen == w->seen_cap)
		w->seen_nodes =
			xrealloc(w->seen_nodes, (w->seen_cap = w->seen_cap ? w->seen_cap * 2 : 64) *
							sizeof(*w->seen_nodes));
	w->seen_nodes[w->nseen++] = n;
}

/* Read and scan one directory.  Returns 0 with *raw (malloc'd) and f's
 * children, -ENOENT when missing, -EINVAL when not a Directory, or -1
 * when the call was finished (over the cap, I/O error). */
static int tree_read(struct tree_walk *w, const struct digest *d, uint8_t **raw,
		     struct tree_frame *f)
{
	memset(f, 0, sizeof(*f));
	if (d->size > DIRECTORY_MAX) {
		call_finish(w->c, GRPC_INVALID_ARGUMENT,
			    "Directory blobs/%s/%lld is %lld bytes, over the %d MiB limit for a "
			    "parsed Directory",
			    d->hex, (long long)d->size, (long long)d->size, DIRECTORY_MAX >> 20);
		return -1;
	}
	int rc = blob_get(w->in->cas, d, raw);
	if (rc == -ENOENT)
		return rc;
	if (rc != 0) {
		call_finish(w->c, GRPC_INTERNAL, "reading Directory blobs/%s/%lld: %s", d->hex,
			    (long long)d->size, strerror(-rc));
		return -1;
	}
	if (dir_children(*raw, (size_t)d->size, f) != 0) {
		free(f->kids);
		f->kids = NULL;
		free(*raw);
		*raw = NULL;
		return -EINVAL;
	}
	return 0;
}

static void page_put(struct tree_walk *w, uint8_t field, const uint8_t *p, size_t n)
{
	size_t need = w->page_len + 1 + 10 + n;
	if (need > w->page_cap) {
		w->page_cap = need > w->page_cap * 2 ? need : w->page_cap * 2;
		w->page = xrealloc(w->page, w->page_cap);
	}
	w->page[w->page_len++] = (uint8_t)(field << 3 | 2);
	w->page_len += pb_varint_put(w->page + w->page_len, n);
	memcpy(w->page + w->page_len, p, n);
	w->page_len += n;
}

static void page_reset(struct tree_walk *w)
{
	w->page_cap = 4096;
	w->page = xmalloc(w->page_cap);
	w->page_len = 5;
	w->page_dirs = 0;
}

/* Drop exhausted frames; true while something is left to visit. */
static bool tree_more(struct tree_walk *w)
{
	while (w->depth > 0 && w->stack[w->depth - 1].next >= w->stack[w->depth - 1].nkids) {
		free(w->stack[--w->depth].kids);
	}
	return w->depth > 0;
}

static void page_send(struct tree_walk *w)
{
	char *tok = NULL;
	if (tree_more(w)) {
		size_t cap = 32 + w->depth * 11, n;
		tok = xmalloc(cap);
		n = (size_t)snprintf(tok, cap, "t1:%.16s:", w->root.hex);
		for (size_t i = 0; i < w->depth; i++)
			n += (size_t)snprintf(tok + n, cap - n, "%s%zu", i ? "." : "",
					      w->stack[i].next);
		page_put(w, 2, (const uint8_t *)tok, n);
	}
	free(tok);
	call_send_owned(w->c, w->page, w->page_len - 5);
	w->sent_any = true;
	page_reset(w);
}

/* Visit d: send it (cutting a page when full) and descend into it.
 * Returns 0, -ENOENT or -EINVAL (d missing, or no Directory: the caller
 * omits it), or -1 when the call was finished. */
static int tree_visit(struct tree_walk *w, const struct digest *d)
{
	uint8_t *raw = NULL;
	struct tree_frame f;
	int rc = tree_read(w, d, &raw, &f);
	if (rc != 0)
		return rc;
	tree_mark(w, d);
	page_put(w, 1, raw, (size_t)d->size);
	free(raw);
	w->page_dirs++;
	if (f.nkids == 0) {
		free(f.kids);
	} else if (w->depth == TREE_MAX_DEPTH) {
		free(f.kids);
		call_finish(w->c, GRPC_INVALID_ARGUMENT,
			    "the tree under root_digest %s/%lld is deeper than %d levels",
			    w->root.hex, (long long)w->root.size, TREE_MAX_DEPTH);
		return -1;
	} else {
		w->stack[w->depth++] = f;
	}
	if (w->page_dirs >= w->page_size || w->page_len >= TREE_MSG_BYTES)
		page_send(w);
	return 0;
}

static void tree_free(struct tree_walk *w)
{
	call_set_data(w->c, NULL);
	if (w->ev)
		event_free(w->ev);
	while (w->depth > 0)
		free(w->stack[--w->depth].kids);
	free(w->stack);
	digest_map_clear(&w->seen);
	for (size_t i = 0; i < w->nseen; i++)
		free(w->seen_nodes[i]);
	free(w->seen_nodes);
	free(w->page);
	call_unref(w->c);
	free(w);
}

static void tree_step(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct tree_walk *w = arg;
	static const struct timeval now = {0, 0};
	int64_t until = mono_us() + TREE_SLICE_US;
	for (int k = 0; !call_done(w->c); k++) {
		if (w->ev && call_pending(w->c) >= TREE_PENDING) {
			w->paused = true; /* the client is slow: on_writable resumes */
			call_want_writable(w->c);
			return;
		}
		if (w->ev && (k >= TREE_SLICE_DIRS || mono_us() >= until)) {
			evtimer_add(w->ev, &now); /* let the loop serve sockets */
			return;
		}
		if (!tree_more(w)) {
			if (w->page_dirs > 0 || !w->sent_any)
				page_send(w);
			call_finish(w->c, GRPC_OK, NULL);
			break;
		}
		struct tree_frame *top = &w->stack[w->depth - 1];
		struct digest d = top->kids[top->next++];
		/* A subtree reached twice is sent once. */
		if (!tree_seen(w, &d) && tree_visit(w, &d) == -1)
			break;
	}
	tree_free(w);
}

void svc_cas_get_tree_cancel(struct call *c)
{
	if (cas_remote_cancel(c))
		return;
	struct tree_walk *w = call_data(c);
	if (w)
		tree_free(w);
}

void svc_cas_get_tree_writable(struct call *c)
{
	if (cas_remote_writable(c))
		return;
	struct tree_walk *w = call_data(c);
	if (!w || !w->paused)
		return;
	if (call_pending(c) >= TREE_PENDING) {
		call_want_writable(c);
		return;
	}
	static const struct timeval now = {0, 0};
	w->paused = false;
	evtimer_add(w->ev, &now);
}

/* Rebuild the stack from a page token (see above).  Returns 0, or -1 when
 * the call was finished. */
static int tree_resume(struct tree_walk *w, const char *tok)
{
	size_t len = strlen(tok);
	char prefix[3 + 16 + 2];
	snprintf(prefix, sizeof prefix, "t1:%.16s:", w->root.hex);
	if (len > TREE_TOKEN_MAX || strncmp(tok, prefix, strlen(prefix)) != 0)
		goto bad;
	const char *p = tok + strlen(prefix);
	struct digest d = w->root;
	for (;;) {
		if (*p < '0' || *p > '9' || w->depth == TREE_MAX_DEPTH)
			goto bad;
		char *end;
		unsigned long long i = strtoull(p, &end, 10);
		uint8_t *raw = NULL;
		struct tree_frame f;
		int rc = tree_read(w, &d, &raw, &f);
		free(raw);
		if (rc == -1)
			return -1;
		if (rc != 0 || i > f.nkids || (*end == '.' && i == 0)) {
			free(f.kids);
			goto bad;
		}
		f.next = (size_t)i;
		tree_mark(w, &d);
		w->stack[w->depth++] = f;
		if (*end == '\0')
			return 0;
		if (*end != '.')
			goto bad;
		d = f.kids[i - 1];
		if (tree_seen(w, &d))
			goto bad; /* a cycle: no real tree has one */
		p = end + 1;
	}
bad:
	call_finish(w->c, GRPC_INVALID_ARGUMENT,
		    "invalid page_token \"%.64s%s\": not a token this server gave for root_digest "
		    "%s/%lld, or the tree changed",
		    tok, len > 64 ? "..." : "", w->root.hex, (long long)w->root.size);
	return -1;
}

void svc_cas_get_tree(struct call *c, const ProtobufCMessage *msg)
{
	if (cas_remote_get_tree(c, msg))
		return;
	const Build__Bazel__Remote__Execution__V2__GetTreeRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	struct digest root;
	if (!in || reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->root_digest, "root_digest", &root) != 0)
		return;
	struct tree_walk *w = xcalloc(1, sizeof(*w));
	w->c = c;
	call_ref(c);
	w->in = in;
	w->root = root;
	w->page_size = req->page_size > 0 ? (size_t)req->page_size : SIZE_MAX;
	w->stack = xmalloc(TREE_MAX_DEPTH * sizeof(*w->stack));
	digest_map_init(&w->seen);
	page_reset(w);
	call_set_data(c, w);
	if (req->page_token && *req->page_token) {
		if (tree_resume(w, req->page_token) != 0) {
			tree_free(w);
			return;
		}
	} else {
		int rc = tree_visit(w, &root);
		if (rc == -ENOENT)
			call_finish(c, GRPC_NOT_FOUND, "root directory %s/%lld not found", root.hex,
				    (long long)root.size);
		else if (rc == -EINVAL)
			call_finish(c, GRPC_INVALID_ARGUMENT,
				    "root_digest %s/%lld is not a Directory message", root.hex,
				    (long long)root.size);
		if (rc != 0) {
			tree_free(w);
			return;
		}
	}
	if (cas_base)
		w->ev = evtimer_new(cas_base, tree_step, w);
	if (w->ev) {
		static const struct timeval now = {0, 0};
		evtimer_add(w->ev, &now);
		return;
	}
	/* No loop to yield to (svc_cas_init not called): walk to the end. */
	while (call_data(c) == w && !call_done(c))
		tree_step(-1, 0, w);
}
