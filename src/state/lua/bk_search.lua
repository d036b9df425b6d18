-- bk_search.lua - Search (after bk_lib.lua and bk_merge.lua).  Looks at
-- no more than 10,000 candidates per call; the cursor then resumes where
-- it stopped even if fewer than max builds matched.  An index entry whose
-- build is gone (removed by another reactord's retention pass midway, or
-- left by an older version) is dropped from the set it was found in.
-- KEYS: tag:<tag>... when tags are given, else buckets and the status sets
--   of the buckets named.  ARGV: max, cursor, status, result,
--   failure_reason, cancelation_reason, created_by, retry_of ("0" = any),
--   nbuckets, buckets..., ntags, tags...
local SCAN_MAX, CHUNK = 10000, 256
local max, cursor, status = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local nb = tonumber(ARGV[9])
local buckets = {}
for i = 1, nb do buckets[i] = ARGV[9 + i] end
local nt = tonumber(ARGV[10 + nb])
local tags = {}
for i = 1, nt do tags[i] = ARGV[10 + nb + i] end
local srcs, bfilter = {}, nil
if nt > 0 then
  srcs[1] = src(KTAG .. tags[1], cursor, CHUNK, true)
  if nb > 0 then
    bfilter = {}
    for _, b in ipairs(buckets) do bfilter[b] = true end
  end
else
  if nb == 0 then buckets = redis.call('SMEMBERS', KBS) end
  for _, b in ipairs(buckets) do
    for _, st in ipairs(status ~= '' and {status} or STATUSES) do
      srcs[#srcs + 1] = src(bset(b, st), cursor, CHUNK, true)
    end
  end
end
local out, n, seen, last = {''}, 0, 0, nil
while true do
  local s, id = best(srcs, true)
  if not s then break end
  if n == max or seen == SCAN_MAX then out[1] = last; break end
  pop(s)
  seen, last = seen + 1, id
  local f = redis.call('HMGET', KB .. id, 'bucket', 'status', 'result', 'failure_reason',
    'cancelation_reason', 'created_by', 'retry_of')
  if not f[1] then redis.call('ZREM', s.key, id) end
  local m = f[1] and (not bfilter or bfilter[f[1]]) and (status == '' or f[2] == status) and
    (ARGV[4] == '' or f[3] == ARGV[4]) and (ARGV[5] == '' or f[4] == ARGV[5]) and
    (ARGV[6] == '' or f[5] == ARGV[6]) and (ARGV[7] == '' or f[6] == ARGV[7]) and
    (ARGV[8] == '0' or f[7] == ARGV[8])
  for i = 2, nt do
    if not m then break end
    m = redis.call('ZSCORE', KTAG .. tags[i], id) ~= false
  end
  if m then
    n = n + 1
    out[#out + 1] = dump(id)
  end
end
return out
