-- sched_bot_create.lua - CreateBotSession: close the bot's previous
-- session (requeueing its lease), open this one, and optionally hand it
-- work.  Runs after sched_prelude.lua.
-- KEYS: 3 bot:{session}, 4 botid:{instance}:{bot_id}, 5 bots:{instance},
--   6 botprops:{instance}.
-- ARGV: 1 session name, 2 instance, 3 bot_id, 4 properties, 5 now,
--   6 expire, 7 status, 8 assign work (1/0), 9 the caller's identity.
-- Returns {closed session or '', [job, action]}, or {'DENIED'} when the
-- bot id's live session belongs to another identity (a bot id is bound
-- to the identity that opened its session; a session from before owners
-- were recorded may be taken over).
local old = redis.call('GET', KEYS[4])
if old then
  local owner = redis.call('HGET', P_BOT .. old, 'owner')
  if owner and owner ~= ARGV[9] then return {'DENIED'} end
end
local closed = ''
if old and close_session(old, ARGV[5], 'bot ' .. ARGV[3] .. ' opened a new session') then
  closed = old
end
redis.call('HSET', KEYS[3], 'instance', ARGV[2], 'bot_id', ARGV[3], 'props', ARGV[4],
           'status', ARGV[7], 'lease', '', 'expire', ARGV[6], 'created', ARGV[5],
           'seen', ARGV[5], 'owner', ARGV[9])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
redis.call('SET', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[6], ARGV[4], 1)
if ARGV[8] == '1' then
  local a = assign(ARGV[1], ARGV[2], ARGV[4], ARGV[5])
  if a then return {closed, a[1], a[2]} end
end
return {closed}
