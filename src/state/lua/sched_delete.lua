-- sched_delete.lua - forget an operation without cancelling its job.
-- Runs after sched_prelude.lua.
-- KEYS: 3 op:{operation}.
-- ARGV: 1 op name, 2 check the owner (1/0: anyone's), 3 the caller's
--   identity.
-- Returns NOTFOUND, {'DENIED', instance} (another identity's) or DELETED.
local o = hm(KEYS[3], 'job', 'stage', 'instance', 'owner')
if not o.instance then return 'NOTFOUND' end
if not owned_by(o.owner, ARGV[2], ARGV[3]) then return {'DENIED', o.instance} end
redis.call('DEL', KEYS[3])
redis.call('ZREM', P_OPS .. o.instance, ARGV[1])
redis.call('ZREM', K_RETIRE, KEYS[3])
if o.job and o.job ~= '' then
  local jk = P_JOB .. o.job
  redis.call('SREM', jk .. ':ops', ARGV[1])
  local st = redis.call('HGET', jk, 'stage')
  if st and st ~= 'COMPLETED' and o.stage ~= 'COMPLETED' then
    redis.call('HINCRBY', jk, 'ops', -1)
    if redis.call('HGET', jk, 'counted') == '1' then opstat(o.instance, st, -1) end
  end
  if st then bump(o.job) end
end
return 'DELETED'
