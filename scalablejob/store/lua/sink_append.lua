-- Append one entry to an output queue. KEYS: stream, counter, the service's queue limits, the stream's clock;
-- ARGV: data, tags, now, the default maximum length, the default maximum age, checkpoints per maximum age.
-- A worker's write also names its request's state hash (KEYS[5]) and its delivery's attempt (ARGV[7]): a stale
-- delivery's entry is refused (fence.lua) and 0 returned.
-- The entry's stream id is <index>-0, the index bumped in the same call: monotonic and never reused. The oldest
-- entries are evicted beyond the maximum length (approximately: whole nodes at a time) and beyond the maximum age
-- (trim_to_max_age, from sink_retention.lua, which comes before this script).
if KEYS[5] and stale(KEYS[5], ARGV[7]) then return 0 end
local index = redis.call('INCR', KEYS[2])
local limits = redis.call('HMGET', KEYS[3], 'sink_max_length', 'sink_max_age_s')
redis.call('XADD', KEYS[1], 'MAXLEN', '~', limits[1] or ARGV[4], index .. '-0', 'data', ARGV[1], 'tags', ARGV[2])
trim_to_max_age(KEYS[1], KEYS[4], index, tonumber(ARGV[3]), tonumber(limits[2] or ARGV[5]), tonumber(ARGV[6]))
return index
