-- inspect_builds.lua - builds by bucket and status, for /metrics and the
-- status page (domain/inspect.c; read-only).
-- KEYS: 1 {bb}:buckets, 2 {bb}:leased.
-- ARGV: 1 the key base "<ns>{bb}:", 2 most buckets.
-- Returns {leased builds, truncated (1/0), {bucket, scheduled, started,
-- completed}...} sorted by bucket.
local base, maxb = ARGV[1], tonumber(ARGV[2])
local names = redis.call('SMEMBERS', KEYS[1])
table.sort(names)
local out = {redis.call('ZCARD', KEYS[2]), 0}
if #names > maxb then out[2] = 1 end
for i, b in ipairs(names) do
  if i > maxb then break end
  local p = base .. 'bucket:' .. b .. ':'
  table.insert(out, {b, redis.call('ZCARD', p .. 'SCHEDULED'), redis.call('ZCARD', p .. 'STARTED'),
                     redis.call('ZCARD', p .. 'COMPLETED')})
end
return out
