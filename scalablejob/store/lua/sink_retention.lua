-- Keep an output queue to its maximum age: the function the scripts that append to it (sink_append.lua,
-- state_finish.lua) start with, as a script cannot call another. The design is in scalablejob/store/sink.py.
-- stream, clock: the queue and its checkpoints; index: the entry just appended, at `now` (seconds, from the
-- caller: a script reads no clock); max_age: seconds; checkpoints: how many checkpoints one max_age holds.
-- At most once per max_age / checkpoints, the entry is recorded as a checkpoint, and every entry before the newest
-- checkpoint at least max_age old is trimmed, with that checkpoint and the ones before it.
local function trim_to_max_age(stream, clock, index, now, max_age, checkpoints)
  local newest = redis.call('ZREVRANGE', clock, 0, 0, 'WITHSCORES')
  if newest[2] and now < tonumber(newest[2]) + max_age / checkpoints then return end
  redis.call('ZADD', clock, now, index)
  local old = redis.call('ZREVRANGEBYSCORE', clock, now - max_age, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if old[1] then
    redis.call('XTRIM', stream, 'MINID', (tonumber(old[1]) + 1) .. '-0')
    redis.call('ZREMRANGEBYSCORE', clock, '-inf', old[2])
  end
end
