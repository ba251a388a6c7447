-- Append one entry to an output queue. KEYS: stream, counter; ARGV: data, tags.
-- The entry's stream id is <index>-0, the index bumped in the same call: monotonic and never reused.
local index = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], index .. '-0', 'data', ARGV[1], 'tags', ARGV[2])
return index
