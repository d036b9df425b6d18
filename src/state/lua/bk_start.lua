-- bk_start.lua - Start (after bk_lib.lua).
-- KEYS: build:<id>, leased.  ARGV: id, lease_key, url
local now = now_us()
local id = ARGV[1]
local b = load(id)
if not b then return notfound(id) end
if b.status == 'COMPLETED' then return completed(id) end
local e = keycheck(id, b, ARGV[2])
if e then return e end
local upd = bump(b, now)
local f = {}
if b.status == 'SCHEDULED' then
  f = {'status', 'STARTED', 'started_ts', I(upd), 'status_changed_ts', I(upd)}
end
local url = ARGV[3]
if url ~= '' and url ~= b.url then f[#f + 1] = 'url'; f[#f + 1] = url end
if #f > 0 then
  local os = b.status
  f[#f + 1] = 'updated_ts'; f[#f + 1] = I(upd)
  hset(id, b, f)
  reindex(id, b.bucket, os, true, 'STARTED', true, nil)
  publish(id, b.bucket, 'START', 'STARTED', '', b.lease_expiration_ts, upd)
end
return okb(id, b, now)
