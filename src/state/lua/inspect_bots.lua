-- inspect_bots.lua - the live sessions of an instance for people
-- (domain/inspect.c; read-only).  Runs after sched_prelude.lua.
-- KEYS: 3 bots:{instance}.
-- ARGV: 1 most sessions, 2 now (us), 3 most operation names per lease.
-- Returns {live sessions, row...}, most recently seen first; a row is
-- {session, bot_id, owner, status, props, job, lease state, action,
--  created, seen, expire, {operation names}}.
local lim, now, maxops = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local total = redis.call('ZCOUNT', KEYS[3], now, '+inf')
local out = {total}
for _, name in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[3], '+inf', now, 'LIMIT', 0, lim)) do
  local s = hm(P_BOT .. name, 'bot_id', 'owner', 'status', 'props', 'lease', 'created', 'seen',
               'expire')
  if s.bot_id then
    local job, lstate, action, ops = s.lease or '', '', '', {}
    if job ~= '' then
      local j = hm(P_JOB .. job, 'lease', 'action', 'bot')
      if j.bot == name then
        lstate, action = j.lease or '', j.action or ''
        ops = redis.call('SRANDMEMBER', P_JOB .. job .. ':ops', maxops)
        table.sort(ops)
      else
        job = ''
      end
    end
    table.insert(out, {name, s.bot_id, s.owner or '', s.status or '0', s.props or '', job,
                       lstate, action, s.created or '0', s.seen or '0', s.expire or '0', ops})
  end
end
return out
