-- master_drop.lua - a master lets go of a build (reported, lease lost,
-- reset, or found expired on restart): it leaves the held set, its hash
-- goes, and its step records stay readable for a while.
-- KEYS[1]  master:{name}
-- KEYS[2]  master:{name}:build:{id}
-- KEYS[3..]  mstep:{id}:{n} for every step of its builder
-- ARGV[1]  build id
-- ARGV[2]  seconds the step records are kept
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
for k = 3, #KEYS do
	if redis.call('EXISTS', KEYS[k]) == 1 then
		redis.call('EXPIRE', KEYS[k], ARGV[2])
	end
end
return 1
