-- Set fields of a request's state (KEYS[1]). ARGV: the writing delivery's attempt ('' for none), field, value, ...
-- Updates never recreate a request that is gone (expired, discarded): they touch only an existing hash; a stale
-- delivery's update is refused (fence.lua). Returns 1 when written.
if redis.call('EXISTS', KEYS[1]) == 0 or stale(KEYS[1], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
