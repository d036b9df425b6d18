/*
 * worker_cas.c - reactor-worker's synchronous CAS client (worker_cas.h).
 * Small blobs travel in batches bounded by the server's
 * max_batch_total_size_bytes; a blob too big for one batch is streamed
 * with ByteStream Read (straight to its file) or Write.  Uploads send
 * 1 MiB WriteRequests; the HTTP/2 layer buffers what flow control holds
 * back, so a large upload costs its size in memory while it is sent.
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

#include <event2/event.h>

#include "proto/pb.h"
#include "rpc/client.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "rpc/grpc.h"
#include "core/util.h"

#define CAS	       "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
#define RPC_TIMEOUT_US (120 * 1000000LL)
#define CHUNK	       (1 << 20)
/* Per-entry framing a batch adds to the blob bytes (digest, status, tags). */
#define ENTRY_OVERHEAD 200

static void pb_digest(PbDigest *pd, const struct digest *d)
{
	build__bazel__remote__execution__v2__digest__init(pd);
	pd->hash = (char *)d->hex;
	pd->size_bytes = d->size;
}

static char *missing_msg(const struct digest *d)
{
	return xasprintf("blobs/%s/%lld", d->hex, (long long)d->size);
}

int wcas_init(struct wcas *w, struct event_base *base, struct rc_client *cl, const char *instance,
	      char **err)
{
	w->base = base;
	w->cl = cl;
	w->instance = instance;
	w->max_batch = 4 << 20;
	Build__Bazel__Remote__Execution__V2__GetCapabilitiesRequest req =
		REV2(GET_CAPABILITIES_REQUEST__INIT);
	req.instance_name = (char *)instance;
	ProtobufCMessage *resp = NULL;
	char *msg = NULL;
	int code = rc_unary(cl, "/build.bazel.remote.execution.v2.Capabilities/GetCapabilities",
			    &req.base,
			    &build__bazel__remote__execution__v2__server_capabilities__descriptor,
			    &resp, &msg, 30 * 1000000LL);
	if (code != GRPC_OK) {
		*err = xasprintf("GetCapabilities: status %d: %s", code, msg ? msg : "");
		free(msg);
		return WCAS_EIO;
	}
	free(msg);
	Build__Bazel__Remote__Execution__V2__ServerCapabilities *caps = (void *)resp;
	if (caps->cache_capabilities && caps->cache_capabilities->max_batch_total_size_bytes > 0)
		w->max_batch = caps->cache_capabilities->max_batch_total_size_bytes;
	w->absolute_symlinks = caps->cache_capabilities &&
			       caps->cache_capabilities->symlink_absolute_path_strategy ==
				       REV2(SYMLINK_ABSOLUTE_PATH_STRATEGY__VALUE__ALLOWED);
	protobuf_c_message_free_unpacked(resp, NULL);
	return 0;
}

/* Blobs that go through ByteStream instead of a batch. */
static bool too_big(const struct wcas *w, int64_t size)
{
	return size + ENTRY_OVERHEAD + 1024 > w->max_batch;
}

static char *resource(const struct wcas *w, const struct digest *d, bool upload)
{
	const char *sep = *w->instance ? "/" : "";
	if (!upload)
		return xasprintf("%s%sblobs/%s/%lld", w->instance, sep, d->hex, (long long)d->size);
	char *uuid = uuid4();
	char *r = xasprintf("%s%suploads/%s/blobs/%s/%lld", w->instance, sep, uuid, d->hex,
			    (long long)d->size);
	free(uuid);
	return r;
}

/* ---- ByteStream Read --------------------------------------------------------- */

/* How a ByteStream call ended: bs_done records it, the command loop
 * polls `done` after each loop pass. */
struct bs_end {
	bool done;
	int code;
	char *msg;
};

static void bs_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct bs_end *e = arg;
	e->code = code;
	e->msg = xstrdup(message);
	e->done = true;
}

struct bs_read {
	int fd;	      /* write here, or */
	uint8_t *buf; /* collect here */
	size_t len, cap;
	struct hasher *h;
	bool io_error;
	struct bs_end end; /* the rc_call's arg */
};

static void bs_read_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct bs_read *r = container_of(arg, struct bs_read, end);
	Google__Bytestream__ReadResponse *m =
		google__bytestream__read_response__unpack(NULL, len, msg);
	if (!m) {
		r->io_error = true;
		return;
	}
	const uint8_t *p = m->data.data;
	size_t n = m->data.len;
	hasher_update(r->h, p, n);
	if (r->fd >= 0) {
		while (n > 0 && !r->io_error) {
			ssize_t w = write(r->fd, p, n);
			if (w < 0 && errno == EINTR)
				continue;
			if (w <= 0)
				r->io_error = true;
			else
				p += w, n -= (size_t)w;
		}
	} else {
		if (r->len + n > r->cap) {
			r->cap = (r->len + n) * 2;
			r->buf = xrealloc(r->buf, r->cap);
		}
		memcpy(r->buf + r->len, p, n);
		r->len += n;
	}
	google__bytestream__read_response__free_unpacked(m, NULL);
}

/* Stream one blob into fd (fd >= 0) or memory (*out). */
static int bs_read(struct wcas *w, const struct digest *d, int fd, uint8_t **out, size_t *outlen,
		   char **err)
{
	struct bs_read r = {.fd = fd, .h = hasher_new()};
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	req.resource_name = resource(w, d, false);
	struct rc_call *k =
		rc_call_start(w->cl, "/google.bytestream.ByteStream/Read", RPC_TIMEOUT_US * 5, NULL,
			      0, bs_read_msg, bs_done, &r.end);
	int rc = WCAS_EIO;
	if (!k) {
		*err = xstrdup("ByteStream Read: connection is closed");
		goto out;
	}
	size_t n = protobuf_c_message_get_packed_size(&req.base);
	uint8_t *buf = xmalloc(n + 1);
	protobuf_c_message_pack(&req.base, buf);
	rc_call_send(k, buf, n);
	free(buf);
	rc_call_close_send(k);
	while (!r.end.done)
		event_base_loop(w->base, EVLOOP_ONCE);
	struct digest got;
	hasher_final(r.h, &got);
	if (r.end.code == GRPC_NOT_FOUND) {
		*err = missing_msg(d);
		rc = WCAS_MISSING;
	} else if (r.end.code != GRPC_OK) {
		*err = xasprintf("ByteStream Read %s: status %d: %s", req.resource_name, r.end.code,
				 r.end.msg);
	} else if (r.io_error) {
		*err = xasprintf("ByteStream Read %s: cannot write the blob: %s", req.resource_name,
				 strerror(errno));
	} else if (!digest_eq(&got, d)) {
		*err = xasprintf("ByteStream Read %s: received %lld bytes hashing to %s",
				 req.resource_name, (long long)got.size, got.hex);
	} else {
		rc = 0;
		if (out) {
			*out = r.buf ? r.buf : xmalloc(1);
			*outlen = r.len;
			r.buf = NULL;
		}
	}
out:
	free(r.buf);
	free(r.end.msg);
	hasher_free(r.h);
	free(req.resource_name);
	return rc;
}

/* ---- batches ------------------------------------------------------------------- */

/* Read d[0..n) (all small, distinct) with one BatchReadBlobs. */
static int batch_read(struct wcas *w, const struct digest *d, size_t n, uint8_t **out, size_t *lens,
		      char **err)
{
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsRequest req =
		REV2(BATCH_READ_BLOBS_REQUEST__INIT);
	PbDigest *pds = xcalloc(n, sizeof(*pds));
	PbDigest **pp = xcalloc(n, sizeof(*pp));
	for (size_t i = 0; i < n; i++) {
		pb_digest(&pds[i], &d[i]);
		pp[i] = &pds[i];
		out[i] = NULL;
	}
	req.instance_name = (char *)w->instance;
	req.n_digests = n;
	req.digests = pp;
	ProtobufCMessage *resp = NULL;
	char *msg = NULL;
	int code = rc_unary(
		w->cl, CAS "BatchReadBlobs", &req.base,
		&build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor, &resp,
		&msg, RPC_TIMEOUT_US);
	free(pds);
	free(pp);
	if (code != GRPC_OK) {
		*err = xasprintf("BatchReadBlobs: status %d: %s", code, msg ? msg : "");
		free(msg);
		return WCAS_EIO;
	}
	free(msg);
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse *r = (void *)resp;
	int rc = 0;
	for (size_t j = 0; j < r->n_responses && rc == 0; j++) {
		const Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse__Response *e =
			r->responses[j];
		struct digest got;
		if (!e->digest ||
		    digest_parse(e->digest->hash, e->digest->size_bytes, &got, NULL)) {
			*err = xstrdup("BatchReadBlobs: response with a bad digest");
			rc = WCAS_EIO;
			break;
		}
		size_t i;
		for (i = 0; i < n && !(digest_eq(&d[i], &got) && !out[i]); i++)
			;
		if (i == n)
			continue;
		int st = e->status ? e->status->code : 0;
		if (st == GRPC_NOT_FOUND) {
			*err = missing_msg(&d[i]);
			rc = WCAS_MISSING;
		} else if (st != GRPC_OK) {
			*err = xasprintf("BatchReadBlobs %s: status %d: %s", d[i].hex, st,
					 e->status->message ? e->status->message : "");
			rc = WCAS_EIO;
		} else {
			digest_of(e->data.data, e->data.len, &got);
			if (!digest_eq(&got, &d[i])) {
				*err = xasprintf("BatchReadBlobs: blob %s has the wrong content",
						 d[i].hex);
				rc = WCAS_EIO;
			} else {
				out[i] = xmalloc(e->data.len ? e->data.len : 1);
				memcpy(out[i], e->data.data, e->data.len);
				lens[i] = e->data.len;
			}
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (!out[i]) {
			*err = xasprintf("BatchReadBlobs: no answer for blob %s", d[i].hex);
			rc = WCAS_EIO;
		}
	}
	protobuf_c_message_free_unpacked(resp, NULL);
	if (rc != 0)
		for (size_t i = 0; i < n; i++) {
			free(out[i]);
			out[i] = NULL;
		}
	return rc;
}

int wcas_read_many(struct wcas *w, const struct digest *d, size_t n, uint8_t **out, size_t *lens,
		   char **err)
{
	int rc = 0;
	for (size_t i = 0; i < n; i++)
		out[i] = NULL;
	/* Indices of pending small blobs, sent when the next would overflow. */
	size_t *idx = xcalloc(n ? n : 1, sizeof(*idx));
	struct digest *bd = xcalloc(n ? n : 1, sizeof(*bd));
	uint8_t **bo = xcalloc(n ? n : 1, sizeof(*bo));
	size_t *bl = xcalloc(n ? n : 1, sizeof(*bl));
	size_t nb = 0;
	int64_t total = 0;
	for (size_t i = 0; i <= n && rc == 0; i++) {
		bool last = i == n;
		if (!last && digest_is_empty(&d[i])) {
			out[i] = xmalloc(1);
			lens[i] = 0;
			continue;
		}
		if (!last && too_big(w, d[i].size)) {
			rc = bs_read(w, &d[i], -1, &out[i], &lens[i], err);
			continue;
		}
		/* A duplicate of a pending blob is copied after the batch. */
		bool dup = false;
		for (size_t j = 0; !last && j < nb && !dup; j++)
			dup = digest_eq(&bd[j], &d[i]);
		if (dup)
			continue;
		int64_t add = last ? 0 : d[i].size + ENTRY_OVERHEAD;
		if (nb && (last || total + add > w->max_batch - 1024 || nb >= 1000)) {
			rc = batch_read(w, bd, nb, bo, bl, err);
			for (size_t j = 0; j < nb && rc == 0; j++) {
				out[idx[j]] = bo[j];
				lens[idx[j]] = bl[j];
			}
			nb = 0;
			total = 0;
		}
		if (!last && rc == 0) {
			idx[nb] = i;
			bd[nb++] = d[i];
			total += add;
		}
	}
	/* Fill duplicates from their first copy. */
	for (size_t i = 0; i < n && rc == 0; i++) {
		if (out[i])
			continue;
		for (size_t j = 0; j < n; j++) {
			if (j != i && out[j] && digest_eq(&d[j], &d[i])) {
				out[i] = xmalloc(lens[j] ? lens[j] : 1);
				memcpy(out[i], out[j], lens[j]);
				lens[i] = lens[j];
				break;
			}
		}
		if (!out[i]) {
			*err = xasprintf("internal error: blob %s was not read", d[i].hex);
			rc = WCAS_EIO;
		}
	}
	if (rc != 0)
		for (size_t i = 0; i < n; i++) {
			free(out[i]);
			out[i] = NULL;
		}
	free(idx);
	free(bd);
	free(bo);
	free(bl);
	return rc;
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

int wcas_fetch_files(struct wcas *w, int at, const struct wcas_file *f, size_t n, char **err)
{
	int rc = 0;
	/* first[i]: index of the first entry with the same digest. */
	size_t *first = xcalloc(n ? n : 1, sizeof(*first));
	for (size_t i = 0; i < n; i++) {
		first[i] = i;
		for (size_t j = 0; j < i; j++)
			if (first[j] == j && digest_eq(&f[j].d, &f[i].d)) {
				first[i] = j;
				break;
			}
	}
	/* Small distinct blobs in batches, written as they come. */
	struct digest *bd = xcalloc(n ? n : 1, sizeof(*bd));
	size_t *bi = xcalloc(n ? n : 1, sizeof(*bi));
	uint8_t **bo = xcalloc(n ? n : 1, sizeof(*bo));
	size_t *bl = xcalloc(n ? n : 1, sizeof(*bl));
	size_t nb = 0;
	int64_t total = 0;
	for (size_t i = 0; i <= n && rc == 0; i++) {
		bool last = i == n;
		if (!last && first[i] != i)
			continue;
		if (!last && digest_is_empty(&f[i].d)) {
			rc = write_file(at, f[i].path, NULL, 0, f[i].exec, err);
			continue;
		}
		if (!last && too_big(w, f[i].d.size)) {
			int fd = create_input(at, f[i].path, f[i].exec, err);
			if (fd < 0) {
				rc = WCAS_EIO;
				continue;
			}
			rc = bs_read(w, &f[i].d, fd, NULL, NULL, err);
			if (close(fd) != 0 && rc == 0) {
				*err = xasprintf("cannot write %s: %s", f[i].path, strerror(errno));
				rc = WCAS_EIO;
			}
			continue;
		}
		int64_t add = last ? 0 : f[i].d.size + ENTRY_OVERHEAD;
		if (nb && (last || total + add > w->max_batch - 1024 || nb >= 1000)) {
			rc = batch_read(w, bd, nb, bo, bl, err);
			for (size_t j = 0; j < nb && rc == 0; j++)
				rc = write_file(at, f[bi[j]].path, bo[j], bl[j], f[bi[j]].exec,
						err);
			for (size_t j = 0; j < nb; j++) {
				free(bo[j]);
				bo[j] = NULL;
			}
			nb = 0;
			total = 0;
		}
		if (!last && rc == 0) {
			bi[nb] = i;
			bd[nb++] = f[i].d;
			total += add;
		}
	}
	for (size_t i = 0; i < n && rc == 0; i++)
		if (first[i] != i)
			rc = copy_file(at, f[first[i]].path, f[i].path, f[i].exec, err);
	free(first);
	free(bd);
	free(bi);
	free(bo);
	free(bl);
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

/* Read up to n bytes, across short reads and EINTR; returns the count
 * read (less than n at end of file or on an error). */
static size_t read_full(int fd, void *buf, size_t n)
{
	size_t got = 0;
	while (got < n) {
		ssize_t m = read(fd, (uint8_t *)buf + got, n - got);
		if (m < 0 && errno == EINTR)
			continue;
		if (m <= 0)
			break;
		got += (size_t)m;
	}
	return got;
}

/* Open a blob's file for reading: beneath b->at, never through a
 * symlink at the end.  fd or -1 with *err. */
static int open_blob(const struct wcas_blob *b, char **err)
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

static uint8_t *slurp(const struct wcas_blob *b, size_t want, char **err)
{
	const char *path = b->path;
	uint8_t *buf = xmalloc(want ? want : 1);
	int fd = open_blob(b, err);
	if (fd < 0) {
		free(buf);
		return NULL;
	}
	size_t got = read_full(fd, buf, want);
	close(fd);
	if (got != want) {
		*err = xasprintf("%s changed while it was uploaded", path);
		free(buf);
		return NULL;
	}
	return buf;
}

static int batch_update(struct wcas *w, const struct wcas_blob *b, const size_t *idx, size_t n,
			char **err)
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
		const struct wcas_blob *e = &b[idx[i]];
		build__bazel__remote__execution__v2__batch_update_blobs_request__request__init(
			&rs[i]);
		pb_digest(&pds[i], &e->d);
		rs[i].digest = &pds[i];
		const uint8_t *data = e->data;
		if (!data) {
			data = owned[i] = slurp(e, (size_t)e->d.size, err);
			if (!data)
				rc = WCAS_EIO;
		}
		rs[i].data.data = (uint8_t *)data;
		rs[i].data.len = (size_t)e->d.size;
		rp[i] = &rs[i];
	}
	if (rc == 0) {
		req.instance_name = (char *)w->instance;
		req.n_requests = n;
		req.requests = rp;
		ProtobufCMessage *resp = NULL;
		char *msg = NULL;
		int code = rc_unary(
			w->cl, CAS "BatchUpdateBlobs", &req.base,
			&build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
			&resp, &msg, RPC_TIMEOUT_US);
		if (code != GRPC_OK) {
			*err = xasprintf("BatchUpdateBlobs: status %d: %s", code, msg ? msg : "");
			rc = WCAS_EIO;
		} else {
			Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *r =
				(void *)resp;
			for (size_t j = 0; j < r->n_responses && rc == 0; j++) {
				const Google__Rpc__Status *st = r->responses[j]->status;
				if (st && st->code != GRPC_OK) {
					*err = xasprintf("BatchUpdateBlobs %s: status %d: %s",
							 r->responses[j]->digest
								 ? r->responses[j]->digest->hash
								 : "?",
							 st->code, st->message ? st->message : "");
					rc = WCAS_EIO;
				}
			}
			protobuf_c_message_free_unpacked(resp, NULL);
		}
		free(msg);
	}
	for (size_t i = 0; i < n; i++)
		free(owned[i]);
	free(owned);
	free(rs);
	free(rp);
	free(pds);
	return rc;
}

static int bs_write(struct wcas *w, const struct wcas_blob *b, char **err)
{
	struct bs_end r = {0};
	char *name = resource(w, &b->d, true);
	int rc = WCAS_EIO;
	int fd = -1;
	struct rc_call *k = rc_call_start(w->cl, "/google.bytestream.ByteStream/Write",
					  RPC_TIMEOUT_US * 5, NULL, 0, NULL, bs_done, &r);
	if (!k) {
		*err = xstrdup("ByteStream Write: connection is closed");
		goto out;
	}
	if (!b->data && (fd = open_blob(b, err)) < 0) {
		rc_call_cancel(k);
		goto wait;
	}
	uint8_t *chunk = xmalloc(CHUNK);
	uint8_t *pk = xmalloc(CHUNK + 1024);
	int64_t off = 0;
	bool failed = false;
	do {
		size_t n = (size_t)(b->d.size - off < CHUNK ? b->d.size - off : CHUNK);
		Google__Bytestream__WriteRequest req = GOOGLE__BYTESTREAM__WRITE_REQUEST__INIT;
		req.resource_name = off == 0 ? name : (char *)"";
		req.write_offset = off;
		if (b->data) {
			req.data.data = (uint8_t *)b->data + off;
		} else {
			if (read_full(fd, chunk, n) != n) {
				*err = xasprintf("%s changed while it was uploaded", b->path);
				failed = true;
				break;
			}
			req.data.data = chunk;
		}
		req.data.len = n;
		off += (int64_t)n;
		req.finish_write = off == b->d.size;
		size_t pn = protobuf_c_message_pack(&req.base, pk);
		if (rc_call_send(k, pk, pn) != 0)
			break; /* the call ended; its status says why */
		/* Let the loop move data while we read the next chunk. */
		event_base_loop(w->base, EVLOOP_NONBLOCK);
	} while (off < b->d.size && !r.done);
	free(chunk);
	free(pk);
	if (failed)
		rc_call_cancel(k);
	else
		rc_call_close_send(k);
wait:
	while (!r.done)
		event_base_loop(w->base, EVLOOP_ONCE);
	if (fd >= 0)
		close(fd);
	if (*err) {
		/* already described */
	} else if (r.code != GRPC_OK) {
		*err = xasprintf("ByteStream Write %s: status %d: %s", name, r.code, r.msg);
	} else {
		rc = 0;
	}
out:
	free(r.msg);
	free(name);
	return rc;
}

int wcas_upload(struct wcas *w, const struct wcas_blob *b, size_t n, char **err)
{
	*err = NULL;
	/* FindMissingBlobs in slices; collect what must go. */
	size_t *need = xcalloc(n ? n : 1, sizeof(*need));
	size_t nneed = 0;
	int rc = 0;
	for (size_t s = 0; s < n && rc == 0; s += 5000) {
		size_t m = n - s < 5000 ? n - s : 5000;
		Build__Bazel__Remote__Execution__V2__FindMissingBlobsRequest req =
			REV2(FIND_MISSING_BLOBS_REQUEST__INIT);
		PbDigest *pds = xcalloc(m, sizeof(*pds));
		PbDigest **pp = xcalloc(m, sizeof(*pp));
		size_t k = 0;
		for (size_t i = 0; i < m; i++) {
			if (digest_is_empty(&b[s + i].d))
				continue;
			pb_digest(&pds[k], &b[s + i].d);
			pp[k] = &pds[k];
			k++;
		}
		req.instance_name = (char *)w->instance;
		req.n_blob_digests = k;
		req.blob_digests = pp;
		ProtobufCMessage *resp = NULL;
		char *msg = NULL;
		int code =
			k == 0 ? GRPC_OK
			       : rc_unary(
					 w->cl, CAS "FindMissingBlobs", &req.base,
					 &build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
					 &resp, &msg, RPC_TIMEOUT_US);
		free(pds);
		free(pp);
		if (code != GRPC_OK) {
			*err = xasprintf("FindMissingBlobs: status %d: %s", code, msg ? msg : "");
			rc = WCAS_EIO;
		} else if (resp) {
			Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r =
				(void *)resp;
			for (size_t i = 0; i < m; i++) {
				bool miss = false;
				for (size_t j = 0; j < r->n_missing_blob_digests && !miss; j++)
					miss = !strcmp(r->missing_blob_digests[j]->hash,
						       b[s + i].d.hex) &&
					       r->missing_blob_digests[j]->size_bytes ==
						       b[s + i].d.size;
				bool dup = false;
				for (size_t j = 0; miss && j < nneed && !dup; j++)
					dup = digest_eq(&b[need[j]].d, &b[s + i].d);
				if (miss && !dup)
					need[nneed++] = s + i;
			}
			protobuf_c_message_free_unpacked(resp, NULL);
		}
		free(msg);
	}
	size_t *batch = xcalloc(nneed ? nneed : 1, sizeof(*batch));
	size_t nb = 0;
	int64_t total = 0;
	for (size_t i = 0; i <= nneed && rc == 0; i++) {
		bool last = i == nneed;
		if (!last && too_big(w, b[need[i]].d.size)) {
			rc = bs_write(w, &b[need[i]], err);
			continue;
		}
		int64_t add = last ? 0 : b[need[i]].d.size + ENTRY_OVERHEAD;
		if (nb && (last || total + add > w->max_batch - 1024 || nb >= 1000)) {
			rc = batch_update(w, b, batch, nb, err);
			nb = 0;
			total = 0;
		}
		if (!last && rc == 0) {
			batch[nb++] = need[i];
			total += add;
		}
	}
	free(batch);
	free(need);
	return rc;
}
