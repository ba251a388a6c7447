-- Append entries to an output queue, in order. KEYS: stream, counter, the service's queue limits, the stream's
-- clock, its eviction mark, and, for a worker's write, its request's state hash; ARGV: now, the default maximum
-- length, the default maximum age, checkpoints per maximum age, the writing delivery's attempt ('' for none), then
-- data and tags of each entry. A stale delivery's entries are refused (fence.lua) and 0 returned; otherwise the
-- index of the first entry. One call for many entries (a job's lines as its writer finds them queued) checks the
-- fence, bumps the counter and keeps the limits once.
-- Each entry's stream id is <index>-0, the indexes bumped in the same call: monotonic and never reused. The queue
-- is kept to its maximum length (trim_to_max_length: the oldest entries that are not a request's final entry go)
-- and maximum age (trim_to_max_age); both come from sink_retention.lua, which comes before this script.
if KEYS[6] and stale(KEYS[6], ARGV[5]) then return 0 end
local count = (#ARGV - 5) / 2
local last = redis.call('INCRBY', KEYS[2], count)
local first = last - count + 1
for i = 0, count - 1 do
  redis.call('XADD', KEYS[1], (first + i) .. '-0', 'data', ARGV[6 + 2 * i], 'tags', ARGV[7 + 2 * i])
end
local limits = redis.call('HMGET', KEYS[3], 'sink_max_length', 'sink_max_age_s')
trim_to_max_length(KEYS[1], KEYS[5], tonumber(limits[1] or ARGV[2]))
trim_to_max_age(KEYS[1], KEYS[4], last, tonumber(ARGV[1]), tonumber(limits[2] or ARGV[3]), tonumber(ARGV[4]))
return first
