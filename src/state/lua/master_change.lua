-- master_change.lua - record a build's change once per (id, revision) and
-- hand back the recorded form, so every build naming it sees the same
-- change (keys.c, "The build master").
-- KEYS[1]  mchange:{id}:{revision}
-- ARGV[1]  change id    ARGV[2]  revision    ARGV[3]  the change as JSON
-- ARGV[4]  build id     ARGV[5]  now (microseconds since the epoch)
-- Returns the recorded JSON.
if redis.call('EXISTS', KEYS[1]) == 0 then
	redis.call('HSET', KEYS[1], 'id', ARGV[1], 'revision', ARGV[2], 'json', ARGV[3],
		'first_build', ARGV[4], 'created', ARGV[5], 'builds', 0)
end
redis.call('HINCRBY', KEYS[1], 'builds', 1)
redis.call('HSET', KEYS[1], 'last_build', ARGV[4])
return redis.call('HGET', KEYS[1], 'json')
