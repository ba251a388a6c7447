-- A new queued request (0 if its id is in use, -1 if its front end's input queue is full). KEYS: state hash,
-- input index counter, the front end's input stream, the front end's output queue counter, the service's queue
-- limits. ARGV: request id, task type, queued at, front end ('' for the service's own), data, tags, the input
-- queue's default maximum length, the prefix of the input index keys, the Celery task name ('' for the generic task
-- of its type), the Celery message ('' for none), the task-sent channel, the protocol version it is written in
-- (scalablejob.model.protocol; a state without one was written by a release before versions). KEYS[6]: the set of the service's input
-- streams, which gets this front end's; KEYS[7]: the Redis list of the request's queue and priority.
-- The Celery message (scalablejob.transport.message) is pushed on that list in the same call, and its queue's name
-- published on the task-sent channel, so a put is one round trip and the request is queued exactly when recorded.
-- The request is mirrored into its front end's input stream under id <index>-0, so the queue protocol can read,
-- watch and count waiting requests; the final append (state_finish.lua) removes it again.
-- The key <prefix><index> holds the request id, so the request is found by its index; state_finish.lua gives it
-- the finished state's expiry. (It is named here, not passed, as only this script knows the index: standalone Redis.)
-- `sink_from` is the last index of the front end's output queue now: every entry of this request comes after it,
-- so a search of the output queue by request id starts there instead of at the beginning.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local max_length = tonumber(redis.call('HGET', KEYS[5], 'input_max_length') or ARGV[7])
if redis.call('XLEN', KEYS[3]) >= max_length then return -1 end
local index = redis.call('INCR', KEYS[2])
local fields = {'request_id', ARGV[1], 'index', index, 'task_type', ARGV[2], 'status', 'queued', 'queued_at', ARGV[3],
                'sink_from', redis.call('GET', KEYS[4]) or 0, 'protocol', ARGV[12]}
if ARGV[4] ~= '' then table.insert(fields, 'frontend'); table.insert(fields, ARGV[4]) end
if ARGV[9] ~= '' then table.insert(fields, 'task'); table.insert(fields, ARGV[9]) end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SADD', KEYS[6], KEYS[3])
redis.call('SET', ARGV[8] .. index, ARGV[1])
redis.call('XADD', KEYS[3], index .. '-0', 'data', ARGV[5], 'tags', ARGV[6])
if ARGV[10] ~= '' then
  redis.call('LPUSH', KEYS[7], ARGV[10])
  redis.call('PUBLISH', ARGV[11], KEYS[7])
end
return index
