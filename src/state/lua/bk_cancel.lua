-- bk_cancel.lua - Cancel (after bk_lib.lua).
-- KEYS: build:<id>, leased.  ARGV: id
local now = now_us()
local id = ARGV[1]
local b = load(id)
if not b then return notfound(id) end
if b.status == 'COMPLETED' then
  if b.result == 'CANCELED' then return okb(id, b, now) end
  return completed(id)
end
cancel(id, b, now, 'CANCELED_EXPLICITLY', 'CANCEL')
return okb(id, b, now)
