-- sched_sweep.lua - the periodic sweep: expired bot sessions are closed
-- (leases requeued), jobs past their action deadline fail with
-- DEADLINE_EXCEEDED, queued jobs no connected bot can run fail after the
-- no-worker timeout, finished operations and jobs past retention are
-- removed, and platforms whose queue is empty leave the platform set
-- (state an older version left behind); botseen:{instance} entries older
-- than the no-worker timeout are dropped (found at run time).  At most `limit` of each kind per
-- run.  Runs after sched_prelude.lua.
-- KEYS: per instance (in ARGV order) three keys from KEYS[3]:
--   bots:{instance}, botprops:{instance}, platforms:{instance}.
-- ARGV: 1 now, 2 limit per kind, then pairs (instance, no-worker timeout
--   in us).
-- Returns {closed sessions, timed out, no worker, removed, session names...}.
local now, lim = ARGV[1], tonumber(ARGV[2])
local closed, timedout, nowork, removed = {}, 0, 0, 0
for i = 3, #ARGV, 2 do
  local inst, nwt = ARGV[i], tonumber(ARGV[i + 1])
  local k = 3 + 3 * ((i - 3) / 2)
  local bk, pk, platk = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  for _, name in ipairs(redis.call('ZRANGEBYSCORE', bk, '-inf', now, 'LIMIT', 0, lim)) do
    local bid = redis.call('HGET', P_BOT .. name, 'bot_id') or '?'
    close_session(name, now, 'the session of bot ' .. bid .. ' expired')
    redis.call('ZREM', bk, name)
    table.insert(closed, name)
  end
  local seenk = P_BOTSEEN .. inst
  for _, p in ipairs(redis.call('HKEYS', seenk)) do
    if tonumber(redis.call('HGET', seenk, p) or '0') + nwt < tonumber(now) then
      redis.call('HDEL', seenk, p)
    end
  end
  local props = {}
  for _, p in ipairs(redis.call('HKEYS', pk)) do
    table.insert(props, props_set(p))
  end
  for _, plat in ipairs(redis.call('SMEMBERS', platk)) do
    local qk = P_QUEUE .. inst .. ':' .. plat
    local served = false
    if redis.call('ZCARD', qk) == 0 then
      redis.call('SREM', platk, plat)
      served = true
    end
    for _, p in ipairs(props) do
      if served then break end
      if matches(plat, p) then served = true end
    end
    if not served then
      local shown = plat
      if shown == '' then shown = '(no properties)' end
      for _, j in ipairs(redis.call('ZRANGE', qk, 0, lim - 1)) do
        local q = tonumber(redis.call('HGET', P_JOB .. j, 'queued') or '0')
        if q + nwt <= tonumber(now) then
          finish(j, now, 9, 'no bot that can run platform ' .. shown ..
                 ' is connected to instance "' .. inst .. '" (waited ' ..
                 string.format('%.1f', nwt / 1000000) .. 's, the no-worker-timeout)')
          nowork = nowork + 1
        end
      end
    end
  end
end
for _, j in ipairs(redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', now, 'LIMIT', 0, lim)) do
  local f = hm(P_JOB .. j, 'timeout', 'bots')
  local secs = string.format('%.1f', tonumber(f.timeout or '0') / 1000000)
  local last = string.match(f.bots or '', '([^,]*)$') or '?'
  if not finish(j, now, 4, 'action timed out after ' .. secs .. 's on bot ' .. last) then
    redis.call('ZREM', K_DEADLINES, j)
  end
  timedout = timedout + 1
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', K_RETIRE, '-inf', now, 'LIMIT', 0, lim)) do
  if string.sub(key, 1, #P_OP) == P_OP then
    local inst = redis.call('HGET', key, 'instance')
    if inst then redis.call('ZREM', P_OPS .. inst, string.sub(key, #P_OP + 1)) end
  end
  redis.call('DEL', key)
  redis.call('ZREM', K_RETIRE, key)
  removed = removed + 1
end
local out = {#closed, timedout, nowork, removed}
for _, c in ipairs(closed) do table.insert(out, c) end
return out
