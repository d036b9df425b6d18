-- bk_put.lua - Put (after bk_lib.lua): a new SCHEDULED build, or the build
-- an earlier Put with the same client_operation_id made.
-- KEYS: idgen, buckets, leased, bucket:<bucket>:SCHEDULED,
--   bucket:<bucket>:peek, op:<bucket>:<client_operation_id> (when given),
--   tag:<tag>..., change:<id>:<revision>...
-- ARGV: bucket, tags_json, parameters_json, created_by, client_operation_id,
--   lease_expiration_ts, leasee, lease_key, op_ttl_ms, mode ("put" or
--   "check": only look up client_operation_id), ntags, tags..., nchanges,
--   (change id, revision)...
local now = now_us()
local bucket, opid = ARGV[1], ARGV[5]
local did, dlk = dedup_get(bucket, opid)
if did then return ok(did, now, dlk) end
if ARGV[10] == 'check' then return {'MISS'} end
local exp = tonumber(ARGV[6])
if exp ~= 0 then
  local m = check_exp(exp, now)
  if m then return E('INVALID_INPUT', m) end
end
local nt = tonumber(ARGV[11])
local tags = {}
for i = 1, nt do tags[i] = ARGV[11 + i] end
local nc = tonumber(ARGV[12 + nt])
local changes = {}
for i = 1, 2 * nc do changes[i] = ARGV[12 + nt + i] end
local lk = exp ~= 0 and ARGV[8] or '0'
local id, b = create(now, bucket, ARGV[2], tags, ARGV[3], ARGV[4], changes, exp, ARGV[7], lk, '0', 'PUT')
dedup_set(bucket, opid, id, lk, ARGV[9])
return okb(id, b, now, lk)
