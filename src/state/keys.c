/*
 * keys.c - the Redis key schema.  Every key reactord writes is built here,
 * so this comment and man/reactor-redis.7 are the whole list.
 *
 *   ac:{instance}:{hash}-{size}   hash   action cache entry
 *       result     serialized build.bazel.remote.execution.v2.ActionResult
 *       exit_code  the action's exit code (decimal)
 *       outputs    number of output files + directories + symlinks
 *       stdout     stdout digest "hash/size" ("" when none)
 *       stderr     stderr digest "hash/size" ("" when none)
 *       updated    last update, microseconds since the epoch
 *       hits       GetActionResult calls answered from it (counted after
 *                  the reply, only while the key exists); kept by updates
 *     Written whole by UpdateActionResult (one HSET) once every referenced
 *     blob is in CAS; no expiry.  GetActionResult deletes it (only if
 *     `result` is still the bytes it checked) when a referenced blob is
 *     gone or the entry does not parse.
 *
 * Remote execution (sched.c, sched_lua.c).  Times are microseconds since
 * the epoch; digests are "hash/size"; {platform} is the canonical platform
 * "key=value;key=value" (sorted; '%', ';', '=' and ':' %-escaped).
 *
 *   job:{job}                     hash   one execution of an action
 *       instance action platform queue priority seq timeout (us)
 *       stage      QUEUED | EXECUTING | COMPLETED
 *       ops        operations still waiting on it (not cancelled)
 *       bot        session holding the lease ("" when none)
 *       lease      PENDING | ACTIVE | CANCELLED | "" (the lease state)
 *       attempts max_attempts bots (bot ids tried, comma separated)
 *       queued assigned started completed deadline retention (s)
 *       do_not_cache  1 when the action may not be cached or deduplicated
 *       status message  the outcome (gRPC code, text) once COMPLETED
 *       result     serialized ActionResult reported by the bot
 *       version    bumped on every change watchers care about
 *   job:{job}:ops                 set    operation names of the job
 *   actionjob:{instance}:{hash}-{size}  string  job in flight (dedup)
 *   op:{operation}                hash   one Execute call
 *       instance job action created; stage/status/message/result/cached
 *       only when the operation ended on its own (cache hit, cancelled)
 *   ops:{instance}                zset   operations by creation time
 *   queue:{instance}:{platform}   zset   queued jobs, score
 *                                        priority * 2^32 + seq
 *   platforms:{instance}          set    platforms that have had a queue
 *   bot:{session}                 hash   bot session: instance bot_id props
 *                                        status lease (job) expire created seen
 *   bots:{instance}               zset   sessions by expiry time
 *   botid:{instance}:{bot_id}     string the bot's current session
 *   botprops:{instance}           hash   props string -> live sessions
 *   sched:seq                     string arrival counter (INCR)
 *   sched:deadlines               zset   assigned jobs by action deadline
 *   sched:retire                  zset   finished op:/job: keys by removal
 *                                        time (each also has a TTL)
 *   channels sched:job (payload: job name) and sched:queue (payload:
 *   "{instance}\n{platform}") announce changes.
 *
 * Build buckets (domain/buckets*.c): every key starts with the namespace
 * and "{bb}:" and is listed, with its fields, in buckets_keys.h.
 *
 * Instance names may contain '/' and ':'; keys keep them verbatim, so
 * `redis-cli --scan --pattern 'ac:*'` lists every entry.
 */
#include "state/keys.h"

#include "core/digest.h"
#include "core/util.h"

#include <stdlib.h>

static char *ns_prefix;

void keys_set_ns(const char *ns)
{
	free(ns_prefix);
	ns_prefix = xstrdup(ns);
}

const char *keys_ns(void)
{
	return ns_prefix ? ns_prefix : "";
}

char *keys_ac(const char *instance, const struct digest *action)
{
	return xasprintf("ac:%s:%s-%lld", instance, action->hex, (long long)action->size);
}

char *keys_job(const char *job)
{
	return xasprintf(KEYS_JOB "%s", job);
}

char *keys_op(const char *op)
{
	return xasprintf(KEYS_OP "%s", op);
}

char *keys_bot(const char *session)
{
	return xasprintf(KEYS_BOT "%s", session);
}

char *keys_action_job(const char *instance, const struct digest *action)
{
	return xasprintf(KEYS_ACTIONJOB "%s:%s-%lld", instance, action->hex,
			 (long long)action->size);
}
