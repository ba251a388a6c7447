-- One bounded step of finding the message holding ARGV[1] (a request id, quoted) in a Celery queue's lists (KEYS,
-- most urgent first). kombu pushes on the left and its consumers pop on the right, so the rightmost goes next. A
-- message is found by its id inside the JSON envelope; the body (base64) cannot hold a quote, so nothing else matches.
-- ARGV[2]: the list to look in (1-based); ARGV[3]: the index to look down from (-1: the list's last); ARGV[4]: look
-- at no more than this many messages. The cursor counts from the left, so pushes while the caller goes on only
-- make it look at a few messages again, and pops (on the right) never make it skip one.
-- Returns {1, ahead}: found, with the number of messages that go before it, counted in this call; {0, list, index}:
-- not found yet, go on from there; {-1}: not waiting (already taken by a worker, or gone).
local budget = tonumber(ARGV[4])
local k, stop = tonumber(ARGV[2]), tonumber(ARGV[3])

local function ahead_of(list, index)
  local ahead = redis.call('LLEN', KEYS[list]) - 1 - index
  for j = 1, list - 1 do ahead = ahead + redis.call('LLEN', KEYS[j]) end
  return ahead
end

while k <= #KEYS do
  local last = redis.call('LLEN', KEYS[k]) - 1
  if stop < 0 or stop > last then stop = last end
  while stop >= 0 do
    if budget <= 0 then return {0, k, stop} end
    local start = math.max(0, stop - math.min(255, budget - 1))
    local items = redis.call('LRANGE', KEYS[k], start, stop)
    for i = #items, 1, -1 do
      if string.find(items[i], ARGV[1], 1, true) then return {1, ahead_of(k, start + i - 1)} end
    end
    budget = budget - (stop - start + 1)
    stop = start - 1
  end
  k, stop = k + 1, -1
end
return {-1}
