/*
 * buckets_keys.h - the Redis key schema of build buckets, in one place.
 * Every key and channel name the buckets code (C and Lua) uses is built
 * from the macros below; buckets_lua.c pastes them into the Lua prelude,
 * so there are no other spellings anywhere.  reactor-redis(7) documents
 * the same keys for operators.
 *
 *   bb:build:<id>                 hash, one per build (fields below)
 *   bb:bucket:<bucket>:SCHEDULED  zset, the bucket's builds in that status
 *   bb:bucket:<bucket>:STARTED    (one set per status; each build is in
 *   bb:bucket:<bucket>:COMPLETED  exactly one)
 *   bb:bucket:<bucket>:peek       zset, SCHEDULED and unleased: what Peek
 *                                 returns
 *   bb:buckets                    set of bucket names (buckets exist
 *                                 implicitly from their first Put)
 *   bb:tag:<tag>                  zset, builds carrying the tag ("key:value")
 *   bb:change:<id>:<revision>     zset, builds whose parameters_json lists
 *                                 that change; ':' and '%' in the change id
 *                                 and revision are written %3A and %25
 *   bb:leased                     zset, leased builds, score = lease
 *                                 expiration (us): the expiry timer's work
 *   bb:idgen                      hash {us, seq}: the last id handed out
 *   bb:op:<bucket>:<client_operation_id>
 *                                 string "<build id> <lease key or 0>",
 *                                 expires after client-operation-ttl (60 s)
 *
 * Every zset of build ids has score 0 except bb:leased: ids are 19 decimal
 * digits (created_ts in us * 1000 + a sequence number), so ZRANGEBYLEX order
 * is id order is creation order (the build-timeout pass reads the oldest
 * SCHEDULED and STARTED builds off the head of the status sets).
 *
 * Fields of bb:build:<id> (absent = unset/zero; times are us since the
 * epoch, enums are their proto names):
 *   bucket, tags (JSON array, sorted), put_tags (JSON array: the tags of
 *   the Put, kept once Succeed/Fail added new_tags), parameters_json,
 *   status, result, failure_reason, cancelation_reason,
 *   result_details_json, url, created_by, created_ts, updated_ts,
 *   status_changed_ts, started_ts, completed_ts, retry_of,
 *   lease_key, lease_expiration_ts, leasee (all three set <=> leased).
 *
 * Channels:
 *   bb:events:<bucket>   one JSON message per change of a build of the
 *                        bucket: {"build_id":"<id>","bucket":..,"event":
 *                        "PUT|LEASE|START|HEARTBEAT|SUCCEED|FAIL|CANCEL|
 *                        RESET|EXPIRE|TIMEOUT|RETRY","status":..,"result":
 *                        ..,"lease_expiration_ts":N,"updated_ts":N}
 *   bb:probe             reactord's own liveness probe of its subscriber
 *                        connection (payload meaningless)
 */
#ifndef REACTOR_BUCKETS_KEYS_H
#define REACTOR_BUCKETS_KEYS_H

#define BK_PREFIX  "bb:"
#define BK_BUILD   BK_PREFIX "build:"  /* + id */
#define BK_BUCKET  BK_PREFIX "bucket:" /* + bucket + ":" + set */
#define BK_BUCKETS BK_PREFIX "buckets"
#define BK_TAG	   BK_PREFIX "tag:"    /* + tag */
#define BK_CHANGE  BK_PREFIX "change:" /* + esc(id) + ":" + esc(revision) */
#define BK_LEASED  BK_PREFIX "leased"
#define BK_IDGEN   BK_PREFIX "idgen"
#define BK_OP	   BK_PREFIX "op:"     /* + bucket + ":" + client_operation_id */
#define BK_EVENTS  BK_PREFIX "events:" /* channel, + bucket */
#define BK_PROBE   BK_PREFIX "probe"   /* channel */

/* Name of the per-bucket Peek set after BK_BUCKET "<bucket>:" (the status
 * sets are named by the status). */
#define BK_SET_PEEK "peek"

#endif
