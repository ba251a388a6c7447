"""Which requests of a service are in flight: those its workers hold, then those still waiting in its queues."""

from __future__ import annotations

from typing import Any

import redis

from scalablejob.model.routing import service_queues
from scalablejob.store.presence import read_presence
from scalablejob.store.queues import message_task_id, priority_lists
from scalablejob.store.state import RequestState, RequestStore

MAX_QUEUED_SHOWN = 50


def queued_ids(client: redis.Redis, service: str, limit: int = MAX_QUEUED_SHOWN) -> list[str]:
    """Ids of waiting requests, next to run first (kombu's BRPOP takes from the right end of each list)."""
    ids: list[str] = []
    for queue in service_queues(service):
        for key in priority_lists(queue):
            raw_messages: Any = client.lrange(key, -limit, -1)
            ids.extend(task_id for raw in reversed(raw_messages) if (task_id := message_task_id(raw)))
    return ids[:limit]


def in_flight(client: redis.Redis, service: str) -> list[RequestState]:
    """States of the running requests (by worker) and then of the waiting ones."""
    running = [task_id for presence in read_presence(client, service).values() for task_id in presence.held]
    store = RequestStore(client, service)
    states = [store.get(request_id) for request_id in dict.fromkeys([*running, *queued_ids(client, service)])]
    return [state for state in states if state is not None]
