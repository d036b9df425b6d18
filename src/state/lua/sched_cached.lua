-- sched_cached.lua - an operation answered from the action cache: born
-- COMPLETED, without a job.  Runs after sched_prelude.lua.
-- KEYS: 3 op:{operation}, 4 ops:{instance}.
-- ARGV: 1 instance, 2 op name, 3 action, 4 now, 5 retention (s),
--   6 serialized ActionResult, 7 the caller's identity (owner).
-- Returns 1.
redis.call('HSET', KEYS[3], 'instance', ARGV[1], 'job', '', 'action', ARGV[3],
           'created', ARGV[4], 'stage', 'COMPLETED', 'status', '0', 'message', '',
           'cached', '1', 'result', ARGV[6], 'owner', ARGV[7])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[2])
opstat(ARGV[1], 'ok', 1)
local ttl = tonumber(ARGV[5])
retire(KEYS[3], tonumber(ARGV[4]) + ttl * 1000000, ttl)
return 1
