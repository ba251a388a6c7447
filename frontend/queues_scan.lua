-- Up to ARGV[2] entries from id ARGV[1] on, read ARGV[3] at a time, whose `tags` JSON holds every needle (ARGV[4..]:
-- exact `"key":"value"` texts, as encode_tags writes them), and the last id looked at: the scan stays in Redis.
local found, last, start = {}, false, ARGV[1]
while true do
  local items = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[3])
  if #items == 0 then break end
  for _, item in ipairs(items) do
    last = item[1]
    local fields, tags = item[2], nil
    for i = 1, #fields, 2 do if fields[i] == 'tags' then tags = fields[i + 1] end end
    local ok = tags ~= nil
    for n = 4, #ARGV do
      if ok and not string.find(tags, ARGV[n], 1, true) then ok = false end
    end
    if ok then
      found[#found + 1] = item
      if #found >= tonumber(ARGV[2]) then return {found, last} end
    end
  end
  start = '(' .. last
end
return {found, last}
