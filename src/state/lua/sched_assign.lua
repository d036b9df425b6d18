-- sched_assign.lua - a long-polling bot woke up: try to give it work.
-- Runs after sched_prelude.lua.
-- KEYS: 3 bot:{session}.
-- ARGV: 1 session name, 2 now.
-- Returns {'NOSESSION'} or {'OK', [job, action]}.
local s = hm(KEYS[3], 'instance', 'props')
if not s.instance then return {'NOSESSION'} end
local a = assign(ARGV[1], s.instance, s.props, ARGV[2])
if a then return {'OK', a[1], a[2]} end
return {'OK'}
