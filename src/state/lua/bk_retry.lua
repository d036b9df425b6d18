-- bk_retry.lua - Retry (after bk_lib.lua): a new build like completed build id.
-- KEYS: build:<id>, idgen, buckets, leased.  The bucket, tag and change
--   keys come from the loaded build (run time, same hash tag).
-- ARGV: id, client_operation_id, lease_expiration_ts, leasee, lease_key,
--   created_by, op_ttl_ms
local now = now_us()
local id = ARGV[1]
local b = load(id)
if not b then return notfound(id) end
local did, dlk = dedup_get(b.bucket, ARGV[2])
if did then return ok(did, now, dlk) end
local exp = tonumber(ARGV[3])
if exp ~= 0 then
  local m = check_exp(exp, now)
  if m then return E('INVALID_INPUT', m) end
end
if b.status ~= 'COMPLETED' then
  return E('INVALID_BUILD_STATE', 'build ' .. id .. ' is ' .. b.status .. '; only a completed build can be retried')
end
local tjson = b.put_tags or b.tags
local tags = cjson.decode(tjson)
local changes = changes_of(b.parameters_json)
local lk = exp ~= 0 and ARGV[5] or '0'
local nid, nb = create(now, b.bucket, tjson, tags, b.parameters_json, ARGV[6], changes, exp, ARGV[4], lk, id, 'RETRY')
dedup_set(b.bucket, ARGV[2], nid, lk, ARGV[7])
return okb(nid, nb, now, lk)
