-- A new queued request (0 if its id is in use). KEYS: state hash, input index counter, input index map,
-- the front end's input stream, the front end's output queue counter. ARGV: request id, task type, queued at,
-- front end ('' for the service's own), data, tags.
-- The request is mirrored into its front end's input stream under id <index>-0, so the queue protocol can read,
-- watch and count waiting requests; the final append (state_finish.lua) removes it again.
-- `sink_from` is the last index of the front end's output queue now: every entry of this request comes after it,
-- so a search of the output queue by request id starts there instead of at the beginning.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local index = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'request_id', ARGV[1], 'index', index, 'task_type', ARGV[2],
           'status', 'queued', 'queued_at', ARGV[3], 'sink_from', redis.call('GET', KEYS[5]) or 0)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'frontend', ARGV[4]) end
redis.call('HSET', KEYS[3], index, ARGV[1])
redis.call('XADD', KEYS[4], index .. '-0', 'data', ARGV[5], 'tags', ARGV[6])
return index
