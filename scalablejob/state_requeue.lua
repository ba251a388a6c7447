-- Back to queued (KEYS[1]: state hash) with a reason (ARGV[1]); returns how often it was requeued.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'message', ARGV[1])
redis.call('HDEL', KEYS[1], 'worker', 'started_at')
return redis.call('HINCRBY', KEYS[1], 'retries', 1)
