/*
 * buckets_lua.c - the Lua scripts behind every build-bucket transition.
 * Each state change of a build is exactly one of these scripts run with
 * EVALSHA, so several reactords sharing one Redis can never lease a build
 * twice or lose a transition.  Scripts take no KEYS (they derive key names
 * from build fields, which standalone Redis allows); every name comes from
 * buckets_keys.h through the prelude below.  Times come from Redis' TIME so
 * every reactord sees one clock.  Replies:
 *   {"OK", utcnow_us, lease_key|"0", {id, {field, value, ...}}}
 *   {"ERR", ErrorReason name, message}
 * and for Peek/Search {next_cursor, {id, {fields}}, ...}.
 *
 * Lua numbers are doubles: times (< 2^53 us) are exact; build ids (19
 * digits) and lease keys are only ever handled as strings.
 */
#include "domain/buckets.h"

#include "state/buckets_keys.h"

/* clang-format off */
#define LUA_PRELUDE \
"local KB, KBK, KBS, KTAG, KCHG = '" BK_BUILD "', '" BK_BUCKET "', '" BK_BUCKETS "', '" BK_TAG "', '" BK_CHANGE "'\n" \
"local KLEASED, KIDG, KOP, KEV = '" BK_LEASED "', '" BK_IDGEN "', '" BK_OP "', '" BK_EVENTS "'\n" \
"local SPEEK, STATUSES = '" BK_SET_PEEK "', {'SCHEDULED', 'STARTED', 'COMPLETED'}\n" \
"local MAX_LEASE, DEF_LEASE = 7200000000, 60000000\n" \
"local function now_us()\n" \
"  local t = redis.call('TIME')\n" \
"  return tonumber(t[1]) * 1000000 + tonumber(t[2])\n" \
"end\n" \
"local function I(n) return string.format('%.0f', n) end\n" \
"local function E(reason, msg) return {'ERR', reason, msg} end\n" \
"local function bset(bucket, s) return KBK .. bucket .. ':' .. s end\n" \
"local function load(id)\n" \
"  local a = redis.call('HGETALL', KB .. id)\n" \
"  if #a == 0 then return nil end\n" \
"  local b = {}\n" \
"  for i = 1, #a, 2 do b[a[i]] = a[i + 1] end\n" \
"  return b\n" \
"end\n" \
"local function dump(id) return {id, redis.call('HGETALL', KB .. id)} end\n" \
"local function ok(id, now, lk) return {'OK', I(now), lk or '0', dump(id)} end\n" \
/* Writes that keep the loaded table b in step, so replies need no second \
 * HGETALL. */ \
"local function hset(id, b, f)\n" \
"  redis.call('HSET', KB .. id, unpack(f))\n" \
"  for i = 1, #f, 2 do b[f[i]] = f[i + 1] end\n" \
"end\n" \
"local function hdel(id, b, ...)\n" \
"  redis.call('HDEL', KB .. id, ...)\n" \
"  for _, k in ipairs({...}) do b[k] = nil end\n" \
"end\n" \
"local function okb(id, b, now, lk)\n" \
"  local a = {}\n" \
"  for k, v in pairs(b) do a[#a + 1] = k; a[#a + 1] = v end\n" \
"  return {'OK', I(now), lk or '0', {id, a}}\n" \
"end\n" \
"local function notfound(id) return E('BUILD_NOT_FOUND', 'build ' .. id .. ' not found') end\n" \
"local function completed(id) return E('BUILD_IS_COMPLETED', 'build ' .. id .. ' is completed') end\n" \
"local function check_exp(exp, now)\n" \
"  if exp <= now then return 'lease_expiration_ts ' .. I(exp) .. ' is in the past (server time ' .. I(now) .. ')' end\n" \
"  if exp > now + MAX_LEASE then return 'lease_expiration_ts ' .. I(exp) .. ' is more than 2 hours ahead (server time ' .. I(now) .. ')' end\n" \
"  return nil\n" \
"end\n" \
"local function keycheck(id, b, lk)\n" \
"  if lk == '0' then return E('INVALID_INPUT', 'lease_key is required') end\n" \
"  if not b.lease_key or b.lease_key ~= lk then\n" \
"    return E('LEASE_EXPIRED', 'lease_key for build ' .. id .. ' is incorrect. Your lease might be expired.')\n" \
"  end\n" \
"  return nil\n" \
"end\n" \
/* updated_ts strictly increases per build, so it orders its states. */ \
"local function bump(b, now)\n" \
"  local u = tonumber(b.updated_ts or '0')\n" \
"  if now > u then return now end\n" \
"  return u + 1\n" \
"end\n" \
"local function bless(a, b)\n" \
"  for i = 1, math.min(#a, #b) do\n" \
"    local x, y = string.byte(a, i), string.byte(b, i)\n" \
"    if x ~= y then return x < y end\n" \
"  end\n" \
"  return #a < #b\n" \
"end\n" \
/* A JSON array of strings, quoted as json_quote() does in C (cjson would \
 * also escape '/'). */ \
"local function jlist(t)\n" \
"  local q = {}\n" \
"  for i, s in ipairs(t) do\n" \
"    q[i] = '\"' .. string.gsub(s, '[%c\"\\\\]', function(c)\n" \
"      if c == '\"' or c == '\\\\' then return '\\\\' .. c end\n" \
"      return string.format('\\\\u%04x', string.byte(c))\n" \
"    end) .. '\"'\n" \
"  end\n" \
"  return '[' .. table.concat(q, ',') .. ']'\n" \
"end\n" \
"local function esc(s)\n" \
"  return (string.gsub(s, '[%%:]', function(c) return string.format('%%%02X', string.byte(c)) end))\n" \
"end\n" \
/* Move id between the per-bucket sets and the global zsets.  os/ol: old \
 * status and leased flag (os nil for a new build); nexp: new lease \
 * expiration when it changed, else nil. */ \
"local function reindex(id, bucket, os, ol, ns, nl, nexp)\n" \
"  if os ~= ns then\n" \
"    if os then redis.call('ZREM', bset(bucket, os), id) end\n" \
"    redis.call('ZADD', bset(bucket, ns), 0, id)\n" \
"  end\n" \
"  local op = os == 'SCHEDULED' and not ol\n" \
"  local np = ns == 'SCHEDULED' and not nl\n" \
"  if op and not np then redis.call('ZREM', bset(bucket, SPEEK), id)\n" \
"  elseif np and not op then redis.call('ZADD', bset(bucket, SPEEK), 0, id) end\n" \
"  if nl then\n" \
"    if nexp then redis.call('ZADD', KLEASED, I(nexp), id) end\n" \
"  elseif ol then redis.call('ZREM', KLEASED, id) end\n" \
"end\n" \
"local function publish(id, bucket, event, status, result, exp, upd)\n" \
"  redis.call('PUBLISH', KEV .. bucket, '{\"build_id\":\"' .. id .. '\",\"bucket\":\"' .. bucket ..\n" \
"    '\",\"event\":\"' .. event .. '\",\"status\":\"' .. status .. '\",\"result\":\"' .. (result or '') ..\n" \
"    '\",\"lease_expiration_ts\":' .. (exp or '0') .. ',\"updated_ts\":' .. I(upd) .. '}')\n" \
"end\n" \
"local function dedup_get(bucket, opid)\n" \
"  if opid == '' then return nil end\n" \
"  local v = redis.call('GET', KOP .. bucket .. ':' .. opid)\n" \
"  if not v then return nil end\n" \
"  local id, lk = string.match(v, '^(%d+) (%d+)$')\n" \
"  if id and redis.call('EXISTS', KB .. id) == 1 then return id, lk end\n" \
"  return nil\n" \
"end\n" \
"local function dedup_set(bucket, opid, id, lk, ttl)\n" \
"  if opid ~= '' then redis.call('SET', KOP .. bucket .. ':' .. opid, id .. ' ' .. lk, 'PX', ttl) end\n" \
"end\n" \
/* A new SCHEDULED build (leased when exp > 0); returns its id. */ \
"local function create(now, bucket, tjson, tags, params, by, changes, exp, leasee, lk, retry_of, event)\n" \
"  local g = redis.call('HMGET', KIDG, 'us', 'seq')\n" \
"  local us, seq = tonumber(g[1] or '0'), tonumber(g[2] or '0')\n" \
"  local ct = now\n" \
"  if ct <= us then\n" \
"    ct, seq = us, seq + 1\n" \
"    if seq > 999 then ct, seq = ct + 1, 0 end\n" \
"  else\n" \
"    seq = 0\n" \
"  end\n" \
"  redis.call('HSET', KIDG, 'us', I(ct), 'seq', I(seq))\n" \
"  local id = string.format('%.0f%03d', ct, seq)\n" \
"  local f = {'bucket', bucket, 'tags', tjson, 'parameters_json', params, 'status', 'SCHEDULED',\n" \
"    'created_by', by, 'created_ts', I(ct), 'updated_ts', I(ct), 'status_changed_ts', I(ct)}\n" \
"  local function add(k, v) f[#f + 1] = k; f[#f + 1] = v end\n" \
"  if retry_of ~= '0' then add('retry_of', retry_of) end\n" \
"  local leased = exp > 0\n" \
"  if leased then\n" \
"    add('lease_key', lk); add('lease_expiration_ts', I(exp))\n" \
"    if leasee ~= '' then add('leasee', leasee) end\n" \
"  end\n" \
"  local b = {}\n" \
"  hset(id, b, f)\n" \
"  redis.call('SADD', KBS, bucket)\n" \
"  reindex(id, bucket, nil, false, 'SCHEDULED', leased, leased and exp or nil)\n" \
"  for _, t in ipairs(tags) do redis.call('ZADD', KTAG .. t, 0, id) end\n" \
"  for i = 1, #changes, 2 do\n" \
"    redis.call('ZADD', KCHG .. esc(changes[i]) .. ':' .. esc(changes[i + 1]), 0, id)\n" \
"  end\n" \
"  publish(id, bucket, event, 'SCHEDULED', '', leased and I(exp) or '0', ct)\n" \
"  return id, b\n" \
"end\n" \
/* Back to SCHEDULED without a lease (Reset and lease expiry). */ \
"local function unlease(id, b, now, event)\n" \
"  local upd = bump(b, now)\n" \
"  local os, ol = b.status, b.lease_key ~= nil\n" \
"  local f = {'status', 'SCHEDULED', 'updated_ts', I(upd)}\n" \
"  if os ~= 'SCHEDULED' then f[5] = 'status_changed_ts'; f[6] = I(upd) end\n" \
"  hset(id, b, f)\n" \
"  hdel(id, b, 'lease_key', 'lease_expiration_ts', 'leasee', 'url', 'started_ts')\n" \
"  reindex(id, b.bucket, os, ol, 'SCHEDULED', false, nil)\n" \
"  publish(id, b.bucket, event, 'SCHEDULED', '', '0', upd)\n" \
"end\n" \
/* COMPLETED / CANCELED with the given reason (Cancel and build timeout). */ \
"local function cancel(id, b, now, reason, event)\n" \
"  local upd = bump(b, now)\n" \
"  local os, ol = b.status, b.lease_key ~= nil\n" \
"  hset(id, b, {'status', 'COMPLETED', 'result', 'CANCELED', 'cancelation_reason', reason,\n" \
"    'completed_ts', I(upd), 'status_changed_ts', I(upd), 'updated_ts', I(upd)})\n" \
"  hdel(id, b, 'lease_key', 'lease_expiration_ts', 'leasee')\n" \
"  reindex(id, b.bucket, os, ol, 'COMPLETED', false, nil)\n" \
"  publish(id, b.bucket, event, 'COMPLETED', 'CANCELED', '0', upd)\n" \
"end\n"

/* ARGV: bucket, tags_json, parameters_json, created_by, client_operation_id,
 * lease_expiration_ts, leasee, lease_key, op_ttl_ms, mode ("put" or
 * "check": only look up client_operation_id), ntags, tags..., nchanges,
 * (change id, revision)... */
static const char lua_put[] = LUA_PRELUDE
"local now = now_us()\n"
"local bucket, opid = ARGV[1], ARGV[5]\n"
"local did, dlk = dedup_get(bucket, opid)\n"
"if did then return ok(did, now, dlk) end\n"
"if ARGV[10] == 'check' then return {'MISS'} end\n"
"local exp = tonumber(ARGV[6])\n"
"if exp ~= 0 then\n"
"  local m = check_exp(exp, now)\n"
"  if m then return E('INVALID_INPUT', m) end\n"
"end\n"
"local nt = tonumber(ARGV[11])\n"
"local tags = {}\n"
"for i = 1, nt do tags[i] = ARGV[11 + i] end\n"
"local nc = tonumber(ARGV[12 + nt])\n"
"local changes = {}\n"
"for i = 1, 2 * nc do changes[i] = ARGV[12 + nt + i] end\n"
"local lk = exp ~= 0 and ARGV[8] or '0'\n"
"local id, b = create(now, bucket, ARGV[2], tags, ARGV[3], ARGV[4], changes, exp, ARGV[7], lk, '0', 'PUT')\n"
"dedup_set(bucket, opid, id, lk, ARGV[9])\n"
"return okb(id, b, now, lk)\n";

/* ARGV: id, client_operation_id, lease_expiration_ts, leasee, lease_key,
 * created_by, op_ttl_ms */
static const char lua_retry[] = LUA_PRELUDE
"local now = now_us()\n"
"local id = ARGV[1]\n"
"local b = load(id)\n"
"if not b then return notfound(id) end\n"
"local did, dlk = dedup_get(b.bucket, ARGV[2])\n"
"if did then return ok(did, now, dlk) end\n"
"local exp = tonumber(ARGV[3])\n"
"if exp ~= 0 then\n"
"  local m = check_exp(exp, now)\n"
"  if m then return E('INVALID_INPUT', m) end\n"
"end\n"
"if b.status ~= 'COMPLETED' then\n"
"  return E('INVALID_BUILD_STATE', 'build ' .. id .. ' is ' .. b.status .. '; only a completed build can be retried')\n"
"end\n"
"local tjson = b.put_tags or b.tags\n"
"local tags = cjson.decode(tjson)\n"
"local changes = {}\n"
"local okp, p = pcall(cjson.decode, b.parameters_json)\n"
"if okp and type(p) == 'table' and type(p.changes) == 'table' then\n"
"  for _, c in ipairs(p.changes) do\n"
"    if type(c) == 'table' and type(c.id) == 'string' and c.id ~= '' then\n"
"      changes[#changes + 1] = c.id\n"
"      changes[#changes + 1] = type(c.revision) == 'string' and c.revision or ''\n"
"    end\n"
"  end\n"
"end\n"
"local lk = exp ~= 0 and ARGV[5] or '0'\n"
"local nid, nb = create(now, b.bucket, tjson, tags, b.parameters_json, ARGV[6], changes, exp, ARGV[4], lk, id, 'RETRY')\n"
"dedup_set(b.bucket, ARGV[2], nid, lk, ARGV[7])\n"
"return okb(nid, nb, now, lk)\n";

/* ARGV: id, lease_expiration_ts (0 = now + 1 min), leasee, lease_key */
static const char lua_lease[] = LUA_PRELUDE
"local now = now_us()\n"
"local id = ARGV[1]\n"
"local b = load(id)\n"
"if not b then return notfound(id) end\n"
"local exp = tonumber(ARGV[2])\n"
"if exp == 0 then\n"
"  exp = now + DEF_LEASE\n"
"else\n"
"  local m = check_exp(exp, now)\n"
"  if m then return E('INVALID_INPUT', m) end\n"
"end\n"
"if b.lease_key then return E('CANNOT_LEASE_BUILD', 'build ' .. id .. ' is already leased') end\n"
"if b.status ~= 'SCHEDULED' then\n"
"  return E('CANNOT_LEASE_BUILD', 'build ' .. id .. ' is ' .. b.status .. ', not SCHEDULED')\n"
"end\n"
"local lk = ARGV[4]\n"
"local upd = bump(b, now)\n"
"local f = {'lease_key', lk, 'lease_expiration_ts', I(exp), 'updated_ts', I(upd)}\n"
"if ARGV[3] ~= '' then f[7] = 'leasee'; f[8] = ARGV[3] end\n"
"hset(id, b, f)\n"
"reindex(id, b.bucket, 'SCHEDULED', false, 'SCHEDULED', true, exp)\n"
"publish(id, b.bucket, 'LEASE', 'SCHEDULED', '', I(exp), upd)\n"
"return okb(id, b, now, lk)\n";

/* ARGV: id, lease_key, url */
static const char lua_start[] = LUA_PRELUDE
"local now = now_us()\n"
"local id = ARGV[1]\n"
"local b = load(id)\n"
"if not b then return notfound(id) end\n"
"if b.status == 'COMPLETED' then return completed(id) end\n"
"local e = keycheck(id, b, ARGV[2])\n"
"if e then return e end\n"
"local upd = bump(b, now)\n"
"local f = {}\n"
"if b.status == 'SCHEDULED' then\n"
"  f = {'status', 'STARTED', 'started_ts', I(upd), 'status_changed_ts', I(upd)}\n"
"end\n"
"local url = ARGV[3]\n"
"if url ~= '' and url ~= b.url then f[#f + 1] = 'url'; f[#f + 1] = url end\n"
"if #f > 0 then\n"
"  local os = b.status\n"
"  f[#f + 1] = 'updated_ts'; f[#f + 1] = I(upd)\n"
"  hset(id, b, f)\n"
"  reindex(id, b.bucket, os, true, 'STARTED', true, nil)\n"
"  publish(id, b.bucket, 'START', 'STARTED', '', b.lease_expiration_ts, upd)\n"
"end\n"
"return okb(id, b, now)\n";

/* ARGV: id, lease_key, lease_expiration_ts */
static const char lua_heartbeat[] = LUA_PRELUDE
"local now = now_us()\n"
"local id = ARGV[1]\n"
"local b = load(id)\n"
"if not b then return notfound(id) end\n"
"if b.status == 'COMPLETED' then return completed(id) end\n"
"local e = keycheck(id, b, ARGV[2])\n"
"if e then return e end\n"
"local exp = tonumber(ARGV[3])\n"
"if exp == 0 then return E('INVALID_INPUT', 'lease_expiration_ts is required') end\n"
"local m = check_exp(exp, now)\n"
"if m then return E('INVALID_INPUT', m) end\n"
"local upd = bump(b, now)\n"
"hset(id, b, {'lease_expiration_ts', I(exp), 'updated_ts', I(upd)})\n"
"redis.call('ZADD', KLEASED, I(exp), id)\n"
"publish(id, b.bucket, 'HEARTBEAT', b.status, '', I(exp), upd)\n"
"return okb(id, b, now)\n";

/* Succeed and Fail.  ARGV: id, lease_key, result, failure_reason or "",
 * result_details_json, url, input error found by the caller or "", nnew,
 * new_tags... */
static const char lua_complete[] = LUA_PRELUDE
"local now = now_us()\n"
"local id = ARGV[1]\n"
"local b = load(id)\n"
"if not b then return notfound(id) end\n"
"local result, fr, details, url = ARGV[3], ARGV[4], ARGV[5], ARGV[6]\n"
"if b.status == 'COMPLETED' then\n"
"  local cur = b.url or ''\n"
"  local want = url ~= '' and url or cur\n"
"  if b.result == result and (b.failure_reason or '') == fr and\n"
"     (b.result_details_json or '') == details and cur == want then\n"
"    return okb(id, b, now)\n"
"  end\n"
"  return completed(id)\n"
"end\n"
"local e = keycheck(id, b, ARGV[2])\n"
"if e then return e end\n"
"if ARGV[7] ~= '' then return E('INVALID_INPUT', ARGV[7]) end\n"
"local upd = bump(b, now)\n"
"local f = {'status', 'COMPLETED', 'result', result, 'completed_ts', I(upd),\n"
"  'status_changed_ts', I(upd), 'updated_ts', I(upd)}\n"
"local function add(k, v) f[#f + 1] = k; f[#f + 1] = v end\n"
"if fr ~= '' then add('failure_reason', fr) end\n"
"if details ~= '' then add('result_details_json', details) end\n"
"if url ~= '' then add('url', url) end\n"
"local nn = tonumber(ARGV[8])\n"
"if nn > 0 then\n"
"  local tags = cjson.decode(b.tags)\n"
"  local have, added = {}, false\n"
"  for _, t in ipairs(tags) do have[t] = true end\n"
"  for i = 1, nn do\n"
"    local t = ARGV[8 + i]\n"
"    if not have[t] then\n"
"      have[t] = true\n"
"      tags[#tags + 1] = t\n"
"      added = true\n"
"      redis.call('ZADD', KTAG .. t, 0, id)\n"
"    end\n"
"  end\n"
"  if added then\n"
"    table.sort(tags, bless)\n"
"    if not b.put_tags then add('put_tags', b.tags) end\n"
"    add('tags', jlist(tags))\n"
"  end\n"
"end\n"
"local os = b.status\n"
"hset(id, b, f)\n"
"hdel(id, b, 'lease_key', 'lease_expiration_ts', 'leasee')\n"
"reindex(id, b.bucket, os, true, 'COMPLETED', false, nil)\n"
"publish(id, b.bucket, result == 'SUCCESS' and 'SUCCEED' or 'FAIL', 'COMPLETED', result, '0', upd)\n"
"return okb(id, b, now)\n";

/* ARGV: id */
static const char lua_cancel[] = LUA_PRELUDE
"local now = now_us()\n"
"local id = ARGV[1]\n"
"local b = load(id)\n"
"if not b then return notfound(id) end\n"
"if b.status == 'COMPLETED' then\n"
"  if b.result == 'CANCELED' then return okb(id, b, now) end\n"
"  return completed(id)\n"
"end\n"
"cancel(id, b, now, 'CANCELED_EXPLICITLY', 'CANCEL')\n"
"return okb(id, b, now)\n";

/* ARGV: id */
static const char lua_reset[] = LUA_PRELUDE
"local now = now_us()\n"
"local id = ARGV[1]\n"
"local b = load(id)\n"
"if not b then return notfound(id) end\n"
"if b.status == 'COMPLETED' then return completed(id) end\n"
"if b.status == 'SCHEDULED' and not b.lease_key then return okb(id, b, now) end\n"
"unlease(id, b, now, 'RESET')\n"
"return okb(id, b, now)\n";

/* Lease expiry pass.  ARGV: limit.  Returns how many leases it looked at
 * (== limit: run again). */
static const char lua_expire[] = LUA_PRELUDE
"local now = now_us()\n"
"local ids = redis.call('ZRANGEBYSCORE', KLEASED, '-inf', I(now), 'LIMIT', 0, tonumber(ARGV[1]))\n"
"for _, id in ipairs(ids) do\n"
"  local b = load(id)\n"
"  if not b or not b.lease_key or b.status == 'COMPLETED' then\n"
"    redis.call('ZREM', KLEASED, id)\n"
"  else\n"
"    unlease(id, b, now, 'EXPIRE')\n"
"  end\n"
"end\n"
"return #ids\n";

/* Build-timeout pass.  ARGV: timeout_us, limit. */
static const char lua_timeout[] = LUA_PRELUDE
"local now = now_us()\n"
/* Ids start with created_ts, so the builds created before the cutoff are
 * the head of each status set. */
"local cutoff = I(now - tonumber(ARGV[1])) .. '000'\n"
"local limit, n = tonumber(ARGV[2]), 0\n"
"for _, bucket in ipairs(redis.call('SMEMBERS', KBS)) do\n"
"  for _, st in ipairs({'SCHEDULED', 'STARTED'}) do\n"
"    if n >= limit then return n end\n"
"    local ids = redis.call('ZRANGEBYLEX', bset(bucket, st), '-', '(' .. cutoff, 'LIMIT', 0, limit - n)\n"
"    for _, id in ipairs(ids) do\n"
"      local b = load(id)\n"
"      if b and b.status == st then\n"
"        cancel(id, b, now, 'TIMEOUT', 'TIMEOUT')\n"
"      else\n"
"        redis.call('ZREM', bset(bucket, st), id)\n"
"      end\n"
"      n = n + 1\n"
"    end\n"
"  end\n"
"end\n"
"return n\n";

/* Merge helpers for Peek and Search: a source is one zset of ids walked
 * in chunks, ascending or descending, after an exclusive bound. */
#define LUA_MERGE \
"local function src(key, after, chunk, desc) return {key = key, after = after, chunk = chunk, desc = desc, buf = {}, pos = 1} end\n" \
"local function head(s)\n" \
"  if s.pos > #s.buf then\n" \
"    if s.done then return nil end\n" \
"    if s.desc then\n" \
"      s.buf = redis.call('ZREVRANGEBYLEX', s.key, s.after == '' and '+' or '(' .. s.after, '-', 'LIMIT', 0, s.chunk)\n" \
"    else\n" \
"      s.buf = redis.call('ZRANGEBYLEX', s.key, s.after == '' and '-' or '(' .. s.after, '+', 'LIMIT', 0, s.chunk)\n" \
"    end\n" \
"    s.pos = 1\n" \
"    if #s.buf < s.chunk then s.done = true end\n" \
"    if #s.buf == 0 then return nil end\n" \
"  end\n" \
"  return s.buf[s.pos]\n" \
"end\n" \
"local function before(a, b, desc)\n" \
"  if #a ~= #b then if desc then return #a > #b else return #a < #b end end\n" \
"  if desc then return a > b else return a < b end\n" \
"end\n" \
"local function best(srcs, desc)\n" \
"  local bs, bh\n" \
"  for _, s in ipairs(srcs) do\n" \
"    local h = head(s)\n" \
"    if h and (not bh or before(h, bh, desc)) then bs, bh = s, h end\n" \
"  end\n" \
"  return bs, bh\n" \
"end\n" \
"local function pop(s) s.after = s.buf[s.pos]; s.pos = s.pos + 1 end\n"

/* ARGV: max, cursor, buckets... */
static const char lua_peek[] = LUA_PRELUDE LUA_MERGE
"local max, cursor = tonumber(ARGV[1]), ARGV[2]\n"
"local srcs = {}\n"
"for i = 3, #ARGV do srcs[#srcs + 1] = src(bset(ARGV[i], SPEEK), cursor, max + 1, false) end\n"
"local out, n, last = {''}, 0, nil\n"
"while true do\n"
"  local s, id = best(srcs, false)\n"
"  if not s then break end\n"
"  if n == max then out[1] = last; break end\n"
"  pop(s)\n"
"  n, last = n + 1, id\n"
"  out[#out + 1] = dump(id)\n"
"end\n"
"return out\n";

/* ARGV: max, cursor, status, result, failure_reason, cancelation_reason,
 * created_by, retry_of ("0" = any), nbuckets, buckets..., ntags, tags...
 * Looks at no more than 10,000 candidates per call; the cursor then
 * resumes where it stopped even if fewer than max builds matched. */
static const char lua_search[] = LUA_PRELUDE LUA_MERGE
"local SCAN_MAX, CHUNK = 10000, 256\n"
"local max, cursor, status = tonumber(ARGV[1]), ARGV[2], ARGV[3]\n"
"local nb = tonumber(ARGV[9])\n"
"local buckets = {}\n"
"for i = 1, nb do buckets[i] = ARGV[9 + i] end\n"
"local nt = tonumber(ARGV[10 + nb])\n"
"local tags = {}\n"
"for i = 1, nt do tags[i] = ARGV[10 + nb + i] end\n"
"local srcs, bfilter = {}, nil\n"
"if nt > 0 then\n"
"  srcs[1] = src(KTAG .. tags[1], cursor, CHUNK, true)\n"
"  if nb > 0 then\n"
"    bfilter = {}\n"
"    for _, b in ipairs(buckets) do bfilter[b] = true end\n"
"  end\n"
"else\n"
"  if nb == 0 then buckets = redis.call('SMEMBERS', KBS) end\n"
"  for _, b in ipairs(buckets) do\n"
"    for _, st in ipairs(status ~= '' and {status} or STATUSES) do\n"
"      srcs[#srcs + 1] = src(bset(b, st), cursor, CHUNK, true)\n"
"    end\n"
"  end\n"
"end\n"
"local out, n, seen, last = {''}, 0, 0, nil\n"
"while true do\n"
"  local s, id = best(srcs, true)\n"
"  if not s then break end\n"
"  if n == max or seen == SCAN_MAX then out[1] = last; break end\n"
"  pop(s)\n"
"  seen, last = seen + 1, id\n"
"  local f = redis.call('HMGET', KB .. id, 'bucket', 'status', 'result', 'failure_reason',\n"
"    'cancelation_reason', 'created_by', 'retry_of')\n"
"  local m = (not bfilter or bfilter[f[1]]) and (status == '' or f[2] == status) and\n"
"    (ARGV[4] == '' or f[3] == ARGV[4]) and (ARGV[5] == '' or f[4] == ARGV[5]) and\n"
"    (ARGV[6] == '' or f[5] == ARGV[6]) and (ARGV[7] == '' or f[6] == ARGV[7]) and\n"
"    (ARGV[8] == '0' or f[7] == ARGV[8])\n"
"  for i = 2, nt do\n"
"    if not m then break end\n"
"    m = redis.call('ZSCORE', KTAG .. tags[i], id) ~= false\n"
"  end\n"
"  if m then\n"
"    n = n + 1\n"
"    out[#out + 1] = dump(id)\n"
"  end\n"
"end\n"
"return out\n";
/* clang-format on */

int bk_scripts[BK_S_COUNT];

int bk_register_scripts(void)
{
	static const struct {
		const char *name, *lua;
	} all[BK_S_COUNT] = {
		[BK_S_PUT] = {"buckets.put", lua_put},
		[BK_S_RETRY] = {"buckets.retry", lua_retry},
		[BK_S_LEASE] = {"buckets.lease", lua_lease},
		[BK_S_START] = {"buckets.start", lua_start},
		[BK_S_HEARTBEAT] = {"buckets.heartbeat", lua_heartbeat},
		[BK_S_COMPLETE] = {"buckets.complete", lua_complete},
		[BK_S_CANCEL] = {"buckets.cancel", lua_cancel},
		[BK_S_RESET] = {"buckets.reset", lua_reset},
		[BK_S_EXPIRE] = {"buckets.expire", lua_expire},
		[BK_S_TIMEOUT] = {"buckets.timeout", lua_timeout},
		[BK_S_PEEK] = {"buckets.peek", lua_peek},
		[BK_S_SEARCH] = {"buckets.search", lua_search},
	};
	for (int i = 0; i < BK_S_COUNT; i++) {
		bk_scripts[i] = store_script_register(all[i].name, all[i].lua);
		if (bk_scripts[i] < 0)
			return -1;
	}
	return 0;
}
