-- inspect_queues.lua - an instance's queues and the bots that could serve
-- them (domain/inspect.c; read-only).  Runs after sched_prelude.lua.
-- KEYS: 3 platforms:{instance}, 4 bots:{instance}.
-- ARGV: 1 instance, 2 most platforms, 3 now (us), 4 most sessions read,
--   5 queue entries looked at for the oldest.
-- Returns {truncated (1/0), {platform, queued, oldest, bots, busy}...},
-- sorted by platform, empty queues left out.
local inst, maxp, now = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local maxs, head = tonumber(ARGV[4]), tonumber(ARGV[5])
local trunc = 0
-- Sessions grouped by their property string: platforms x distinct sets.
local groups, order = {}, {}
if redis.call('ZCOUNT', KEYS[4], now, '+inf') > maxs then trunc = 1 end
for _, name in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[4], '+inf', now, 'LIMIT', 0, maxs)) do
  local s = hm(P_BOT .. name, 'props', 'lease')
  if s.props then
    local g = groups[s.props]
    if not g then
      g = {props = props_set(s.props), n = 0, busy = 0}
      groups[s.props] = g
      table.insert(order, g)
    end
    g.n = g.n + 1
    if s.lease and s.lease ~= '' then g.busy = g.busy + 1 end
  end
end
local plats = redis.call('SMEMBERS', KEYS[3])
table.sort(plats)
if #plats > maxp then trunc = 1 end
local out = {trunc}
for i, plat in ipairs(plats) do
  if i > maxp then break end
  local qk = P_QUEUE .. inst .. ':' .. plat
  local n = redis.call('ZCARD', qk)
  if n > 0 then
    local oldest = 0
    for _, j in ipairs(redis.call('ZRANGE', qk, 0, head - 1)) do
      local q = tonumber(redis.call('HGET', P_JOB .. j, 'queued') or '0') or 0
      if q > 0 and (oldest == 0 or q < oldest) then oldest = q end
    end
    local nb, busy = 0, 0
    for _, g in ipairs(order) do
      if matches(plat, g.props) then nb, busy = nb + g.n, busy + g.busy end
    end
    table.insert(out, {plat, n, n2s(oldest), nb, busy})
  end
end
return out
