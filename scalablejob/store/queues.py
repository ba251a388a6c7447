"""The Redis lists behind a Celery queue, and how deep a queue is: shared by the scaler and the front end.

kombu's Redis transport keeps one list per priority step: `<queue>` for step 0 and `<queue>\\x06\\x16<step>`
for the others, and its consumers BRPOP the steps in order, so step 0 is served first. Normal requests go to
NORMAL_PRIORITY; `_priority_=1` requests go to URGENT_PRIORITY, ahead of them.
"""

from __future__ import annotations

import json
from bisect import bisect
from dataclasses import dataclass
from typing import Any

import redis

URGENT_PRIORITY = 0
NORMAL_PRIORITY = 1
PRIORITY_STEPS = (URGENT_PRIORITY, NORMAL_PRIORITY)
PRIORITY_SEPARATOR = "\x06\x16"


@dataclass(frozen=True)
class QueueMessage:
    """One message ready to LPUSH: the Redis list of its queue and priority, and the transport's JSON envelope."""

    list_key: str
    payload: str


def priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold a queue's messages, most urgent first."""
    return [priority_list(queue, step) for step in PRIORITY_STEPS]


def priority_list(queue: str, priority: int) -> str:
    """The Redis list kombu puts a message of `priority` on: that of the highest step not above it."""
    step = PRIORITY_STEPS[max(bisect(PRIORITY_STEPS, priority) - 1, 0)]
    return queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}"


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a queue (all priorities); messages being worked on are not counted."""
    with client.pipeline(transaction=False) as pipe:
        for key in priority_lists(queue):
            pipe.llen(key)
        lengths: Any = pipe.execute()
    return sum(int(length) for length in lengths)


def message_task_id(raw: bytes) -> str | None:
    """The Celery task id (our request id) of one raw message of a queue's list, None if it is not one of ours. The
    id is found by a plain search first: kombu writes JSON with ': ', the headers before the task id, and a string
    escapes its quotes, so only the headers' `id` key matches; a message where that search fails is decoded whole."""
    headers = raw.find(b'"headers": {')
    at = raw.find(b'"id": "', headers) if headers >= 0 else -1
    stop = raw.find(b'"', at + 7) if at >= 0 else -1
    if stop >= 0 and b"\\" not in raw[at + 7 : stop]:
        return raw[at + 7 : stop].decode()
    try:
        return str(json.loads(raw)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return None


def queued_task_ids(client: redis.Redis, key: str, start: int, count: int) -> tuple[int, list[str]]:
    """(messages read, their request ids) of the messages at start .. start + count - 1 of the Redis list `key`: a
    page of a queue, so that a deep queue is read without holding Redis for long."""
    raw_messages: Any = client.lrange(key, start, start + count - 1)
    return len(raw_messages), [task_id for raw in raw_messages if (task_id := message_task_id(raw))]
