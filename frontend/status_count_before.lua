-- How many entries of stream KEYS[1] come before id ARGV[1].
local count, start = 0, '-'
while true do
  local items = redis.call('XRANGE', KEYS[1], start, '(' .. ARGV[1], 'COUNT', 1000)
  if #items == 0 then return count end
  count = count + #items
  start = '(' .. items[#items][1]
end
