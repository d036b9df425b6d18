/*
 * svc_cas.c - build.bazel.remote.execution.v2.ContentAddressableStorage:
 * FindMissingBlobs, BatchUpdateBlobs, BatchReadBlobs and GetTree over the
 * instance's blob store.  Batch calls answer per blob (the call itself is
 * OK); whole-request problems (unknown instance, batch over the advertised
 * limit, unsupported digest function) fail the call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "domain/blob.h"
#include "google/rpc/status.pb-c.h"
#include "services/inst.h"
#include "core/log.h"
#include "services/reapi.h"
#include "services/svc.h"

#define REV2(x) BUILD__BAZEL__REMOTE__EXECUTION__V2__##x
typedef Build__Bazel__Remote__Execution__V2__Directory PbDirectory;

/* GetTree: stop filling a response at this many bytes of directories. */
#define TREE_MSG_BYTES (2 << 20)

void svc_cas_find_missing(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	if (!in || reapi_digest_function(c, req->digest_function) != 0)
		return;
	size_t n = req->n_blob_digests;
	PbDigest **missing = xcalloc(n ? n : 1, sizeof(*missing));
	size_t nmiss = 0;
	for (size_t i = 0; i < n; i++) {
		struct digest d;
		char what[48];
		snprintf(what, sizeof(what), "blob_digests[%zu]", i);
		if (reapi_digest(c, req->blob_digests[i], what, &d) != 0) {
			free(missing);
			return;
		}
		if (!blob_has(in->cas, &d))
			missing[nmiss++] = req->blob_digests[i];
	}
	Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse resp =
		REV2(FIND_MISSING_BLOBS_RESPONSE__INIT);
	resp.n_missing_blob_digests = nmiss;
	resp.missing_blob_digests = missing;
	call_reply(c, &resp.base);
	free(missing);
}

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
	default: return GRPC_INTERNAL;
	}
}

/* A batch of small blobs costs a file creation each on disk; store them a
 * slice per loop pass so other calls keep being served meanwhile. */
#define BATCH_SLICE_BLOBS 64
#define BATCH_SLICE_US	  4000

typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest PbBatchUpdate;
typedef Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse__Response PbUpdateResp;

struct batch_update {
	struct call *c;
	PbBatchUpdate *req; /* taken from the call layer; freed here */
	struct inst *in;
	struct statuses sts;
	PbUpdateResp *rs;
	PbUpdateResp **rp;
	size_t next;
	struct event *ev;
};

static struct event_base *cas_base;

void svc_cas_init(struct event_base *base)
{
	cas_base = base;
}

static void batch_update_one(struct batch_update *b, size_t i)
{
	const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *r =
		b->req->requests[i];
	struct statuses *sts = &b->sts;
	PbUpdateResp *rs = b->rs;
	struct digest d;
	char *err = NULL;
	if (reapi_digest_err(r->digest, &d, &err) != 0) {
		rs[i].status = status_set(sts, i, GRPC_INVALID_ARGUMENT, err);
		return;
	}
	if (r->compressor != REV2(COMPRESSOR__VALUE__IDENTITY)) {
		rs[i].status = status_set(
			sts, i, GRPC_INVALID_ARGUMENT,
			xstrdup("compressed batch uploads are not supported; send identity"));
		return;
	}
	if ((int64_t)r->data.len != d.size) {
		rs[i].status = status_set(sts, i, GRPC_INVALID_ARGUMENT,
					  xasprintf("digest %s/%lld: got %zu bytes of data", d.hex,
						    (long long)d.size, r->data.len));
		return;
	}
	int rv = blob_put(b->in->cas, &d, r->data.data, r->data.len, &err);
	if (rv != 0)
		rs[i].status = status_set(sts, i, put_error_code(rv),
					  err ? err : xasprintf("storing %s failed", d.hex));
	else
		rs[i].status = status_set(sts, i, GRPC_OK, NULL);
}

static void batch_update_free(struct batch_update *b)
{
	call_set_data(b->c, NULL);
	if (b->ev)
		event_free(b->ev);
	statuses_free(&b->sts);
	free(b->rs);
	free(b->rp);
	protobuf_c_message_free_unpacked(&b->req->base, &call_pb_allocator);
	call_unref(b->c);
	free(b);
}

static void batch_update_step(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct batch_update *b = arg;
	size_t n = b->req->n_requests;
	int64_t until = mono_us() + BATCH_SLICE_US;
	for (size_t k = 0; b->next < n && k < BATCH_SLICE_BLOBS; k++) {
		batch_update_one(b, b->next++);
		if (mono_us() >= until)
			break;
	}
	if (b->next < n && b->ev) {
		/* A zero timer, not event_active: active events run in the same
		 * pass, before the loop polls sockets again. */
		static const struct timeval now = {0, 0};
		evtimer_add(b->ev, &now);
		return;
	}
	while (b->next < n) /* no loop to yield to (svc_cas_init not called) */
		batch_update_one(b, b->next++);
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse resp =
		REV2(BATCH_UPDATE_BLOBS_RESPONSE__INIT);
	resp.n_responses = n;
	resp.responses = b->rp;
	call_reply(b->c, &resp.base);
	batch_update_free(b);
}

void svc_cas_batch_update_cancel(struct call *c)
{
	struct batch_update *b = call_data(c);
	if (b)
		batch_update_free(b);
}

void svc_cas_batch_update(struct call *c, const ProtobufCMessage *msg)
{
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
	b->c = c;
	call_ref(c);
	call_take_request(c);
	b->req = (PbBatchUpdate *)req;
	b->in = in;
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
	call_set_data(c, b);
	if (cas_base)
		b->ev = evtimer_new(cas_base, batch_update_step, b);
	batch_update_step(-1, 0, b);
}

void svc_cas_batch_read(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest *req = (const void *)msg;
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
	struct statuses sts = {xcalloc(n ? n : 1, sizeof(Google__Rpc__Status)), n};
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response *rs =
		xcalloc(n ? n : 1, sizeof(*rs));
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response **rp =
		xcalloc(n ? n : 1, sizeof(*rp));
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__batch_read_blobs_response__response__init(
			&rs[i]);
		rs[i].digest = req->digests[i];
		rp[i] = &rs[i];
		struct digest d;
		char *err = NULL;
		if (reapi_digest_err(req->digests[i], &d, &err) != 0) {
			rs[i].status = status_set(&sts, i, GRPC_INVALID_ARGUMENT, err);
			continue;
		}
		uint8_t *data = NULL;
		int rv = digest_is_empty(&d) ? 0 : blob_get(in->cas, &d, &data);
		if (rv == -ENOENT) {
			rs[i].status = status_set(
				&sts, i, GRPC_NOT_FOUND,
				xasprintf("blob %s/%lld not found", d.hex, (long long)d.size));
		} else if (rv != 0) {
			rs[i].status = status_set(&sts, i, GRPC_INTERNAL,
						  xasprintf("reading blob %s failed", d.hex));
		} else {
			rs[i].data.data = data;
			rs[i].data.len = (size_t)d.size;
			rs[i].status = status_set(&sts, i, GRPC_OK, NULL);
		}
	}
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse resp =
		REV2(BATCH_READ_BLOBS_RESPONSE__INIT);
	resp.n_responses = n;
	resp.responses = rp;
	call_reply(c, &resp.base);
	for (size_t i = 0; i < n; i++)
		free(rs[i].data.data);
	statuses_free(&sts);
	free(rs);
	free(rp);
}

/* ---- GetTree ----------------------------------------------------------- */

/* Set of digests seen during one walk (open addressing on the hash). */
struct seen {
	struct digest *slot;
	bool *used;
	size_t cap, n;
};

static uint64_t dkey(const struct digest *d)
{
	uint64_t k;
	memcpy(&k, d->hash, sizeof(k));
	return k ^ (uint64_t)d->size;
}

static bool seen_add(struct seen *s, const struct digest *d)
{
	if (s->n * 2 >= s->cap) {
		struct seen g = {xcalloc(s->cap * 2, sizeof(*g.slot)),
				 xcalloc(s->cap * 2, sizeof(*g.used)), s->cap * 2, 0};
		for (size_t i = 0; i < s->cap; i++)
			if (s->used[i])
				seen_add(&g, &s->slot[i]);
		free(s->slot);
		free(s->used);
		*s = g;
	}
	size_t i = dkey(d) & (s->cap - 1);
	while (s->used[i]) {
		if (s->slot[i].size == d->size && !memcmp(s->slot[i].hash, d->hash, 32))
			return false;
		i = (i + 1) & (s->cap - 1);
	}
	s->used[i] = true;
	s->slot[i] = *d;
	s->n++;
	return true;
}

struct tree_page {
	PbDirectory **dirs;
	size_t n, cap, bytes;
};

static void page_reset(struct tree_page *p)
{
	for (size_t i = 0; i < p->n; i++)
		protobuf_c_message_free_unpacked(&p->dirs[i]->base, &call_pb_allocator);
	p->n = 0;
	p->bytes = 0;
}

static void page_send(struct call *c, struct tree_page *p, const char *token)
{
	Build__Bazel__Remote__Execution__V2__GetTreeResponse resp = REV2(GET_TREE_RESPONSE__INIT);
	resp.n_directories = p->n;
	resp.directories = p->dirs;
	resp.next_page_token = (char *)token;
	call_send(c, &resp.base);
	page_reset(p);
}

void svc_cas_get_tree(struct call *c, const ProtobufCMessage *msg)
{
	const Build__Bazel__Remote__Execution__V2__GetTreeRequest *req = (const void *)msg;
	struct inst *in = inst_lookup(c, req->instance_name);
	struct digest root;
	if (!in || reapi_digest_function(c, req->digest_function) != 0 ||
	    reapi_digest(c, req->root_digest, "root_digest", &root) != 0)
		return;
	/* The token is the walk position to resume from: the walk order is a
	 * pure function of the tree, so no server state is needed. */
	long long start = 0;
	if (req->page_token && *req->page_token) {
		char *end;
		start = strtoll(req->page_token, &end, 10);
		if (*end || start < 0) {
			call_finish(c, GRPC_INVALID_ARGUMENT, "invalid page_token \"%s\"",
				    req->page_token);
			return;
		}
	}
	size_t page_size = req->page_size > 0 ? (size_t)req->page_size : SIZE_MAX;

	struct seen seen = {xcalloc(64, sizeof(struct digest)), xcalloc(64, sizeof(bool)), 64, 0};
	size_t qcap = 64, qn = 0;
	struct digest *queue = xmalloc(qcap * sizeof(*queue));
	queue[qn++] = root;
	seen_add(&seen, &root);
	struct tree_page page = {xcalloc(64, sizeof(PbDirectory *)), 0, 64, 0};
	bool root_found = false;
	char token[32];
	long long pos = 0;
	for (size_t qi = 0; qi < qn && !call_done(c); qi++) {
		uint8_t *data = NULL;
		int rv = digest_is_empty(&queue[qi]) ? 0 : blob_get(in->cas, &queue[qi], &data);
		if (rv != 0) {
			if (qi == 0)
				break;
			continue; /* a missing subtree is omitted, as REAPI allows */
		}
		PbDirectory *dir = build__bazel__remote__execution__v2__directory__unpack(
			&call_pb_allocator, (size_t)queue[qi].size, data);
		free(data);
		if (!dir) {
			if (qi == 0) {
				call_finish(c, GRPC_INVALID_ARGUMENT,
					    "root_digest %s/%lld is not a Directory message",
					    root.hex, (long long)root.size);
				goto out;
			}
			continue;
		}
		if (qi == 0)
			root_found = true;
		for (size_t k = 0; k < dir->n_directories; k++) {
			struct digest cd;
			char *err = NULL;
			if (reapi_digest_err(dir->directories[k]->digest, &cd, &err) != 0) {
				free(err);
				continue;
			}
			if (!seen_add(&seen, &cd))
				continue;
			if (qn == qcap)
				queue = xrealloc(queue, (qcap *= 2) * sizeof(*queue));
			queue[qn++] = cd;
		}
		if (pos++ < start) {
			protobuf_c_message_free_unpacked(&dir->base, &call_pb_allocator);
			continue;
		}
		if (page.n == page.cap)
			page.dirs = xrealloc(page.dirs, (page.cap *= 2) * sizeof(*page.dirs));
		page.dirs[page.n++] = dir;
		page.bytes += (size_t)queue[qi].size;
		if (page.n >= page_size || page.bytes >= TREE_MSG_BYTES) {
			bool more = qi + 1 < qn;
			snprintf(token, sizeof(token), "%lld", pos);
			page_send(c, &page, more ? token : "");
		}
	}
	if (!root_found && !call_done(c)) {
		call_finish(c, GRPC_NOT_FOUND, "root directory %s/%lld not found", root.hex,
			    (long long)root.size);
		goto out;
	}
	if (page.n > 0 || pos <= start)
		page_send(c, &page, "");
	call_finish(c, GRPC_OK, NULL);
out:
	page_reset(&page);
	free(page.dirs);
	free(queue);
	free(seen.slot);
	free(seen.used);
}
