-- Renew a lease (KEYS[1]) for ARGV[2] ms only if ARGV[1] still holds it. Returns 1 when renewed, 0 when it was lost
-- (expired while its holder was paused, or taken by another).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
