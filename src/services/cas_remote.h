/*
 * cas_remote.h - instances whose CAS lives elsewhere: `storage: remote`
 * (every blob forwarded to one CAS endpoint) and `storage: sharded` (the
 * digest space split over a list of CAS endpoints by rendezvous hashing,
 * one of which may be this reactord's own store).  The blob store API
 * (domain/blob.h) stays local and synchronous; this module answers the CAS,
 * ByteStream, ActionCache-check and Execute-input paths of such instances
 * asynchronously with the project's gRPC client (rpc/client.h).
 *
 * The service handlers call in with a one-line hook at their top: each
 * cas_remote_* handler below returns true when it took the call (the
 * instance is remote, or the call is one of ours), false when the local
 * handler must run (a local instance, or a digest this reactord owns).
 */
#ifndef REACTOR_CAS_REMOTE_H
#define REACTOR_CAS_REMOTE_H

#include <stdbool.h>

#include "domain/ac.h"
#include "rpc/call.h"
#include "core/util.h"

struct event_base;
struct cfg_instance;
struct blob_store;
struct cas_remote;
struct inst;
struct digest;

/* Open the remote/sharded CAS of instance ci; `local` is the instance's own
 * store (the shard-self store, or the small staging/cache store): digests
 * this reactord owns are served from it.  Returns 0, or -1 with *err
 * (malloc'd) when a shard's TLS or token files cannot be used. */
int cas_remote_open(struct event_base *base, const struct cfg_instance *ci,
		    struct blob_store *local, struct cas_remote **out, char **err) WARN_UNUSED;
void cas_remote_close(struct cas_remote *r);

/* ContentAddressableStorage (svc_cas.c hooks). */
bool cas_remote_find_missing(struct call *c, const ProtobufCMessage *msg);
bool cas_remote_batch_update(struct call *c, const ProtobufCMessage *msg);
bool cas_remote_batch_read(struct call *c, const ProtobufCMessage *msg);
bool cas_remote_get_tree(struct call *c, const ProtobufCMessage *msg);
/* ByteStream (svc_bytestream.c hooks); Write is called for every message. */
bool cas_remote_bs_read(struct call *c, const ProtobufCMessage *msg);
bool cas_remote_bs_write(struct call *c, const ProtobufCMessage *msg);
bool cas_remote_bs_query(struct call *c, const ProtobufCMessage *msg);
/* For the on_cancel / on_writable / on_half_close hooks of those methods:
 * true when c is one of ours (and was handled). */
bool cas_remote_cancel(struct call *c);
bool cas_remote_writable(struct call *c);
bool cas_remote_half_close(struct call *c);

/* The action cache across shards: ac_get / ac_put (domain/ac.h) with the
 * completeness check done here against the shards (batched
 * FindMissingBlobs per shard, Trees read from their shards), then the
 * entry read or written with the check skipped (ac.c: cas NULL).  Same
 * contract and callback as ac_get / ac_put.  A shard that cannot answer
 * makes a get a miss (the entry is kept) and a put fail with -EIO. */
int cas_remote_ac_get(struct inst *in, const struct digest *action, ac_cb cb,
		      void *arg) WARN_UNUSED;
int cas_remote_ac_put(struct inst *in, const struct digest *action,
		      const Build__Bazel__Remote__Execution__V2__ActionResult *r, ac_cb cb,
		      void *arg) WARN_UNUSED;

/* Execute (svc_exec.c hook): fetch the Action, its Command and its input
 * root Directory from their shards into the instance's local store, run
 * the local handler on them, then drop the copies the store does not own.
 * Returns true when it took the call. */
bool cas_remote_execute(struct call *c, const ProtobufCMessage *msg,
			void (*handler)(struct call *c, const ProtobufCMessage *msg));

#endif
