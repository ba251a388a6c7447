"""Routing by taskType: the tag (or the service default) picks the task type, its queue and its task name."""

from __future__ import annotations

import pytest

from scalablejob.model.errors import RequestError, TaskTypeError
from scalablejob.model.routing import (
    ALLOWED_TASK_TYPES,
    TaskInfo,
    TaskType,
    parse_task_type,
    queue_for,
    resolve_task,
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


# ---- resolve_task: named tasks ------------------------------------------------------------------------------------

QUERY, COMMAND = TaskType.QUERY, TaskType.COMMAND
NAMED = {"shout": TaskInfo(QUERY), "count": TaskInfo(QUERY), "train": TaskInfo(COMMAND)}
ONE_QUERY = {"answer": TaskInfo(QUERY), "train": TaskInfo(COMMAND)}
MARKED = {"answer": TaskInfo(QUERY, default=True), "shout": TaskInfo(QUERY)}


@pytest.mark.parametrize(
    ("tags", "registry", "default", "expected"),
    [
        ({"task": "shout"}, NAMED, None, (QUERY, "shout")),  # the tag picks the task, and with it the type
        ({"task": "train"}, NAMED, None, (COMMAND, "train")),
        ({"task": "train", "taskType": "command"}, NAMED, "query", (COMMAND, "train")),  # an agreeing type is fine
        ({"task": "count"}, NAMED, "command", (QUERY, "count")),  # the task's type wins over the default
        ({"taskType": "query"}, ONE_QUERY, None, (QUERY, "answer")),  # no tag: the only query task
        ({"taskType": "query"}, MARKED, None, (QUERY, "answer")),  # no tag: the one @job.query marked
        ({}, MARKED, "query", (QUERY, "answer")),
        ({"taskType": "command"}, NAMED, None, (COMMAND, None)),  # a command without a tag is a command line
        ({"taskType": "query"}, {}, None, (QUERY, None)),  # no named tasks: the generic query, as before
        ({"taskType": "query", "task": ""}, ONE_QUERY, None, (QUERY, "answer")),  # an empty tag counts as none
        ({"task": "new", "taskType": "query"}, {}, None, (QUERY, "new")),  # nothing registered yet: taken as given
    ],
    ids=[
        "query-by-name", "command-by-name", "agreeing-type", "name-over-default", "only-query", "marked-default",
        "marked-by-default-type", "command-line", "no-registry", "empty-tag", "empty-registry",
    ],
)  # fmt: skip
def test_resolve_task_routes_by_the_task_tag_else_by_type(
    tags: dict[str, str], registry: dict[str, TaskInfo], default: str | None, expected: tuple[TaskType, str | None]
) -> None:
    assert resolve_task(tags, registry, default, "svc") == expected


def test_an_unknown_task_name_is_a_request_error_naming_the_known_ones() -> None:
    with pytest.raises(
        RequestError, match=r"^unknown task 'shuot' for service svc: expected one of count, shout, train$"
    ):
        resolve_task({"task": "shuot"}, NAMED, "query", "svc")


def test_a_task_type_that_disagrees_with_the_named_task_is_a_task_type_error() -> None:
    with pytest.raises(
        TaskTypeError, match=r"task 'train' is a command task: expected taskType command .* got 'query'"
    ):
        resolve_task({"task": "train", "taskType": "query"}, NAMED, None, "svc")


def test_an_untagged_query_among_several_query_tasks_is_refused_naming_them() -> None:
    with pytest.raises(RequestError, match=r"service svc has several query tasks \(count, shout\).*task=NAME"):
        resolve_task({"taskType": "query"}, NAMED, None, "svc")


def test_an_untagged_request_still_needs_a_task_type() -> None:
    with pytest.raises(TaskTypeError, match="taskType is required"):
        resolve_task({}, NAMED, None, "svc")
