/*
 * keys.c - the Redis key schema of the scheduler and the action cache.
 * Every key these write is built here, so this comment and
 * man/reactor-redis.7 are the whole list; the buckets list theirs in
 * buckets_keys.h.
 *
 * One namespace.  Every key and pub/sub channel reactord writes starts with
 * one prefix, {ns} below (redis.prefix, default "reactor:"), so reactord
 * can share a Redis with other applications (Redis Cluster has no SELECT)
 * and `redis-cli --scan --pattern 'reactor:*'` shows all of its state.
 *
 * (Braces here mark placeholders, not hash tags.)
 *
 * Scripts and Redis Cluster.  Every key a script touches is passed in
 * KEYS when the caller can name it before the call.  The rest are found
 * at run time and cannot be: a job read from a queue, an operation's job,
 * the queues of an instance's platform set, a session's instance, the
 * retired keys the sweep deletes.  Naming them up front would need a read
 * before every script, and the read-then-act race is what the scripts
 * exist to close.  Instead they share the namespace with the KEYS keys:
 * a prefix holding a hash tag (redis.prefix: "{reactor}:") puts every key
 * on one Cluster slot, so each script stays single-slot.  Spreading the
 * scheduler over slots (a tag per instance) would also need operation and
 * job names that carry their instance; that is a later step.
 *
 *   {ns}ac:{instance}:{hash}-{size}   hash   action cache entry
 *       result     serialized build.bazel.remote.execution.v2.ActionResult
 *       exit_code  the action's exit code (decimal)
 *       outputs    number of output files + directories + symlinks
 *       stdout     stdout digest "hash/size" ("" when none)
 *       stderr     stderr digest "hash/size" ("" when none)
 *       updated    last update, microseconds since the epoch
 *       hits       GetActionResult calls answered from it (counted after
 *                  the reply, only while the key exists); kept by updates
 *     Written whole by UpdateActionResult and by bots' completed leases
 *     (ac_put.lua: one HSET) once every referenced blob is in CAS; expires
 *     after action-cache.retention (default 7d), and every write and every
 *     hit sets that TTL again.  GetActionResult deletes it (only if
 *     `result` is still the bytes it checked) when a referenced blob is
 *     gone or the entry does not parse.
 *
 * Remote execution (domain/sched.c, state/lua/sched_*.lua).  Times are
 * microseconds since the epoch; digests are "hash/size"; {platform} is the canonical platform
 * "key=value;key=value" (sorted; '%', ';', '=' and ':' %-escaped).
 *
 *   {ns}job:{job}                   hash   one execution of an action
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
 *       counted    1: its ops are in opstats:{instance} (older jobs lack it)
 *   {ns}job:{job}:ops               set    operation names of the job
 *   {ns}actionjob:{instance}:{hash}-{size}
 *                                 string  job in flight (dedup)
 *   {ns}op:{operation}            hash   one Execute call
 *       instance job action created; stage/status/message/result/cached
 *       only when the operation ended on its own (cache hit, cancelled)
 *   {ns}ops:{instance}            zset   operations by creation time
 *   {ns}queue:{instance}:{platform}   zset   queued jobs, score
 *                                        priority * 2^32 + seq
 *   {ns}platforms:{instance}      set    platforms whose queue holds jobs: a
 *                                        platform leaves when its queue
 *                                        empties (the sweep also drops any
 *                                        left over); at most
 *                                        scheduler.max-platforms of them
 *   {ns}bot:{session}             hash   bot session: instance bot_id props
 *                                        status lease (job) expire created seen
 *   {ns}bots:{instance}           zset   sessions by expiry time
 *   {ns}botid:{instance}:{bot_id} string the bot's current session
 *   {ns}botprops:{instance}       hash   props string -> live sessions
 *   {ns}botseen:{instance}        hash   props string -> when a session
 *                                        offering it last closed (us)
 *   {ns}opstats:{instance}        hash   operations by stage: QUEUED
 *                                        EXECUTING (waiting now) ok failed
 *                                        cancelled (completed, totals)
 *   {ns}sched:seq                 string arrival counter (INCR)
 *   {ns}sched:deadlines           zset   assigned jobs by action deadline
 *   {ns}sched:retire              zset   finished op:/job: keys by removal
 *                                        time (each also has a TTL)
 *   channels {ns}sched:job (payload: job name) and {ns}sched:queue
 *   (payload: "{instance}\n{platform}") announce changes.
 *
 * The build master (domain/master_state.c, state/lua/master_*.lua).  A
 * master's name ({name}, master.name) is kept verbatim; build ids are
 * decimal; times are microseconds since the epoch; digests "hash/size".
 *
 *   {ns}master:{name}             set    ids of the builds it holds
 *   {ns}master:{name}:build:{id}  hash   one held build (what a restarted
 *                                        master resumes)
 *       lease_key bucket builder leased
 *       step       index of the current step (-1 before the first)
 *       op         the current step's operation name ("" until Execute
 *                  names it)
 *       step_started  when the current step began
 *       workspace  JSON [[path, digest, exec], ...] at the step's start
 *       records    JSON array of the finished steps (result details form)
 *     Written when the lease is taken and at each step's start, operation
 *     and end; deleted (and the id removed from the set) when the build is
 *     reported, its lease is lost or it is reset.
 *   {ns}mstep:{id}:{n}            hash   step n (0-based) of build id
 *       name status (RUNNING | SUCCESS | FAILURE | INFRA_FAILURE)
 *       exit_code duration_us cached (0|1) action stdout stderr worker
 *       started master
 *     Written at the step's start and end; kept for a day (TTL) once the
 *     build is released.
 *   {ns}mchange:{id}:{revision}   hash   a change, recorded once (':' and
 *                                        '%' in id and revision escaped as
 *                                        %3A and %25, as in {bb}:change:)
 *       id revision json (the change object as first seen) first_build
 *       last_build builds (how many builds named it) created
 *     No expiry.  Later builds naming the same (id, revision) get `json`.
 *
 * Build buckets (domain/buckets*.c): every key starts with the namespace
 * and "{bb}:" and is listed, with its fields, in buckets_keys.h.
 *
 * Instance names may contain '/' and ':'; keys keep them verbatim, so
 * `redis-cli --scan --pattern 'reactor:ac:*'` lists every entry.
 */
#include "state/keys.h"

#include <stdarg.h>
#include <stdlib.h>

#include "core/digest.h"
#include "core/util.h"
#include "state/buckets_keys.h"

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

/* The namespace followed by the formatted rest. */
static char *key(const char *fmt, ...) PRINTF_LIKE(1, 2);
static char *key(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	char *rest = xvasprintf(fmt, ap);
	va_end(ap);
	char *k = xasprintf("%s%s", keys_ns(), rest);
	free(rest);
	return k;
}

char *keys_ac(const char *instance, const struct digest *action)
{
	return key("ac:%s:%s-%lld", instance, action->hex, (long long)action->size);
}

char *keys_job(const char *job)
{
	return key("job:%s", job);
}

char *keys_job_ops(const char *job)
{
	return key("job:%s:ops", job);
}

char *keys_op(const char *op)
{
	return key("op:%s", op);
}

char *keys_ops(const char *instance)
{
	return key("ops:%s", instance);
}

char *keys_action_job(const char *instance, const struct digest *action)
{
	return key("actionjob:%s:%s-%lld", instance, action->hex, (long long)action->size);
}

char *keys_queue(const char *instance, const char *platform)
{
	return key("queue:%s:%s", instance, platform);
}

char *keys_platforms(const char *instance)
{
	return key("platforms:%s", instance);
}

char *keys_bot(const char *session)
{
	return key("bot:%s", session);
}

char *keys_bots(const char *instance)
{
	return key("bots:%s", instance);
}

char *keys_botid(const char *instance, const char *bot_id)
{
	return key("botid:%s:%s", instance, bot_id);
}

char *keys_botprops(const char *instance)
{
	return key("botprops:%s", instance);
}

char *keys_botseen(const char *instance)
{
	return key("botseen:%s", instance);
}

char *keys_opstats(const char *instance)
{
	return key("opstats:%s", instance);
}

char *keys_sched(const char *name)
{
	return key("sched:%s", name);
}

char *keys_master(const char *name)
{
	return key("master:%s", name);
}

char *keys_master_build(const char *name, int64_t id)
{
	return key("master:%s:build:%lld", name, (long long)id);
}

char *keys_mstep(int64_t id, int n)
{
	return key("mstep:%lld:%d", (long long)id, n);
}

char *keys_mchange(const char *id, const char *revision)
{
	char *i = bkeys_escape(id), *r = bkeys_escape(revision);
	char *k = key("mchange:%s:%s", i, r);
	free(i);
	free(r);
	return k;
}
