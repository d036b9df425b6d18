-- sched_enqueue.lua - Execute: queue an action, or join the job already
-- in flight for it unless do_not_cache (re-queueing that job at a better
-- priority).  Runs after sched_prelude.lua.
-- KEYS: 3 actionjob:{instance}:{hash}-{size}, 4 op:{operation},
--   5 ops:{instance}, 6 job:{new job}, 7 job:{new job}:ops,
--   8 queue:{instance}:{platform}, 9 platforms:{instance}, 10 sched:seq
--   (the joined job's keys are found at run time).
-- ARGV: 1 instance, 2 action "hash/size", 3 op name, 4 name for a new
--   job, 5 priority, 6 platform, 7 timeout (us), 8 do_not_cache (0/1),
--   9 max_attempts, 10 now, 11 retention (s), 12 most distinct platforms
--   with waiting work (scheduler.max-platforms), 13 the caller's identity
--   (the operation's owner; a joining caller owns its own operation on
--   the shared job, so every sharer may wait on and cancel its own).
--   14 fail fast (1/0), 15 bots seen since (us); with KEYS 11
--   botprops:{instance}, 12 botseen:{instance}.
-- Returns {job, stage, version, joined (1/0)}, or {'', 'FULL', platforms
--   waiting, limit} when the job would add a platform past the limit, or
--   {'', 'NOBOT', platform, ''} when failing fast and no live session
--   offers properties matching the platform and no session that did
--   closed since ARGV[15] (nothing is written then).
local inst, action, op, now = ARGV[1], ARGV[2], ARGV[3], ARGV[10]
local prio = tonumber(ARGV[5])
if ARGV[8] == '0' then
  local j = redis.call('GET', KEYS[3])
  if j then
    local jk = P_JOB .. j
    local f = hm(jk, 'stage', 'priority', 'queue', 'seq', 'do_not_cache', 'counted')
    if (f.stage == 'QUEUED' or f.stage == 'EXECUTING') and f.do_not_cache == '0' then
      redis.call('HSET', KEYS[4], 'instance', inst, 'job', j, 'action', action,
                 'created', now, 'owner', ARGV[13])
      redis.call('SADD', jk .. ':ops', op)
      redis.call('ZADD', KEYS[5], now, op)
      redis.call('HINCRBY', jk, 'ops', 1)
      if f.counted == '1' then opstat(inst, f.stage, 1) end
      if f.stage == 'QUEUED' and prio < tonumber(f.priority) then
        redis.call('HSET', jk, 'priority', ARGV[5])
        redis.call('ZADD', f.queue, score(prio, f.seq), j)
      end
      return {j, f.stage, redis.call('HGET', jk, 'version'), 1}
    end
  end
end
if ARGV[14] == '1' then
  local offered = false
  for _, p in ipairs(redis.call('HKEYS', KEYS[11])) do
    if matches(ARGV[6], props_set(p)) then offered = true; break end
  end
  if not offered then
    local seen = redis.call('HGETALL', KEYS[12])
    for i = 1, #seen, 2 do
      if tonumber(seen[i + 1]) >= tonumber(ARGV[15]) and
         matches(ARGV[6], props_set(seen[i])) then offered = true; break end
    end
  end
  if not offered then return {'', 'NOBOT', ARGV[6], ''} end
end
if redis.call('SISMEMBER', KEYS[9], ARGV[6]) == 0 then
  local np = redis.call('SCARD', KEYS[9])
  if np >= tonumber(ARGV[12]) then return {'', 'FULL', np, ARGV[12]} end
end
local j = ARGV[4]
local jk, qk = KEYS[6], KEYS[8]
local seq = redis.call('INCR', KEYS[10])
redis.call('HSET', jk, 'instance', inst, 'action', action, 'platform', ARGV[6], 'queue', qk,
           'priority', ARGV[5], 'seq', seq, 'timeout', ARGV[7], 'stage', 'QUEUED',
           'ops', 1, 'bot', '', 'lease', '', 'attempts', 0, 'max_attempts', ARGV[9],
           'bots', '', 'queued', now, 'retention', ARGV[11], 'do_not_cache', ARGV[8],
           'version', 1, 'counted', 1)
opstat(inst, 'QUEUED', 1)
redis.call('SADD', KEYS[7], op)
if ARGV[8] == '0' then redis.call('SET', KEYS[3], j) end
redis.call('HSET', KEYS[4], 'instance', inst, 'job', j, 'action', action, 'created', now,
           'owner', ARGV[13])
redis.call('ZADD', KEYS[5], now, op)
redis.call('ZADD', qk, score(prio, seq), j)
redis.call('SADD', KEYS[9], ARGV[6])
redis.call('PUBLISH', CH_QUEUE, inst .. '\n' .. ARGV[6])
return {j, 'QUEUED', '1', 0}
