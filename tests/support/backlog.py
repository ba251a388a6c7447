"""A deep backlog in seconds: one request put the ordinary way, then cloned in Redis, for the depth test and bench.

`JobClient.put` costs a round trip and most of a millisecond of Python per request; 100 000 of them would take
minutes. Here one real request is put, and a script clones its state hash, input queue entry, index key and queued
message under new ids (every occurrence of the template's id replaced, a new input index each), so the clones are
what 100 000 puts would have written, only with the same body.
"""

from __future__ import annotations

import redis

from scalablejob import JobClient
from scalablejob.model import keys
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.store.queues import priority_lists

CLONES_PER_CALL = 10_000  # each call holds Redis for a few hundred ms: this is setup, not the measured path

# KEYS: the template's state hash, the input stream, the queue's list, the input index counter. ARGV: the template's
# id, its index, the prefix of state keys, the prefix of input index keys, the clones' id prefix, first and last
# clone number.
CLONE_LUA = """
local function swap(text, old, new)
  local at, stop = string.find(text, old, 1, true)
  if not at then return text end
  return string.sub(text, 1, at - 1) .. new .. swap(string.sub(text, stop + 1), old, new)
end
local state = redis.call('HGETALL', KEYS[1])
local entry = redis.call('XRANGE', KEYS[2], ARGV[2] .. '-0', ARGV[2] .. '-0')[1][2]
local message = redis.call('LINDEX', KEYS[3], -1)
for n = tonumber(ARGV[6]), tonumber(ARGV[7]) do
  local id = ARGV[5] .. n
  local index = redis.call('INCR', KEYS[4])
  local fields = {}
  for i = 1, #state, 2 do
    local value = state[i] == 'index' and tostring(index) or swap(state[i + 1], ARGV[1], id)
    fields[#fields + 1] = state[i]
    fields[#fields + 1] = value
  end
  redis.call('HSET', ARGV[3] .. id, unpack(fields))
  redis.call('SET', ARGV[4] .. index, id)
  redis.call('XADD', KEYS[2], index .. '-0', entry[1], entry[2], entry[3], swap(entry[4], ARGV[1], id))
  redis.call('LPUSH', KEYS[3], swap(message, ARGV[1], id))
end
return redis.call('LLEN', KEYS[3])
"""


def fill(client: redis.Redis, job_client: JobClient, count: int, prefix: str = "deep-") -> list[str]:
    """Queue `count` command requests (the put one first) and return their ids: what the backlog holds."""
    service = job_client.service
    index, template = job_client.put(b"echo deep", {"taskType": "command"})
    queue_list = priority_lists(queue_for(service, TaskType.COMMAND))[-1]
    clone = client.register_script(CLONE_LUA)
    state_prefix = keys.request_state(service, "")
    call_keys = [
        keys.request_state(service, template), keys.input_stream(service, service), queue_list,
        keys.input_index_counter(service),
    ]  # fmt: skip
    for first in range(1, count, CLONES_PER_CALL):
        last = min(first + CLONES_PER_CALL - 1, count - 1)
        args = [template, str(index), state_prefix, keys.input_index_prefix(service), prefix]
        clone(keys=call_keys, args=[*args, first, last])
    return [template, *(f"{prefix}{n}" for n in range(1, count))]
