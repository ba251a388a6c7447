-- Take items off a front end's input stream (KEYS[1]; ARGV: their ids) and flag for cancellation each of their
-- requests (state hashes KEYS[2..]) that has not ended yet: a queued one never runs, a running one is stopped.
local removed = redis.call('XDEL', KEYS[1], unpack(ARGV))
for i = 2, #KEYS do
  local status = redis.call('HGET', KEYS[i], 'status')
  if status == 'queued' or status == 'running' then redis.call('HSET', KEYS[i], 'cancel_requested', 1) end
end
return removed
