-- A capped list (the dashboard's activity timings and newest failures, scalablejob.model.history): the function the
-- scripts that push on one (state_start.lua, state_finish.lua) start with, as a script cannot call another.
-- Push `value` at the head and keep the newest `cap` items; the trim runs only when the push went past the cap, so a
-- list below it (one drained every second) costs one command per push.
local function push_capped(list, value, cap)
  if redis.call('LPUSH', list, value) > cap then redis.call('LTRIM', list, 0, cap - 1) end
end
