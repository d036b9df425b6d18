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
/* The grpc-timeout for a unary call to a shard on behalf of c. */
int64_t shard_timeout(struct call *c);

/* cas_remote_bs.c: the life of its calls. */
void cas_remote_bs_cancel(struct call *c, struct rcall *rc);
void cas_remote_bs_writable(struct call *c, struct rcall *rc);
void cas_remote_bs_half_close(struct call *c, struct rcall *rc);

#endif
