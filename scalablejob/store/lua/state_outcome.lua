-- What a client waiting for a request reads, in one call: the front end's output queue's last index (read first, so
-- an entry appended after it shows to a wait from there), the request's state hash, and, once it has ended, its
-- final entry (empty if none, or already deleted). KEYS: output queue counter, state hash, output queue stream.
local last = redis.call('GET', KEYS[1]) or '0'
local state = redis.call('HGETALL', KEYS[2])
local entry = {}
local status = redis.call('HGET', KEYS[2], 'status')
local index = redis.call('HGET', KEYS[2], 'result_index')
if index and (status == 'done' or status == 'failed' or status == 'cancelled') then
  entry = redis.call('XRANGE', KEYS[3], index .. '-0', index .. '-0')
end
return {last, state, entry}
