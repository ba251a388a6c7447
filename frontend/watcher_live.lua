-- Which of the watchers ARGV[2..] are connected: held in the watchers hash (KEYS[1]) by a process whose lease
-- (key ARGV[1]..id) still exists. One 1 or 0 per watcher, in order.
local live = {}
for i = 2, #ARGV do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  live[i - 1] = (holder and redis.call('EXISTS', ARGV[1] .. holder) == 1) and 1 or 0
end
return live
