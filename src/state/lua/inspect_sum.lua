-- inspect_sum.lua - the scheduler's counters for /metrics and the status
-- page (domain/inspect.c; read-only).  Runs after sched_prelude.lua.
-- KEYS: 3... per instance: ops:{i}, platforms:{i}, bots:{i}, opstats:{i}.
-- ARGV: 1 now (us), 2 most platforms per instance, 3 most sessions read
--   per instance, 4... the instance names, in KEYS order.
-- Returns {jobs executing, {ops, queued, bots, busy, truncated,
-- {platform, queued...}, {operations QUEUED, EXECUTING, completed ok,
-- failed, cancelled}} per instance}.
local now, maxp, maxs = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {redis.call('ZCARD', K_DEADLINES)}
for i = 4, #ARGV do
  local inst, k = ARGV[i], 3 + (i - 4) * 4
  local trunc, queued, depth = 0, 0, {}
  local plats = redis.call('SMEMBERS', KEYS[k + 1])
  table.sort(plats)
  if #plats > maxp then trunc = 1 end
  for p, plat in ipairs(plats) do
    if p > maxp then break end
    local n = redis.call('ZCARD', P_QUEUE .. inst .. ':' .. plat)
    queued = queued + n
    table.insert(depth, plat)
    table.insert(depth, n)
  end
  local bots = redis.call('ZCOUNT', KEYS[k + 2], now, '+inf')
  if bots > maxs then trunc = 1 end
  local busy = 0
  for _, name in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[k + 2], '+inf', now,
                                   'LIMIT', 0, maxs)) do
    local l = redis.call('HGET', P_BOT .. name, 'lease')
    if l and l ~= '' then busy = busy + 1 end
  end
  local st = redis.call('HMGET', KEYS[k + 3], 'QUEUED', 'EXECUTING', 'ok', 'failed', 'cancelled')
  for f = 1, 5 do st[f] = tonumber(st[f] or '0') or 0 end
  table.insert(out, {redis.call('ZCARD', KEYS[k]), queued, bots, busy, trunc, depth, st})
end
return out
