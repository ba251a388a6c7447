-- How many of consumer ARGV[2]'s pending items (group ARGV[1], at most ARGV[3]) still exist; those deleted since
-- (committed, deleted, truncated, finished) are acknowledged, so they no longer hold a place in the window.
local live = 0
for _, item in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[3], ARGV[2])) do
  if #redis.call('XRANGE', KEYS[1], item[1], item[1]) == 0 then redis.call('XACK', KEYS[1], ARGV[1], item[1])
  else live = live + 1 end
end
return live
