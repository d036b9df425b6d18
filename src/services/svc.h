/*
 * svc.h - the method handlers each svc_*.c file exposes to the dispatch
 * table, and the hooks the daemon calls on them.
 */
#ifndef REACTOR_SVC_H
#define REACTOR_SVC_H

#include <stdbool.h>

#include "rpc/call.h"

struct cfg;

/* Output backpressure for server streams of small messages (Execute,
 * WaitExecution, WatchBuilds, health Watch): while call_pending() is at or
 * above this, a stream queues nothing more (it keeps what it must send in
 * its own bounded form), asks call_want_writable() and resumes in its
 * on_writable.  Small, so a thousand stuck streams on one connection hold
 * a few MiB, not hundreds. */
#define SVC_STREAM_HIWAT (16 * 1024)

/* grpc.health.v1.Health */
void svc_health_check(struct call *c, const ProtobufCMessage *msg);
void svc_health_list(struct call *c, const ProtobufCMessage *msg);
void svc_health_watch(struct call *c, const ProtobufCMessage *msg);
void svc_health_watch_cancel(struct call *c);
void svc_health_watch_writable(struct call *c);
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
/* The request's hand-written decoder (struct rpc_method.decode). */
ProtobufCMessage *svc_cas_find_missing_decode(struct call *c, const uint8_t *data, size_t len,
					      const char **bad_string);
void svc_cas_find_missing_cancel(struct call *c);
struct event_base;
void svc_cas_init(struct event_base *base);
void svc_cas_batch_update(struct call *c, const ProtobufCMessage *msg);
void svc_cas_batch_update_cancel(struct call *c);
void svc_cas_batch_read(struct call *c, const ProtobufCMessage *msg);
void svc_cas_batch_read_cancel(struct call *c);
void svc_cas_get_tree(struct call *c, const ProtobufCMessage *msg);
void svc_cas_get_tree_cancel(struct call *c);
void svc_cas_get_tree_writable(struct call *c);

/* google.bytestream.ByteStream */
struct event_base;
void svc_bytestream_init(struct event_base *base);
void svc_bytestream_shutdown(void);
void svc_bs_read(struct call *c, const ProtobufCMessage *msg);
void svc_bs_read_writable(struct call *c);
void svc_bs_read_cancel(struct call *c);
void svc_bs_write(struct call *c, const ProtobufCMessage *msg);
/* Its hand-written decoder (struct rpc_method.decode): data in place. */
ProtobufCMessage *svc_bs_write_decode(struct call *c, const uint8_t *data, size_t len,
				      const char **bad_string);
void svc_bs_write_end(struct call *c);
void svc_bs_write_cancel(struct call *c);
void svc_bs_query(struct call *c, const ProtobufCMessage *msg);

/* reactor.admin.v1.Admin (svc_admin.c; read-only) */
void svc_admin_list_bots(struct call *c, const ProtobufCMessage *msg);
void svc_admin_list_queues(struct call *c, const ProtobufCMessage *msg);
void svc_admin_list_operations(struct call *c, const ProtobufCMessage *msg);
void svc_admin_summary(struct call *c, const ProtobufCMessage *msg);

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
void svc_buckets_watch_writable(struct call *c);
/* Register the scripts, subscribe to build events and create the sweep
 * timers; call before store_start.  Returns 0 or -1. */
int svc_buckets_init(struct event_base *base);
/* Apply the buckets: section (at start, before init, and on reload). */
void svc_buckets_configure(const struct cfg *cfg);
/* End WatchBuilds streams (UNAVAILABLE) and free the timers; idempotent. */
void svc_buckets_shutdown(void);

/* build.bazel.remote.execution.v2.Execution (svc_exec.c) */
struct inst;
void svc_exec_init(struct event_base *base);
void svc_exec_execute(struct call *c, const ProtobufCMessage *msg);
void svc_exec_wait(struct call *c, const ProtobufCMessage *msg);
void svc_exec_cancel(struct call *c);
/* Execute / WaitExecution: the output drained, send the held state. */
void svc_exec_writable(struct call *c);
/* google.longrunning.Operations.WaitOperation (lives with WaitExecution). */
void svc_ops_wait(struct call *c, const ProtobufCMessage *msg);
/* Shutdown: end every stream with UNAVAILABLE (clients resume with
 * WaitExecution, the operations live on in Redis). */
void svc_exec_drain(void);
/* True when the instance serves remote execution; otherwise finishes the
 * call UNIMPLEMENTED naming the method and the instance. */
bool svc_exec_enabled(struct call *c, const struct inst *in);

/* google.longrunning.Operations (svc_ops.c) */
void svc_ops_get(struct call *c, const ProtobufCMessage *msg);
void svc_ops_list(struct call *c, const ProtobufCMessage *msg);
void svc_ops_cancel(struct call *c, const ProtobufCMessage *msg);
void svc_ops_delete(struct call *c, const ProtobufCMessage *msg);
/* Send operation `name` in state v as an Operation message (call_send). */
struct sched_view;
int svc_ops_send(struct call *c, const char *name, const struct sched_view *v);
/* The same message serialized after 5 free bytes (for call_send_owned);
 * *len is the message length without them. */
uint8_t *svc_ops_pack(const char *name, const struct sched_view *v, size_t *len);
/* True when the caller created operation `name` (state v) or holds
 * ops-admin on its instance; otherwise finishes the call
 * PERMISSION_DENIED (auth_deny) and returns false. */
bool svc_ops_may_see(struct call *c, const char *name, const struct sched_view *v);

/* google.devtools.remoteworkers.v1test2.Bots (svc_bots.c) */
void svc_bots_init(struct event_base *base);
void svc_bots_create(struct call *c, const ProtobufCMessage *msg);
void svc_bots_update(struct call *c, const ProtobufCMessage *msg);
void svc_bots_cancel(struct call *c);
void svc_bots_post_event(struct call *c, const ProtobufCMessage *msg);
/* Shutdown: answer every long poll now, without a lease. */
void svc_bots_drain(void);

/* ---- the one place internal errors become gRPC statuses (core/err.h) ---- */

/* The gRPC code for an internal error code (0 -> OK). */
int svc_status(int err);

/* Finish call c with the status for `err` (negative).  The message is the
 * standard text for err (for the Redis codes: "Redis is unavailable" or
 * "Redis failed" with why the connection went down when known, "Redis is
 * out of memory (maxmemory ...)", "too many commands wait for Redis
 * (limit ...)"), then ": " and the formatted detail when fmt is not
 * NULL; for other codes the detail alone (or the standard text when fmt is
 * NULL).  Example: svc_fail(c, ERR_STORE_DOWN, "cannot queue the action")
 * -> UNAVAILABLE "Redis is unavailable: cannot queue the action". */
void svc_fail(struct call *c, int err, const char *fmt, ...) PRINTF_LIKE(3, 4);

/* Config in force for the services (swapped on reload). */
void svc_set_config(const struct cfg *cfg);
const struct cfg *svc_config(void);

#endif
