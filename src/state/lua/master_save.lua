-- master_save.lua - record a master's held build: taken, a step started,
-- its operation named, a step ended (keys.c, "The build master").  The
-- held set and the build's hash change together, and a build already
-- released is never brought back by a late write.
-- KEYS[1]  master:{name}              (set of held build ids)
-- KEYS[2]  master:{name}:build:{id}   (hash)
-- KEYS[3]  mstep:{id}:{n}             (hash; optional)
-- ARGV[1]  build id
-- ARGV[2]  "new" (the lease was just taken) or "update"
-- ARGV[3]  number N of field/value pairs for KEYS[2]
-- ARGV[4 .. 3+2N]  those pairs; the rest: field/value pairs for KEYS[3]
-- Returns 1, or 0 when an update found the build released.
if ARGV[2] ~= 'new' and redis.call('EXISTS', KEYS[2]) == 0 then
	return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
local n = tonumber(ARGV[3])
local i = 4
if n > 0 then
	local kv = {}
	for k = i, i + 2 * n - 1 do
		kv[#kv + 1] = ARGV[k]
	end
	redis.call('HSET', KEYS[2], unpack(kv))
end
i = i + 2 * n
if KEYS[3] and #ARGV > i then
	local kv = {}
	for k = i, #ARGV do
		kv[#kv + 1] = ARGV[k]
	end
	redis.call('HSET', KEYS[3], unpack(kv))
	redis.call('PERSIST', KEYS[3])
end
return 1
