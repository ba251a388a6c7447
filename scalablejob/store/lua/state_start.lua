-- A worker starts a delivery of a request (KEYS[1]: state hash). ARGV: worker, started at, the timings list's cap.
-- KEYS[2], KEYS[3]: the service's activity counters and timings list (scalablejob.model.history): a start is
-- counted, and its wait (started at - queued at) pushed on the list, kept to its cap, for the dashboard. With no cap
-- ('') the caller counts the start itself (a worker's ActivityTally): nothing is counted here, and a start returns
-- {attempt, queued at} instead of the attempt, so the caller knows the wait.
-- Returns the delivery's attempt number, 0 if the request is gone (expired, discarded), -1 if it has ended, -2 if
-- it was cancelled while queued (it must not run; nothing is changed). One call, so a task starts in one round trip;
-- it reads the hash once and writes it once (every state hash has a status: none means there is no hash).
-- The bump fences every earlier delivery (fence.lua): from now on only this one writes.
-- With KEYS[4], KEYS[5] (kombu's unacked index and hash) and ARGV[4..6] (delivery tag, delivered at, the message as
-- kombu stores it), the message the request was taken from is first recorded as unacknowledged, as
-- unacked_record.lua records it, whatever the start then finds: a worker that takes a message records it in the
-- same round trip as it starts its task (scalablejob.transport.acks.FinishAcks).
if KEYS[5] then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
  redis.call('HSET', KEYS[5], ARGV[4], ARGV[6])
end
local state = redis.call('HMGET', KEYS[1], 'status', 'cancel_requested', 'queued_at', 'attempt')
if not state[1] then return 0 end
if state[1] == 'done' or state[1] == 'failed' or state[1] == 'cancelled' then return -1 end
if state[2] == '1' then return -2 end
local attempt = (tonumber(state[4]) or 0) + 1
redis.call('HSET', KEYS[1], 'attempt', attempt, 'status', 'running', 'worker', ARGV[1], 'started_at', ARGV[2])
if ARGV[3] == '' then return {attempt, state[3]} end
redis.call('HINCRBY', KEYS[2], 'started', 1)
local queued = tonumber(state[3])
if queued then
  push_capped(KEYS[3], 'w' .. string.format('%.3f', math.max(0, tonumber(ARGV[2]) - queued)), tonumber(ARGV[3]))
end
return attempt
