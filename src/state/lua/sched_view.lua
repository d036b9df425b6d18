-- sched_view.lua - what clients see of some operations.  An operation
-- that ended on its own (cache hit, cancelled) answers from its own hash,
-- the others from their job's (found at run time).  Runs after
-- sched_prelude.lua.
-- KEYS: 3... op:{operation}, one per operation.
-- Returns 11 values per operation: exists (1/0), stage, status, message,
-- result, cached, action, version, job, owner ('' when none was
-- recorded), instance.
local out, jobs = {}, {}
for i = 3, #KEYS do
  local o = hm(KEYS[i], 'job', 'stage', 'status', 'message', 'result', 'cached', 'action',
               'owner', 'instance')
  local src, ver = nil, '0'
  if o.action then
    local jv = nil
    if o.job and o.job ~= '' then
      jv = jobs[o.job]
      if not jv then
        jv = hm(P_JOB .. o.job, 'stage', 'status', 'message', 'result', 'version')
        jobs[o.job] = jv
      end
      ver = jv.version or '0'
    end
    if o.stage == 'COMPLETED' then src = o
    elseif jv and jv.stage then src = jv end
  end
  if src then
    table.insert(out, 1)
    table.insert(out, src.stage)
    table.insert(out, src.status or '0')
    table.insert(out, src.message or '')
    table.insert(out, src.result or '')
    table.insert(out, o.cached or '0')
    table.insert(out, o.action)
    table.insert(out, ver)
    table.insert(out, o.job or '')
    table.insert(out, o.owner or '')
    table.insert(out, o.instance or '')
  else
    for _ = 1, 11 do table.insert(out, '') end
    out[#out - 10] = 0
  end
end
return out
