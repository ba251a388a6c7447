-- The one tag filter of the queue protocol, run in bounded steps so that no call holds Redis for long.
-- An item matches when its `tags` JSON holds every needle (exact `"key":"value"` texts, as encode_tags writes them).
-- Mode 'range' (a filtered get or search): ARGV = mode, start id (a '(' prefix excludes it), wanted, max steps,
--   needles...; reads items in order from the start.
-- Mode 'group' (a filtered watch): ARGV = mode, group, consumer, wanted, max steps, needles...; takes the group's
--   next items for the consumer: a match stays pending for it (it is sent), any other item is acknowledged at once,
--   so the group never holds an item it will not send.
-- Returns {matches, last id looked at or false, 1 if the end of the stream was reached else 0}.
local mode = ARGV[1]
local wanted, budget = tonumber(ARGV[4]), tonumber(ARGV[5])
if mode == 'range' then wanted, budget = tonumber(ARGV[3]), tonumber(ARGV[4]) end
local first_needle = (mode == 'range') and 5 or 6

local function matches(fields)
  local tags = nil
  for i = 1, #fields, 2 do if fields[i] == 'tags' then tags = fields[i + 1] end end
  if tags == nil then return false end
  for n = first_needle, #ARGV do
    if not string.find(tags, ARGV[n], 1, true) then return false end
  end
  return true
end

local found, last, steps, start = {}, false, 0, ARGV[2]
while steps < budget and #found < wanted do
  -- a group read must not take more than it may keep; a range read may look ahead
  local count = (mode == 'range') and math.min(budget - steps, 256) or math.min(budget - steps, wanted - #found)
  local items
  if mode == 'range' then
    items = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', count)
  else
    local reply = redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', count, 'STREAMS', KEYS[1], '>')
    items = reply and reply[1][2] or {}
  end
  if #items == 0 then return {found, last, 1} end
  for _, item in ipairs(items) do
    if #found >= wanted then break end
    last = item[1]
    steps = steps + 1
    if matches(item[2]) then
      found[#found + 1] = item
    elseif mode == 'group' then
      redis.call('XACK', KEYS[1], ARGV[2], item[1])
    end
  end
  if #items < count and #found < wanted then return {found, last, 1} end
  start = '(' .. last
end
return {found, last, 0}
