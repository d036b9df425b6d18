/*
 * sched_lua.c - the scheduler's Lua scripts.  Every transition that
 * touches more than one key runs here, atomically inside Redis, so several
 * reactord processes sharing one Redis can never assign a job twice or
 * lose one.  Key prefixes come from keys.h (spliced into a common prelude);
 * the schema is documented in keys.c and reactor-redis(7).
 *
 * Conventions: times are microseconds since the epoch, passed in by the
 * caller (scripts stay deterministic); numbers written to Redis go
 * through n2s() so they are plain integers, never "1e+15"; every state
 * change a watcher cares about bumps the job's `version` and PUBLISHes
 * the job name on sched:job; a job entering a queue PUBLISHes
 * "{instance}\n{platform}" on sched:queue.
 */
#include "state/sched_lua.h"

#include "state/keys.h"

#define PRELUDE                                                                                    \
	"local P_JOB, P_OP, P_OPS, P_ACTION = '" KEYS_JOB "', '" KEYS_OP "', '" KEYS_OPS           \
	"', '" KEYS_ACTIONJOB "'\n"                                                                \
	"local P_QUEUE, P_PLATS, P_BOT, P_BOTS = '" KEYS_QUEUE "', '" KEYS_PLATFORMS               \
	"', '" KEYS_BOT "', '" KEYS_BOTS "'\n"                                                     \
	"local P_BOTID, P_BOTPROPS = '" KEYS_BOTID "', '" KEYS_BOTPROPS "'\n"                      \
	"local K_SEQ, K_DEADLINES, K_RETIRE = '" KEYS_SEQ "', '" KEYS_DEADLINES "', '" KEYS_RETIRE \
	"'\n"                                                                                      \
	"local CH_JOB, CH_QUEUE = '" KEYS_CH_JOB "', '" KEYS_CH_QUEUE "'\n" LUA_HELPERS

/* Shared helpers.  finish() ends a job (any cause); requeue() gives a
 * lost lease back to its queue or, after max_attempts, fails the job;
 * close_session() ends a bot session and requeues its lease; assign()
 * hands the best queued job a session's properties match to it. */
#define LUA_HELPERS                                                                                \
	"local function n2s(x) return string.format('%.17g', x) end\n"                             \
	"local function hm(key, ...)\n"                                                            \
	"  local names = {...}\n"                                                                  \
	"  local v = redis.call('HMGET', key, unpack(names))\n"                                    \
	"  local t = {}\n"                                                                         \
	"  for i, n in ipairs(names) do t[n] = v[i] end\n"                                         \
	"  return t\n"                                                                             \
	"end\n"                                                                                    \
	"local function score(prio, seq)\n"                                                        \
	"  return n2s(tonumber(prio) * 4294967296 + (tonumber(seq) % 4294967296))\n"               \
	"end\n"                                                                                    \
	"local function bump(j)\n"                                                                 \
	"  redis.call('HINCRBY', P_JOB .. j, 'version', 1)\n"                                      \
	"  redis.call('PUBLISH', CH_JOB, j)\n"                                                     \
	"end\n"                                                                                    \
	"local function retire(key, at, ttl)\n"                                                    \
	"  redis.call('ZADD', K_RETIRE, n2s(at), key)\n"                                           \
	"  redis.call('EXPIRE', key, n2s(ttl + 60))\n"                                             \
	"end\n"                                                                                    \
	"local function props_set(s)\n"                                                            \
	"  local t = {}\n"                                                                         \
	"  for item in string.gmatch(s, '[^;]+') do t[item] = true end\n"                          \
	"  return t\n"                                                                             \
	"end\n"                                                                                    \
	"local function matches(plat, props)\n"                                                    \
	"  for item in string.gmatch(plat, '[^;]+') do\n"                                          \
	"    if not props[item] then return false end\n"                                           \
	"  end\n"                                                                                  \
	"  return true\n"                                                                          \
	"end\n"                                                                                    \
	"local function finish(j, now, code, msg, result)\n"                                       \
	"  local jk = P_JOB .. j\n"                                                                \
	"  local f = hm(jk, 'instance', 'action', 'queue', 'retention', 'stage', 'lease')\n"       \
	"  if not f.stage or f.stage == 'COMPLETED' then return false end\n"                       \
	"  redis.call('HSET', jk, 'stage', 'COMPLETED', 'completed', now, 'status', n2s(code),\n"  \
	"             'message', msg)\n"                                                           \
	"  if result then redis.call('HSET', jk, 'result', result) end\n"                          \
	"  if f.lease == 'PENDING' or f.lease == 'ACTIVE' then\n"                                  \
	"    redis.call('HSET', jk, 'lease', 'CANCELLED')\n"                                       \
	"  end\n"                                                                                  \
	"  redis.call('ZREM', f.queue, j)\n"                                                       \
	"  redis.call('ZREM', K_DEADLINES, j)\n"                                                   \
	"  local ak = P_ACTION .. f.instance .. ':' .. (string.gsub(f.action, '/', '-'))\n"        \
	"  if redis.call('GET', ak) == j then redis.call('DEL', ak) end\n"                         \
	"  local ttl = tonumber(f.retention)\n"                                                    \
	"  local at = tonumber(now) + ttl * 1000000\n"                                             \
	"  retire(jk, at, ttl)\n"                                                                  \
	"  retire(jk .. ':ops', at, ttl)\n"                                                        \
	"  for _, o in ipairs(redis.call('SMEMBERS', jk .. ':ops')) do\n"                          \
	"    retire(P_OP .. o, at, ttl)\n"                                                         \
	"  end\n"                                                                                  \
	"  bump(j)\n"                                                                              \
	"  return true\n"                                                                          \
	"end\n"                                                                                    \
	"local function requeue(j, now, why)\n"                                                    \
	"  local jk = P_JOB .. j\n"                                                                \
	"  local f = hm(jk, 'stage', 'attempts', 'max_attempts', 'queue', 'priority', 'seq',\n"    \
	"               'bots', 'instance', 'platform')\n"                                         \
	"  if not f.stage or f.stage == 'COMPLETED' then return end\n"                             \
	"  redis.call('HSET', jk, 'bot', '', 'lease', '')\n"                                       \
	"  redis.call('ZREM', K_DEADLINES, j)\n"                                                   \
	"  if tonumber(f.attempts) >= tonumber(f.max_attempts) then\n"                             \
	"    finish(j, now, 14, 'action was lost by ' .. f.attempts .. ' bot(s) (' .. f.bots ..\n" \
	"           '), the last time because ' .. why .. '; giving up (max-attempts ' ..\n"       \
	"           f.max_attempts .. ')')\n"                                                      \
	"    return\n"                                                                             \
	"  end\n"                                                                                  \
	"  redis.call('HSET', jk, 'stage', 'QUEUED')\n"                                            \
	"  redis.call('ZADD', f.queue, score(f.priority, f.seq), j)\n"                             \
	"  redis.call('SADD', P_PLATS .. f.instance, f.platform)\n"                                \
	"  bump(j)\n"                                                                              \
	"  redis.call('PUBLISH', CH_QUEUE, f.instance .. '\\n' .. f.platform)\n"                   \
	"end\n"                                                                                    \
	"local function close_session(name, now, why)\n"                                           \
	"  local sk = P_BOT .. name\n"                                                             \
	"  local s = hm(sk, 'instance', 'lease', 'bot_id', 'props')\n"                             \
	"  if not s.instance then return false end\n"                                              \
	"  if s.lease and s.lease ~= '' and\n"                                                     \
	"     redis.call('HGET', P_JOB .. s.lease, 'bot') == name then\n"                          \
	"    requeue(s.lease, now, why)\n"                                                         \
	"  end\n"                                                                                  \
	"  redis.call('DEL', sk)\n"                                                                \
	"  redis.call('ZREM', P_BOTS .. s.instance, name)\n"                                       \
	"  local ik = P_BOTID .. s.instance .. ':' .. s.bot_id\n"                                  \
	"  if redis.call('GET', ik) == name then redis.call('DEL', ik) end\n"                      \
	"  local pk = P_BOTPROPS .. s.instance\n"                                                  \
	"  if redis.call('HINCRBY', pk, s.props, -1) <= 0 then redis.call('HDEL', pk, s.props) "   \
	"end\n"                                                                                    \
	"  return true\n"                                                                          \
	"end\n"                                                                                    \
	"local function assign(name, inst, propstr, now)\n"                                        \
	"  local sk = P_BOT .. name\n"                                                             \
	"  local s = hm(sk, 'lease', 'bot_id')\n"                                                  \
	"  if not s.bot_id or (s.lease and s.lease ~= '') then return nil end\n"                   \
	"  local props = props_set(propstr)\n"                                                     \
	"  local pk = P_PLATS .. inst\n"                                                           \
	"  local best, bestq, bests\n"                                                             \
	"  for _, plat in ipairs(redis.call('SMEMBERS', pk)) do\n"                                 \
	"    if matches(plat, props) then\n"                                                       \
	"      local qk = P_QUEUE .. inst .. ':' .. plat\n"                                        \
	"      local head = redis.call('ZRANGE', qk, 0, 0, 'WITHSCORES')\n"                        \
	"      if #head == 0 then\n"                                                               \
	"        redis.call('SREM', pk, plat)\n"                                                   \
	"      elseif not best or tonumber(head[2]) < bests then\n"                                \
	"        best, bestq, bests = head[1], qk, tonumber(head[2])\n"                            \
	"      end\n"                                                                              \
	"    end\n"                                                                                \
	"  end\n"                                                                                  \
	"  if not best then return nil end\n"                                                      \
	"  redis.call('ZREM', bestq, best)\n"                                                      \
	"  local jk = P_JOB .. best\n"                                                             \
	"  local f = hm(jk, 'timeout', 'bots', 'action')\n"                                        \
	"  local bots = s.bot_id\n"                                                                \
	"  if f.bots and f.bots ~= '' then bots = f.bots .. ',' .. s.bot_id end\n"                 \
	"  local dl = tonumber(now) + tonumber(f.timeout)\n"                                       \
	"  redis.call('HSET', jk, 'bot', name, 'lease', 'PENDING', 'assigned', now, 'bots', "      \
	"bots,\n"                                                                                  \
	"             'deadline', n2s(dl))\n"                                                      \
	"  redis.call('HINCRBY', jk, 'attempts', 1)\n"                                             \
	"  redis.call('ZADD', K_DEADLINES, n2s(dl), best)\n"                                       \
	"  redis.call('HSET', sk, 'lease', best)\n"                                                \
	"  return {best, f.action}\n"                                                              \
	"end\n"

/* KEYS[1] actionjob key, KEYS[2] op key.  ARGV: 1 instance, 2 action
 * "hash/size", 3 op name, 4 name for a new job, 5 priority, 6 platform,
 * 7 timeout (us), 8 do_not_cache (0/1), 9 max_attempts, 10 now,
 * 11 retention (s).  Joins the job in flight for the action unless
 * do_not_cache (re-queueing it at a better priority), else creates one.
 * Returns {job, stage, version, joined}. */
const char sched_lua_enqueue[] = PRELUDE
	"local inst, action, op, now = ARGV[1], ARGV[2], ARGV[3], ARGV[10]\n"
	"local prio = tonumber(ARGV[5])\n"
	"if ARGV[8] == '0' then\n"
	"  local j = redis.call('GET', KEYS[1])\n"
	"  if j then\n"
	"    local jk = P_JOB .. j\n"
	"    local f = hm(jk, 'stage', 'priority', 'queue', 'seq', 'do_not_cache')\n"
	"    if (f.stage == 'QUEUED' or f.stage == 'EXECUTING') and f.do_not_cache == '0' then\n"
	"      redis.call('HSET', KEYS[2], 'instance', inst, 'job', j, 'action', action,\n"
	"                 'created', now)\n"
	"      redis.call('SADD', jk .. ':ops', op)\n"
	"      redis.call('ZADD', P_OPS .. inst, now, op)\n"
	"      redis.call('HINCRBY', jk, 'ops', 1)\n"
	"      if f.stage == 'QUEUED' and prio < tonumber(f.priority) then\n"
	"        redis.call('HSET', jk, 'priority', ARGV[5])\n"
	"        redis.call('ZADD', f.queue, score(prio, f.seq), j)\n"
	"      end\n"
	"      return {j, f.stage, redis.call('HGET', jk, 'version'), 1}\n"
	"    end\n"
	"  end\n"
	"end\n"
	"local j = ARGV[4]\n"
	"local jk = P_JOB .. j\n"
	"local seq = redis.call('INCR', K_SEQ)\n"
	"local plat = ARGV[6]\n"
	"local qk = P_QUEUE .. inst .. ':' .. plat\n"
	"redis.call('HSET', jk, 'instance', inst, 'action', action, 'platform', plat, 'queue', "
	"qk,\n"
	"           'priority', ARGV[5], 'seq', seq, 'timeout', ARGV[7], 'stage', 'QUEUED',\n"
	"           'ops', 1, 'bot', '', 'lease', '', 'attempts', 0, 'max_attempts', ARGV[9],\n"
	"           'bots', '', 'queued', now, 'retention', ARGV[11], 'do_not_cache', ARGV[8],\n"
	"           'version', 1)\n"
	"redis.call('SADD', jk .. ':ops', op)\n"
	"if ARGV[8] == '0' then redis.call('SET', KEYS[1], j) end\n"
	"redis.call('HSET', KEYS[2], 'instance', inst, 'job', j, 'action', action, 'created', "
	"now)\n"
	"redis.call('ZADD', P_OPS .. inst, now, op)\n"
	"redis.call('ZADD', qk, score(prio, seq), j)\n"
	"redis.call('SADD', P_PLATS .. inst, plat)\n"
	"redis.call('PUBLISH', CH_QUEUE, inst .. '\\n' .. plat)\n"
	"return {j, 'QUEUED', '1', 0}\n";

/* KEYS[1] op key.  ARGV: 1 instance, 2 op name, 3 action, 4 now,
 * 5 retention (s), 6 serialized ActionResult.  An operation answered
 * from the action cache: born COMPLETED, no job. */
const char sched_lua_cached[] = PRELUDE
	"redis.call('HSET', KEYS[1], 'instance', ARGV[1], 'job', '', 'action', ARGV[3],\n"
	"           'created', ARGV[4], 'stage', 'COMPLETED', 'status', '0', 'message', '',\n"
	"           'cached', '1', 'result', ARGV[6])\n"
	"redis.call('ZADD', P_OPS .. ARGV[1], ARGV[4], ARGV[2])\n"
	"local ttl = tonumber(ARGV[5])\n"
	"retire(KEYS[1], tonumber(ARGV[4]) + ttl * 1000000, ttl)\n"
	"return 1\n";

/* ARGV: operation names.  Returns 9 values per operation: exists (1/0),
 * stage, status, message, result, cached, action, version, job.  An
 * operation that ended on its own (cache hit, cancelled) answers from its
 * own hash, the others from their job's. */
const char sched_lua_view[] = PRELUDE
	"local out, jobs = {}, {}\n"
	"for _, op in ipairs(ARGV) do\n"
	"  local o = hm(P_OP .. op, 'job', 'stage', 'status', 'message', 'result', 'cached',\n"
	"               'action')\n"
	"  local src, ver = nil, '0'\n"
	"  if o.action then\n"
	"    local jv = nil\n"
	"    if o.job and o.job ~= '' then\n"
	"      jv = jobs[o.job]\n"
	"      if not jv then\n"
	"        jv = hm(P_JOB .. o.job, 'stage', 'status', 'message', 'result', 'version')\n"
	"        jobs[o.job] = jv\n"
	"      end\n"
	"      ver = jv.version or '0'\n"
	"    end\n"
	"    if o.stage == 'COMPLETED' then src = o\n"
	"    elseif jv and jv.stage then src = jv end\n"
	"  end\n"
	"  if src then\n"
	"    table.insert(out, 1)\n"
	"    table.insert(out, src.stage)\n"
	"    table.insert(out, src.status or '0')\n"
	"    table.insert(out, src.message or '')\n"
	"    table.insert(out, src.result or '')\n"
	"    table.insert(out, o.cached or '0')\n"
	"    table.insert(out, o.action)\n"
	"    table.insert(out, ver)\n"
	"    table.insert(out, o.job or '')\n"
	"  else\n"
	"    for _ = 1, 9 do table.insert(out, '') end\n"
	"    out[#out - 8] = 0\n"
	"  end\n"
	"end\n"
	"return out\n";

/* KEYS[1] op key.  ARGV: 1 op name, 2 now.  Cancels one operation; the
 * job (and its lease) is cancelled once none of its operations is left.
 * Returns NOTFOUND, DONE (already finished) or CANCELLED. */
const char sched_lua_cancel[] =
	PRELUDE "local o = hm(KEYS[1], 'job', 'stage', 'instance')\n"
		"if not o.instance then return 'NOTFOUND' end\n"
		"if o.stage == 'COMPLETED' or not o.job or o.job == '' then return 'DONE' end\n"
		"local jk = P_JOB .. o.job\n"
		"local f = hm(jk, 'stage', 'retention')\n"
		"if not f.stage or f.stage == 'COMPLETED' then return 'DONE' end\n"
		"redis.call('HSET', KEYS[1], 'stage', 'COMPLETED', 'status', '1', 'message',\n"
		"           'operation cancelled by CancelOperation', 'cached', '0')\n"
		"local ttl = tonumber(f.retention)\n"
		"retire(KEYS[1], tonumber(ARGV[2]) + ttl * 1000000, ttl)\n"
		"if redis.call('HINCRBY', jk, 'ops', -1) <= 0 then\n"
		"  finish(o.job, ARGV[2], 1, 'job cancelled: every operation waiting on it was "
		"cancelled')\n"
		"else\n"
		"  bump(o.job)\n"
		"end\n"
		"return 'CANCELLED'\n";

/* KEYS[1] op key.  ARGV: 1 op name.  Forgets an operation without
 * cancelling its job.  Returns NOTFOUND or DELETED. */
const char sched_lua_delete[] =
	PRELUDE "local o = hm(KEYS[1], 'job', 'stage', 'instance')\n"
		"if not o.instance then return 'NOTFOUND' end\n"
		"redis.call('DEL', KEYS[1])\n"
		"redis.call('ZREM', P_OPS .. o.instance, ARGV[1])\n"
		"redis.call('ZREM', K_RETIRE, KEYS[1])\n"
		"if o.job and o.job ~= '' then\n"
		"  local jk = P_JOB .. o.job\n"
		"  redis.call('SREM', jk .. ':ops', ARGV[1])\n"
		"  local st = redis.call('HGET', jk, 'stage')\n"
		"  if st and st ~= 'COMPLETED' and o.stage ~= 'COMPLETED' then\n"
		"    redis.call('HINCRBY', jk, 'ops', -1)\n"
		"  end\n"
		"  if st then bump(o.job) end\n"
		"end\n"
		"return 'DELETED'\n";

/* ARGV: 1 instance, 2 offset, 3 page size, 4 stage ('' = any), 5 most
 * entries to scan.  Returns {next offset or -1, names...}.  Index
 * entries whose operation is gone are dropped on the way. */
const char sched_lua_list[] =
	PRELUDE "local ik = P_OPS .. ARGV[1]\n"
		"local off, want, scan = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])\n"
		"local names = redis.call('ZRANGE', ik, off, off + scan - 1)\n"
		"local out, n, gone = {'-1'}, 0, 0\n"
		"for i, op in ipairs(names) do\n"
		"  local o = hm(P_OP .. op, 'job', 'stage')\n"
		"  local stage = o.stage\n"
		"  if not stage and o.job and o.job ~= '' then\n"
		"    stage = redis.call('HGET', P_JOB .. o.job, 'stage')\n"
		"  end\n"
		"  if not o.job then\n"
		"    redis.call('ZREM', ik, op)\n"
		"    gone = gone + 1\n"
		"  elseif stage and (ARGV[4] == '' or stage == ARGV[4]) then\n"
		"    table.insert(out, op)\n"
		"    n = n + 1\n"
		"  end\n"
		"  if n == want then\n"
		"    out[1] = n2s(off + i - gone)\n"
		"    return out\n"
		"  end\n"
		"end\n"
		"if #names == scan then out[1] = n2s(off + #names - gone) end\n"
		"return out\n";

/* KEYS[1] session key.  ARGV: 1 session name, 2 instance, 3 bot_id,
 * 4 properties, 5 now, 6 expire, 7 status, 8 assign work (1/0).
 * Closes the bot's previous session (requeueing its lease) and opens
 * this one.  Returns {closed session or '', [job, action]}. */
const char sched_lua_bot_create[] = PRELUDE
	"local ik = P_BOTID .. ARGV[2] .. ':' .. ARGV[3]\n"
	"local old = redis.call('GET', ik)\n"
	"local closed = ''\n"
	"if old and close_session(old, ARGV[5], 'bot ' .. ARGV[3] .. ' opened a new session') "
	"then\n"
	"  closed = old\n"
	"end\n"
	"redis.call('HSET', KEYS[1], 'instance', ARGV[2], 'bot_id', ARGV[3], 'props', ARGV[4],\n"
	"           'status', ARGV[7], 'lease', '', 'expire', ARGV[6], 'created', ARGV[5],\n"
	"           'seen', ARGV[5])\n"
	"redis.call('ZADD', P_BOTS .. ARGV[2], ARGV[6], ARGV[1])\n"
	"redis.call('SET', ik, ARGV[1])\n"
	"redis.call('HINCRBY', P_BOTPROPS .. ARGV[2], ARGV[4], 1)\n"
	"if ARGV[8] == '1' then\n"
	"  local a = assign(ARGV[1], ARGV[2], ARGV[4], ARGV[5])\n"
	"  if a then return {closed, a[1], a[2]} end\n"
	"end\n"
	"return {closed}\n";

/* KEYS[1] session key.  ARGV: 1 session name, 2 bot_id, 3 now, 4 expire,
 * 5 status, 6 reported lease id ('' none), 7 its state (PENDING, ACTIVE,
 * COMPLETED, CANCELLED), 8 result code, 9 result message, 10 serialized
 * ActionResult ('' none), 11 assign work when idle (1/0).
 * Returns {'NOSESSION'} | {'BOTID', stored bot_id} |
 * {'OK', lease id, lease state, action, completed job, its action,
 *  its do_not_cache, instance}. */
const char sched_lua_bot_update[] = PRELUDE
	"local sk, name, now = KEYS[1], ARGV[1], ARGV[3]\n"
	"local s = hm(sk, 'instance', 'bot_id', 'lease', 'props')\n"
	"if not s.instance then return {'NOSESSION'} end\n"
	"if s.bot_id ~= ARGV[2] then\n"
	"  close_session(name, now, 'its session was used by another bot id')\n"
	"  return {'BOTID', s.bot_id}\n"
	"end\n"
	"redis.call('HSET', sk, 'expire', ARGV[4], 'seen', now, 'status', ARGV[5])\n"
	"redis.call('ZADD', P_BOTS .. s.instance, ARGV[4], name)\n"
	"local L = s.lease or ''\n"
	"local sid, sstate, saction = '', '', ''\n"
	"local dj, da, dd = '', '', ''\n"
	"if L ~= '' then\n"
	"  local jk = P_JOB .. L\n"
	"  local f = hm(jk, 'stage', 'bot', 'lease', 'action', 'do_not_cache')\n"
	"  if not f.stage or f.bot ~= name or f.lease == 'CANCELLED' then\n"
	"    redis.call('HSET', sk, 'lease', '')\n"
	"    sid, sstate = L, 'CANCELLED'\n"
	"  elseif ARGV[6] ~= L then\n"
	"    redis.call('HSET', sk, 'lease', '')\n"
	"    requeue(L, now, 'bot ' .. s.bot_id .. ' no longer reported its lease')\n"
	"  elseif ARGV[7] == 'ACTIVE' then\n"
	"    if f.lease == 'PENDING' then\n"
	"      redis.call('HSET', jk, 'lease', 'ACTIVE', 'stage', 'EXECUTING', 'started', now)\n"
	"      bump(L)\n"
	"    end\n"
	"    sid, sstate, saction = L, 'ACTIVE', f.action\n"
	"  elseif ARGV[7] == 'COMPLETED' then\n"
	"    redis.call('HSET', sk, 'lease', '')\n"
	"    redis.call('HSET', jk, 'lease', 'COMPLETED')\n"
	"    local res = ARGV[10]\n"
	"    if res == '' then res = nil end\n"
	"    finish(L, now, tonumber(ARGV[8]), ARGV[9], res)\n"
	"    dj, da, dd = L, f.action, f.do_not_cache\n"
	"  elseif ARGV[7] == 'CANCELLED' then\n"
	"    redis.call('HSET', sk, 'lease', '')\n"
	"    requeue(L, now, 'bot ' .. s.bot_id .. ' gave the lease up')\n"
	"  else\n"
	"    sid, sstate, saction = L, f.lease, f.action\n"
	"  end\n"
	"end\n"
	"if sid == '' and ARGV[11] == '1' then\n"
	"  local a = assign(name, s.instance, s.props, now)\n"
	"  if a then sid, sstate, saction = a[1], 'PENDING', a[2] end\n"
	"end\n"
	"return {'OK', sid, sstate, saction, dj, da, dd, s.instance}\n";

/* KEYS[1] session key.  ARGV: 1 session name, 2 now.  A long-polling
 * bot woke up: try to give it work.  Returns {'NOSESSION'} or
 * {'OK', [job, action]}. */
const char sched_lua_assign[] = PRELUDE "local s = hm(KEYS[1], 'instance', 'props')\n"
					"if not s.instance then return {'NOSESSION'} end\n"
					"local a = assign(ARGV[1], s.instance, s.props, ARGV[2])\n"
					"if a then return {'OK', a[1], a[2]} end\n"
					"return {'OK'}\n";

/* KEYS[1] session key.  ARGV: 1 session name, 2 job, 3 now.  A lease
 * that could not be delivered (the bot's call was gone) goes back to its
 * queue without counting an attempt.  Returns 1 when it did. */
const char sched_lua_unassign[] =
	PRELUDE "local jk = P_JOB .. ARGV[2]\n"
		"local f = hm(jk, 'bot', 'lease')\n"
		"if f.bot ~= ARGV[1] or f.lease ~= 'PENDING' then return 0 end\n"
		"redis.call('HSET', KEYS[1], 'lease', '')\n"
		"redis.call('HINCRBY', jk, 'attempts', -1)\n"
		"requeue(ARGV[2], ARGV[3], 'the lease could not be delivered')\n"
		"return 1\n";

/* ARGV: instance names.  Returns {"{instance}\n{platform}", count, ...}
 * for every non-empty queue: the safety net wakes that many bots. */
const char sched_lua_queued[] =
	PRELUDE "local out = {}\n"
		"for _, inst in ipairs(ARGV) do\n"
		"  for _, plat in ipairs(redis.call('SMEMBERS', P_PLATS .. inst)) do\n"
		"    local n = redis.call('ZCARD', P_QUEUE .. inst .. ':' .. plat)\n"
		"    if n > 0 then\n"
		"      table.insert(out, inst .. '\\n' .. plat)\n"
		"      table.insert(out, n)\n"
		"    end\n"
		"  end\n"
		"end\n"
		"return out\n";

/* ARGV: 1 now, 2 limit per kind, then pairs (instance, no-worker timeout
 * in us).  The periodic sweep: expired bot sessions are closed (leases
 * requeued), jobs past their action deadline fail with DEADLINE_EXCEEDED,
 * queued jobs no connected bot can run fail after the no-worker timeout,
 * finished operations and jobs past retention are removed.  Returns
 * {closed sessions, timed out, no worker, removed, session names...}. */
const char sched_lua_sweep[] = PRELUDE
	"local now, lim = ARGV[1], tonumber(ARGV[2])\n"
	"local closed, timedout, nowork, removed = {}, 0, 0, 0\n"
	"for i = 3, #ARGV, 2 do\n"
	"  local inst, nwt = ARGV[i], tonumber(ARGV[i + 1])\n"
	"  local bk = P_BOTS .. inst\n"
	"  for _, name in ipairs(redis.call('ZRANGEBYSCORE', bk, '-inf', now, 'LIMIT', 0, lim)) "
	"do\n"
	"    local bid = redis.call('HGET', P_BOT .. name, 'bot_id') or '?'\n"
	"    close_session(name, now, 'the session of bot ' .. bid .. ' expired')\n"
	"    redis.call('ZREM', bk, name)\n"
	"    table.insert(closed, name)\n"
	"  end\n"
	"  local props = {}\n"
	"  for _, p in ipairs(redis.call('HKEYS', P_BOTPROPS .. inst)) do\n"
	"    table.insert(props, props_set(p))\n"
	"  end\n"
	"  for _, plat in ipairs(redis.call('SMEMBERS', P_PLATS .. inst)) do\n"
	"    local served = false\n"
	"    for _, p in ipairs(props) do\n"
	"      if matches(plat, p) then served = true break end\n"
	"    end\n"
	"    if not served then\n"
	"      local shown = plat\n"
	"      if shown == '' then shown = '(no properties)' end\n"
	"      for _, j in ipairs(redis.call('ZRANGE', P_QUEUE .. inst .. ':' .. plat, 0, lim - "
	"1)) do\n"
	"        local q = tonumber(redis.call('HGET', P_JOB .. j, 'queued') or '0')\n"
	"        if q + nwt <= tonumber(now) then\n"
	"          finish(j, now, 9, 'no bot that can run platform ' .. shown ..\n"
	"                 ' is connected to instance \"' .. inst .. '\" (waited ' ..\n"
	"                 string.format('%.1f', nwt / 1000000) .. 's, the no-worker-timeout)')\n"
	"          nowork = nowork + 1\n"
	"        end\n"
	"      end\n"
	"    end\n"
	"  end\n"
	"end\n"
	"for _, j in ipairs(redis.call('ZRANGEBYSCORE', K_DEADLINES, '-inf', now, 'LIMIT', 0, "
	"lim)) do\n"
	"  local f = hm(P_JOB .. j, 'timeout', 'bots')\n"
	"  local secs = string.format('%.1f', tonumber(f.timeout or '0') / 1000000)\n"
	"  local last = string.match(f.bots or '', '([^,]*)$') or '?'\n"
	"  if not finish(j, now, 4, 'action timed out after ' .. secs .. 's on bot ' .. last) "
	"then\n"
	"    redis.call('ZREM', K_DEADLINES, j)\n"
	"  end\n"
	"  timedout = timedout + 1\n"
	"end\n"
	"for _, k in ipairs(redis.call('ZRANGEBYSCORE', K_RETIRE, '-inf', now, 'LIMIT', 0, lim)) "
	"do\n"
	"  if string.sub(k, 1, #P_OP) == P_OP then\n"
	"    local inst = redis.call('HGET', k, 'instance')\n"
	"    if inst then redis.call('ZREM', P_OPS .. inst, string.sub(k, #P_OP + 1)) end\n"
	"  end\n"
	"  redis.call('DEL', k)\n"
	"  redis.call('ZREM', K_RETIRE, k)\n"
	"  removed = removed + 1\n"
	"end\n"
	"local out = {#closed, timedout, nowork, removed}\n"
	"for _, c in ipairs(closed) do table.insert(out, c) end\n"
	"return out\n";
