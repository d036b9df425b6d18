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
 * Instance names may contain '/' and ':'; keys keep them verbatim, so
 * `redis-cli --scan --pattern 'ac:*'` lists every entry.
 */
#include "keys.h"

#include "digest.h"
#include "util.h"

char *keys_ac(const char *instance, const struct digest *action)
{
	return xasprintf("ac:%s:%s-%lld", instance, action->hex, (long long)action->size);
}
