"""The Redis lists behind a Celery queue, and how deep a queue is: shared by the scaler and the front end.

kombu's Redis transport keeps one list per priority step: `<queue>` for step 0 and `<queue>\\x06\\x16<step>`
for the others, and its consumers BRPOP the steps in order, so step 0 is served first. Normal requests go to
NORMAL_PRIORITY; `_priority_=1` requests go to URGENT_PRIORITY, ahead of them.
"""

from __future__ import annotations

import json
from bisect import bisect
from typing import Any

import redis

URGENT_PRIORITY = 0
NORMAL_PRIORITY = 1
PRIORITY_STEPS = (URGENT_PRIORITY, NORMAL_PRIORITY)
PRIORITY_SEPARATOR = "\x06\x16"


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
    """The Celery task id (our request id) of one raw message of a queue's list, None if it is not one of ours."""
    try:
        return str(json.loads(raw)["headers"]["id"])
    except (ValueError, KeyError, TypeError):
        return None
