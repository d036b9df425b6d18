/*
 * cas_remote_int.h - what cas_remote.c (shards, connections, batch calls,
 * the action-cache check, Execute) and cas_remote_bs.c (ByteStream) share.
 * Private to those two files.
 */
#ifndef REACTOR_CAS_REMOTE_INT_H
#define REACTOR_CAS_REMOTE_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/digest.h"
#include "core/map.h"
#include "rpc/call.h"
#include "rpc/client.h"

struct blob_store;

struct shard {
	char *name, *addr;
	const char *inst;	    /* the instance's name, for metric labels */
	struct rc_client_opts opts; /* strings owned here */
	bool self;		    /* served from the local store */
	struct rc_client *cl;	    /* NULL until first use / after a failure */
	int64_t retry_at;	    /* mono_us: no reconnect before */
	int64_t backoff_us;	    /* next wait after a failure; 0 when healthy */
	char *why;		    /* why it is down, for fast failures */
};

struct cas_remote {
	char *instance;
	struct shard *shards;
	int n;
	bool sharded;
	struct blob_store *local; /* the instance's own store */
	struct blob_store *cache; /* read-through cache of other shards' blobs, or NULL */
	int64_t cache_blob_max;	  /* larger blobs are not cached */
	struct map staged;	  /* Execute's copies of other shards' blobs in local */
};

/* Every call this module handles sits in one map, keyed by the call, so
 * the cancel / writable / half-close hooks can tell ours from the local
 * handlers'.  Each state embeds one. */
enum rcall_kind { RK_BATCH, RK_READ, RK_WRITE, RK_TREE };
struct rcall {
	struct map_node node;
	struct call *c;
	enum rcall_kind kind;
};
void rcall_add(struct rcall *rc, struct call *c, enum rcall_kind kind);
void rcall_del(struct rcall *rc);
struct rcall *rcall_find(struct call *c);

/* The event loop cas_remote_open was given. */
struct event_base *cas_remote_base(void);
/* The remote CAS of the instance called `name`, or NULL when it is local
 * or unknown. */
struct cas_remote *cas_remote_of(const char *name);
/* The shard owning d (rendezvous hashing). */
struct shard *cas_remote_owner(struct cas_remote *r, const struct digest *d);
/* A live client for s, or NULL with *why (static until the next failure
 * of s) while s is down or backing off. */
struct rc_client *shard_client(struct shard *s, const char **why);
/* A call to s ended with code/msg: when it means the shard is unreachable
 * (its connection is gone), start backing off and return true. */
bool shard_check_down(struct shard *s, int code, const char *msg);
/* Finish c UNAVAILABLE naming s: "CAS shard b (ADDR) unavailable: why". */
void shard_fail_call(struct call *c, struct shard *s, const char *why);
/* A call to s could not start (cl: the client it was started on, or NULL
 * when shard_client gave none, with its why): marks s down when its
 * connection is gone and returns the reason to report (static until the
 * next failure of s). */
const char *shard_start_failed(struct shard *s, struct rc_client *cl, const char *why);
/* A call to s ended with code != OK: finish c with it, naming s (and
 * UNAVAILABLE when s is unreachable). */
void shard_finish_call(struct call *c, struct shard *s, int code, const char *msg);
/* The grpc-timeout for a unary call to a shard on behalf of c. */
int64_t shard_timeout(struct call *c);

/* The read-through cache (cache-size): true with *data (malloc'd) when r
 * caches d; cache_fill stores a blob read from a shard (verified against d;
 * over cache_blob_max, or without a cache: ignored). */
bool cache_read(struct cas_remote *r, const struct digest *d, uint8_t **data);
void cache_fill(struct cas_remote *r, const struct digest *d, const uint8_t *data, size_t len);

/* Many blobs read whole from their owners: the local store for the
 * shard-self's, the cache, else one BatchReadBlobs per shard, sent
 * concurrently (the caller keeps the total under the shards' batch limit).
 * cb runs once, later: code OK (each digest's own result from mread_get),
 * or the first shard failure (a message naming it). */
struct mread;
typedef void (*mread_cb)(void *arg, int code, const char *msg, struct mread *m);
void mread_start(struct cas_remote *r, const struct digest *d, size_t n, struct call *c,
		 mread_cb cb, void *arg);
/* During cb: d's code (GRPC_OK, GRPC_NOT_FOUND...) with *msg (NULL or a
 * message naming the shard, valid during cb) and, when OK, *data (d->size
 * bytes, owned by m and valid during cb; with take, the caller's to free,
 * and a second mread_get of d finds no data). */
int mread_get(struct mread *m, const struct digest *d, uint8_t **data, const char **msg, bool take);

/* cas_remote_tree.c: GetTree across shards, and its calls' life. */
void cas_remote_tree_cancel(struct call *c, struct rcall *rc);
void cas_remote_tree_writable(struct call *c, struct rcall *rc);

/* cas_remote_bs.c: the life of its calls. */
void cas_remote_bs_cancel(struct call *c, struct rcall *rc);
void cas_remote_bs_writable(struct call *c, struct rcall *rc);
void cas_remote_bs_half_close(struct call *c, struct rcall *rc);

#endif
