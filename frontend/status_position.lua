-- How many messages are ahead of the one holding ARGV[1] (a request id, quoted) in a Celery queue's lists (KEYS,
-- most urgent first). kombu pushes on the left and its consumers pop on the right, so the rightmost goes next.
-- A message is found by its id inside the JSON envelope; the body (base64) cannot hold a quote, so nothing else
-- matches. -1: not waiting (already taken by a worker, or gone).
local ahead = 0
for _, key in ipairs(KEYS) do
  local stop = redis.call('LLEN', key) - 1
  while stop >= 0 do
    local start = math.max(0, stop - 255)
    local items = redis.call('LRANGE', key, start, stop)
    for i = #items, 1, -1 do
      if string.find(items[i], ARGV[1], 1, true) then return ahead end
      ahead = ahead + 1
    end
    stop = start - 1
  end
end
return -1
