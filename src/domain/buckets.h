/*
 * buckets.h - the build-bucket domain: a Buildbucket-style queue of builds
 * kept in Redis (key schema in state/buckets_keys.h, one Lua script per
 * transition in src/state/lua/bk_*.lua, registered by buckets_scripts.c).
 * This layer validates input, runs the scripts and turns their replies
 * into reactor.buckets.v1 messages; it knows nothing of gRPC, so the unit
 * tests drive it directly.  The service (svc_buckets.c) maps results to
 * responses; WatchBuilds and the sweeps live in buckets_watch.h.
 *
 * Files: buckets.c (operations), buckets_input.c (validation),
 * buckets_build.c (Build messages from Redis replies, enum names),
 * buckets_scripts.c (script registration), buckets_watch.c (events,
 * watchers, sweeps).
 *
 * Async contract (core/err.h): an operation returns 0 and then calls its
 * callback exactly once, always after it has returned (input errors are
 * delivered from a zero-delay event), or returns a negative code
 * (ERR_STORE_DOWN: Redis is not connected) and never calls it.  The result
 * and everything in it belong to the library and are freed after the
 * callback returns; a callback that keeps r->build sets it to NULL first.
 */
#ifndef REACTOR_BUCKETS_H
#define REACTOR_BUCKETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reactor/buckets/v1/buckets.pb-c.h"
#include "core/util.h"

typedef Reactor__Buckets__V1__Build BkBuild;
struct event_base;

/* Register the scripts with the store and remember the loop (for deferred
 * answers); call once before store_start.  Returns 0, or
 * store_script_register's error (ERR_PRECONDITION: already started). */
int bk_init(struct event_base *base) WARN_UNUSED;

/* Fixed limits of the model. */
#define BK_MAX_LEASE_US	    (2LL * 3600 * 1000000) /* lease at most 2 h ahead */
#define BK_DEFAULT_LEASE_US (60LL * 1000000)	   /* Lease with expiration 0 */
#define BK_MAX_BATCH	    1000		   /* items per batch call */
#define BK_PEEK_DEFAULT	    10
#define BK_PEEK_MAX	    100
#define BK_SEARCH_DEFAULT   100
#define BK_SEARCH_MAX	    1000
#define BK_BUCKET_MAX	    100 /* bucket name length */

/* Tunables (from reactor.conf's buckets: section). */
struct bk_config {
	int64_t op_ttl_us;	  /* client_operation_id memory, default 60 s */
	int64_t build_timeout_us; /* default 2 days */
	int64_t retention_us;	  /* completed builds are removed after; 0: 30 days */
	int max_tags;		  /* tags per build and per Search; 0: 64 */
};
void bk_configure(const struct bk_config *c);

/* Outcome of one operation.  err is 0 for answers: build set on success,
 * or reason != 0 (the in-band ErrorReason, domain data the client sees
 * with gRPC OK) and message.  Otherwise err is a core/err.h code:
 * ERR_STORE_FAILED (the connection dropped before the reply) or
 * ERR_STORE_REPLY (Redis answered an error or something malformed), with
 * message an optional detail. */
struct bk_res {
	int err;
	int reason;    /* Reactor__Buckets__V1__ErrorReason; 0 = success */
	char *message; /* reason != 0, or detail of err (may be NULL) */
	BkBuild *build;
};
typedef void (*bk_cb)(struct bk_res *r, void *arg);

struct bk_list {
	int err;
	int reason;
	char *message;
	BkBuild **builds;
	size_t n;
	char *next_cursor; /* "" when there is nothing more */
};
typedef void (*bk_list_cb)(struct bk_list *r, void *arg);

/* Operations (each returns 0 or ERR_STORE_DOWN; see the contract above).
 * created_by is the caller's identity. */
int bk_put(const Reactor__Buckets__V1__PutRequest *req, const char *created_by, bk_cb cb,
	   void *arg) WARN_UNUSED;
int bk_get(int64_t id, bk_cb cb, void *arg) WARN_UNUSED;
int bk_lease(const Reactor__Buckets__V1__LeaseRequest *req, bk_cb cb, void *arg) WARN_UNUSED;
int bk_reset(int64_t id, bk_cb cb, void *arg) WARN_UNUSED;
int bk_start(const Reactor__Buckets__V1__StartRequest *req, bk_cb cb, void *arg) WARN_UNUSED;
int bk_heartbeat(const Reactor__Buckets__V1__HeartbeatRequest *req, bk_cb cb,
		 void *arg) WARN_UNUSED;
int bk_succeed(const Reactor__Buckets__V1__SucceedRequest *req, bk_cb cb, void *arg) WARN_UNUSED;
int bk_fail(const Reactor__Buckets__V1__FailRequest *req, bk_cb cb, void *arg) WARN_UNUSED;
int bk_cancel(int64_t id, bk_cb cb, void *arg) WARN_UNUSED;
int bk_retry(const Reactor__Buckets__V1__RetryRequest *req, const char *created_by, bk_cb cb,
	     void *arg) WARN_UNUSED;
int bk_peek(const Reactor__Buckets__V1__PeekRequest *req, bk_list_cb cb, void *arg) WARN_UNUSED;
int bk_search(const Reactor__Buckets__V1__SearchRequest *req, bk_list_cb cb, void *arg) WARN_UNUSED;

/* One pass of the lease-expiry / build-timeout sweep over at most `limit`
 * builds.  The build-timeout pass also removes builds completed more than
 * the retention ago, with their index entries (bucket sets, tags,
 * changes).  cb gets err 0 and the number looked at (== limit: call again),
 * or a negative err (ERR_STORE_FAILED, ERR_STORE_REPLY) and n = -1.
 * Returns 0 or ERR_STORE_DOWN (cb not called). */
typedef void (*bk_count_cb)(int err, long n, void *arg);
int bk_expire_pass(int limit, bk_count_cb cb, void *arg) WARN_UNUSED;
int bk_timeout_pass(int limit, bk_count_cb cb, void *arg) WARN_UNUSED;

/* ---- pure helpers (exposed for the unit tests; buckets_input.c) ---- */

/* [a-z0-9][a-z0-9._-]{0,99} */
bool bk_bucket_name_ok(const char *name);

/* Parsed parameters_json. */
struct bk_params {
	char *builder_name;
	/* (change id, revision) pairs to index; revision "" when absent */
	char **change_ids, **change_revs;
	size_t n_changes;
};
/* Validate parameters_json.  Returns 0 and fills *out (free with
 * bk_params_free), or -EINVAL with *err (malloc'd) naming the field. */
int bk_params_parse(const char *json, struct bk_params *out, char **err) WARN_UNUSED;
void bk_params_free(struct bk_params *p);

/* Validate Put tags and add builder:<builder_name>; *out is sorted and
 * de-duplicated (free with bk_strv_free).  Returns 0, or -EINVAL with *err. */
int bk_tags_normalize(char *const *tags, size_t n, const char *builder, char ***out, size_t *nout,
		      char **err) WARN_UNUSED;
/* Validate Succeed/Fail new_tags (each "key:value", no builder: key).
 * Returns 0, or -EINVAL with *err. */
int bk_new_tags_check(char *const *tags, size_t n, char **err) WARN_UNUSED;
void bk_strv_free(char **v, size_t n);

/* A random lease key in 1..2^53-1. */
int64_t bk_lease_key_new(void);

/* ---- builds from Redis replies (buckets_build.c) ---- */

/* Build message from the script reply element {id, {field, value...}};
 * NULL when malformed.  lease_key and utcnow_ts are left 0. */
struct redisReply;
BkBuild *bk_build_from_reply(const struct redisReply *pair);
/* The same from a plain HGETALL reply for build `id`; NULL when empty. */
BkBuild *bk_build_from_hash(int64_t id, const struct redisReply *arr);
void bk_build_free(BkBuild *b);

/* Enum <-> the names stored in Redis (the proto value names). */
const char *bk_status_name(int v);
const char *bk_result_name(int v);
const char *bk_failure_name(int v);
const char *bk_cancel_name(int v);

#endif
