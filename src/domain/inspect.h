/*
 * inspect.h - the one read-only view of what the scheduler, the bots, the
 * operations, the build buckets and the master hold in Redis, for the
 * three places that show it to people: the Admin service
 * (svc_admin.c, reactorctl bot ls / queue ls), the status page and
 * /metrics.  Nothing here changes state.
 *
 * Bounded.  Every query reads at most a fixed number of rows (the caller's
 * `limit`, clamped to the INSPECT_MAX_* below) with a fixed number of Redis
 * commands: one EVALSHA per query (inspect_summary: a fixed batch of
 * three), each script walking only the keys the schema indexes for it
 * (bots:{instance}, platforms:{instance}, ops:{instance}, {bb}:buckets,
 * master:{name}); never KEYS or a SCAN of the keyspace.  Where a cap cut
 * the walk short, the result says so (`truncated`), so a page can print
 * "first 500 of 2000".
 *
 * Async contract (core/err.h).  Each inspect_* call returns 0 and then
 * calls its callback exactly once, always after it has returned, or
 * returns a negative code (ERR_STORE_DOWN: Redis is not connected;
 * ERR_STORE_BUSY: redis.max-pending reached; -EINVAL: a bad argument) and
 * never calls it.  The callback gets rc 0 and the result, or a negative
 * code (ERR_STORE_FAILED: the connection dropped first; ERR_STORE_REPLY:
 * Redis answered something malformed) and a NULL result.
 *
 * Ownership.  The result passed to a callback belongs to this module and
 * is freed right after the callback returns; every string in it is
 * malloc'd and never NULL ("" when unknown).  A callback that keeps a
 * result past its return takes it with the *_steal helpers below and
 * later frees it with the matching inspect_*_free.
 *
 * Times are microseconds since the Unix epoch, 0 when unknown; digests are
 * "hash/size" strings as the keys keep them.  Platforms are the canonical
 * "key=value;key=value" form of sched_platform() ("" for the empty one).
 */
#ifndef REACTOR_INSPECT_H
#define REACTOR_INSPECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/util.h"

struct cfg;

/* Caps on what one call reads (a larger limit is clamped to these; a limit
 * <= 0 means the default). */
#define INSPECT_BOTS_DEFAULT  100
#define INSPECT_MAX_BOTS      1000 /* sessions per inspect_bots call */
#define INSPECT_MAX_PLATFORMS 200  /* platforms per instance in queues/summary */
#define INSPECT_OPS_DEFAULT   50
#define INSPECT_MAX_OPS	      500  /* rows per inspect_operations call */
#define INSPECT_MAX_OPS_SCAN  2000 /* index entries one call walks to fill them */
#define INSPECT_MAX_BUCKETS   100  /* buckets per inspect_summary */
#define INSPECT_MAX_BUSY_SCAN 1000 /* sessions per instance whose lease summary reads */

/* Register the scripts (before store_start, after keys_set_ns).  Returns 0
 * or store_script_register's error (ERR_PRECONDITION after store_start). */
int inspect_init(void) WARN_UNUSED;
/* The config in force: inspect_summary reports the instances with
 * execution on and the master's leases.  Called at start and on every
 * reload; cfg must stay valid until the next call (NULL: nothing
 * configured, summary rows empty). */
void inspect_configure(const struct cfg *cfg);

/* ---- bots ------------------------------------------------------------- */

/* Bot session states: the Remote Workers API BotStatus values. */
enum inspect_bot_state {
	INSPECT_BOT_UNSPECIFIED = 0,
	INSPECT_BOT_OK = 1,
	INSPECT_BOT_UNHEALTHY = 2,
	INSPECT_BOT_HOST_REBOOTING = 3,
	INSPECT_BOT_TERMINATING = 4,
};
/* "OK", "UNHEALTHY", ... ("UNSPECIFIED" for anything else). */
const char *inspect_bot_state_name(int state);

struct inspect_bot {
	char *session; /* the session name ({instance}/{uuid}) */
	char *bot_id;
	char *owner;	    /* the identity that opened the session */
	int state;	    /* enum inspect_bot_state */
	char *props;	    /* canonical properties it offers */
	bool busy;	    /* holds a lease */
	char *lease_job;    /* the job it holds ("" when idle) */
	char *lease_state;  /* PENDING | ACTIVE | "" */
	char *lease_action; /* the leased action's digest */
	char **lease_ops;   /* operation names waiting on that job */
	size_t n_lease_ops; /* (at most INSPECT_MAX_LEASE_OPS) */
	int64_t created_us, last_seen_us, expire_us;
};
#define INSPECT_MAX_LEASE_OPS 8

struct inspect_bots {
	char *instance;
	struct inspect_bot *bots; /* most recently seen first */
	size_t n;
	size_t total;	/* live sessions of the instance (may be > n) */
	bool truncated; /* n < total */
};
typedef void (*inspect_bots_cb)(void *arg, int rc, struct inspect_bots *r);
/* The instance's live sessions, at most `limit`. */
int inspect_bots(const char *instance, int limit, inspect_bots_cb cb, void *arg) WARN_UNUSED;
void inspect_bots_free(struct inspect_bots *r);

/* ---- queues ----------------------------------------------------------- */

struct inspect_queue {
	char *platform;	   /* canonical platform */
	int64_t queued;	   /* jobs waiting */
	int64_t oldest_us; /* when the longest-waiting of the first 100 jobs in
			      queue order was queued (exact when they share a
			      priority); 0 when unknown */
	int64_t bots;	   /* live sessions whose properties match */
	int64_t bots_busy; /* of those, holding a lease */
};
struct inspect_queues {
	char *instance;
	struct inspect_queue *queues; /* sorted by platform */
	size_t n;
	bool truncated; /* more than INSPECT_MAX_PLATFORMS platforms, or more
			   than INSPECT_MAX_BUSY_SCAN sessions (the bot
			   counts then cover the first ones only) */
};
typedef void (*inspect_queues_cb)(void *arg, int rc, struct inspect_queues *r);
/* Every platform of the instance with queued work. */
int inspect_queues(const char *instance, inspect_queues_cb cb, void *arg) WARN_UNUSED;
void inspect_queues_free(struct inspect_queues *r);

/* ---- operations ------------------------------------------------------- */

struct inspect_op {
	char *name;
	int stage;     /* enum sched_stage (QUEUED, EXECUTING, COMPLETED...) */
	char *action;  /* digest */
	char *job;     /* "" for one answered from the cache */
	char *owner;   /* who created it ("" when unknown) */
	char *bot_id;  /* the bot running it or that ran it last ("" none) */
	char *session; /* that bot's session while it runs ("" otherwise) */
	int64_t created_us, queued_us, started_us, completed_us;
	bool cached;   /* answered from the action cache */
	int status;    /* gRPC code of the outcome (COMPLETED only) */
	char *message; /* outcome text, "" when none */
	bool has_exit; /* an ActionResult was recorded */
	int exit_code; /* its exit code */
};
struct inspect_ops {
	char *instance;
	struct inspect_op *ops; /* newest first */
	size_t n;
	bool truncated; /* the walk stopped at INSPECT_MAX_OPS_SCAN entries
			   or at `limit` with more left */
};
typedef void (*inspect_ops_cb)(void *arg, int rc, struct inspect_ops *r);
/* The instance's operations, newest first, at most `limit`, only those at
 * `stage` (enum sched_stage; 0 = any).  Everyone's: the caller checks the
 * reader may see them (the Admin service requires admin-read). */
int inspect_operations(const char *instance, int stage, int limit, inspect_ops_cb cb,
		       void *arg) WARN_UNUSED;
void inspect_ops_free(struct inspect_ops *r);

/* ---- summary (what /metrics reads per scrape) ------------------------- */

struct inspect_platform_depth {
	char *instance, *platform;
	int64_t queued;
};
struct inspect_instance_sum {
	char *instance;
	int64_t ops;	   /* operations indexed (any stage, finished ones until
			      their retention ends) */
	int64_t queued;	   /* jobs in the instance's queues */
	int64_t bots;	   /* live sessions */
	int64_t bots_busy; /* of those holding a lease (counted over the first
			      INSPECT_MAX_BUSY_SCAN sessions) */
	/* Operations by stage, exact (opstats:{instance}, kept by the
	 * scheduler's scripts at each transition): waiting now... */
	int64_t ops_queued, ops_executing;
	/* ...and completed since the counters began (totals that only grow):
	 * status OK (cache hits included, whatever the exit code), CANCELLED,
	 * any other status. */
	int64_t ops_ok, ops_failed, ops_cancelled;
};
struct inspect_bucket_sum {
	char *bucket;
	int64_t scheduled, started, completed; /* builds by status */
};
struct inspect_summary {
	struct inspect_instance_sum *instances; /* configured order */
	size_t n_instances;
	struct inspect_platform_depth *depth; /* queue depth per platform */
	size_t n_depth;
	int64_t jobs_executing;		    /* jobs assigned to a bot, all instances */
	struct inspect_bucket_sum *buckets; /* sorted by name */
	size_t n_buckets;
	int64_t builds_leased; /* leased builds, all buckets */
	bool has_master;       /* this reactord runs a master */
	char *master;	       /* its name ("" when none) */
	int64_t master_leases; /* builds it holds */
	bool truncated;	       /* a cap cut a list short */
};
typedef void (*inspect_summary_cb)(void *arg, int rc, struct inspect_summary *r);
/* The counters, from one fixed batch of Redis commands (at most three). */
int inspect_summary(inspect_summary_cb cb, void *arg) WARN_UNUSED;
void inspect_summary_free(struct inspect_summary *r);

/* ---- keeping a result past the callback ------------------------------- */

/* Take the result out of the callback's hands: returns a new allocation
 * holding r's contents and leaves r empty, so what this module frees after
 * the callback is nothing; the caller frees the returned copy with the
 * matching inspect_*_free.  Only valid inside the callback. */
struct inspect_bots *inspect_bots_steal(struct inspect_bots *r);
struct inspect_queues *inspect_queues_steal(struct inspect_queues *r);
struct inspect_ops *inspect_ops_steal(struct inspect_ops *r);
struct inspect_summary *inspect_summary_steal(struct inspect_summary *r);

#endif
