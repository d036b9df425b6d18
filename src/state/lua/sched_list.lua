-- sched_list.lua - one page of an instance's operations, oldest first.
-- Index entries whose operation is gone are dropped on the way.  Runs
-- after sched_prelude.lua.
-- KEYS: 3 ops:{instance}.
-- ARGV: 1 offset, 2 page size, 3 stage ('' = any), 4 most entries to scan,
--   5 only the caller's (1/0: anyone's, an ops-admin's listing), 6 the
--   caller's identity.
-- Returns {next offset or -1, names...}.
local ik = KEYS[3]
local off, want, scan = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local names = redis.call('ZRANGE', ik, off, off + scan - 1)
local out, n, gone = {'-1'}, 0, 0
for i, op in ipairs(names) do
  local o = hm(P_OP .. op, 'job', 'stage', 'owner')
  local stage = o.stage
  if not stage and o.job and o.job ~= '' then
    stage = redis.call('HGET', P_JOB .. o.job, 'stage')
  end
  if not o.job then
    redis.call('ZREM', ik, op)
    gone = gone + 1
  elseif stage and (ARGV[3] == '' or stage == ARGV[3]) and
         owned_by(o.owner, ARGV[5], ARGV[6]) then
    table.insert(out, op)
    n = n + 1
  end
  if n == want then
    out[1] = n2s(off + i - gone)
    return out
  end
end
if #names == scan then out[1] = n2s(off + #names - gone) end
return out
