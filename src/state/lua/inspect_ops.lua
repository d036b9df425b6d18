-- inspect_ops.lua - an instance's operations for people, newest first
-- (domain/inspect.c; read-only: entries of operations that are gone are
-- skipped, not dropped).  Runs after sched_prelude.lua.
-- KEYS: 3 ops:{instance}.
-- ARGV: 1 most rows, 2 stage ('' = any), 3 most index entries to walk.
-- Returns {truncated (1/0), row...}; a row is {name, stage, action, job,
-- owner, bot_id, session, created, queued, started, completed, cached,
-- status, message, result}.
local want, stage, scan = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local names = redis.call('ZREVRANGE', KEYS[3], 0, scan - 1)
local out, n = {0}, 0
for i, op in ipairs(names) do
  local o = hm(P_OP .. op, 'job', 'stage', 'status', 'message', 'result', 'cached', 'action',
               'owner', 'created')
  if o.action then
    local j = {}
    if o.job and o.job ~= '' then
      j = hm(P_JOB .. o.job, 'stage', 'status', 'message', 'result', 'bot', 'bots', 'queued',
             'started', 'completed')
    end
    local src = j
    if o.stage == 'COMPLETED' or not j.stage then src = o end
    local st = src.stage or o.stage
    if st and (stage == '' or st == stage) then
      if n == want then
        out[1] = 1
        return out
      end
      local bot = string.match(j.bots or '', '([^,]*)$') or ''
      table.insert(out, {op, st, o.action, o.job or '', o.owner or '', bot, j.bot or '',
                         o.created or '0', j.queued or '0', j.started or '0',
                         j.completed or '0', o.cached or '0', src.status or '0',
                         src.message or '', src.result or ''})
      n = n + 1
    end
  end
end
if #names == scan and redis.call('ZCARD', KEYS[3]) > scan then out[1] = 1 end
return out
