-- bk_complete.lua - Succeed and Fail (after bk_lib.lua).
-- KEYS: build:<id>, leased, tag:<new tag>...
-- ARGV: id, lease_key, result, failure_reason or "", result_details_json,
--   url, input error found by the caller or "", nnew, new_tags..., most
--   tags a build may carry (buckets.max-tags)
local now = now_us()
local id = ARGV[1]
local b = load(id)
if not b then return notfound(id) end
local result, fr, details, url = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if b.status == 'COMPLETED' then
  local cur = b.url or ''
  local want = url ~= '' and url or cur
  if b.result == result and (b.failure_reason or '') == fr and
     (b.result_details_json or '') == details and cur == want then
    return okb(id, b, now)
  end
  return completed(id)
end
local e = keycheck(id, b, ARGV[2])
if e then return e end
if ARGV[7] ~= '' then return E('INVALID_INPUT', ARGV[7]) end
local upd = bump(b, now)
local f = {'status', 'COMPLETED', 'result', result, 'completed_ts', I(upd),
  'status_changed_ts', I(upd), 'updated_ts', I(upd)}
local function add(k, v) f[#f + 1] = k; f[#f + 1] = v end
if fr ~= '' then add('failure_reason', fr) end
if details ~= '' then add('result_details_json', details) end
if url ~= '' then add('url', url) end
local nn = tonumber(ARGV[8])
if nn > 0 then
  local tags = cjson.decode(b.tags)
  local have, added, new = {}, false, {}
  for _, t in ipairs(tags) do have[t] = true end
  for i = 1, nn do
    local t = ARGV[8 + i]
    if not have[t] then
      have[t] = true
      tags[#tags + 1] = t
      new[#new + 1] = t
      added = true
    end
  end
  local maxt = tonumber(ARGV[9 + nn])
  if #tags > maxt then
    return E('INVALID_INPUT', 'new_tags: the build would carry ' .. #tags ..
      ' tags, over the limit of ' .. maxt .. ' per build (config buckets.max-tags)')
  end
  for _, t in ipairs(new) do redis.call('ZADD', KTAG .. t, 0, id) end
  if added then
    table.sort(tags, bless)
    if not b.put_tags then add('put_tags', b.tags) end
    add('tags', jlist(tags))
  end
end
local os = b.status
hset(id, b, f)
hdel(id, b, 'lease_key', 'lease_expiration_ts', 'leasee')
reindex(id, b.bucket, os, true, 'COMPLETED', false, nil)
publish(id, b.bucket, result == 'SUCCESS' and 'SUCCEED' or 'FAIL', 'COMPLETED', result, '0', upd)
return okb(id, b, now)
