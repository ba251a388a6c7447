-- Declare a host dead: drop its record (KEYS[1] hash, field ARGV[1]) only if it is still the stale record ARGV[2]
-- that was judged, so a host that just came back (a new record) is not dropped. Returns 1 when dropped.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
