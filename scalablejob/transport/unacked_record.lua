-- kombu's record of a message a worker took and has not acknowledged yet, in one call: what its Redis QoS.append
-- writes in a MULTI of two commands (the delivery tag in the unacked index, scored by the time, and the message,
-- as kombu stores it, in the unacked hash), so kombu restores and acknowledges it as its own.
-- KEYS: the unacked index, the unacked hash. ARGV: delivery tag, now, the stored message.
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
