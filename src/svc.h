/*
 * svc.h - the method handlers each svc_*.c file exposes to the dispatch
 * table, and the hooks the daemon calls on them.
 */
#ifndef REACTOR_SVC_H
#define REACTOR_SVC_H

#include <stdbool.h>

#include "call.h"

struct cfg;

/* grpc.health.v1.Health */
void svc_health_check(struct call *c, const ProtobufCMessage *msg);
void svc_health_list(struct call *c, const ProtobufCMessage *msg);
void svc_health_watch(struct call *c, const ProtobufCMessage *msg);
void svc_health_watch_cancel(struct call *c);
/* Server-wide serving state (false while Redis is down or draining). */
void svc_health_set_serving(bool serving);
/* Drop all watchers (shutdown). */
void svc_health_shutdown(void);

/* build.bazel.remote.execution.v2.Capabilities */
void svc_capabilities_get(struct call *c, const ProtobufCMessage *msg);

/* build.bazel.remote.execution.v2.ActionCache */
void svc_ac_get(struct call *c, const ProtobufCMessage *msg);
void svc_ac_update(struct call *c, const ProtobufCMessage *msg);
/* Free the completeness-check cache (at shutdown). */
void svc_ac_shutdown(void);

/* build.bazel.remote.execution.v2.ContentAddressableStorage */
void svc_cas_find_missing(struct call *c, const ProtobufCMessage *msg);
void svc_cas_batch_update(struct call *c, const ProtobufCMessage *msg);
void svc_cas_batch_read(struct call *c, const ProtobufCMessage *msg);
void svc_cas_get_tree(struct call *c, const ProtobufCMessage *msg);

/* google.bytestream.ByteStream */
struct event_base;
void svc_bytestream_init(struct event_base *base);
void svc_bytestream_shutdown(void);
void svc_bs_read(struct call *c, const ProtobufCMessage *msg);
void svc_bs_read_writable(struct call *c);
void svc_bs_read_cancel(struct call *c);
void svc_bs_write(struct call *c, const ProtobufCMessage *msg);
void svc_bs_write_end(struct call *c);
void svc_bs_write_cancel(struct call *c);
void svc_bs_query(struct call *c, const ProtobufCMessage *msg);

/* reactor.buckets.v1.Buckets (svc_buckets.c) */
void svc_buckets_put(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_put_batch(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_get(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_search(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_peek(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_lease(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_reset(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_start(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_heartbeat(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_heartbeat_batch(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_succeed(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_fail(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_cancel(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_cancel_batch(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_retry(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_watch(struct call *c, const ProtobufCMessage *msg);
void svc_buckets_watch_cancel(struct call *c);
/* Register the scripts, subscribe to build events and create the sweep
 * timers; call before store_start.  Returns 0 or -1. */
int svc_buckets_init(struct event_base *base);
/* Apply the buckets: section (at start, before init, and on reload). */
void svc_buckets_configure(const struct cfg *cfg);
/* End WatchBuilds streams (UNAVAILABLE) and free the timers; idempotent. */
void svc_buckets_shutdown(void);

/* Config in force for the services (swapped on reload). */
void svc_set_config(const struct cfg *cfg);
const struct cfg *svc_config(void);


#endif
