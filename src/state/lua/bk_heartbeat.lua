-- bk_heartbeat.lua - Heartbeat (after bk_lib.lua).
-- KEYS: build:<id>, leased.  ARGV: id, lease_key, lease_expiration_ts
local now = now_us()
local id = ARGV[1]
local b = load(id)
if not b then return notfound(id) end
if b.status == 'COMPLETED' then return completed(id) end
local e = keycheck(id, b, ARGV[2])
if e then return e end
local exp = tonumber(ARGV[3])
if exp == 0 then return E('INVALID_INPUT', 'lease_expiration_ts is required') end
local m = check_exp(exp, now)
if m then return E('INVALID_INPUT', m) end
local upd = bump(b, now)
hset(id, b, {'lease_expiration_ts', I(exp), 'updated_ts', I(upd)})
redis.call('ZADD', KLEASED, I(exp), id)
publish(id, b.bucket, 'HEARTBEAT', b.status, '', I(exp), upd)
return okb(id, b, now)
