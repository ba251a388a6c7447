-- Back to queued (KEYS[1]: state hash) with a reason (ARGV[1]); ARGV[2]: the attempt of the delivery that gives it
-- back ('' when the scaler or the reconciler does, for a delivery that is dead or lost).
-- Returns how often it was requeued; 0 (and no change) if it is gone, has ended, or the delivery is stale.
-- The attempt is bumped: whatever the old delivery still writes is refused from now on (fence.lua).
if redis.call('EXISTS', KEYS[1]) == 0 or stale(KEYS[1], ARGV[2]) then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' or status == 'cancelled' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'message', ARGV[1])
redis.call('HDEL', KEYS[1], 'worker', 'started_at')
return redis.call('HINCRBY', KEYS[1], 'retries', 1)
