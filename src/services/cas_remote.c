/*
 * cas_remote.c - `storage: remote` and `storage: sharded` instances (see
 * cas_remote.h and reactor.conf(5)): the shard list and its connections,
 * rendezvous hashing, FindMissingBlobs / BatchReadBlobs / BatchUpdateBlobs
 * split per shard and sent concurrently, the read-through cache, the
 * action cache's completeness check and Execute's inputs.  ByteStream is
 * in cas_remote_bs.c, GetTree in cas_remote_tree.c.
 *
 * Ownership: the owner of a digest is the shard with the highest
 * splitmix64(fnv1a64(shard name) ^ first 8 bytes of the hash): every
 * reactord that lists the same shard names agrees, whatever the order or
 * the addresses, and adding a shard moves only the digests it wins.  The
 * shard named by shard-self is this reactord's own store, so a request
 * forwarded to its owner is answered there, never forwarded again.
 *
 * Health: a shard's connection is opened on first use.  A call that ends
 * because the connection is gone (refused, reset, closed) marks the shard
 * down: for a backoff that starts at 100 ms and doubles to 5 s, calls
 * touching it fail at once with UNAVAILABLE naming it; then the next one
 * reconnects.  A down shard never makes a digest "missing": the whole call
 * fails, so a client never uploads or trusts on a wrong presence answer.
 */
#include "services/cas_remote.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "core/cfg.h"
#include "core/err.h"
#include "core/log.h"
#include "core/metrics.h"
#include "domain/blob.h"
#include "google/bytestream/bytestream.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "proto/pb.h"
#include "services/cas_remote_int.h"
#include "services/inst.h"
#include "services/reapi.h"
#include "services/svc.h"

#define MOD	       "cas-remote"
#define BACKOFF_MIN_US (100 * 1000LL)
#define BACKOFF_MAX_US (5 * 1000000LL)
#define UNARY_TIMEOUT  (120 * 1000000LL)
#define FETCH_MAX      (64LL << 20) /* Trees, Actions, Commands read whole */
#define FETCH_SEG      (2 << 20)
#define CACHE_BLOB_MAX (1 << 20) /* and at most 1/8 of cache-size */

static struct event_base *rbase;
static struct metric *m_up, *m_calls, *m_errors;
static struct map rcalls;
static bool rcalls_init;

/* ---- the registry of our calls ------------------------------------------ */

static uint64_t call_key(const struct call *c)
{
	return map_hash_u64((uint64_t)(uintptr_t)c);
}

void rcall_add(struct rcall *rc, struct call *c, enum rcall_kind kind)
{
	if (!rcalls_init) {
		map_init(&rcalls);
		rcalls_init = true;
	}
	rc->c = c;
	rc->kind = kind;
	map_insert(&rcalls, &rc->node, call_key(c));
}

void rcall_del(struct rcall *rc)
{
	if (rc->c) {
		map_remove(&rcalls, &rc->node);
		rc->c = NULL;
	}
}

struct rcall *rcall_find(struct call *c)
{
	if (!rcalls_init || !map_count(&rcalls))
		return NULL;
	for (struct map_node *n = map_first(&rcalls, call_key(c)); n; n = map_next(&rcalls, n))
		if (container_of(n, struct rcall, node)->c == c)
			return container_of(n, struct rcall, node);
	return NULL;
}

/* ---- shards ------------------------------------------------------------- */

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

int cas_remote_open(struct event_base *base, const struct cfg_instance *ci,
		    struct blob_store *local, struct cas_remote **out, char **err)
{
	rbase = base;
	struct cas_remote *r = xcalloc(1, sizeof(*r));
	r->instance = xstrdup(ci->name);
	r->sharded = ci->storage == CFG_STORAGE_SHARDED;
	r->local = local;
	map_init(&r->staged);
	r->n = ci->n_shards;
	r->shards = xcalloc((size_t)r->n, sizeof(*r->shards));
	for (int i = 0; i < r->n; i++) {
		const struct cfg_shard *cs = &ci->shards[i];
		struct shard *s = &r->shards[i];
		s->name = xstrdup(cs->name);
		s->addr = xstrdup(cs->address);
		s->self = ci->shard_self && !strcmp(ci->shard_self, cs->name);
		s->inst = r->instance;
		s->opts.tls.enabled = cs->tls;
		s->opts.tls.ca = dup_or_null(cs->tls_ca);
		s->opts.tls.cert = dup_or_null(cs->tls_cert);
		s->opts.tls.key = dup_or_null(cs->tls_key);
		s->opts.tls.server_name = dup_or_null(cs->tls_server_name);
		s->opts.token_file = dup_or_null(cs->token_file);
		char *e = NULL;
		if (!s->self && rc_client_opts_check(&s->opts, &e) != 0) {
			*err = xasprintf("instance \"%s\": CAS shard %s (%s): %s", ci->name,
					 s->name, s->addr, e);
			free(e);
			r->n = i + 1;
			cas_remote_close(r);
			return -1;
		}
	}
	if (ci->cache_size > 0) {
		r->cache = blob_open_memory(ci->cache_size);
		r->cache_blob_max =
			ci->cache_size / 8 < CACHE_BLOB_MAX ? ci->cache_size / 8 : CACHE_BLOB_MAX;
	}
	m_up = metric_new(METRIC_GAUGE, "reactor_cas_shard_up",
			  "1 unless the CAS shard is down (its connection failed and this "
			  "reactord is backing off), per instance and shard.",
			  "instance,shard");
	m_calls = metric_new(METRIC_COUNTER, "reactor_cas_shard_calls_total",
			     "Calls to a CAS shard that ended (connection attempts included).",
			     "instance,shard");
	m_errors = metric_new(METRIC_COUNTER, "reactor_cas_shard_errors_total",
			      "Calls to a CAS shard that ended with an error.", "instance,shard");
	for (int i = 0; i < r->n; i++) {
		metric_set(m_up, 1, r->instance, r->shards[i].name);
		metric_add(m_calls, 0, r->instance, r->shards[i].name);
		metric_add(m_errors, 0, r->instance, r->shards[i].name);
	}
	*out = r;
	return 0;
}

static void staged_clear(struct cas_remote *r);

void cas_remote_close(struct cas_remote *r)
{
	if (!r)
		return;
	/* Teardown runs after the last loop pass: free the connections now
	 * (rc_client_free runs the loop until each is gone), with every shard
	 * held down first so that no callback of an ending call reconnects. */
	for (int i = 0; i < r->n; i++) {
		r->shards[i].backoff_us = BACKOFF_MAX_US;
		r->shards[i].retry_at = INT64_MAX;
	}
	for (int i = 0; i < r->n; i++) {
		struct rc_client *cl = r->shards[i].cl;
		r->shards[i].cl = NULL;
		if (cl)
			rc_client_free(cl);
	}
	for (int i = 0; i < r->n; i++) {
		struct shard *s = &r->shards[i];
		free(s->name);
		free(s->addr);
		free((char *)s->opts.tls.ca);
		free((char *)s->opts.tls.cert);
		free((char *)s->opts.tls.key);
		free((char *)s->opts.tls.server_name);
		free((char *)s->opts.token_file);
		free(s->why);
	}
	free(r->shards);
	free(r->instance);
	staged_clear(r);
	map_destroy(&r->staged);
	if (r->cache)
		blob_close(r->cache);
	free(r);
}

struct event_base *cas_remote_base(void)
{
	return rbase;
}

struct cas_remote *cas_remote_of(const char *name)
{
	struct inst *in = inst_find(name);
	return in ? in->cas_remote : NULL;
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

struct shard *cas_remote_owner(struct cas_remote *r, const struct digest *d)
{
	uint64_t k;
	memcpy(&k, d->hash, sizeof(k));
	struct shard *best = &r->shards[0];
	uint64_t top = 0;
	for (int i = 0; i < r->n; i++) {
		uint64_t w = map_hash_u64(fnv1a(r->shards[i].name) ^ k);
		if (i == 0 || w > top) {
			top = w;
			best = &r->shards[i];
		}
	}
	return best;
}

struct rc_client *shard_client(struct shard *s, const char **why)
{
	if (s->cl && rc_client_alive(s->cl))
		return s->cl;
	if (s->cl) {
		rc_client_release(s->cl);
		s->cl = NULL;
	}
	if (s->backoff_us && mono_us() < s->retry_at) {
		*why = s->why ? s->why : "connection failed";
		return NULL;
	}
	char *err = NULL;
	s->cl = rc_client_connect_opts(rbase, s->addr, &s->opts, &err);
	if (!s->cl) {
		shard_check_down(s, GRPC_UNAVAILABLE, err ? err : "cannot connect");
		free(err);
		*why = s->why;
		return NULL;
	}
	return s->cl;
}

/* Every call to a shard ends here (shard_check_down), so this counts them. */
bool shard_check_down(struct shard *s, int code, const char *msg)
{
	metric_add(m_calls, 1, s->inst, s->name);
	if (code == GRPC_OK) {
		if (s->backoff_us) {
			LOGI(MOD, "CAS shard %s (%s) is back", s->name, s->addr);
			metric_set(m_up, 1, s->inst, s->name);
		}
		s->backoff_us = 0;
		return false;
	}
	metric_add(m_errors, 1, s->inst, s->name);
	if (s->cl && rc_client_alive(s->cl) && code != GRPC_UNAVAILABLE)
		return false; /* the shard answered: its own error */
	if (s->cl && rc_client_alive(s->cl))
		return false; /* UNAVAILABLE from a shard that is up (its Redis...) */
	s->backoff_us = s->backoff_us ? s->backoff_us * 2 : BACKOFF_MIN_US;
	if (s->backoff_us > BACKOFF_MAX_US)
		s->backoff_us = BACKOFF_MAX_US;
	s->retry_at = mono_us() + s->backoff_us;
	free(s->why);
	/* The client names the cause ("cannot connect to ADDR: Connection
	 * refused", "lost the connection to ADDR: ..."). */
	s->why = xstrdup(msg && *msg ? msg : "connection closed");
	LOGW(MOD, "CAS shard %s (%s) unavailable: %s; retrying in %lld ms", s->name, s->addr,
	     s->why, (long long)(s->backoff_us / 1000));
	metric_set(m_up, 0, s->inst, s->name);
	if (s->cl) {
		rc_client_release(s->cl);
		s->cl = NULL;
	}
	return true;
}

void shard_fail_call(struct call *c, struct shard *s, const char *why)
{
	call_finish(c, GRPC_UNAVAILABLE, "CAS shard %s (%s) unavailable: %s", s->name, s->addr,
		    why);
}

int64_t shard_timeout(struct call *c)
{
	int64_t rem = c ? call_remaining_us(c) : INT64_MAX;
	return rem < UNARY_TIMEOUT ? (rem > 0 ? rem : 1) : UNARY_TIMEOUT;
}

/* A failed shard call, as the status to finish with: code and a message
 * naming the shard (malloc'd). */
static char *shard_error(struct shard *s, int *code, const char *msg)
{
	if (shard_check_down(s, *code, msg)) {
		*code = GRPC_UNAVAILABLE;
		return xasprintf("CAS shard %s (%s) unavailable: %s", s->name, s->addr, s->why);
	}
	if (*code == GRPC_UNAVAILABLE)
		return xasprintf("CAS shard %s (%s) unavailable: %s", s->name, s->addr, msg);
	return xasprintf("CAS shard %s (%s): %s", s->name, s->addr, msg);
}

const char *shard_start_failed(struct shard *s, struct rc_client *cl, const char *why)
{
	if (cl)
		shard_check_down(s, GRPC_UNAVAILABLE, "connection closed");
	return s->why ? s->why : why ? why : "connection closed";
}

void shard_finish_call(struct call *c, struct shard *s, int code, const char *msg)
{
	char *m = shard_error(s, &code, msg);
	call_finish(c, code, "%s", m);
	free(m);
}

/* ---- the read-through cache ---------------------------------------------- */

bool cache_read(struct cas_remote *r, const struct digest *d, uint8_t **data)
{
	return r->cache && d->size <= r->cache_blob_max && blob_get(r->cache, d, data) == 0;
}

void cache_fill(struct cas_remote *r, const struct digest *d, const uint8_t *data, size_t len)
{
	if (r->cache && d->size <= r->cache_blob_max && !blob_has(r->cache, d))
		(void)blob_put(r->cache, d, data, len, NULL); /* a wrong hash is not stored */
}

/* ---- a fan-out over shards ---------------------------------------------- */

/* Items of one request grouped by owner; each group becomes one call. */
struct part {
	struct fan *f;
	struct shard *s;
	size_t *idx;
	size_t n, cap;
};

typedef void (*fan_part_cb)(struct part *p, ProtobufCMessage *resp);
typedef void (*fan_done_cb)(struct fan *f);

struct fan {
	struct cas_remote *r;
	struct digest *d; /* per item */
	size_t n;
	struct part *parts; /* one per shard, by shard index */
	int pending;
	int code; /* first failure */
	char *msg;
	fan_part_cb on_part;
	fan_done_cb on_done;
	void *arg;
	struct event *ev; /* completes a fan with nothing remote */
	bool started;
};

static void fan_free(struct fan *f)
{
	for (int i = 0; f->parts && i < f->r->n; i++)
		free(f->parts[i].idx);
	free(f->parts);
	free(f->d);
	free(f->msg);
	if (f->ev)
		event_free(f->ev);
	free(f);
}

static struct fan *fan_new(struct cas_remote *r, size_t n)
{
	struct fan *f = xcalloc(1, sizeof(*f));
	f->r = r;
	f->n = n;
	f->d = xcalloc(n ? n : 1, sizeof(*f->d));
	f->parts = xcalloc((size_t)r->n, sizeof(*f->parts));
	for (int i = 0; i < r->n; i++) {
		f->parts[i].f = f;
		f->parts[i].s = &r->shards[i];
	}
	return f;
}

/* Item i (f->d[i] set) goes to its owner's part. */
static void fan_assign(struct fan *f, size_t i)
{
	struct shard *s = cas_remote_owner(f->r, &f->d[i]);
	struct part *p = &f->parts[s - f->r->shards];
	if (p->n == p->cap)
		p->idx = xrealloc(p->idx, (p->cap = p->cap ? p->cap * 2 : 16) * sizeof(*p->idx));
	p->idx[p->n++] = i;
}

static void fan_fail(struct fan *f, int code, char *msg)
{
	if (f->code == GRPC_OK) {
		f->code = code;
		f->msg = msg;
	} else {
		free(msg);
	}
}

static void fan_finish(struct fan *f)
{
	f->on_done(f);
	fan_free(f);
}

static void fan_reply(int code, const char *message, ProtobufCMessage *resp, void *arg)
{
	struct part *p = arg;
	struct fan *f = p->f;
	if (code == GRPC_OK) {
		shard_check_down(p->s, code, message);
		if (f->code == GRPC_OK)
			f->on_part(p, resp);
	} else {
		int c2 = code;
		char *m = shard_error(p->s, &c2, message);
		fan_fail(f, c2, m);
	}
	if (--f->pending == 0 && f->started)
		fan_finish(f);
}

static void fan_zero(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	fan_finish(arg);
}

/* Send part p's request (built by the caller) on its shard. */
static void fan_send(struct part *p, const char *path, const ProtobufCMessage *req,
		     const ProtobufCMessageDescriptor *desc, int64_t timeout)
{
	const char *why = NULL;
	struct rc_client *cl = shard_client(p->s, &why);
	if (!cl || rc_unary_start(cl, path, req, desc, timeout, fan_reply, p) != 0) {
		why = shard_start_failed(p->s, cl, why);
		fan_fail(p->f, GRPC_UNAVAILABLE,
			 xasprintf("CAS shard %s (%s) unavailable: %s", p->s->name, p->s->addr,
				   why));
		return;
	}
	p->f->pending++;
}

/* Every part was sent: done now if nothing is in flight (on a zero timer,
 * so the callback comes after the caller returned). */
static void fan_go(struct fan *f)
{
	f->started = true;
	if (f->pending == 0) {
		f->ev = evtimer_new(rbase, fan_zero, f);
		static const struct timeval now = {0, 0};
		evtimer_add(f->ev, &now);
	}
}

enum fan_req { FAN_FIND, FAN_READ, FAN_UPDATE };

/* Send each remote part of f as one request: FindMissingBlobs or
 * BatchReadBlobs of its digests, or BatchUpdateBlobs of the entries of
 * `update` at its indexes; then fan_go. */
static void fan_send_all(struct fan *f, enum fan_req kind, const PbBatchUpdate *update,
			 struct call *c)
{
#define CASP "/build.bazel.remote.execution.v2.ContentAddressableStorage/"
	static const char *const paths[] = {CASP "FindMissingBlobs", CASP "BatchReadBlobs",
					    CASP "BatchUpdateBlobs"};
#undef CASP
	const ProtobufCMessageDescriptor *descs[] = {
		&build__bazel__remote__execution__v2__find_missing_blobs_response__descriptor,
		&build__bazel__remote__execution__v2__batch_read_blobs_response__descriptor,
		&build__bazel__remote__execution__v2__batch_update_blobs_response__descriptor,
	};
	for (int k = 0; k < f->r->n; k++) {
		struct part *p = &f->parts[k];
		if (!p->n || p->s->self)
			continue;
		PbDigest *pds = xcalloc(p->n, sizeof(*pds));
		void **pp = xcalloc(p->n, sizeof(*pp));
		for (size_t j = 0; j < p->n; j++) {
			if (kind == FAN_UPDATE) {
				pp[j] = update->requests[p->idx[j]];
			} else {
				reapi_pb_digest(&pds[j], &f->d[p->idx[j]]);
				pp[j] = &pds[j];
			}
		}
		union {
			ProtobufCMessage base;
			PbFindMissing fm;
			PbBatchRead br;
			PbBatchUpdate bu;
		} q;
		if (kind == FAN_FIND) {
			q.fm = (PbFindMissing)REV2(FIND_MISSING_BLOBS_REQUEST__INIT);
			q.fm.instance_name = f->r->instance;
			q.fm.n_blob_digests = p->n;
			q.fm.blob_digests = (PbDigest **)pp;
		} else if (kind == FAN_READ) {
			q.br = (PbBatchRead)REV2(BATCH_READ_BLOBS_REQUEST__INIT);
			q.br.instance_name = f->r->instance;
			q.br.n_digests = p->n;
			q.br.digests = (PbDigest **)pp;
		} else {
			q.bu = (PbBatchUpdate)REV2(BATCH_UPDATE_BLOBS_REQUEST__INIT);
			q.bu.instance_name = f->r->instance;
			q.bu.n_requests = p->n;
			q.bu.requests = (void *)pp;
		}
		fan_send(p, paths[kind], &q.base, descs[kind], shard_timeout(c));
		free(pds);
		free(pp);
	}
	fan_go(f);
}

/* ---- FindMissingBlobs --------------------------------------------------- */

struct mnode {
	struct digest_map_node n;
};

/* Presence of f->d[] across shards: present[i] filled; cb when done. */
struct fm {
	bool *missing;
	struct digest_map miss; /* digests shards reported missing */
	struct mnode **nodes;
	size_t nnodes, cap;
	void (*cb)(void *arg, int code, const char *msg, const bool *missing);
	void *arg;
};

static void fm_mark(struct fm *m, const struct digest *d)
{
	if (digest_map_find(&m->miss, d))
		return;
	struct mnode *n = xcalloc(1, sizeof(*n));
	memcpy(n->n.hash, d->hash, DIGEST_HASH_LEN);
	n->n.size = d->size;
	digest_map_insert(&m->miss, &n->n);
	if (m->nnodes == m->cap)
		m->nodes =
			xrealloc(m->nodes, (m->cap = m->cap ? m->cap * 2 : 16) * sizeof(*m->nodes));
	m->nodes[m->nnodes++] = n;
}

static void fm_part(struct part *p, ProtobufCMessage *resp)
{
	struct fm *m = p->f->arg;
	const Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse *r = (const void *)resp;
	for (size_t i = 0; i < r->n_missing_blob_digests; i++) {
		struct digest d;
		if (reapi_digest_err(r->missing_blob_digests[i], &d, NULL) == 0)
			fm_mark(m, &d);
	}
}

static void fm_done(struct fan *f)
{
	struct fm *m = f->arg;
	if (f->code == GRPC_OK) {
		for (int k = 0; k < f->r->n; k++) {
			struct part *p = &f->parts[k];
			for (size_t j = 0; j < p->n; j++) {
				size_t i = p->idx[j];
				const struct digest *d = &f->d[i];
				if (digest_is_empty(d))
					m->missing[i] = false;
				else if (p->s->self)
					m->missing[i] = !blob_has(f->r->local, d);
				else
					m->missing[i] = digest_map_find(&m->miss, d) != NULL;
			}
		}
	}
	m->cb(m->arg, f->code, f->msg, m->missing);
	digest_map_clear(&m->miss);
	for (size_t i = 0; i < m->nnodes; i++)
		free(m->nodes[i]);
	free(m->nodes);
	free(m->missing);
	free(m);
}

/* Ask the owners of d[0..n) which are missing (d is copied); cb runs once,
 * later, with missing[i] per digest, or a failure code. */
static void fm_start(struct cas_remote *r, const struct digest *d, size_t n, struct call *c,
		     void (*cb)(void *arg, int code, const char *msg, const bool *missing),
		     void *arg)
{
	struct fan *f = fan_new(r, n);
	struct fm *m = xcalloc(1, sizeof(*m));
	m->missing = xcalloc(n ? n : 1, sizeof(bool));
	m->cb = cb;
	m->arg = arg;
	digest_map_init(&m->miss);
	f->arg = m;
	f->on_part = fm_part;
	f->on_done = fm_done;
	memcpy(f->d, d, n * sizeof(*d));
	for (size_t i = 0; i < n; i++)
		fan_assign(f, i);
	fan_send_all(f, FAN_FIND, NULL, c);
}

/* Per-digest results of shard calls, keyed by digest. */
struct bres {
	struct digest_map_node n;
	int code;
	char *msg;
	uint8_t *data; /* read: stolen from the shard's response (malloc'd) */
	size_t len;
};

struct bset {
	struct digest_map map;
	struct bres **all;
	size_t n, cap;
};

static void bset_init(struct bset *b)
{
	digest_map_init(&b->map);
}

static void bset_clear(struct bset *b)
{
	digest_map_clear(&b->map);
	for (size_t i = 0; i < b->n; i++) {
		free(b->all[i]->msg);
		free(b->all[i]->data);
		free(b->all[i]);
	}
	free(b->all);
}

static struct bres *bres_get(struct bset *b, const struct digest *d)
{
	struct digest_map_node *n = digest_map_find(&b->map, d);
	return n ? container_of(n, struct bres, n) : NULL;
}

static struct bres *bres_put(struct bset *b, const struct digest *d)
{
	struct bres *e = bres_get(b, d);
	if (e)
		return e;
	e = xcalloc(1, sizeof(*e));
	memcpy(e->n.hash, d->hash, DIGEST_HASH_LEN);
	e->n.size = d->size;
	digest_map_insert(&b->map, &e->n);
	if (b->n == b->cap)
		b->all = xrealloc(b->all, (b->cap = b->cap ? b->cap * 2 : 16) * sizeof(*b->all));
	b->all[b->n++] = e;
	return e;
}

/* One entry of a shard's BatchUpdate/BatchRead response into set b. */
static struct bres *bres_status(struct bset *b, struct part *p, const PbDigest *pd,
				const Google__Rpc__Status *st)
{
	struct digest d;
	if (reapi_digest_err(pd, &d, NULL) != 0)
		return NULL;
	struct bres *e = bres_put(b, &d);
	e->code = st ? st->code : GRPC_OK;
	free(e->msg);
	e->msg = st && st->message && *st->message
			 ? xasprintf("CAS shard %s: %s", p->s->name, st->message)
			 : NULL;
	return e;
}

/* The handler's state for the unary batch calls. */
struct batch {
	struct rcall rc;
	struct call *c;
	ProtobufCMessage *req; /* taken */
	struct bset res;       /* BatchUpdate: the shards' answers */
};

static struct batch *batch_new(struct call *c, const ProtobufCMessage *msg)
{
	struct batch *b = xcalloc(1, sizeof(*b));
	b->c = c;
	call_ref(c);
	call_take_request(c);
	b->req = (ProtobufCMessage *)msg;
	bset_init(&b->res);
	rcall_add(&b->rc, c, RK_BATCH);
	return b;
}

static void batch_free(struct batch *b)
{
	rcall_del(&b->rc);
	bset_clear(&b->res);
	/* b->req lives in the call's arena (call_take_request): freed with the
	 * call, never here. */
	call_unref(b->c);
	free(b);
}

static void fm_answer(void *arg, int code, const char *msg, const bool *missing)
{
	struct batch *b = arg;
	if (!call_done(b->c)) {
		if (code != GRPC_OK) {
			call_finish(b->c, code, "%s", msg);
		} else {
			const PbFindMissing *req = (const void *)b->req;
			PbDigest **out = xcalloc(req->n_blob_digests + 1, sizeof(*out));
			size_t k = 0;
			for (size_t i = 0; i < req->n_blob_digests; i++)
				if (missing[i])
					out[k++] = req->blob_digests[i];
			Build__Bazel__Remote__Execution__V2__FindMissingBlobsResponse resp =
				REV2(FIND_MISSING_BLOBS_RESPONSE__INIT);
			resp.n_missing_blob_digests = k;
			resp.missing_blob_digests = out;
			call_reply(b->c, &resp.base);
			free(out);
		}
	}
	batch_free(b);
}

/* The instance of a request, when it is remote; NULL (and the call left
 * alone) otherwise. */
static struct cas_remote *remote_for(const char *instance)
{
	return cas_remote_of(instance);
}

bool cas_remote_find_missing(struct call *c, const ProtobufCMessage *msg)
{
	const PbFindMissing *req = (const void *)msg;
	struct cas_remote *r = remote_for(req->instance_name);
	if (!r)
		return false;
	if (reapi_digest_function(c, req->digest_function) != 0)
		return true;
	size_t n = req->n_blob_digests;
	struct digest *d = xcalloc(n ? n : 1, sizeof(*d));
	for (size_t i = 0; i < n; i++) {
		char *err = NULL;
		if (reapi_digest_err(req->blob_digests[i], &d[i], &err) != 0) {
			call_finish(c, GRPC_INVALID_ARGUMENT, "blob_digests[%zu]: %s", i, err);
			free(err);
			free(d);
			return true;
		}
	}
	struct batch *b = batch_new(c, msg);
	fm_start(r, d, n, c, fm_answer, b);
	free(d);
	return true;
}

/* ---- BatchUpdateBlobs / BatchReadBlobs --------------------------------- */

static void update_part(struct part *p, ProtobufCMessage *resp)
{
	struct batch *b = p->f->arg;
	const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse *r = (const void *)resp;
	for (size_t i = 0; i < r->n_responses; i++)
		(void)bres_status(&b->res, p, r->responses[i]->digest, r->responses[i]->status);
}

static void batch_status(Google__Rpc__Status *st, int code, const char *msg)
{
	google__rpc__status__init(st);
	st->code = code;
	st->message = (char *)(msg ? msg : "");
}

/* The statuses and messages of a batch response's n entries, freed once
 * the response is sent (batch_send). */
struct breply {
	Google__Rpc__Status *sts;
	char **msgs;
	size_t n;
};

static void breply_init(struct breply *y, size_t n)
{
	y->n = n;
	y->sts = xcalloc(n + 1, sizeof(*y->sts));
	y->msgs = xcalloc(n + 1, sizeof(*y->msgs));
}

/* Reply resp (its entries point into y, rs and rp), free them and b. */
static void batch_send(struct batch *b, const ProtobufCMessage *resp, struct breply *y, void *rs,
		       void *rp)
{
	call_reply(b->c, resp);
	for (size_t i = 0; i < y->n; i++)
		free(y->msgs[i]);
	free(y->msgs);
	free(y->sts);
	free(rs);
	free(rp);
	batch_free(b);
}

static void update_done(struct fan *f)
{
	struct batch *b = f->arg;
	if (call_done(b->c))
		goto out;
	if (f->code != GRPC_OK) {
		call_finish(b->c, f->code, "%s", f->msg);
		goto out;
	}
	const PbBatchUpdate *req = (const void *)b->req;
	size_t n = req->n_requests;
	PbUpdateResp *rs = xcalloc(n + 1, sizeof(*rs));
	PbUpdateResp **rp = xcalloc(n + 1, sizeof(*rp));
	struct breply y;
	breply_init(&y, n);
	Google__Rpc__Status *sts = y.sts;
	char **msgs = y.msgs;
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__batch_update_blobs_response__response__init(
			&rs[i]);
		rs[i].digest = req->requests[i]->digest;
		rp[i] = &rs[i];
		rs[i].status = &sts[i];
		const struct digest *d = &f->d[i];
		struct shard *s = cas_remote_owner(f->r, d);
		const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *q =
			req->requests[i];
		if (!d->size && !d->hex[0]) {
			batch_status(&sts[i], GRPC_INVALID_ARGUMENT, "invalid digest");
		} else if ((int64_t)q->data.len != d->size) {
			msgs[i] = xasprintf("digest %s/%lld: got %zu bytes of data", d->hex,
					    (long long)d->size, q->data.len);
			batch_status(&sts[i], GRPC_INVALID_ARGUMENT, msgs[i]);
		} else if (digest_is_empty(d)) {
			batch_status(&sts[i], GRPC_OK, NULL);
		} else if (s->self) {
			char *err = NULL;
			int rv = blob_put(f->r->local, d, q->data.data, q->data.len, &err);
			msgs[i] = rv ? (err ? err : xasprintf("storing %s failed", d->hex)) : NULL;
			batch_status(&sts[i],
				     rv == 0			      ? GRPC_OK
				     : rv == -EINVAL		      ? GRPC_INVALID_ARGUMENT
				     : rv == -ENOSPC || rv == -EDQUOT ? GRPC_RESOURCE_EXHAUSTED
								      : GRPC_INTERNAL,
				     msgs[i]);
		} else {
			struct bres *e = bres_get(&b->res, d);
			if (e)
				batch_status(&sts[i], e->code, e->msg);
			else
				batch_status(&sts[i], GRPC_INTERNAL,
					     "the CAS shard did not answer for this blob");
		}
	}
	Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsResponse resp =
		REV2(BATCH_UPDATE_BLOBS_RESPONSE__INIT);
	resp.n_responses = n;
	resp.responses = rp;
	batch_send(b, &resp.base, &y, rs, rp);
	return;
out:
	batch_free(b);
}

/* A batch call on instance: its remote CAS and byte limit, or NULL when
 * the local handler serves it (*answered false) or it was answered (a bad
 * digest_function). */
static struct cas_remote *batch_route(struct call *c, const char *instance, int digest_function,
				      int64_t *limit, bool *answered)
{
	struct cas_remote *r = remote_for(instance);
	*answered = r && reapi_digest_function(c, digest_function) != 0;
	if (!r || *answered)
		return NULL;
	*limit = inst_max_batch(inst_find(instance));
	return r;
}

bool cas_remote_batch_update(struct call *c, const ProtobufCMessage *msg)
{
	const PbBatchUpdate *req = (const void *)msg;
	int64_t total = 0, limit;
	bool answered;
	struct cas_remote *r =
		batch_route(c, req->instance_name, req->digest_function, &limit, &answered);
	if (!r)
		return answered;
	for (size_t i = 0; i < req->n_requests; i++)
		total += (int64_t)req->requests[i]->data.len;
	if (total > limit) {
		call_finish(c, GRPC_INVALID_ARGUMENT,
			    "batch of %lld bytes exceeds max_batch_total_size_bytes %lld; "
			    "use ByteStream.Write for large blobs",
			    (long long)total, (long long)limit);
		return true;
	}
	size_t n = req->n_requests;
	struct fan *f = fan_new(r, n);
	struct batch *b = batch_new(c, msg);
	f->arg = b;
	f->on_part = update_part;
	f->on_done = update_done;
	for (size_t i = 0; i < n; i++) {
		const Build__Bazel__Remote__Execution__V2__BatchUpdateBlobsRequest__Request *q =
			req->requests[i];
		if (reapi_digest_err(q->digest, &f->d[i], NULL) != 0) {
			memset(&f->d[i], 0, sizeof(f->d[i])); /* answered INVALID_ARGUMENT */
			continue;
		}
		if (q->compressor != REV2(COMPRESSOR__VALUE__IDENTITY) ||
		    (int64_t)q->data.len != f->d[i].size || digest_is_empty(&f->d[i]))
			continue;
		fan_assign(f, i);
	}
	fan_send_all(f, FAN_UPDATE, req, c);
	return true;
}

/* ---- many whole blobs (mread) -------------------------------------------- */

struct mread {
	struct cas_remote *r;
	struct bset res;
	mread_cb cb;
	void *arg;
};

static void mread_part(struct part *p, ProtobufCMessage *resp)
{
	struct mread *m = p->f->arg;
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse *r = (void *)resp;
	for (size_t i = 0; i < r->n_responses; i++) {
		struct bres *e =
			bres_status(&m->res, p, r->responses[i]->digest, r->responses[i]->status);
		if (!e)
			continue;
		free(e->data);
		e->data = NULL;
		if (e->code != GRPC_OK)
			continue;
		/* Steal the bytes: the response is freed with free(). */
		e->data = r->responses[i]->data.data;
		e->len = r->responses[i]->data.len;
		r->responses[i]->data.data = NULL;
		r->responses[i]->data.len = 0;
		if ((int64_t)e->len != e->n.size) {
			e->code = GRPC_DATA_LOSS;
			free(e->msg);
			e->msg = xasprintf("CAS shard %s sent %zu bytes for a blob of %lld",
					   p->s->name, e->len, (long long)e->n.size);
		} else {
			struct digest d;
			digest_from_hash(e->n.hash, e->n.size, &d);
			cache_fill(m->r, &d, e->data, e->len);
		}
	}
}

static void mread_done(struct fan *f)
{
	struct mread *m = f->arg;
	m->cb(m->arg, f->code, f->msg, m);
	bset_clear(&m->res);
	free(m);
}

void mread_start(struct cas_remote *r, const struct digest *d, size_t n, struct call *c,
		 mread_cb cb, void *arg)
{
	struct mread *m = xcalloc(1, sizeof(*m));
	m->r = r;
	m->cb = cb;
	m->arg = arg;
	bset_init(&m->res);
	struct fan *f = fan_new(r, n);
	f->arg = m;
	f->on_part = mread_part;
	f->on_done = mread_done;
	for (size_t i = 0; i < n; i++) {
		f->d[i] = d[i];
		if (digest_is_empty(&d[i]) || bres_get(&m->res, &d[i]))
			continue;
		uint8_t *data = NULL;
		if (cas_remote_owner(r, &d[i])->self) {
			struct bres *e = bres_put(&m->res, &d[i]);
			int rv = blob_get(r->local, &d[i], &e->data);
			e->len = (size_t)d[i].size;
			e->code = rv == 0	  ? GRPC_OK
				  : rv == -ENOENT ? GRPC_NOT_FOUND
						  : GRPC_INTERNAL;
			if (rv)
				e->msg = xasprintf(
					"blob %s/%lld %s", d[i].hex, (long long)d[i].size,
					rv == -ENOENT ? "not found" : "could not be read");
		} else if (cache_read(r, &d[i], &data)) {
			struct bres *e = bres_put(&m->res, &d[i]);
			e->data = data;
			e->len = (size_t)d[i].size;
		} else {
			fan_assign(f, i);
		}
	}
	fan_send_all(f, FAN_READ, NULL, c);
}

int mread_get(struct mread *m, const struct digest *d, uint8_t **data, const char **msg, bool take)
{
	static uint8_t none[1];
	*msg = NULL;
	*data = NULL;
	if (digest_is_empty(d)) {
		*data = take ? xmalloc(1) : none;
		return GRPC_OK;
	}
	struct bres *e = bres_get(&m->res, d);
	if (!e) {
		*msg = "the CAS shard did not answer for this blob";
		return GRPC_INTERNAL;
	}
	*msg = e->msg;
	if (e->code == GRPC_OK) {
		*data = e->data;
		if (take)
			e->data = NULL;
	}
	return e->code;
}

/* ---- BatchReadBlobs ------------------------------------------------------ */

static void read_answer(void *arg, int code, const char *msg, struct mread *m)
{
	struct batch *b = arg;
	if (call_done(b->c))
		goto out;
	if (code != GRPC_OK) {
		call_finish(b->c, code, "%s", msg);
		goto out;
	}
	const PbBatchRead *req = (const void *)b->req;
	size_t n = req->n_digests;
	PbReadResp *rs = xcalloc(n + 1, sizeof(*rs));
	PbReadResp **rp = xcalloc(n + 1, sizeof(*rp));
	struct breply y;
	breply_init(&y, n);
	Google__Rpc__Status *sts = y.sts;
	char **msgs = y.msgs;
	for (size_t i = 0; i < n; i++) {
		build__bazel__remote__execution__v2__batch_read_blobs_response__response__init(
			&rs[i]);
		rs[i].digest = req->digests[i];
		rp[i] = &rs[i];
		rs[i].status = &sts[i];
		struct digest d;
		if (reapi_digest_err(req->digests[i], &d, &msgs[i]) != 0) {
			batch_status(&sts[i], GRPC_INVALID_ARGUMENT, msgs[i]);
			continue;
		}
		const char *em;
		int rc = mread_get(m, &d, &rs[i].data.data, &em, false);
		batch_status(&sts[i], rc, em);
		rs[i].data.len = rc == GRPC_OK ? (size_t)d.size : 0;
	}
	Build__Bazel__Remote__Execution__V2__BatchReadBlobsResponse resp =
		REV2(BATCH_READ_BLOBS_RESPONSE__INIT);
	resp.n_responses = n;
	resp.responses = rp;
	batch_send(b, &resp.base, &y, rs, rp);
	return;
out:
	batch_free(b);
}

bool cas_remote_batch_read(struct call *c, const ProtobufCMessage *msg)
{
	const PbBatchRead *req = (const void *)msg;
	int64_t total = 0, limit;
	bool answered;
	struct cas_remote *r =
		batch_route(c, req->instance_name, req->digest_function, &limit, &answered);
	if (!r)
		return answered;
	for (size_t i = 0; i < req->n_digests && total <= limit; i++) {
		int64_t sz = req->digests[i] ? req->digests[i]->size_bytes : 0;
		if (sz > 0)
			total = sz > limit - total ? limit + 1 : total + sz;
	}
	if (total > limit) {
		call_finish(
			c, GRPC_INVALID_ARGUMENT,
			"batch read of more than %lld bytes exceeds max_batch_total_size_bytes; "
			"use ByteStream.Read for large blobs",
			(long long)limit);
		return true;
	}
	size_t n = req->n_digests, k = 0;
	struct digest *d = xcalloc(n + 1, sizeof(*d));
	for (size_t i = 0; i < n; i++)
		if (reapi_digest_err(req->digests[i], &d[k], NULL) == 0)
			k++;
	mread_start(r, d, k, c, read_answer, batch_new(c, msg));
	free(d);
	return true;
}

/* ---- one whole blob, from its owner ------------------------------------- */

/* Read blob d (at most FETCH_MAX bytes) whole from its owner: the local
 * store, or ByteStream.Read segments.  cb runs once, later: code OK with
 * data (malloc'd, the callee keeps ownership: valid during cb), NOT_FOUND,
 * or a failure naming the shard. */
typedef void (*fetch_cb)(void *arg, int code, const char *msg, const uint8_t *data);
struct fetch {
	struct cas_remote *r;
	struct shard *s;
	struct digest d;
	uint8_t *buf;
	size_t have;
	int code;
	char *msg;
	fetch_cb cb;
	void *arg;
	struct event *ev;
	bool got_bytes;
};

static void fetch_end(struct fetch *f)
{
	f->cb(f->arg, f->code, f->msg ? f->msg : "", f->code == GRPC_OK ? f->buf : NULL);
	if (f->ev)
		event_free(f->ev);
	free(f->buf);
	free(f->msg);
	free(f);
}

static void fetch_zero(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	fetch_end(arg);
}

static void fetch_later(struct fetch *f)
{
	f->ev = evtimer_new(rbase, fetch_zero, f);
	static const struct timeval now = {0, 0};
	evtimer_add(f->ev, &now);
}

static void fetch_msg(struct rc_call *k, const uint8_t *msg, size_t len, void *arg)
{
	(void)k;
	struct fetch *f = arg;
	Google__Bytestream__ReadResponse *r =
		google__bytestream__read_response__unpack(NULL, len, msg);
	if (!r)
		return;
	if (f->have + r->data.len <= (size_t)f->d.size) {
		memcpy(f->buf + f->have, r->data.data, r->data.len);
		f->have += r->data.len;
	} else {
		f->have = SIZE_MAX; /* more than the digest says */
	}
	google__bytestream__read_response__free_unpacked(r, NULL);
}

static void fetch_seg(struct fetch *f);

static void fetch_done(struct rc_call *k, int code, const char *message, void *arg)
{
	(void)k;
	struct fetch *f = arg;
	if (code != GRPC_OK) {
		f->code = code;
		f->msg = shard_error(f->s, &f->code, message);
		fetch_end(f);
		return;
	}
	shard_check_down(f->s, code, message);
	if (f->have == SIZE_MAX) {
		f->code = GRPC_DATA_LOSS;
		f->msg = xasprintf("CAS shard %s sent more than %lld bytes for %s", f->s->name,
				   (long long)f->d.size, f->d.hex);
		fetch_end(f);
		return;
	}
	if (f->have < (size_t)f->d.size) {
		fetch_seg(f);
		return;
	}
	struct digest got;
	digest_of(f->buf, f->have, &got);
	if (!digest_eq(&got, &f->d)) {
		f->code = GRPC_DATA_LOSS;
		f->msg = xasprintf("CAS shard %s sent bytes that do not hash to %s", f->s->name,
				   f->d.hex);
	} else {
		f->code = GRPC_OK;
		cache_fill(f->r, &f->d, f->buf, f->have);
	}
	fetch_end(f);
}

static void fetch_seg(struct fetch *f)
{
	const char *why = NULL;
	struct rc_client *cl = shard_client(f->s, &why);
	char *name = *f->r->instance ? xasprintf("%s/blobs/%s/%lld", f->r->instance, f->d.hex,
						 (long long)f->d.size)
				     : xasprintf("blobs/%s/%lld", f->d.hex, (long long)f->d.size);
	struct rc_call *k = cl ? rc_call_start(cl, "/google.bytestream.ByteStream/Read",
					       UNARY_TIMEOUT, NULL, 0, fetch_msg, fetch_done, f)
			       : NULL;
	if (!k) {
		free(name);
		why = shard_start_failed(f->s, cl, why);
		f->code = GRPC_UNAVAILABLE;
		f->msg =
			xasprintf("CAS shard %s (%s) unavailable: %s", f->s->name, f->s->addr, why);
		fetch_later(f);
		return;
	}
	Google__Bytestream__ReadRequest req = GOOGLE__BYTESTREAM__READ_REQUEST__INIT;
	req.resource_name = name;
	req.read_offset = (int64_t)f->have;
	int64_t left = f->d.size - (int64_t)f->have;
	req.read_limit = left < FETCH_SEG ? left : FETCH_SEG;
	size_t n = google__bytestream__read_request__get_packed_size(&req);
	uint8_t *buf = xmalloc(n + 1);
	google__bytestream__read_request__pack(&req, buf);
	rc_call_send(k, buf, n);
	rc_call_close_send(k);
	free(buf);
	free(name);
}

static void fetch_start(struct cas_remote *r, const struct digest *d, fetch_cb cb, void *arg)
{
	struct fetch *f = xcalloc(1, sizeof(*f));
	f->r = r;
	f->d = *d;
	f->cb = cb;
	f->arg = arg;
	f->s = cas_remote_owner(r, d);
	if (d->size > FETCH_MAX) {
		f->code = GRPC_INVALID_ARGUMENT;
		f->msg = xasprintf("blob %s/%lld is over the %lld MiB this server reads whole",
				   d->hex, (long long)d->size, FETCH_MAX >> 20);
		fetch_later(f);
		return;
	}
	if (digest_is_empty(d) || f->s->self) {
		int rv = digest_is_empty(d) ? 0 : blob_get(r->local, d, &f->buf);
		if (digest_is_empty(d))
			f->buf = xmalloc(1);
		f->code = rv == 0 ? GRPC_OK : rv == -ENOENT ? GRPC_NOT_FOUND : GRPC_INTERNAL;
		if (rv)
			f->msg = xasprintf("blob %s/%lld %s", d->hex, (long long)d->size,
					   rv == -ENOENT ? "not found" : "could not be read");
		fetch_later(f);
		return;
	}
	if (cache_read(r, d, &f->buf)) {
		f->code = GRPC_OK;
		fetch_later(f);
		return;
	}
	f->buf = xmalloc((size_t)d->size + 1);
	fetch_seg(f);
}

/* ---- the action cache's completeness check ------------------------------ */

/* Check result r (owned) against the shards: every output file, stdout,
 * stderr and Tree present, and every file each Tree lists.  cb gets
 * rc 0, ERR_PRECONDITION with the missing digests, -EINVAL (malformed,
 * msg), or -EIO (a shard could not answer, msg names it). */
typedef void (*check_cb)(void *arg, int rc, const char *msg, const struct digest *missing,
			 size_t nmissing);
struct check {
	struct cas_remote *r;
	PbActionResult *res;
	struct digest *d; /* first round: files, stdio, Trees; then Trees' files */
	size_t nd, capd;
	struct digest *trees;
	size_t ntrees, next_tree;
	struct digest *missing;
	size_t nmissing;
	int round;
	check_cb cb;
	void *arg;
};

static void check_add(struct check *k, const struct digest *d)
{
	if (k->nd == k->capd)
		k->d = xrealloc(k->d, (k->capd = k->capd ? k->capd * 2 : 32) * sizeof(*k->d));
	k->d[k->nd++] = *d;
}

static void check_end(struct check *k, int rc, const char *msg)
{
	k->cb(k->arg, rc, msg, k->missing, k->nmissing);
	build__bazel__remote__execution__v2__action_result__free_unpacked(k->res, NULL);
	free(k->d);
	free(k->trees);
	free(k->missing);
	free(k);
}

static void check_next_tree(struct check *k);

static void check_found(void *arg, int code, const char *msg, const bool *missing)
{
	struct check *k = arg;
	if (code != GRPC_OK) {
		check_end(k, -EIO, msg);
		return;
	}
	for (size_t i = 0; i < k->nd; i++) {
		if (!missing[i])
			continue;
		k->missing = xrealloc(k->missing, (k->nmissing + 1) * sizeof(*k->missing));
		k->missing[k->nmissing++] = k->d[i];
	}
	k->nd = 0;
	if (k->nmissing) {
		check_end(k, ERR_PRECONDITION, "blobs are missing from CAS");
		return;
	}
	check_next_tree(k);
}

static int tree_files(struct check *k, const PbDirectory *dir)
{
	for (size_t i = 0; dir && i < dir->n_files; i++) {
		struct digest d;
		if (reapi_digest_err(dir->files[i]->digest, &d, NULL) != 0)
			return -1;
		check_add(k, &d);
	}
	return 0;
}

static void check_tree(void *arg, int code, const char *msg, const uint8_t *data)
{
	struct check *k = arg;
	const struct digest *td = &k->trees[k->next_tree - 1];
	if (code == GRPC_NOT_FOUND) {
		k->missing = xrealloc(k->missing, (k->nmissing + 1) * sizeof(*k->missing));
		k->missing[k->nmissing++] = *td;
		check_end(k, ERR_PRECONDITION, "a Tree is missing from CAS");
		return;
	}
	if (code != GRPC_OK) {
		check_end(k, -EIO, msg);
		return;
	}
	PbTree *t = build__bazel__remote__execution__v2__tree__unpack(NULL, (size_t)td->size, data);
	int bad = !t || tree_files(k, t->root);
	for (size_t i = 0; !bad && t && i < t->n_children; i++)
		bad = tree_files(k, t->children[i]);
	if (t)
		build__bazel__remote__execution__v2__tree__free_unpacked(t, NULL);
	if (bad) {
		char *m = xasprintf("output directory Tree %s/%lld is not a valid Tree", td->hex,
				    (long long)td->size);
		check_end(k, -EINVAL, m);
		free(m);
		return;
	}
	if (k->nd)
		fm_start(k->r, k->d, k->nd, NULL, check_found, k);
	else
		check_next_tree(k);
}

static void check_next_tree(struct check *k)
{
	if (k->next_tree >= k->ntrees) {
		check_end(k, 0, NULL);
		return;
	}
	fetch_start(k->r, &k->trees[k->next_tree++], check_tree, k);
}

static int check_digest(struct check *k, const PbDigest *pd, bool optional, const char *what,
			size_t i, char **msg)
{
	if (!pd && optional)
		return 0;
	struct digest d;
	char *err = NULL;
	if (reapi_digest_err(pd, &d, &err) != 0) {
		*msg = xasprintf("%s[%zu]: digest: %s", what, i, err);
		free(err);
		return -1;
	}
	check_add(k, &d);
	return 0;
}

/* Start the check of the serialized result bytes.  Returns 0 (cb later)
 * or -EINVAL with *msg. */
static int check_start(struct cas_remote *r, const uint8_t *bytes, size_t len, check_cb cb,
		       void *arg, char **msg)
{
	struct check *k = xcalloc(1, sizeof(*k));
	k->r = r;
	k->cb = cb;
	k->arg = arg;
	k->res = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, bytes);
	if (!k->res) {
		free(k);
		*msg = xstrdup("not a valid ActionResult");
		return -EINVAL;
	}
	const PbActionResult *a = k->res;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < a->n_output_files; i++)
		rc = check_digest(k, a->output_files[i]->digest, false, "output_files", i, msg);
	for (size_t i = 0; rc == 0 && i < a->n_output_directories; i++) {
		struct digest d;
		char *err = NULL;
		if (reapi_digest_err(a->output_directories[i]->tree_digest, &d, &err) != 0) {
			*msg = xasprintf("output_directories[%zu]: tree_digest: %s", i, err);
			free(err);
			rc = -1;
			break;
		}
		check_add(k, &d);
		k->trees = xrealloc(k->trees, (k->ntrees + 1) * sizeof(*k->trees));
		k->trees[k->ntrees++] = d;
	}
	if (rc == 0)
		rc = check_digest(k, a->stdout_digest, true, "stdout_digest", 0, msg);
	if (rc == 0)
		rc = check_digest(k, a->stderr_digest, true, "stderr_digest", 0, msg);
	if (rc != 0) {
		build__bazel__remote__execution__v2__action_result__free_unpacked(k->res, NULL);
		free(k->d);
		free(k->trees);
		free(k);
		return -EINVAL;
	}
	fm_start(r, k->d, k->nd, NULL, check_found, k);
	return 0;
}

/* ac_get through the check. */
struct acg {
	struct cas_remote *r;
	char *instance;
	struct digest action;
	ac_cb cb;
	void *arg;
	uint8_t *bytes;
	size_t len;
};

static void acg_free(struct acg *g)
{
	free(g->instance);
	free(g->bytes);
	free(g);
}

static void acg_checked(void *arg, int rc, const char *msg, const struct digest *missing,
			size_t nmissing)
{
	struct acg *g = arg;
	struct ac_res res = {0};
	char ds[DIGEST_STR_LEN];
	char *m = NULL;
	if (rc == 0) {
		res.result = g->bytes;
		res.len = g->len;
	} else {
		/* Incomplete or unreadable: a miss.  The entry stays: a shard
		 * that is down now may be back for the next client. */
		res.rc = -ENOENT;
		res.msg = m =
			xasprintf("action cache entry for action %s is not usable: %s%s%s",
				  digest_str(&g->action, ds, sizeof ds), msg ? msg : "",
				  nmissing ? ", e.g. blobs/" : "", nmissing ? missing[0].hex : "");
	}
	g->cb(g->arg, &res);
	free(m);
	acg_free(g);
}

static void acg_read(void *arg, const struct ac_res *res)
{
	struct acg *g = arg;
	if (res->rc != 0) {
		g->cb(g->arg, res);
		acg_free(g);
		return;
	}
	g->len = res->len;
	g->bytes = xmalloc(res->len + 1);
	memcpy(g->bytes, res->result, res->len);
	char *msg = NULL;
	if (check_start(g->r, g->bytes, g->len, acg_checked, g, &msg) != 0) {
		struct ac_res bad = {.rc = -ENOENT, .msg = msg};
		g->cb(g->arg, &bad);
		free(msg);
		acg_free(g);
	}
}

int cas_remote_ac_get(struct inst *in, const struct digest *action, ac_cb cb, void *arg)
{
	struct acg *g = xcalloc(1, sizeof(*g));
	g->r = in->cas_remote;
	g->instance = xstrdup(in->name);
	g->action = *action;
	g->cb = cb;
	g->arg = arg;
	int rc = ac_get(in->name, NULL, action, acg_read, g);
	if (rc != 0)
		acg_free(g);
	return rc;
}

/* ac_put after the check. */
struct acp {
	char *instance;
	struct digest action;
	PbActionResult *r;
	ac_cb cb;
	void *arg;
	uint8_t *bytes;
	struct event *ev;
	int rc;
	char *msg;
};

static void acp_free(struct acp *p)
{
	if (p->r)
		build__bazel__remote__execution__v2__action_result__free_unpacked(p->r, NULL);
	if (p->ev)
		event_free(p->ev);
	free(p->instance);
	free(p->bytes);
	free(p->msg);
	free(p);
}

static void acp_stored(void *arg, const struct ac_res *res)
{
	struct acp *p = arg;
	if (p->cb)
		p->cb(p->arg, res);
	else if (res->rc != 0)
		LOGW(MOD, "caching the result of an action failed: %s",
		     res->msg ? res->msg : err_name(res->rc));
	acp_free(p);
}

static void acp_checked(void *arg, int rc, const char *msg, const struct digest *missing,
			size_t nmissing)
{
	struct acp *p = arg;
	if (rc == 0 && ac_put(p->instance, NULL, &p->action, p->r, acp_stored, p) == 0)
		return;
	struct ac_res res = {.rc = rc ? rc : ERR_STORE_DOWN, .msg = msg};
	char ms[DIGEST_STR_LEN];
	char *m = NULL;
	if (rc == ERR_PRECONDITION) {
		res.missing = missing;
		res.nmissing = nmissing;
		res.msg = m = xasprintf("blobs/%s is missing from CAS%s",
					digest_str(&missing[0], ms, sizeof ms),
					nmissing > 1 ? " (and others)" : "");
	}
	acp_stored(p, &res);
	free(m);
}

static void acp_bad(evutil_socket_t fd, short what, void *arg)
{
	(void)fd, (void)what;
	struct acp *p = arg;
	struct ac_res res = {.rc = p->rc, .msg = p->msg};
	acp_stored(p, &res);
}

int cas_remote_ac_put(struct inst *in, const struct digest *action, const PbActionResult *r,
		      ac_cb cb, void *arg)
{
	struct acp *p = xcalloc(1, sizeof(*p));
	p->instance = xstrdup(in->name);
	p->action = *action;
	p->cb = cb;
	p->arg = arg;
	size_t len = protobuf_c_message_get_packed_size(&r->base);
	p->bytes = xmalloc(len + 1);
	protobuf_c_message_pack(&r->base, p->bytes);
	p->r = build__bazel__remote__execution__v2__action_result__unpack(NULL, len, p->bytes);
	char *msg = NULL;
	int rc = check_start(in->cas_remote, p->bytes, len, acp_checked, p, &msg);
	if (rc != 0) {
		/* Malformed: answered through the callback, later, as ac_put does. */
		p->rc = rc;
		p->msg = msg;
		p->ev = evtimer_new(rbase, acp_bad, p);
		static const struct timeval now = {0, 0};
		evtimer_add(p->ev, &now);
	}
	return 0;
}

/* ---- Execute ------------------------------------------------------------- */

/* Execute's handler (svc_exec.c) reads the Action, its Command and its
 * input root from the local store, synchronously: the ones other shards
 * own are fetched first and copied there for the handler's run (the
 * "staged" copies), then deleted.  Concurrent Executes often share them
 * (one input root for many actions), so each copy counts the Executes
 * holding it and is deleted when the last lets go: one Execute's cleanup
 * never removes a blob another is about to read. */
struct staged {
	struct map_node node;
	struct digest d;
	int refs;
};

static uint64_t staged_hash(const struct digest *d)
{
	uint64_t k;
	memcpy(&k, d->hash, sizeof(k));
	return k;
}

static bool staged_eq(const struct map_node *n, const void *key)
{
	return digest_eq(&container_of(n, struct staged, node)->d, key);
}

static struct staged *staged_find(struct cas_remote *r, const struct digest *d)
{
	struct map_node *n = map_find(&r->staged, staged_hash(d), staged_eq, d);
	return n ? container_of(n, struct staged, node) : NULL;
}

static void staged_collect(struct map_node *n, void *arg)
{
	struct staged ***at = arg;
	*(*at)++ = container_of(n, struct staged, node);
}

/* Teardown: copies left by Executes still fetching when the server
 * stopped (their calls are gone with their connections). */
static void staged_clear(struct cas_remote *r)
{
	size_t n = map_count(&r->staged);
	if (!n)
		return;
	struct staged **all = xcalloc(n, sizeof(*all)), **at = all;
	map_foreach(&r->staged, staged_collect, &at);
	for (size_t i = 0; i < n; i++) {
		map_remove(&r->staged, &all[i]->node);
		free(all[i]);
	}
	free(all);
}

struct xq {
	struct rcall rc;
	struct call *c;
	ProtobufCMessage *req; /* taken */
	struct cas_remote *r;
	void (*handler)(struct call *c, const ProtobufCMessage *msg);
	struct digest want[3]; /* Action, Command, input root */
	size_t nwant, got;
	struct digest staged[3]; /* the copies this Execute holds a reference on */
	size_t nstaged;
};

static struct call *exec_reentry;

static void xq_hold(struct xq *x, const struct digest *d)
{
	struct staged *s = staged_find(x->r, d);
	if (!s) {
		s = xcalloc(1, sizeof(*s));
		s->d = *d;
		map_insert(&x->r->staged, &s->node, staged_hash(d));
	}
	s->refs++;
	x->staged[x->nstaged++] = *d;
}

static void xq_free(struct xq *x)
{
	for (size_t i = 0; i < x->nstaged; i++) {
		struct staged *s = staged_find(x->r, &x->staged[i]);
		assert(s && s->refs > 0);
		if (--s->refs == 0) {
			(void)blob_delete(x->r->local, &s->d);
			map_remove(&x->r->staged, &s->node);
			free(s);
		}
	}
	rcall_del(&x->rc);
	/* x->req lives in the call's arena (call_take_request). */
	call_unref(x->c);
	free(x);
}

static void xq_run(struct xq *x)
{
	if (!call_done(x->c)) {
		exec_reentry = x->c;
		x->handler(x->c, x->req);
		exec_reentry = NULL;
	}
	/* The handler read what it needed synchronously: xq_free drops the
	 * copies. */
	xq_free(x);
}

/* The Action names the other two (a malformed one: the handler says so). */
static void xq_action(struct xq *x, const uint8_t *data, size_t len)
{
	PbAction *a = build__bazel__remote__execution__v2__action__unpack(NULL, len, data);
	if (!a)
		return;
	if (reapi_digest_err(a->command_digest, &x->want[x->nwant], NULL) == 0)
		x->nwant++;
	if (reapi_digest_err(a->input_root_digest, &x->want[x->nwant], NULL) == 0)
		x->nwant++;
	build__bazel__remote__execution__v2__action__free_unpacked(a, NULL);
}

static void xq_fetched(void *arg, int code, const char *msg, const uint8_t *data);

static void xq_next(struct xq *x)
{
	while (x->got < x->nwant && !call_done(x->c)) {
		const struct digest *d = &x->want[x->got];
		bool local = digest_is_empty(d) || cas_remote_owner(x->r, d)->self;
		if (!local && staged_find(x->r, d) && blob_has(x->r->local, d)) {
			xq_hold(x, d); /* another Execute's copy, now held by this one too */
			local = true;
		}
		if (!local) {
			fetch_start(x->r, d, xq_fetched, x);
			return;
		}
		x->got++;
		uint8_t *buf = NULL;
		if (x->got == 1 && d->size <= FETCH_MAX && blob_get(x->r->local, d, &buf) == 0)
			xq_action(x, buf, (size_t)d->size);
		free(buf);
	}
	xq_run(x);
}

static void xq_fetched(void *arg, int code, const char *msg, const uint8_t *data)
{
	struct xq *x = arg;
	const struct digest *d = &x->want[x->got++];
	if (code == GRPC_OK) {
		if (blob_put(x->r->local, d, data, (size_t)d->size, NULL) == 0)
			xq_hold(x, d);
	} else if (code != GRPC_NOT_FOUND) {
		/* NOT_FOUND: the handler reports it as missing. */
		if (!call_done(x->c))
			call_finish(x->c, code, "%s", msg);
		xq_free(x);
		return;
	}
	if (x->got == 1 && code == GRPC_OK)
		xq_action(x, data, (size_t)d->size);
	xq_next(x);
}

bool cas_remote_execute(struct call *c, const ProtobufCMessage *msg,
			void (*handler)(struct call *c, const ProtobufCMessage *msg))
{
	const Build__Bazel__Remote__Execution__V2__ExecuteRequest *req = (const void *)msg;
	struct cas_remote *r = remote_for(req->instance_name);
	struct digest action;
	if (!r || c == exec_reentry || reapi_digest_err(req->action_digest, &action, NULL) != 0)
		return false; /* the handler answers bad requests */
	struct xq *x = xcalloc(1, sizeof(*x));
	x->c = c;
	call_ref(c);
	call_take_request(c);
	x->req = (ProtobufCMessage *)msg;
	x->r = r;
	x->handler = handler;
	x->want[x->nwant++] = action;
	rcall_add(&x->rc, c, RK_BATCH);
	xq_next(x);
	return true;
}

/* ---- hooks for the calls' life ------------------------------------------- */

bool cas_remote_cancel(struct call *c)
{
	struct rcall *rc = rcall_find(c);
	if (!rc)
		return false;
	if (rc->kind == RK_READ || rc->kind == RK_WRITE)
		cas_remote_bs_cancel(c, rc);
	else if (rc->kind == RK_TREE)
		cas_remote_tree_cancel(c, rc);
	/* Batch calls: the replies find call_done() and free their state. */
	return true;
}

bool cas_remote_writable(struct call *c)
{
	struct rcall *rc = rcall_find(c);
	if (!rc)
		return false;
	if (rc->kind == RK_READ)
		cas_remote_bs_writable(c, rc);
	else if (rc->kind == RK_TREE)
		cas_remote_tree_writable(c, rc);
	return true;
}

bool cas_remote_half_close(struct call *c)
{
	struct rcall *rc = rcall_find(c);
	if (!rc)
		return false;
	if (rc->kind == RK_WRITE)
		cas_remote_bs_half_close(c, rc);
	return true;
}
