-- Disconnect watcher ARGV[1] from front-end process ARGV[2]: it leaves the watchers hash if this process still
-- holds it there, and, if it was in this process's set of held watchers, leaves that set and this process's count
-- for its front end (the counts hash's field ARGV[3], watcher_ids.count_field) goes down by one (the count moves
-- with the set: a release that finds the watcher already let go, by watcher_register_again.lua or the sweep, counts
-- nothing).
-- KEYS: the watchers hash, the per-process counts hash, this process's set of held watchers.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('SREM', KEYS[3], ARGV[1]) == 0 then return 1 end
if redis.call('HINCRBY', KEYS[2], ARGV[3], -1) <= 0 then redis.call('HDEL', KEYS[2], ARGV[3]) end
return 1
