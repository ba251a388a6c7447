-- Renew front-end process ARGV[1]'s lease (key ARGV[2]..id, ARGV[3] ms, value ARGV[5]) and sweep the records of
-- every process whose lease is gone: the watchers it still holds (its set, key ARGV[4]..id), its counts, its id.
-- KEYS: the set of process ids, the watchers hash, the per-process counts hash.
-- Returns 1 if the lease was still there, 0 if it had lapsed (this process may have been swept: it registers again).
local lease = ARGV[2] .. ARGV[1]
local kept = redis.call('EXISTS', lease)
redis.call('SET', lease, ARGV[5], 'PX', ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
for _, instance in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[2] .. instance) == 0 then
    local held = ARGV[4] .. instance
    for _, watcher in ipairs(redis.call('SMEMBERS', held)) do
      if redis.call('HGET', KEYS[2], watcher) == instance then redis.call('HDEL', KEYS[2], watcher) end
    end
    redis.call('DEL', held)
    local prefix = instance .. '\n'
    for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
      if string.sub(field, 1, #prefix) == prefix then redis.call('HDEL', KEYS[3], field) end
    end
    redis.call('SREM', KEYS[1], instance)
  end
end
return kept
