-- bk_lease.lua - Lease (after bk_lib.lua).
-- KEYS: build:<id>, leased.  ARGV: id, lease_expiration_ts (0 = now + 1 min),
--   leasee, lease_key
local now = now_us()
local id = ARGV[1]
local b = load(id)
if not b then return notfound(id) end
local exp = tonumber(ARGV[2])
if exp == 0 then
  exp = now + DEF_LEASE
else
  local m = check_exp(exp, now)
  if m then return E('INVALID_INPUT', m) end
end
if b.lease_key then return E('CANNOT_LEASE_BUILD', 'build ' .. id .. ' is already leased') end
if b.status ~= 'SCHEDULED' then
  return E('CANNOT_LEASE_BUILD', 'build ' .. id .. ' is ' .. b.status .. ', not SCHEDULED')
end
local lk = ARGV[4]
local upd = bump(b, now)
local f = {'lease_key', lk, 'lease_expiration_ts', I(exp), 'updated_ts', I(upd)}
if ARGV[3] ~= '' then f[7] = 'leasee'; f[8] = ARGV[3] end
hset(id, b, f)
reindex(id, b.bucket, 'SCHEDULED', false, 'SCHEDULED', true, exp)
publish(id, b.bucket, 'LEASE', 'SCHEDULED', '', I(exp), upd)
return okb(id, b, now, lk)
