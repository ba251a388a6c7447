-- A worker starts a delivery of a request (KEYS[1]: state hash). ARGV: worker, started at.
-- Returns the delivery's attempt number, 0 if the request is gone (expired, discarded), -1 if it has ended, -2 if
-- it was cancelled while queued (it must not run; nothing is changed). One call, so a task starts in one round trip.
-- The bump fences every earlier delivery (fence.lua): from now on only this one writes.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local status = redis.call('HMGET', KEYS[1], 'status', 'cancel_requested')
if status[1] == 'done' or status[1] == 'failed' or status[1] == 'cancelled' then return -1 end
if status[2] == '1' then return -2 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[2])
return attempt
