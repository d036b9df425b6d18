-- sched_cancel.lua - cancel one operation; its job (and lease) is
-- cancelled once none of its operations is left.  Runs after
-- sched_prelude.lua.
-- KEYS: 3 op:{operation}.
-- ARGV: 1 op name, 2 now, 3 check the owner (1/0: anyone's, for an
--   ops-admin or the server itself), 4 the caller's identity.
-- Returns NOTFOUND, {'DENIED', instance} (created by another identity,
-- or before owners were recorded), DONE (already finished) or CANCELLED.
local o = hm(KEYS[3], 'job', 'stage', 'instance', 'owner')
if not o.instance then return 'NOTFOUND' end
if not owned_by(o.owner, ARGV[3], ARGV[4]) then return {'DENIED', o.instance} end
if o.stage == 'COMPLETED' or not o.job or o.job == '' then return 'DONE' end
local jk = P_JOB .. o.job
local f = hm(jk, 'stage', 'retention', 'counted')
if not f.stage or f.stage == 'COMPLETED' then return 'DONE' end
if f.counted == '1' then opstat(o.instance, f.stage, -1) end
opstat(o.instance, 'cancelled', 1)
redis.call('HSET', KEYS[3], 'stage', 'COMPLETED', 'status', '1', 'message',
           'operation cancelled by CancelOperation', 'cached', '0')
local ttl = tonumber(f.retention)
retire(KEYS[3], tonumber(ARGV[2]) + ttl * 1000000, ttl)
if redis.call('HINCRBY', jk, 'ops', -1) <= 0 then
  finish(o.job, ARGV[2], 1, 'job cancelled: every operation waiting on it was cancelled')
else
  bump(o.job)
end
return 'CANCELLED'
