-- sched_bot_update.lua - UpdateBotSession: refresh the session, apply
-- the state the bot reports for its lease (started, completed, given up,
-- forgotten), and optionally hand an idle bot work.  Runs after
-- sched_prelude.lua.
-- KEYS: 3 bot:{session} (its instance's keys are found at run time).
-- ARGV: 1 session name, 2 bot_id, 3 now, 4 expire, 5 status, 6 reported
--   lease id ('' none), 7 its state (PENDING, ACTIVE, COMPLETED,
--   CANCELLED), 8 result code, 9 result message, 10 serialized
--   ActionResult ('' none), 11 assign work when idle (1/0), 12 the
--   caller's identity.
-- Returns {'NOSESSION'} | {'DENIED'} (the session belongs to another
--   identity: nothing changes, the session is not closed) |
--   {'BOTID', stored bot_id} |
--   {'OK', lease id, lease state, action, completed job, its action,
--    its do_not_cache, instance}.
--
-- Completion is idempotent: a bot whose reply was lost sends the same
-- COMPLETED lease again.  When that lease's job already completed through
-- this session, the report is a repeat: nothing changes (the job keeps its
-- first outcome and is not finished twice), the completed job is returned
-- again so the caller stores its result in the action cache (the first
-- attempt's write may not have happened), and a lease handed out since is
-- kept and sent again instead of being taken back as "no longer reported".
local sk, name, now = KEYS[3], ARGV[1], ARGV[3]
local s = hm(sk, 'instance', 'bot_id', 'lease', 'props', 'owner')
if not s.instance then return {'NOSESSION'} end
if s.owner and s.owner ~= ARGV[12] then return {'DENIED'} end
if s.bot_id ~= ARGV[2] then
  close_session(name, now, 'its session was used by another bot id')
  return {'BOTID', s.bot_id}
end
redis.call('HSET', sk, 'expire', ARGV[4], 'seen', now, 'status', ARGV[5])
redis.call('ZADD', P_BOTS .. s.instance, ARGV[4], name)
local L = s.lease or ''
local sid, sstate, saction = '', '', ''
local dj, da, dd = '', '', ''
local repeated = false
if ARGV[7] == 'COMPLETED' and ARGV[6] ~= '' and ARGV[6] ~= L then
  local r = hm(P_JOB .. ARGV[6], 'stage', 'bot', 'lease', 'action', 'do_not_cache')
  if r.stage == 'COMPLETED' and r.bot == name and r.lease == 'COMPLETED' then
    dj, da, dd, repeated = ARGV[6], r.action, r.do_not_cache, true
  end
end
if L ~= '' then
  local jk = P_JOB .. L
  local f = hm(jk, 'stage', 'bot', 'lease', 'action', 'do_not_cache')
  if not f.stage or f.bot ~= name or f.lease == 'CANCELLED' then
    redis.call('HSET', sk, 'lease', '')
    sid, sstate = L, 'CANCELLED'
  elseif repeated then
    sid, sstate, saction = L, f.lease, f.action
  elseif ARGV[6] ~= L then
    redis.call('HSET', sk, 'lease', '')
    requeue(L, now, 'bot ' .. s.bot_id .. ' no longer reported its lease')
  elseif ARGV[7] == 'ACTIVE' then
    if f.lease == 'PENDING' then
      ops_move(jk, f.stage, 'EXECUTING')
      redis.call('HSET', jk, 'lease', 'ACTIVE', 'stage', 'EXECUTING', 'started', now)
      bump(L)
    end
    sid, sstate, saction = L, 'ACTIVE', f.action
  elseif ARGV[7] == 'COMPLETED' then
    redis.call('HSET', sk, 'lease', '')
    redis.call('HSET', jk, 'lease', 'COMPLETED')
    local res = ARGV[10]
    if res == '' then res = nil end
    finish(L, now, tonumber(ARGV[8]), ARGV[9], res)
    dj, da, dd = L, f.action, f.do_not_cache
  elseif ARGV[7] == 'CANCELLED' then
    redis.call('HSET', sk, 'lease', '')
    requeue(L, now, 'bot ' .. s.bot_id .. ' gave the lease up')
  else
    sid, sstate, saction = L, f.lease, f.action
  end
end
if sid == '' and ARGV[11] == '1' then
  local a = assign(name, s.instance, s.props, now)
  if a then sid, sstate, saction = a[1], 'PENDING', a[2] end
end
return {'OK', sid, sstate, saction, dj, da, dd, s.instance}
