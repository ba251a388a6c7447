-- Append a request's final entry and end its state in one step.
-- KEYS: output queue stream, its counter, state hash, the front end's input stream.
-- ARGV: data, tags, ttl, field, value, ...
-- The entry's index is stored in the hash as result_index, so a reader never sees a result whose request state is
-- not final yet. A hash that no longer exists (expired, discarded) is left alone rather than recreated half-empty.
-- The request (by the index in its hash) leaves the input stream in the same step: never both finished and waiting.
local index = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], index .. '-0', 'data', ARGV[1], 'tags', ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('HSET', KEYS[3], 'result_index', index, unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  local input = redis.call('HGET', KEYS[3], 'index')
  if input then redis.call('XDEL', KEYS[4], input .. '-0') end
end
return index
