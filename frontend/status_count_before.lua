-- One bounded step of counting the entries of stream KEYS[1] in a range: ARGV[1] 'XRANGE' (from ARGV[2] up to ARGV[3])
-- or 'XREVRANGE' (from ARGV[2] down to ARGV[3]), ids as those commands take them ('(' excludes one), at most ARGV[4]
-- entries. Counted here, so that no entry's data leaves Redis. Returns {count, id of the last entry counted or false};
-- a count under ARGV[4] means the range is done.
local command = ARGV[1] == 'XREVRANGE' and 'XREVRANGE' or 'XRANGE'
local items = redis.call(command, KEYS[1], ARGV[2], ARGV[3], 'COUNT', tonumber(ARGV[4]))
if #items == 0 then return {0, false} end
return {#items, items[#items][1]}
