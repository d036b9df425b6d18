/*
 * buckets.h - the build-bucket domain: a Buildbucket-style queue of builds
 * kept in Redis (schema in buckets_keys.h, scripts in buckets_lua.c).
 * This layer validates input, runs one Lua script per transition and turns
 * the replies into reactor.buckets.v1 messages; it knows nothing of gRPC
 * calls, so the unit tests drive it directly.  The service (svc_buckets.c)
 * maps results to responses and runs WatchBuilds.
 *
 * Every operation reports through its callback exactly once, possibly
 * before it returns (input errors, Redis down).  The result and everything
 * in it belong to the library and are freed after the callback returns;
 * a callback that keeps r->build sets it to NULL first.
 */
#ifndef REACTOR_BUCKETS_H
#define REACTOR_BUCKETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "reactor/buckets/v1/buckets.pb-c.h"
#include "state/store.h"
#include "core/util.h"

typedef Reactor__Buckets__V1__Build BkBuild;

/* Scripts (buckets_lua.c); ids from store_script_register. */
enum {
	BK_S_PUT,
	BK_S_RETRY,
	BK_S_LEASE,
	BK_S_START,
	BK_S_HEARTBEAT,
	BK_S_COMPLETE,
	BK_S_CANCEL,
	BK_S_RESET,
	BK_S_EXPIRE,
	BK_S_TIMEOUT,
	BK_S_PEEK,
	BK_S_SEARCH,
	BK_S_COUNT
};
extern int bk_scripts[BK_S_COUNT];
/* Register every script with the store; call once before store_start.
 * Returns 0, or -1 when the store refuses (already started). */
int bk_register_scripts(void) WARN_UNUSED;

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
};
void bk_configure(const struct bk_config *c);

/* Outcome of one operation.  code is a gRPC status: GRPC_OK for answers
 * (with either build set or reason != 0, the in-band ErrorReason, and
 * message), GRPC_UNAVAILABLE when Redis is down or the connection dropped,
 * GRPC_INTERNAL for an unexpected reply. */
struct bk_res {
	int code;
	int reason;    /* Reactor__Buckets__V1__ErrorReason; 0 = success */
	char *message; /* reason != 0 or code != OK */
	BkBuild *build;
};
typedef void (*bk_cb)(struct bk_res *r, void *arg);

struct bk_list {
	int code;
	int reason;
	char *message;
	BkBuild **builds;
	size_t n;
	char *next_cursor; /* "" when there is nothing more */
};
typedef void (*bk_list_cb)(struct bk_list *r, void *arg);

/* Operations.  created_by is the caller's identity. */
void bk_put(const Reactor__Buckets__V1__PutRequest *req, const char *created_by, bk_cb cb,
	    void *arg);
void bk_get(int64_t id, bk_cb cb, void *arg);
void bk_lease(const Reactor__Buckets__V1__LeaseRequest *req, bk_cb cb, void *arg);
void bk_reset(int64_t id, bk_cb cb, void *arg);
void bk_start(const Reactor__Buckets__V1__StartRequest *req, bk_cb cb, void *arg);
void bk_heartbeat(const Reactor__Buckets__V1__HeartbeatRequest *req, bk_cb cb, void *arg);
void bk_succeed(const Reactor__Buckets__V1__SucceedRequest *req, bk_cb cb, void *arg);
void bk_fail(const Reactor__Buckets__V1__FailRequest *req, bk_cb cb, void *arg);
void bk_cancel(int64_t id, bk_cb cb, void *arg);
void bk_retry(const Reactor__Buckets__V1__RetryRequest *req, const char *created_by, bk_cb cb,
	      void *arg);
void bk_peek(const Reactor__Buckets__V1__PeekRequest *req, bk_list_cb cb, void *arg);
void bk_search(const Reactor__Buckets__V1__SearchRequest *req, bk_list_cb cb, void *arg);

/* One pass of the lease-expiry / build-timeout sweep over at most `limit`
 * builds.  cb gets the number looked at (== limit: call again), or -1 when
 * Redis is unavailable. */
void bk_expire_pass(int limit, void (*cb)(long n, void *arg), void *arg);
void bk_timeout_pass(int limit, void (*cb)(long n, void *arg), void *arg);

/* ---- pure helpers (exposed for the unit tests) ---- */

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
 * bk_params_free), or -1 with *err (malloc'd) naming the field. */
int bk_params_parse(const char *json, struct bk_params *out, char **err) WARN_UNUSED;
void bk_params_free(struct bk_params *p);

/* Validate Put tags and add builder:<builder_name>; *out is sorted and
 * de-duplicated (free with bk_strv_free).  Returns 0, or -1 with *err. */
int bk_tags_normalize(char *const *tags, size_t n, const char *builder, char ***out, size_t *nout,
		      char **err) WARN_UNUSED;
/* Validate Succeed/Fail new_tags (each "key:value", no builder: key). */
int bk_new_tags_check(char *const *tags, size_t n, char **err) WARN_UNUSED;
void bk_strv_free(char **v, size_t n);

/* A random lease key in 1..2^53-1. */
int64_t bk_lease_key_new(void);

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
const char *bk_reason_name(int v);

#endif
