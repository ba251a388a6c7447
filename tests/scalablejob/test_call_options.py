"""What a Celery call is refused for before anything is sent: one sentence naming the option or task."""

from __future__ import annotations

from typing import Any

import pytest

from scalablejob.model.call_options import refused_call
from scalablejob.model.routing import TaskType

QUERY, COMMAND = TaskType.QUERY, TaskType.COMMAND


@pytest.mark.parametrize(
    ("name", "task_type", "known", "options", "reason"),
    [
        ("add", QUERY, [], {}, None),
        ("add", QUERY, [], {"countdown": 5, "priority": 0, "expires": 9}, None),
        ("add", QUERY, [], {"queue": "svc.query", "routing_key": "svc.query"}, None),
        ("train", COMMAND, [], {"time_limit": 5, "soft_time_limit": 2}, None),
        ("anything", None, [], {}, None),  # no worker has registered its tasks yet: the name is taken as given
        ("celery.chord_unlock", None, ["add"], {}, None),
        ("nope", None, ["add", "train"], {}, "unknown task 'nope' for service svc: expected one of add, train"),
        ("add", QUERY, [], {"queue": "other"}, "queue 'other': task add runs on its type's queue svc.query"),
        ("train", COMMAND, [], {"routing_key": "svc.query"}, "routing_key 'svc.query': task train runs on its"),
        ("add", QUERY, [], {"time_limit": 5, "soft_time_limit": 1}, None),  # a thread's limits: async exceptions
    ],
    ids=[
        "plain",
        "honoured",
        "own-queue",
        "command-limits",
        "unknown-registry",
        "builtin",
        "unknown",
        "queue",
        "routing-key",
        "query-time-limits",
    ],
)
def test_a_call_no_worker_could_run_as_asked_is_refused_naming_why(
    name: str, task_type: TaskType | None, known: list[str], options: dict[str, Any], reason: str | None
) -> None:
    refused = refused_call(name, task_type, known, options, "svc")

    assert refused == reason if reason is None else refused is not None and refused.startswith(reason)
