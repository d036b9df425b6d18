-- ac_hit.lua - count a cache hit and extend the entry's life to the
-- retention again, without resurrecting an entry that was dropped
-- meanwhile (HINCRBY alone would create a hash holding only `hits`).
-- KEYS[1]  the entry (ac:{instance}:{hash}-{size})
-- ARGV[1]  the retention in milliseconds (action-cache.retention)
-- Returns the new hit count, or 0 when the entry is gone.
if redis.call('EXISTS', KEYS[1]) == 1 then
	redis.call('PEXPIRE', KEYS[1], ARGV[1])
	return redis.call('HINCRBY', KEYS[1], 'hits', 1)
end
return 0
