-- Fencing: the functions every script that a worker's delivery writes through starts with (state_update.lua,
-- state_requeue.lua, state_finish.lua, sink_append.lua), as a script cannot call another.
-- A request's state hash `key` names its current delivery in `attempt` (bumped by state_start.lua when a worker
-- starts it, and by state_requeue.lua when it goes back on a queue). A write of an older delivery is stale: a
-- resumed frozen worker, a partitioned host or a duplicate message must not write. '' means no delivery (a client's
-- own write, such as a cancel): nothing to check. `is_stale` compares with the hash's attempt as already read
-- (a script that reads other fields in the same HMGET), `stale` reads it.
local function is_stale(current, attempt)
  if attempt == nil or attempt == '' then return false end
  return current ~= attempt
end

local function stale(key, attempt)
  if attempt == nil or attempt == '' then return false end
  return is_stale(redis.call('HGET', key, 'attempt'), attempt)
end
