"""The user-facing Job: @job.query registers one handler, with or without a context, and progress is validated."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest

from scalablejob.api.job import Job, QueryContext
from scalablejob.model.errors import ConfigError, TaskTypeError, UserCodeError
from scalablejob.model.routing import TaskType


class Reports:
    """A progress reporter that remembers every (fraction, message) it was given."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str) -> None:
        self.calls.append((fraction, message))


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def ctx(reports: Reports) -> QueryContext:
    return QueryContext("r1", {"taskType": "query", "requestId": "r1"}, reports)


def test_query_registers_a_body_and_context_handler_as_is(ctx: QueryContext) -> None:
    job = Job("svc")

    @job.query
    def handle(body: bytes, context: QueryContext) -> tuple[bytes, str]:
        return body, context.request_id

    assert job.query_handler is handle
    assert job.query_handler(b"in", ctx) == (b"in", "r1")


def test_query_registers_a_body_only_handler_that_ignores_the_context(ctx: QueryContext) -> None:
    job = Job("svc")

    def echo(body: bytes) -> bytes:
        return body.upper()

    assert job.query(echo) is echo  # the decorator leaves the user's function as it was
    assert job.query_handler is not None
    assert job.query_handler(b"in", ctx) == b"IN"
    assert job.query_handler.__name__ == "echo"


def _body_only(body: bytes) -> str:
    return "body"


def _body_and_context(body: bytes, ctx: QueryContext) -> str:
    return "context"


def _defaulted_context(body: bytes, ctx: QueryContext | None = None) -> str:
    return "context" if ctx is not None else "body"


def _var_positional(*args: Any) -> str:
    return "context" if len(args) == 2 else "body"


def _keyword_only_extra(body: bytes, *, flag: bool = False) -> str:
    return "body"


class _Model:
    def predict(self, body: bytes) -> str:
        return "body"

    def answer(self, body: bytes, ctx: QueryContext) -> str:
        return "context"


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (_body_only, "body"),
        (_body_and_context, "context"),
        (_defaulted_context, "context"),
        (_var_positional, "context"),
        (_keyword_only_extra, "body"),
        (_Model().predict, "body"),  # a bound method: `self` is not a parameter
        (_Model().answer, "context"),
        (functools.partial(_body_and_context), "context"),
        (lambda body: "body", "body"),
    ],
    ids=["body", "body-ctx", "ctx-default", "varargs", "kwonly", "method", "method-ctx", "partial", "lambda"],
)
def test_query_passes_the_context_only_to_handlers_that_take_it(func: Any, expected: str, ctx: QueryContext) -> None:
    job = Job()
    job.query(func)

    assert job.query_handler is not None
    assert job.query_handler(b"in", ctx) == expected


def test_a_second_query_handler_raises_naming_the_first() -> None:
    job = Job("svc")

    @job.query
    def first(body: bytes) -> bytes:
        return body

    with pytest.raises(UserCodeError, match=r"service svc already has query handler first; expected one @query"):

        @job.query
        def second(body: bytes) -> bytes:
            return body

    assert job.query_handler is not None
    assert job.query_handler.__name__ == "first"


class _CallableHandler:
    def __call__(self, body: bytes, ctx: QueryContext) -> bytes:
        return body


def test_a_second_query_handler_after_a_callable_object_raises_user_code_error() -> None:
    job = Job("svc")
    job.query(_CallableHandler())

    with pytest.raises(UserCodeError, match="expected one @query per Job"):
        job.query(_body_only)


def test_job_repr_names_its_service() -> None:
    assert repr(Job("svc")) == "Job(service='svc')"
    assert repr(Job()) == "Job(service=None)"


def test_context_keeps_its_own_copy_of_the_tags(reports: Reports) -> None:
    tags = {"requestId": "r1"}
    ctx = QueryContext("r1", tags, reports)
    tags["requestId"] = "changed"

    assert ctx.tags == {"requestId": "r1"}


@pytest.mark.parametrize(
    ("fraction", "message", "expected"),
    [
        (0, "", (0.0, "")),
        (0.0, "start", (0.0, "start")),
        (0.5, "half way", (0.5, "half way")),
        (1, "done", (1.0, "done")),
        (1.0, "", (1.0, "")),
    ],
)
def test_progress_reports_the_fraction_as_float_and_the_message(
    ctx: QueryContext, reports: Reports, fraction: float, message: str, expected: tuple[float, str]
) -> None:
    ctx.progress(fraction, message)

    assert reports.calls == [expected]
    assert type(reports.calls[0][0]) is float


def test_progress_message_defaults_to_empty(ctx: QueryContext, reports: Reports) -> None:
    ctx.progress(0.3)

    assert reports.calls == [(0.3, "")]


@pytest.mark.parametrize(
    "fraction",
    [-0.01, 1.0001, 2, -1, math.nan, math.inf, True, False, "0.5", None, [0.5]],
    ids=lambda value: repr(value),
)
def test_progress_rejects_values_outside_zero_to_one_naming_the_range(
    ctx: QueryContext, reports: Reports, fraction: Any
) -> None:
    with pytest.raises(ValueError, match=r"expected a number from 0\.0 to 1\.0") as caught:
        ctx.progress(fraction)

    assert repr(fraction) in str(caught.value)
    assert reports.calls == []


# ---- named tasks, the service config ------------------------------------------------------------------------------


def test_task_registers_named_tasks_by_function_name_or_given_name() -> None:
    job = Job("svc")

    @job.task
    def shout(body: bytes) -> str:
        return body.decode().upper()

    @job.task(name="train", task_type="command")
    def fit(body: bytes, ctx: QueryContext) -> dict[str, float]:
        return {"loss": 0.1}

    assert sorted(job.tasks) == ["shout", "train"]
    record, fit_record = job.tasks["shout"], job.tasks["train"]
    assert (record.name, record.task_type, record.default) == ("shout", TaskType.QUERY, False)
    assert (fit_record.name, fit_record.task_type) == ("train", TaskType.COMMAND)
    assert (shout.name, fit.name) == ("shout", "train") and record.celery_task is shout  # Celery tasks
    assert shout(b"hi") == "HI"  # calling a task runs its function here, as in Celery
    assert record.handler(b"hi", QueryContext("r1", {}, Reports())) == "HI"
    assert job.default_task is record  # the only query task answers untagged queries
    assert job.query_handler is None  # only @job.query marks one


def test_query_is_a_named_task_that_answers_untagged_queries() -> None:
    job = Job("svc")

    @job.task
    def shout(body: bytes) -> bytes:
        return body

    @job.query
    def answer(body: bytes) -> bytes:
        return body

    assert answer.__name__ == "answer"  # @job.query returns the function itself
    assert job.tasks["answer"].default and job.default_task is job.tasks["answer"]


def test_several_query_tasks_and_none_marked_have_no_default() -> None:
    job = Job("svc")
    job.task(name="a")(_body_only)
    job.task(name="b")(_body_only)

    assert job.default_task is None


@pytest.mark.parametrize(
    ("name", "func"),
    [("scalablejob.query", _body_only), ("celery.chord", _body_only), ("two words", _body_only), ("", _body_only)],
    ids=["ours", "celerys", "space", "empty"],
)
def test_a_task_name_that_cannot_be_one_is_refused(name: str, func: Any) -> None:
    with pytest.raises(UserCodeError, match=rf"task name {name!r}: expected up to 128"):
        Job("svc").task(name=name)(func)


def test_a_second_task_of_the_same_name_is_refused() -> None:
    job = Job("svc")
    job.task(name="twice")(_body_only)

    with pytest.raises(UserCodeError, match=r"already has a task named 'twice'"):
        job.task(name="twice")(_body_and_context)


def test_an_unknown_task_type_is_refused_naming_the_allowed_ones() -> None:
    with pytest.raises(TaskTypeError, match=r"^task_type 'training': expected one of command, query$"):
        Job("svc").task(task_type="training")


def test_a_lambda_gets_a_valid_default_name() -> None:
    job = Job()
    job.query(lambda body: body)

    assert list(job.tasks) == ["_lambda_"]


def test_a_job_of_a_config_knows_its_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"metadata": {"name": "from-config", "type": "ScalableJob"}}))

    assert Job(config=path).service == "from-config"
    assert Job(config=str(path)).config.name == "from-config"  # type: ignore[union-attr]
    monkeypatch.setenv("SCALABLEJOB_CONFIG", str(path))
    assert Job().service == "from-config"  # Job() takes $SCALABLEJOB_CONFIG
    assert Job("named").config is None  # a name given: no config from the environment


def test_a_job_whose_name_and_config_disagree_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"metadata": {"name": "from-config", "type": "ScalableJob"}}))

    with pytest.raises(UserCodeError, match=r"the config's service is from-config"):
        Job("other", config=path)


def test_a_job_of_a_missing_config_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config file"):
        Job(config=tmp_path / "missing.json")
