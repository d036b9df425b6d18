-- bk_lib.lua - the prelude of every build-bucket script.  The domain
-- (src/domain/buckets_scripts.c) registers each script as this file, then
-- bk_merge.lua for Peek and Search, then bk_NAME.lua, so the helpers are
-- spelled once.  Each state change of a build is exactly one script run
-- with EVALSHA, so reactords sharing one Redis can never lease a build
-- twice or lose a transition.  Times come from Redis' TIME so every
-- reactord sees one clock.  Replies:
--   {"OK", utcnow_us, lease_key|"0", {id, {field, value, ...}}}
--   {"ERR", ErrorReason name, message}
-- and for Peek/Search {next_cursor, {id, {fields}}, ...}.
--
-- Keys (schema in src/state/buckets_keys.h and reactor-redis(7)).  ARGV[1]
-- of every script is the key base "<namespace>{bb}:"; the prelude takes it
-- off ARGV, so each script's own arguments start at ARGV[1].  Every name
-- below is the base and a suffix, so every key a script touches carries
-- the {bb} hash tag: the keys the caller can name before the call are in
-- KEYS (see each script), and the ones found at run time (the bucket sets
-- of a loaded build, the hash of a new build, builds listed in a zset)
-- hash to the same Redis Cluster slot as those KEYS.  The pub/sub channel
-- P .. 'events:' .. bucket carries the tag too.
--
-- Lua numbers are doubles: times (< 2^53 us) are exact; build ids (19
-- digits) and lease keys are only ever handled as strings.
local P = table.remove(ARGV, 1)
local KB, KBK, KBS, KTAG, KCHG = P .. 'build:', P .. 'bucket:', P .. 'buckets', P .. 'tag:', P .. 'change:'
local KLEASED, KIDG, KOP, KEV = P .. 'leased', P .. 'idgen', P .. 'op:', P .. 'events:'
local KDONE = P .. 'done'
local SPEEK, STATUSES = 'peek', {'SCHEDULED', 'STARTED', 'COMPLETED'}
local MAX_LEASE, DEF_LEASE = 7200000000, 60000000
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function I(n) return string.format('%.0f', n) end
local function E(reason, msg) return {'ERR', reason, msg} end
local function bset(bucket, s) return KBK .. bucket .. ':' .. s end
local function load(id)
  local a = redis.call('HGETALL', KB .. id)
  if #a == 0 then return nil end
  local b = {}
  for i = 1, #a, 2 do b[a[i]] = a[i + 1] end
  return b
end
local function dump(id) return {id, redis.call('HGETALL', KB .. id)} end
local function ok(id, now, lk) return {'OK', I(now), lk or '0', dump(id)} end
-- Writes that keep the loaded table b in step, so replies need no second
-- HGETALL.
local function hset(id, b, f)
  redis.call('HSET', KB .. id, unpack(f))
  for i = 1, #f, 2 do b[f[i]] = f[i + 1] end
end
local function hdel(id, b, ...)
  redis.call('HDEL', KB .. id, ...)
  for _, k in ipairs({...}) do b[k] = nil end
end
local function okb(id, b, now, lk)
  local a = {}
  for k, v in pairs(b) do a[#a + 1] = k; a[#a + 1] = v end
  return {'OK', I(now), lk or '0', {id, a}}
end
local function notfound(id) return E('BUILD_NOT_FOUND', 'build ' .. id .. ' not found') end
local function completed(id) return E('BUILD_IS_COMPLETED', 'build ' .. id .. ' is completed') end
local function check_exp(exp, now)
  if exp <= now then return 'lease_expiration_ts ' .. I(exp) .. ' is in the past (server time ' .. I(now) .. ')' end
  if exp > now + MAX_LEASE then return 'lease_expiration_ts ' .. I(exp) .. ' is more than 2 hours ahead (server time ' .. I(now) .. ')' end
  return nil
end
local function keycheck(id, b, lk)
  if lk == '0' then return E('INVALID_INPUT', 'lease_key is required') end
  if not b.lease_key or b.lease_key ~= lk then
    return E('LEASE_EXPIRED', 'lease_key for build ' .. id .. ' is incorrect. Your lease might be expired.')
  end
  return nil
end
-- updated_ts strictly increases per build, so it orders its states.
local function bump(b, now)
  local u = tonumber(b.updated_ts or '0')
  if now > u then return now end
  return u + 1
end
local function bless(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
-- A JSON array of strings, quoted as json_quote() does in C (cjson would
-- also escape '/').
local function jlist(t)
  local q = {}
  for i, s in ipairs(t) do
    q[i] = '"' .. string.gsub(s, '[%c"\\]', function(c)
      if c == '"' or c == '\\' then return '\\' .. c end
      return string.format('\\u%04x', string.byte(c))
    end) .. '"'
  end
  return '[' .. table.concat(q, ',') .. ']'
end
-- A change id or revision in a key name: ':' and '%' as %3A and %25
-- (bkeys_change() in C spells the same).
local function esc(s)
  return (string.gsub(s, '[%%:]', function(c) return string.format('%%%02X', string.byte(c)) end))
end
-- Move id between the per-bucket sets and the global zsets.  os/ol: old
-- status and leased flag (os nil for a new build); nexp: new lease
-- expiration when it changed, else nil.
local function reindex(id, bucket, os, ol, ns, nl, nexp)
  if os ~= ns then
    if os then redis.call('ZREM', bset(bucket, os), id) end
    redis.call('ZADD', bset(bucket, ns), 0, id)
  end
  local op = os == 'SCHEDULED' and not ol
  local np = ns == 'SCHEDULED' and not nl
  if op and not np then redis.call('ZREM', bset(bucket, SPEEK), id)
  elseif np and not op then redis.call('ZADD', bset(bucket, SPEEK), 0, id) end
  if nl then
    if nexp then redis.call('ZADD', KLEASED, I(nexp), id) end
  elseif ol then redis.call('ZREM', KLEASED, id) end
  -- Completed builds wait in `done` (by completion time) for the
  -- retention pass (bk_timeout.lua) to remove them.
  if ns == 'COMPLETED' and os ~= 'COMPLETED' then redis.call('ZADD', KDONE, I(now_us()), id) end
end
-- The (id, revision) pairs of the changes parameters_json lists, flat.
local function changes_of(params)
  local changes = {}
  local okp, p = pcall(cjson.decode, params or '')
  if okp and type(p) == 'table' and type(p.changes) == 'table' then
    for _, c in ipairs(p.changes) do
      if type(c) == 'table' and type(c.id) == 'string' and c.id ~= '' then
        changes[#changes + 1] = c.id
        changes[#changes + 1] = type(c.revision) == 'string' and c.revision or ''
      end
    end
  end
  return changes
end
-- Remove build id (loaded as b) and every index entry naming it: its
-- bucket's sets, leased, done, its tag and change sets; the bucket leaves
-- `buckets` once it holds no build.  Used by the retention pass.
local function remove(id, b)
  redis.call('DEL', KB .. id)
  redis.call('ZREM', KLEASED, id)
  redis.call('ZREM', KDONE, id)
  local bucket = b.bucket
  if bucket then
    redis.call('ZREM', bset(bucket, SPEEK), id)
    local left = 0
    for _, st in ipairs(STATUSES) do
      redis.call('ZREM', bset(bucket, st), id)
      left = left + redis.call('ZCARD', bset(bucket, st))
    end
    if left == 0 then redis.call('SREM', KBS, bucket) end
  end
  for _, tj in ipairs({b.tags, b.put_tags}) do
    local okt, tags = pcall(cjson.decode, tj or '[]')
    if okt and type(tags) == 'table' then
      for _, t in ipairs(tags) do
        if type(t) == 'string' then redis.call('ZREM', KTAG .. t, id) end
      end
    end
  end
  local ch = changes_of(b.parameters_json)
  for i = 1, #ch, 2 do
    redis.call('ZREM', KCHG .. esc(ch[i]) .. ':' .. esc(ch[i + 1]), id)
  end
end
local function publish(id, bucket, event, status, result, exp, upd)
  redis.call('PUBLISH', KEV .. bucket, '{"build_id":"' .. id .. '","bucket":"' .. bucket ..
    '","event":"' .. event .. '","status":"' .. status .. '","result":"' .. (result or '') ..
    '","lease_expiration_ts":' .. (exp or '0') .. ',"updated_ts":' .. I(upd) .. '}')
end
local function dedup_get(bucket, opid)
  if opid == '' then return nil end
  local v = redis.call('GET', KOP .. bucket .. ':' .. opid)
  if not v then return nil end
  local id, lk = string.match(v, '^(%d+) (%d+)$')
  if id and redis.call('EXISTS', KB .. id) == 1 then return id, lk end
  return nil
end
local function dedup_set(bucket, opid, id, lk, ttl)
  if opid ~= '' then redis.call('SET', KOP .. bucket .. ':' .. opid, id .. ' ' .. lk, 'PX', ttl) end
end
-- A new SCHEDULED build (leased when exp > 0); returns its id.  Its hash
-- key is named here, at run time: it shares the {bb} tag of the KEYS.
local function create(now, bucket, tjson, tags, params, by, changes, exp, leasee, lk, retry_of, event)
  local g = redis.call('HMGET', KIDG, 'us', 'seq')
  local us, seq = tonumber(g[1] or '0'), tonumber(g[2] or '0')
  local ct = now
  if ct <= us then
    ct, seq = us, seq + 1
    if seq > 999 then ct, seq = ct + 1, 0 end
  else
    seq = 0
  end
  redis.call('HSET', KIDG, 'us', I(ct), 'seq', I(seq))
  local id = string.format('%.0f%03d', ct, seq)
  local f = {'bucket', bucket, 'tags', tjson, 'parameters_json', params, 'status', 'SCHEDULED',
    'created_by', by, 'created_ts', I(ct), 'updated_ts', I(ct), 'status_changed_ts', I(ct)}
  local function add(k, v) f[#f + 1] = k; f[#f + 1] = v end
  if retry_of ~= '0' then add('retry_of', retry_of) end
  local leased = exp > 0
  if leased then
    add('lease_key', lk); add('lease_expiration_ts', I(exp))
    if leasee ~= '' then add('leasee', leasee) end
  end
  local b = {}
  hset(id, b, f)
  redis.call('SADD', KBS, bucket)
  reindex(id, bucket, nil, false, 'SCHEDULED', leased, leased and exp or nil)
  for _, t in ipairs(tags) do redis.call('ZADD', KTAG .. t, 0, id) end
  for i = 1, #changes, 2 do
    redis.call('ZADD', KCHG .. esc(changes[i]) .. ':' .. esc(changes[i + 1]), 0, id)
  end
  publish(id, bucket, event, 'SCHEDULED', '', leased and I(exp) or '0', ct)
  return id, b
end
-- Back to SCHEDULED without a lease (Reset and lease expiry).
local function unlease(id, b, now, event)
  local upd = bump(b, now)
  local os, ol = b.status, b.lease_key ~= nil
  local f = {'status', 'SCHEDULED', 'updated_ts', I(upd)}
  if os ~= 'SCHEDULED' then f[5] = 'status_changed_ts'; f[6] = I(upd) end
  hset(id, b, f)
  hdel(id, b, 'lease_key', 'lease_expiration_ts', 'leasee', 'url', 'started_ts')
  reindex(id, b.bucket, os, ol, 'SCHEDULED', false, nil)
  publish(id, b.bucket, event, 'SCHEDULED', '', '0', upd)
end
-- COMPLETED / CANCELED with the given reason (Cancel and build timeout).
local function cancel(id, b, now, reason, event)
  local upd = bump(b, now)
  local os, ol = b.status, b.lease_key ~= nil
  hset(id, b, {'status', 'COMPLETED', 'result', 'CANCELED', 'cancelation_reason', reason,
    'completed_ts', I(upd), 'status_changed_ts', I(upd), 'updated_ts', I(upd)})
  hdel(id, b, 'lease_key', 'lease_expiration_ts', 'leasee')
  reindex(id, b.bucket, os, ol, 'COMPLETED', false, nil)
  publish(id, b.bucket, event, 'COMPLETED', 'CANCELED', '0', upd)
end
