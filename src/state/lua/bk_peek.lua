-- bk_peek.lua - Peek (after bk_lib.lua and bk_merge.lua).
-- KEYS: bucket:<bucket>:peek per bucket.  ARGV: max, cursor, buckets...
local max, cursor = tonumber(ARGV[1]), ARGV[2]
local srcs = {}
for i = 3, #ARGV do srcs[#srcs + 1] = src(bset(ARGV[i], SPEEK), cursor, max + 1, false) end
local out, n, last = {''}, 0, nil
while true do
  local s, id = best(srcs, false)
  if not s then break end
  if n == max then out[1] = last; break end
  pop(s)
  n, last = n + 1, id
  out[#out + 1] = dump(id)
end
return out
