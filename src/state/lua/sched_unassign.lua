-- sched_unassign.lua - a lease that could not be delivered (the bot's
-- call was gone) goes back to its queue without counting an attempt.
-- Runs after sched_prelude.lua.
-- KEYS: 3 bot:{session}, 4 job:{job}.
-- ARGV: 1 session name, 2 job, 3 now.
-- Returns 1 when it did, else 0.
local f = hm(KEYS[4], 'bot', 'lease')
if f.bot ~= ARGV[1] or f.lease ~= 'PENDING' then return 0 end
redis.call('HSET', KEYS[3], 'lease', '')
redis.call('HINCRBY', KEYS[4], 'attempts', -1)
requeue(ARGV[2], ARGV[3], 'the lease could not be delivered')
return 1
