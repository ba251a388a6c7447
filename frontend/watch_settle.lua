-- How many of consumer ARGV[2]'s pending items (group ARGV[1]) still exist, counted up to ARGV[3] (the window).
-- Those deleted since (committed, deleted, truncated, finished, or claimed from a gone consumer after their
-- deletion) are acknowledged on the way, so they no longer hold a place in the window and never hide live ones.
local live, start, window = 0, '-', tonumber(ARGV[3])
while true do
  local items = redis.call('XPENDING', KEYS[1], ARGV[1], start, '+', 100, ARGV[2])
  if #items == 0 then return live end
  for _, item in ipairs(items) do
    if #redis.call('XRANGE', KEYS[1], item[1], item[1]) == 0 then redis.call('XACK', KEYS[1], ARGV[1], item[1])
    else
      live = live + 1
      if live >= window then return live end
    end
  end
  start = '(' .. items[#items][1]
end
