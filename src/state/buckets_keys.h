/*
 * buckets_keys.h - the Redis key schema of build buckets, in one place.
 * Every key and channel name the buckets code uses is built here (C) or
 * from the same base in src/state/lua/bk_lib.lua (Lua); reactor-redis(7)
 * documents the same keys for operators.  All names start with the
 * deployment namespace keys_ns() (state/keys.h) and then the Redis Cluster
 * hash tag "{bb}", so with namespace "reactor:":
 *
 *   reactor:{bb}:build:<id>                 hash, one per build (fields below)
 *   reactor:{bb}:bucket:<bucket>:SCHEDULED  zset, the bucket's builds in that
 *   reactor:{bb}:bucket:<bucket>:STARTED    status (one set per status; each
 *   reactor:{bb}:bucket:<bucket>:COMPLETED  build is in exactly one)
 *   reactor:{bb}:bucket:<bucket>:peek       zset, SCHEDULED and unleased:
 *                                           what Peek returns
 *   reactor:{bb}:buckets                    set of bucket names (buckets exist
 *                                           implicitly from their first Put)
 *   reactor:{bb}:tag:<tag>                  zset, builds carrying the tag
 *   reactor:{bb}:change:<id>:<revision>     zset, builds whose parameters_json
 *                                           lists that change; ':' and '%' in
 *                                           the id and revision are %3A, %25
 *   reactor:{bb}:leased                     zset, leased builds, score = lease
 *                                           expiration (us)
 *   reactor:{bb}:done                       zset, completed builds, score =
 *                                           completion time (us); the
 *                                           build-timeout pass removes those
 *                                           older than buckets.retention,
 *                                           hash and every entry above
 *   reactor:{bb}:idgen                      hash {us, seq}: the last id
 *   reactor:{bb}:op:<bucket>:<client_operation_id>
 *                                           string "<build id> <lease key or 0>",
 *                                           expires after client-operation-ttl
 *
 * Why one hash tag for the whole domain: every transition updates global
 * indexes (leased, tag:*, idgen, buckets) next to a bucket's sets, and
 * Search and the timeout pass span buckets; in one Lua script on Redis
 * Cluster all of those must be in one slot.  A per-bucket tag would need
 * per-bucket copies of every index and cross-bucket merges in C (a change
 * of the model, not of the names); build buckets carry far less traffic
 * than the scheduler, so one slot is the simple, correct choice.
 *
 * Every zset of build ids has score 0 except leased: ids are 19 decimal
 * digits (created_ts in us * 1000 + a sequence number), so ZRANGEBYLEX order
 * is id order is creation order.
 *
 * Fields of build:<id> (absent = unset/zero; times are us since the epoch,
 * enums are their proto names): bucket, tags (JSON array, sorted), put_tags
 * (JSON array: the tags of the Put, kept once Succeed/Fail added new_tags),
 * parameters_json, status, result, failure_reason, cancelation_reason,
 * result_details_json, url, created_by, created_ts, updated_ts,
 * status_changed_ts, started_ts, completed_ts, retry_of, lease_key,
 * lease_expiration_ts, leasee (all three set <=> leased).
 *
 * Channels:
 *   reactor:{bb}:events:<bucket>  one JSON message per change of a build of
 *       the bucket: {"build_id":"<id>","bucket":..,"event":"PUT|LEASE|START|
 *       HEARTBEAT|SUCCEED|FAIL|CANCEL|RESET|EXPIRE|TIMEOUT|RETRY","status":..,
 *       "result":..,"lease_expiration_ts":N,"updated_ts":N}
 *   reactor:{bb}:probe  reactord's own liveness probe of its subscriber
 *       connection (payload meaningless)
 *
 * Every function returns a malloc'd string the caller frees, built from
 * keys_ns() at the time of the call.
 */
#ifndef REACTOR_BUCKETS_KEYS_H
#define REACTOR_BUCKETS_KEYS_H

#include <stdint.h>

/* The tag and separator after the namespace. */
#define BKEYS_TAG "{bb}:"

/* "<ns>{bb}:": the base every name starts with; the scripts get it as
 * ARGV[1] and build their names from it. */
char *bkeys_base(void);

char *bkeys_build(int64_t id);
/* set is a status name or "peek". */
char *bkeys_bucket(const char *bucket, const char *set);
char *bkeys_buckets(void);
char *bkeys_tag(const char *tag);
/* The change id and revision are escaped (':' -> %3A, '%' -> %25). */
char *bkeys_change(const char *id, const char *revision);
/* s with ':' and '%' escaped as in bkeys_change (keys.c uses it too). */
char *bkeys_escape(const char *s);
char *bkeys_leased(void);
char *bkeys_done(void);
char *bkeys_idgen(void);
char *bkeys_op(const char *bucket, const char *client_operation_id);

/* Channels: the pattern of every bucket's events channel (bk_lib.lua
 * publishes on "<base>events:<bucket>"; glob characters of the namespace
 * escaped); the subscriber probe. */
char *bkeys_events_pattern(void);
char *bkeys_probe(void);

#endif
