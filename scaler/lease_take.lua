-- Take a lease (KEYS[1]) for ARGV[1] for ARGV[2] ms, if it is free or still held by ARGV[3] (a holder known to be
-- dead: '' for none). Compare-and-set: of two scalers that both saw the same dead holder, only one takes it.
-- Returns 1 when taken.
local holder = redis.call('GET', KEYS[1])
if holder == false or (ARGV[3] ~= '' and holder == ARGV[3]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
