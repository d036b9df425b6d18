-- ac_put.lua - store an action cache entry whole and (re)start its life:
-- one HSET of the result and its readable fields, then PEXPIRE to the
-- retention (action-cache.retention), in one step so no entry is ever
-- left without an expiry.
-- KEYS[1]  the entry (ac:{instance}:{hash}-{size})
-- ARGV[1]  the retention in milliseconds
-- ARGV[2...] field, value pairs
-- Returns 1.
local f = {}
for i = 2, #ARGV do f[#f + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(f))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
