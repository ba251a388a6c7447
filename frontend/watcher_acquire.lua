-- Connect watcher ARGV[1] (its queue, group and consumer) to front-end process ARGV[2], if no live process holds it
-- (a holder whose lease ARGV[3]..holder is gone is dead: its watcher is taken over) and if front end ARGV[4]'s
-- watchers on all live processes number fewer than ARGV[5] (the per-token cap; a dead process's count is dropped).
-- KEYS: the watchers hash, the per-process counts hash, this process's set of held watchers.
-- Returns 1 (held now), 0 (a live process holds it, this one included), -1 (the cap is reached).
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder and (holder == ARGV[2] or redis.call('EXISTS', ARGV[3] .. holder) == 1) then return 0 end
local suffix, total = '\n' .. ARGV[4], 0
local counts = redis.call('HGETALL', KEYS[2])
for i = 1, #counts, 2 do
  local field = counts[i]
  if #field > #suffix and string.sub(field, -#suffix) == suffix then
    local instance = string.sub(field, 1, #field - #suffix)
    if instance == ARGV[2] or redis.call('EXISTS', ARGV[3] .. instance) == 1 then
      total = total + tonumber(counts[i + 1])
    else
      redis.call('HDEL', KEYS[2], field)
    end
  end
end
if total >= tonumber(ARGV[5]) then return -1 end
redis.call('HINCRBY', KEYS[2], ARGV[2] .. suffix, 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return 1
