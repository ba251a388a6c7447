-- Hold again, for front-end process ARGV[1] whose lease lapsed (it may have been swept meanwhile), the watchers
-- ARGV[3], ARGV[5], ..., counted in the counts hash's fields ARGV[4], ARGV[6], ... (watcher_ids.count_field): each
-- that no other live process holds (no holder, a holder whose lease ARGV[2]..holder is gone, or this process) is
-- held by this one; each that another live process holds is let go. In one step, so no other connection of a
-- watcher slips in between a release and a claim.
-- A watcher counts against its front end's cap (KEYS[2], field <process>\n<front end>) exactly while it is in
-- this process's set (KEYS[3]): acquire, release and the sweep change both together, and so does this.
-- KEYS: the watchers hash, the per-process counts hash, this process's set of held watchers.
-- Returns 1 (held) or 0 (another live process holds it) per watcher, in order.
local result = {}
for i = 3, #ARGV, 2 do
  local watcher, field = ARGV[i], ARGV[i + 1]
  local holder = redis.call('HGET', KEYS[1], watcher)
  local counted = redis.call('SISMEMBER', KEYS[3], watcher) == 1
  if holder and holder ~= ARGV[1] and redis.call('EXISTS', ARGV[2] .. holder) == 1 then
    if counted then
      redis.call('SREM', KEYS[3], watcher)
      if redis.call('HINCRBY', KEYS[2], field, -1) <= 0 then redis.call('HDEL', KEYS[2], field) end
    end
    result[#result + 1] = 0
  else
    redis.call('HSET', KEYS[1], watcher, ARGV[1])
    if not counted then
      redis.call('SADD', KEYS[3], watcher)
      redis.call('HINCRBY', KEYS[2], field, 1)
    end
    result[#result + 1] = 1
  end
end
return result
