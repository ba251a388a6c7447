-- Append one entry to an output queue. KEYS: stream, counter, the service's queue limits, the stream's clock, its
-- eviction mark; ARGV: data, tags, now, the default maximum length, the default maximum age, checkpoints per
-- maximum age. A worker's write also names its request's state hash (KEYS[6]) and its delivery's attempt (ARGV[7]):
-- a stale delivery's entry is refused (fence.lua) and 0 returned.
-- The entry's stream id is <index>-0, the index bumped in the same call: monotonic and never reused. The queue is
-- kept to its maximum length (trim_to_max_length: the oldest entries that are not a request's final entry go) and
-- maximum age (trim_to_max_age); both come from sink_retention.lua, which comes before this script.
if KEYS[6] and stale(KEYS[6], ARGV[7]) then return 0 end
local index = redis.call('INCR', KEYS[2])
local limits = redis.call('HMGET', KEYS[3], 'sink_max_length', 'sink_max_age_s')
redis.call('XADD', KEYS[1], index .. '-0', 'data', ARGV[1], 'tags', ARGV[2])
trim_to_max_length(KEYS[1], KEYS[5], tonumber(limits[1] or ARGV[4]))
trim_to_max_age(KEYS[1], KEYS[4], index, tonumber(ARGV[3]), tonumber(limits[2] or ARGV[5]), tonumber(ARGV[6]))
return index
