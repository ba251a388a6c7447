-- A worker starts a delivery of a request (KEYS[1]: state hash). ARGV: worker, started at, the timings list's cap.
-- KEYS[2], KEYS[3]: the service's activity counters and timings list (scalablejob.model.history): a start is
-- counted, and its wait (started at - queued at) pushed on the list, kept to its cap, for the dashboard.
-- Returns the delivery's attempt number, 0 if the request is gone (expired, discarded), -1 if it has ended, -2 if
-- it was cancelled while queued (it must not run; nothing is changed). One call, so a task starts in one round trip.
-- The bump fences every earlier delivery (fence.lua): from now on only this one writes.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local status = redis.call('HMGET', KEYS[1], 'status', 'cancel_requested', 'queued_at')
if status[1] == 'done' or status[1] == 'failed' or status[1] == 'cancelled' then return -1 end
if status[2] == '1' then return -2 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[2])
local queued = tonumber(status[3])
redis.call('HINCRBY', KEYS[2], 'started', 1)
if queued then
  redis.call('LPUSH', KEYS[3], 'w' .. string.format('%.3f', math.max(0, tonumber(ARGV[2]) - queued)))
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[3]) - 1)
end
return attempt
