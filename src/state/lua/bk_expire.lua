-- bk_expire.lua - one lease expiry pass (after bk_lib.lua).  Returns how
-- many leases it looked at (== limit: run again).
-- KEYS: leased (the builds it names are found at run time).  ARGV: limit
local now = now_us()
local ids = redis.call('ZRANGEBYSCORE', KLEASED, '-inf', I(now), 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  local b = load(id)
  if not b or not b.lease_key or b.status == 'COMPLETED' then
    redis.call('ZREM', KLEASED, id)
  else
    unlease(id, b, now, 'EXPIRE')
  end
end
return #ids
