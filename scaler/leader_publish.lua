-- The leader's plan (KEYS[2], a hash: ARGV[2..] field, value, ...), written only while ARGV[1] holds the leader
-- lease (KEYS[1]): a leader that lost its lease while paused cannot overwrite its successor's plan. Returns 1 when
-- written.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(ARGV, 2))
return 1
