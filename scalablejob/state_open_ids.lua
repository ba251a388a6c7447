-- A page of the requests waiting or running in one input stream (KEYS[1]): up to ARGV[2] entries after stream id
-- ARGV[1] ('' for the start). Returns {the last stream id read ('' when none), request id, ...}: only the ids leave
-- Redis, not the bodies.
local start = ARGV[1] == '' and '-' or '(' .. ARGV[1]
local items = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', tonumber(ARGV[2]))
local found = {''}
for _, item in ipairs(items) do
  found[1] = item[1]
  local fields = item[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'tags' then
      local ok, tags = pcall(cjson.decode, fields[i + 1])
      if ok and type(tags) == 'table' and type(tags.requestId) == 'string' then
        found[#found + 1] = tags.requestId
      end
    end
  end
end
return found
