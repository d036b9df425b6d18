-- bk_reset.lua - Reset (after bk_lib.lua).
-- KEYS: build:<id>, leased.  ARGV: id
local now = now_us()
local id = ARGV[1]
local b = load(id)
if not b then return notfound(id) end
if b.status == 'COMPLETED' then return completed(id) end
if b.status == 'SCHEDULED' and not b.lease_key then return okb(id, b, now) end
unlease(id, b, now, 'RESET')
return okb(id, b, now)
