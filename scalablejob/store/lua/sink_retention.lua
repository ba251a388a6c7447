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

-- Whether the fields of an output queue entry are a request's final entry: state_finish.lua alone writes the field
-- final (tags are the writer's to choose: a client may post type=result itself).
local function is_final_entry(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'final' then return true end
  end
  return false
end

-- Keep an output queue to its maximum length without evicting a request's final entry (its result or error, which
-- a client may not have read yet): past the length, the oldest other entries (log, progress, entries posted to the
-- queue) go. `evicted` holds the stream id of the newest entry looked at so far; the search goes on after it, so
-- each entry is looked at once however many final entries it passes, and one call evicts at most 1 000 (a lowered
-- limit is reached over a few appends). Once only final entries remain before the newest, the newest other
-- entries go as they come: a queue full of unread results takes no more log lines.
local function trim_to_max_length(stream, evicted, max_length)
  local excess = redis.call('XLEN', stream) - max_length
  if excess <= 0 then return end
  local after = redis.call('GET', evicted)
  local from = after and ('(' .. after) or '-'
  local looked = nil
  for _, item in ipairs(redis.call('XRANGE', stream, from, '+', 'COUNT', math.min(excess, 1000) + 100)) do
    if not is_final_entry(item[2]) then
      redis.call('XDEL', stream, item[1])
      excess = excess - 1
    end
    looked = item[1]
    if excess <= 0 then break end
  end
  if looked then redis.call('SET', evicted, looked) end
end
