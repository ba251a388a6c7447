-- Append a request's final entry and end its state in one step.
-- KEYS: output queue stream, its counter, state hash, the front end's input stream, the service's queue limits,
-- the output queue's clock, kombu's unacked hash and its index, the output queue's eviction mark, the service's
-- activity counters, timings list and newest failures (scalablejob.model.history).
-- ARGV: data, tags, now, the output queue's default maximum length and maximum age, checkpoints per maximum age,
-- the prefix of the input index keys, the writing delivery's attempt ('' for none), '1' to write nothing if a
-- cancel was asked meanwhile ('' otherwise), the delivery tag of the request's message ('' for none), the caps of
-- the timings list and of the failures list, field, value, ...
-- With a delivery tag, the message is acknowledged (removed from kombu's unacked hash and index, as kombu's ack
-- does) in the same step as the final entry is written: the worker's own ack then has nothing left to do in Redis.
-- Returns the entry's index, or 0 when nothing was written: the request has ended already (one final entry, never
-- two) or the writing delivery is stale (fence.lua); -2 when a cancel was asked and ARGV[9] said to check it (the
-- caller then ends it cancelled: a result nobody wants any more, without a round trip to ask first).
-- The entry's index is stored in the hash as result_index, so a reader never sees a result whose request state is
-- not final yet. A hash that no longer exists (expired, discarded) is left alone rather than recreated half-empty.
-- The request (by the index in its hash) leaves the input stream in the same step: never both finished and waiting.
-- The entry carries the field final, which only this script writes: eviction by length passes it over (a client's
-- own entry tagged type=result is not a request's final entry).
-- The output queue is kept to its maximum length and age as sink_append.lua keeps it (trim_to_max_length and
-- trim_to_max_age come from sink_retention.lua, before this script); the state and its input index key expire after
-- the same maximum age, so a request is forgotten with its result. (The index key is named from the hash, not
-- passed: standalone Redis.)
-- A finish is counted (a failure too, its id pushed on the newest failures), and its run time (now - started at)
-- pushed on the timings list, both kept to their caps (push_capped, from capped_list.lua before this script), for
-- the dashboard. With no timings cap (ARGV[11] '') the caller counts the finish itself (a worker's ActivityTally):
-- only a failure's id is pushed here, and a write returns {index, started at, 1 if the state existed else 0}
-- instead of the index, so the caller knows the run time and whether a failure counts (as it does here: only with
-- its state).
-- The hash is read once (one HMGET for what the checks and the dashboard need) and written once; every state hash
-- has a status, so none means there is no hash.
local state = redis.call('HMGET', KEYS[3], 'status', 'attempt', 'cancel_requested', 'index', 'started_at',
                         'request_id')
local exists = state[1] ~= false
if state[1] == 'done' or state[1] == 'failed' or state[1] == 'cancelled' then return 0 end
if is_stale(state[2], ARGV[8]) then return 0 end
if ARGV[9] == '1' and state[3] == '1' then return -2 end
local index = redis.call('INCR', KEYS[2])
local limits = redis.call('HMGET', KEYS[5], 'sink_max_length', 'sink_max_age_s')
local max_age = tonumber(limits[2] or ARGV[5])
redis.call('XADD', KEYS[1], index .. '-0', 'data', ARGV[1], 'tags', ARGV[2], 'final', '1')
trim_to_max_length(KEYS[1], KEYS[9], tonumber(limits[1] or ARGV[4]))
trim_to_max_age(KEYS[1], KEYS[6], index, tonumber(ARGV[3]), max_age, tonumber(ARGV[6]))
local counted = ARGV[11] ~= ''
if counted then redis.call('HINCRBY', KEYS[10], 'finished', 1) end
if exists then
  redis.call('HSET', KEYS[3], 'result_index', index, unpack(ARGV, 13))
  redis.call('EXPIRE', KEYS[3], max_age)
  local input = state[4]
  if input then
    redis.call('XDEL', KEYS[4], input .. '-0')
    redis.call('EXPIRE', ARGV[7] .. input, max_age)
  end
  if counted and state[5] then
    local run = math.max(0, tonumber(ARGV[3]) - tonumber(state[5]))
    push_capped(KEYS[11], 'r' .. string.format('%.3f', run), tonumber(ARGV[11]))
  end
  local status = state[1]
  for i = 13, #ARGV - 1, 2 do
    if ARGV[i] == 'status' then status = ARGV[i + 1] end
  end
  if status == 'failed' then
    if counted then redis.call('HINCRBY', KEYS[10], 'failed', 1) end
    push_capped(KEYS[12], state[6], tonumber(ARGV[12]))
  end
end
if ARGV[10] ~= '' then
  redis.call('HDEL', KEYS[7], ARGV[10])
  redis.call('ZREM', KEYS[8], ARGV[10])
end
if not counted then return {index, state[5], exists and 1 or 0} end
return index
