"""Routing by taskType: the tag (or the service default) picks the task type, its queue and its task name."""

from __future__ import annotations

import pytest

from scalablejob.errors import TaskTypeError
from scalablejob.routing import (
    ALLOWED_TASK_TYPES,
    TaskType,
    parse_task_type,
    queue_for,
    task_name_for,
    task_type_of,
)


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        ("command", None, TaskType.COMMAND),
        ("query", None, TaskType.QUERY),
        ("command", "query", TaskType.COMMAND),  # the tag wins over the default
        ("query", "command", TaskType.QUERY),
        (None, "command", TaskType.COMMAND),  # no tag: the service default
        (None, "query", TaskType.QUERY),
        ("", "query", TaskType.QUERY),  # an empty tag counts as missing
        ("", "command", TaskType.COMMAND),
    ],
)
def test_parse_task_type_uses_the_tag_else_the_default(
    value: str | None, default: str | None, expected: TaskType
) -> None:
    assert parse_task_type(value, default) is expected


@pytest.mark.parametrize("value", [None, ""])
def test_parse_task_type_without_tag_or_default_names_both_allowed_values(value: str | None) -> None:
    with pytest.raises(TaskTypeError, match="taskType is required") as caught:
        parse_task_type(value)
    assert "command" in str(caught.value)
    assert "query" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "default", "named"),
    [
        ("train", None, "'train'"),
        ("Command", None, "'Command'"),  # values are case-sensitive
        (" query", None, "' query'"),
        ("train", "query", "'train'"),  # a bad tag is not replaced by the default
        (None, "batch", "'batch'"),  # a bad default is reported as such
    ],
)
def test_parse_task_type_rejects_an_unknown_value_naming_it_and_the_allowed_ones(
    value: str | None, default: str | None, named: str
) -> None:
    with pytest.raises(TaskTypeError) as caught:
        parse_task_type(value, default)
    message = str(caught.value)
    assert named in message
    assert "expected one of command, query" in message


def test_task_type_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_task_type("nope")


def test_allowed_task_types_are_command_then_query() -> None:
    assert ALLOWED_TASK_TYPES == ("command", "query")


@pytest.mark.parametrize(
    ("service", "task_type", "queue"),
    [
        ("demo", TaskType.COMMAND, "demo.command"),
        ("demo", TaskType.QUERY, "demo.query"),
        ("my-svc", TaskType.QUERY, "my-svc.query"),
    ],
)
def test_queue_for_is_service_dot_task_type(service: str, task_type: TaskType, queue: str) -> None:
    assert queue_for(service, task_type) == queue


@pytest.mark.parametrize(
    ("task_type", "name"),
    [(TaskType.COMMAND, "scalablejob.command"), (TaskType.QUERY, "scalablejob.query")],
)
def test_task_name_for_and_task_type_of_round_trip(task_type: TaskType, name: str) -> None:
    assert task_name_for(task_type) == name
    assert task_type_of(name) is task_type


@pytest.mark.parametrize("name", ["celery.ping", "scalablejob.train", "command", "", "scalablejob.Command"])
def test_task_type_of_a_foreign_task_name_is_none(name: str) -> None:
    assert task_type_of(name) is None
