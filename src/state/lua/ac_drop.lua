-- ac_drop.lua - drop an action cache entry only if it still holds the
-- result that was judged stale, so a fresh update racing with the drop
-- survives.
-- KEYS[1]  the entry (ac:{instance}:{hash}-{size})
-- ARGV[1]  the serialized ActionResult that was checked
-- Returns 1 when the entry was deleted, 0 when it changed or is gone.
if redis.call('HGET', KEYS[1], 'result') == ARGV[1] then
	return redis.call('DEL', KEYS[1])
end
return 0
