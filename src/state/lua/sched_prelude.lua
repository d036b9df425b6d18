-- sched_prelude.lua - shared by every scheduler script: sched.c registers
-- each one as this file followed by the script's own text, so the helpers
-- below exist once in the tree (and once per loaded script in Redis).
--
-- Calling convention of every scheduler script:
--   KEYS[1]  {ns}sched:deadlines   zset, assigned jobs by action deadline
--   KEYS[2]  {ns}sched:retire      zset, finished keys by removal time
--   KEYS[3...] the script's own keys (documented in its file)
--   ARGV[1]  the key namespace (redis.prefix); removed here, so each
--            script's own arguments start at ARGV[1]
--
-- Keys found at run time (a job read from a queue or an operation, the
-- queues of a platform set, a session's instance) cannot be in KEYS; they
-- are built from the same namespace as every KEYS key (see keys.c), so a
-- namespace holding a Redis Cluster hash tag puts them all on one slot.
--
-- Times are microseconds since the epoch, passed in by the caller
-- (scripts stay deterministic); numbers written to Redis go through n2s()
-- so they are plain integers, never "1e+15"; every state change a watcher
-- cares about bumps the job's `version` and PUBLISHes the job name on
-- {ns}sched:job; a job entering a queue PUBLISHes "{instance}\n{platform}"
-- on {ns}sched:queue.  The key suffixes below are spelled as in keys.c.
local NS = table.remove(ARGV, 1)
local K_DEADLINES, K_RETIRE = KEYS[1], KEYS[2]
local P_JOB, P_OP, P_OPS, P_ACTION = NS .. 'job:', NS .. 'op:', NS .. 'ops:', NS .. 'actionjob:'
local P_QUEUE, P_PLATS = NS .. 'queue:', NS .. 'platforms:'
local P_BOT, P_BOTS, P_BOTID, P_BOTPROPS = NS .. 'bot:', NS .. 'bots:', NS .. 'botid:', NS .. 'botprops:'
local P_BOTSEEN, P_OPSTATS = NS .. 'botseen:', NS .. 'opstats:'
local CH_JOB, CH_QUEUE = NS .. 'sched:job', NS .. 'sched:queue'

local function n2s(x) return string.format('%.17g', x) end

-- HMGET as a table keyed by field name.
local function hm(key, ...)
  local names = {...}
  local v = redis.call('HMGET', key, unpack(names))
  local t = {}
  for i, n in ipairs(names) do t[n] = v[i] end
  return t
end

-- Operations by stage (opstats:{instance}, read by inspect_sum.lua):
-- QUEUED and EXECUTING count the operations waiting now on jobs at that
-- stage (a job's `ops`, moved at each of its transitions; only jobs
-- marked `counted`, so jobs queued by a version without the counters
-- never unbalance them), and ok / cancelled / failed are totals, since the
-- hash was created, of operations that completed with status OK (whatever
-- the exit code), CANCELLED, or any other status.
local function opstat(inst, field, n)
  if n ~= 0 then redis.call('HINCRBY', P_OPSTATS .. inst, field, n) end
end

local function result_field(code)
  code = tonumber(code)
  if code == 0 then return 'ok' elseif code == 1 then return 'cancelled' end
  return 'failed'
end

-- The job's waiting operations go from stage `from` to `to` (QUEUED or
-- EXECUTING; anything else is not a gauge).
local function ops_move(jk, from, to)
  if from == to then return end
  local f = hm(jk, 'counted', 'instance', 'ops')
  if f.counted ~= '1' then return end
  local n = math.max(tonumber(f.ops or '0') or 0, 0)
  if from == 'QUEUED' or from == 'EXECUTING' then opstat(f.instance, from, -n) end
  if to == 'QUEUED' or to == 'EXECUTING' then opstat(f.instance, to, n) end
end

-- Queue order: priority first, then arrival.
local function score(prio, seq)
  return n2s(tonumber(prio) * 4294967296 + (tonumber(seq) % 4294967296))
end

local function bump(j)
  redis.call('HINCRBY', P_JOB .. j, 'version', 1)
  redis.call('PUBLISH', CH_JOB, j)
end

local function retire(key, at, ttl)
  redis.call('ZADD', K_RETIRE, n2s(at), key)
  redis.call('EXPIRE', key, n2s(ttl + 60))
end

local function props_set(s)
  local t = {}
  for item in string.gmatch(s, '[^;]+') do t[item] = true end
  return t
end

local function matches(plat, props)
  for item in string.gmatch(plat, '[^;]+') do
    if not props[item] then return false end
  end
  return true
end

-- A queue that just lost a job: when it is empty its platform leaves the
-- instance's platform set, so the set only ever names platforms with
-- waiting work (what the sweep and assign walk, and what
-- scheduler.max-platforms caps).
local function queue_left(inst, plat, qk)
  if redis.call('ZCARD', qk) == 0 then redis.call('SREM', P_PLATS .. inst, plat) end
end

-- Ownership check of cancel, delete and list: `check` '1' means act only
-- on what `who` created (an operation without a recorded owner is
-- nobody's); '0' acts on anyone's (an ops-admin, or the server itself).
local function owned_by(owner, check, who)
  return check ~= '1' or (owner ~= nil and owner ~= '' and owner == who)
end

-- End a job (any cause): record the outcome, drop it from its queue and
-- the deadlines, release the dedup entry, and retire the job and its
-- operations after the retention.  False when it had already ended.
local function finish(j, now, code, msg, result)
  local jk = P_JOB .. j
  local f = hm(jk, 'instance', 'action', 'queue', 'retention', 'stage', 'lease', 'platform',
               'ops')
  if not f.stage or f.stage == 'COMPLETED' then return false end
  ops_move(jk, f.stage, 'COMPLETED')
  opstat(f.instance, result_field(code), math.max(tonumber(f.ops or '0') or 0, 0))
  redis.call('HSET', jk, 'stage', 'COMPLETED', 'completed', now, 'status', n2s(code),
             'message', msg)
  if result then redis.call('HSET', jk, 'result', result) end
  if f.lease == 'PENDING' or f.lease == 'ACTIVE' then
    redis.call('HSET', jk, 'lease', 'CANCELLED')
  end
  if redis.call('ZREM', f.queue, j) == 1 then queue_left(f.instance, f.platform, f.queue) end
  redis.call('ZREM', K_DEADLINES, j)
  local ak = P_ACTION .. f.instance .. ':' .. (string.gsub(f.action, '/', '-'))
  if redis.call('GET', ak) == j then redis.call('DEL', ak) end
  local ttl = tonumber(f.retention)
  local at = tonumber(now) + ttl * 1000000
  retire(jk, at, ttl)
  retire(jk .. ':ops', at, ttl)
  for _, o in ipairs(redis.call('SMEMBERS', jk .. ':ops')) do
    retire(P_OP .. o, at, ttl)
  end
  bump(j)
  return true
end

-- Give a lost lease back to its queue or, after max_attempts, fail the job.
local function requeue(j, now, why)
  local jk = P_JOB .. j
  local f = hm(jk, 'stage', 'attempts', 'max_attempts', 'queue', 'priority', 'seq',
               'bots', 'instance', 'platform')
  if not f.stage or f.stage == 'COMPLETED' then return end
  redis.call('HSET', jk, 'bot', '', 'lease', '')
  redis.call('ZREM', K_DEADLINES, j)
  if tonumber(f.attempts) >= tonumber(f.max_attempts) then
    finish(j, now, 14, 'action was lost by ' .. f.attempts .. ' bot(s) (' .. f.bots ..
           '), the last time because ' .. why .. '; giving up (max-attempts ' ..
           f.max_attempts .. ')')
    return
  end
  ops_move(jk, f.stage, 'QUEUED')
  redis.call('HSET', jk, 'stage', 'QUEUED')
  redis.call('ZADD', f.queue, score(f.priority, f.seq), j)
  redis.call('SADD', P_PLATS .. f.instance, f.platform)
  bump(j)
  redis.call('PUBLISH', CH_QUEUE, f.instance .. '\n' .. f.platform)
end

-- End a bot session and requeue its lease.  False when there was none.
local function close_session(name, now, why)
  local sk = P_BOT .. name
  local s = hm(sk, 'instance', 'lease', 'bot_id', 'props')
  if not s.instance then return false end
  if s.lease and s.lease ~= '' and
     redis.call('HGET', P_JOB .. s.lease, 'bot') == name then
    requeue(s.lease, now, why)
  end
  redis.call('DEL', sk)
  redis.call('ZREM', P_BOTS .. s.instance, name)
  local ik = P_BOTID .. s.instance .. ':' .. s.bot_id
  if redis.call('GET', ik) == name then redis.call('DEL', ik) end
  local pk = P_BOTPROPS .. s.instance
  if redis.call('HINCRBY', pk, s.props, -1) <= 0 then redis.call('HDEL', pk, s.props) end
  -- Briefly gone is not never seen: an Execute for these properties
  -- still waits for a while (sched_enqueue.lua).
  redis.call('HSET', P_BOTSEEN .. s.instance, s.props, now)
  return true
end

-- Hand the best queued job whose platform the session's properties
-- match to it.  Returns {job, action} or nil.
local function assign(name, inst, propstr, now)
  local sk = P_BOT .. name
  local s = hm(sk, 'lease', 'bot_id')
  if not s.bot_id or (s.lease and s.lease ~= '') then return nil end
  local props = props_set(propstr)
  local pk = P_PLATS .. inst
  local best, bestq, bests, bestp
  for _, plat in ipairs(redis.call('SMEMBERS', pk)) do
    if matches(plat, props) then
      local qk = P_QUEUE .. inst .. ':' .. plat
      local head = redis.call('ZRANGE', qk, 0, 0, 'WITHSCORES')
      if #head == 0 then
        redis.call('SREM', pk, plat)
      elseif not best or tonumber(head[2]) < bests then
        best, bestq, bests, bestp = head[1], qk, tonumber(head[2]), plat
      end
    end
  end
  if not best then return nil end
  redis.call('ZREM', bestq, best)
  queue_left(inst, bestp, bestq)
  local jk = P_JOB .. best
  local f = hm(jk, 'timeout', 'bots', 'action')
  local bots = s.bot_id
  if f.bots and f.bots ~= '' then bots = f.bots .. ',' .. s.bot_id end
  local dl = tonumber(now) + tonumber(f.timeout)
  redis.call('HSET', jk, 'bot', name, 'lease', 'PENDING', 'assigned', now, 'bots', bots,
             'deadline', n2s(dl))
  redis.call('HINCRBY', jk, 'attempts', 1)
  redis.call('ZADD', K_DEADLINES, n2s(dl), best)
  redis.call('HSET', sk, 'lease', best)
  return {best, f.action}
end

