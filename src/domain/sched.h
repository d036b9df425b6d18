/*
 * sched.h - the remote-execution scheduler: jobs, operations, per-platform
 * queues, bot sessions and their leases, all kept in Redis (schema in
 * keys.c) and changed only through the Lua scripts src/state/lua/sched_*.lua.  This
 * module turns those scripts into typed asynchronous calls for the
 * services (svc_exec.c, svc_ops.c, svc_bots.c), canonicalizes platforms
 * and bot properties, and runs the periodic sweep (bot expiry, action
 * timeouts, no-worker failures, retention).  It holds no state of its own
 * beyond the sweep timer: everything durable is in Redis.
 *
 * Errors follow core/err.h.  Async calls return 0 when the request is
 * queued (the callback then runs exactly once, after the call returned) or
 * ERR_STORE_DOWN when Redis is not connected (the callback is not called).
 * Callbacks get rc 0, ERR_STORE_FAILED when the connection dropped before
 * the reply, ERR_STORE_REPLY when Redis answered with an error (logged
 * here), or the call's own codes (-ENOENT, -EPERM, -EACCES) documented below;
 * ownership of everything passed to a callback stays with this module
 * (valid during the callback only).
 */
#ifndef REACTOR_SCHED_H
#define REACTOR_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "build/bazel/remote/execution/v2/remote_execution.pb-c.h"
#include "core/digest.h"
#include "google/devtools/remoteworkers/v1test2/worker.pb-c.h"
#include "core/util.h"

struct event_base;
struct cfg;
struct cfg_instance;

/* REAPI ExecutionStage values. */
enum sched_stage {
	SCHED_UNKNOWN = 0,
	SCHED_CACHE_CHECK = 1,
	SCHED_QUEUED = 2,
	SCHED_EXECUTING = 3,
	SCHED_COMPLETED = 4,
};
const char *sched_stage_name(int stage);
/* "QUEUED" etc. to its enum sched_stage value; -1 when the name is none of
 * them (a value outside the enum, not an err.h code). */
int sched_stage_parse(const char *name);

/* Distinct platforms with queued work per instance, unless the config
 * (scheduler.max-platforms) says otherwise. */
#define SCHED_MAX_PLATFORMS_DEFAULT 1000

/* Priorities are clamped to this range (advertised in Capabilities). */
#define SCHED_PRIORITY_MIN (-1000000)
#define SCHED_PRIORITY_MAX 1000000

/* The config in force: the sweep interval and the instances (with
 * execution on) it sweeps.  Called at start and on every reload; cfg must
 * stay valid until the next call. */
void sched_configure(const struct cfg *cfg);
/* Register the scripts (before store_start; after keys_set_ns).
 * sched_watch.c owns the subscriptions.  Returns 0, or
 * store_script_register's error (ERR_PRECONDITION after store_start). */
int sched_init(void) WARN_UNUSED;
/* Start / stop the sweep timer on base.  Each tick runs one sweep (bot
 * expiry, action timeouts, no-worker failures, retention), at most one in
 * flight. */
void sched_start(struct event_base *base);
void sched_stop(void);

/* A random RFC 4122 version-4 UUID string (malloc'd): an operation or
 * job name.  The one generator is uuid4() in core/util.h. */
static inline char *sched_uuid(void)
{
	return uuid4();
}

/* ---- platforms ----------------------------------------------------------- */

/* Canonical platform of an action: "key=value;..." sorted, duplicates
 * dropped, '%', ';', '=', ':' and control bytes %-escaped.  Every key must
 * be declared by the instance (platform-properties, plus OSFamily and
 * ISA).  Returns 0 with *out (malloc'd), or -EINVAL with *err (malloc'd)
 * naming the undeclared property.  p may be NULL (empty platform). */
int sched_platform(const Build__Bazel__Remote__Execution__V2__Platform *p,
		   const struct cfg_instance *ci, char **out, char **err) WARN_UNUSED;
/* A bot's properties in the same form: the first device's properties
 * and the worker's own, restricted to the declared keys. */
char *sched_bot_props(const Google__Devtools__Remoteworkers__V1test2__Worker *w,
		      const struct cfg_instance *ci);
/* True when every key=value of `platform` is among `props`. */
bool sched_platform_match(const char *platform, const char *props);

/* ---- operations ---------------------------------------------------------- */

/*
 * Ownership (issue 12).  Every operation records the identity that
 * created it (`owner` in its hash).  Deduplication shares the job, not
 * the operation: an Execute that joins a job in flight gets its own
 * operation on it, owned by its caller, so every sharer may wait on,
 * read and cancel its own operation (the job is cancelled once none is
 * left).  Reading, waiting on, cancelling, deleting and listing act on
 * one's own operations; the services let an identity with ops-admin on
 * the operation's instance act on anyone's (who = NULL below).  An
 * operation from before owners were recorded belongs to nobody: only an
 * ops-admin reaches it.
 */

/* What a client sees of one operation. */
struct sched_view {
	bool exists;
	int stage;	 /* enum sched_stage */
	int status;	 /* gRPC code of the outcome (COMPLETED only) */
	char *message;	 /* outcome text, "" when none */
	uint8_t *result; /* serialized ActionResult, NULL when none */
	size_t result_len;
	bool cached; /* answered from the action cache */
	struct digest action;
	int64_t version; /* the job's change counter */
	char *job;	 /* "" for operations without a job */
	char *owner;	 /* the identity that created it, "" when unknown */
	char *instance;	 /* the instance it was created on */
};
/* True when `who` created the operation (never for an unknown owner). */
bool sched_op_owned(const struct sched_view *v, const char *who);

typedef void (*sched_view_cb)(void *arg, int rc, struct sched_view *v, size_t n);
/* Read n operations (one script call).  v has n entries on rc 0. */
int sched_view(const char *const *ops, size_t n, sched_view_cb cb, void *arg) WARN_UNUSED;

struct sched_enqueue_req {
	const char *instance;
	const struct digest *action;
	const char *op; /* the new operation's name */
	int priority;
	const char *platform; /* canonical */
	int64_t timeout_us;
	bool do_not_cache;
	int max_attempts;
	int64_t retention_us;
	const char *owner; /* the caller's identity */
};
/* job: the job the operation waits on (new, or joined when `joined`).
 * rc -ENOSPC: the job would add a distinct platform to the instance's
 * waiting ones past scheduler.max-platforms (SCHED_MAX_PLATFORMS_DEFAULT
 * before sched_configure); nothing was queued and job is then the message
 * to send (it names the limit).  rc ERR_PRECONDITION (fail fast): no bot
 * could run the platform - no live session offers matching properties,
 * none that did closed within the instance's no-worker-timeout, the
 * local workers (instance "") do not offer them, and reactord started
 * more than scheduler.start-grace ago; nothing was queued and job is the
 * message (it names the platform).  Other errors: job is NULL. */
typedef void (*sched_enqueue_cb)(void *arg, int rc, const char *job, int stage, int64_t version,
				 bool joined);
int sched_enqueue(const struct sched_enqueue_req *r, sched_enqueue_cb cb, void *arg) WARN_UNUSED;

typedef void (*sched_done_cb)(void *arg, int rc);
/* An operation answered from the action cache (born COMPLETED), owned
 * by `owner`. */
int sched_cached_op(const char *instance, const char *op, const char *owner,
		    const struct digest *action, const uint8_t *result, size_t len,
		    int64_t retention_us, sched_done_cb cb, void *arg) WARN_UNUSED;
/* The outcome of a change to one operation; instance is the operation's
 * (set with -EACCES, so the caller can check ops-admin there; "" otherwise). */
typedef void (*sched_change_cb)(void *arg, int rc, const char *instance);
/* Cancel one operation as `who` (NULL: whoever owns it, for an ops-admin
 * or the server itself): rc 0 (cancelled, or already finished), -ENOENT,
 * or -EACCES when another identity owns it (nothing changed). */
int sched_cancel_op(const char *op, const char *who, sched_change_cb cb, void *arg) WARN_UNUSED;
/* Forget one operation (its job runs on), as `who` like sched_cancel_op:
 * rc 0, -ENOENT or -EACCES. */
int sched_delete_op(const char *op, const char *who, sched_change_cb cb, void *arg) WARN_UNUSED;

/* Operations of an instance, oldest first, from `offset` (the index
 * position), at most `size`, optionally only those at `stage` (0 = any)
 * and only those `owner` created (NULL = anyone's).
 * next: offset of the next page, -1 at the end. */
typedef void (*sched_list_cb)(void *arg, int rc, char **ops, size_t n, int64_t next);
int sched_list_ops(const char *instance, const char *owner, int64_t offset, int size, int stage,
		   sched_list_cb cb, void *arg) WARN_UNUSED;

/* ---- bots ---------------------------------------------------------------- */

/* A lease to send to a bot (id = job name). */
struct sched_lease {
	char *id;  /* NULL: no lease */
	int state; /* LeaseState value */
	struct digest action;
};

/* The outcome of a bot call. */
struct sched_bot_result {
	int rc;		     /* 0, -ENOENT (no such session), -EPERM (bot id
				mismatch: the session was closed), -EACCES
				(the bot id or session belongs to another
				identity: nothing changed), or a store code
				(ERR_STORE_FAILED, ERR_STORE_REPLY) */
	char *closed;	     /* CreateBotSession: the bot's previous session */
	char *stored_bot_id; /* -EPERM: the session's real bot id */
	struct sched_lease lease;
	/* UpdateBotSession: a lease the bot completed. */
	char *done_job;
	struct digest done_action;
	bool done_do_not_cache;
	char *instance;
};
typedef void (*sched_bot_cb)(void *arg, const struct sched_bot_result *r);

/* A bot id is bound to the identity that opened its session (`owner` in
 * the session's hash): another identity can neither open a session for
 * that bot id while it lives, nor update the session, report on its
 * lease or close it (-EACCES).  A session from before owners were
 * recorded is anyone's. */
struct sched_bot_create_req {
	const char *session, *instance, *bot_id, *props;
	const char *owner; /* the caller's identity */
	int status;
	int64_t expire_us;
	bool assign;
};
int sched_bot_create(const struct sched_bot_create_req *r, sched_bot_cb cb, void *arg) WARN_UNUSED;

struct sched_bot_update_req {
	const char *session, *bot_id;
	const char *owner; /* the caller's identity */
	int status;
	int64_t expire_us;
	/* The lease the bot reported (id NULL: none). */
	const char *lease_id;
	int lease_state;
	int code; /* COMPLETED: result status */
	const char *message;
	const uint8_t *result; /* serialized ActionResult or NULL */
	size_t result_len;
	bool assign;
};
int sched_bot_update(const struct sched_bot_update_req *r, sched_bot_cb cb, void *arg) WARN_UNUSED;
/* Give an idle session the best job its properties match. */
int sched_assign(const char *session, sched_bot_cb cb, void *arg) WARN_UNUSED;
/* Take back a lease the bot never received (no attempt counted): 0 when
 * the request is queued (its outcome is only logged), ERR_STORE_DOWN. */
int sched_unassign(const char *session, const char *job) WARN_UNUSED;

/* Platforms with queued jobs: "{instance}\n{platform}" and the count. */
typedef void (*sched_queued_cb)(void *arg, int rc, char **keys, const int64_t *counts, size_t n);
int sched_queued(const char *const *instances, size_t n, sched_queued_cb cb, void *arg) WARN_UNUSED;

#endif
