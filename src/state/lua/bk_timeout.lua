-- bk_timeout.lua - one build-timeout and retention pass (after
-- bk_lib.lua): unfinished builds older than the build timeout are
-- cancelled (TIMEOUT), then builds completed more than the retention ago
-- are removed with every index entry naming them (remove() in bk_lib.lua).
-- At most `limit` builds are looked at in all; the caller runs the pass
-- again when it returns the limit.
-- KEYS: buckets, done (the status sets of each bucket and the builds'
--   own keys are found at run time).
-- ARGV: timeout_us, limit, retention_us
local now = now_us()
-- Ids start with created_ts, so the builds created before the cutoff are
-- the head of each status set.
local cutoff = I(now - tonumber(ARGV[1])) .. '000'
local limit, n = tonumber(ARGV[2]), 0
for _, bucket in ipairs(redis.call('SMEMBERS', KBS)) do
  for _, st in ipairs({'SCHEDULED', 'STARTED'}) do
    if n >= limit then return n end
    local ids = redis.call('ZRANGEBYLEX', bset(bucket, st), '-', '(' .. cutoff, 'LIMIT', 0, limit - n)
    for _, id in ipairs(ids) do
      local b = load(id)
      if b and b.status == st then
        cancel(id, b, now, 'TIMEOUT', 'TIMEOUT')
      else
        redis.call('ZREM', bset(bucket, st), id)
      end
      n = n + 1
    end
  end
end
if n >= limit then return n end
local ids = redis.call('ZRANGEBYSCORE', KDONE, '-inf', I(now - tonumber(ARGV[3])), 'LIMIT', 0, limit - n)
for _, id in ipairs(ids) do
  local b = load(id)
  if b and b.status == 'COMPLETED' then
    remove(id, b)
  else
    redis.call('ZREM', KDONE, id)
  end
  n = n + 1
end
return n
