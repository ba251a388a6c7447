-- Forget consumer ARGV[2] of group ARGV[1] if nothing is pending for it: a consumer is dropped only once empty.
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
