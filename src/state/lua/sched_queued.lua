-- sched_queued.lua - which queues hold work: the safety net wakes that
-- many bots.  Runs after sched_prelude.lua.
-- KEYS: 3... platforms:{instance}, one per instance.
-- ARGV: the instance names, in the same order.
-- Returns {"{instance}\n{platform}", count, ...} for every non-empty queue.
local out = {}
for i, inst in ipairs(ARGV) do
  for _, plat in ipairs(redis.call('SMEMBERS', KEYS[i + 2])) do
    local n = redis.call('ZCARD', P_QUEUE .. inst .. ':' .. plat)
    if n > 0 then
      table.insert(out, inst .. '\n' .. plat)
      table.insert(out, n)
    end
  end
end
return out
