-- Set fields of a request's state (KEYS[1]): ARGV: field, value, ...
-- Updates never recreate a request that is gone (expired, discarded): they touch only an existing hash.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
