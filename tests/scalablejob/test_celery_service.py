"""What `job.celery` and `.delay()` stand on: the app of a Job, its broker, and a task call as a request's tags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scalablejob.api.celery_app import ServiceCelery
from scalablejob.api.celery_service import broker_default, request_body, request_tags
from scalablejob.api.job import Job
from scalablejob.model.errors import BrokerError, RequestError, UserCodeError


def echo(body: bytes) -> bytes:
    return body


@pytest.fixture
def job(tmp_path: Path) -> Job:
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"metadata": {"name": "svc", "type": "ScalableJob"}}))
    return Job(config=path)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("CELERY_BROKER_URL", "SCALABLEJOB_BROKER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SCALABLEJOB_DATA_DIR", str(tmp_path / "no-broker-here"))
    return monkeypatch


def test_the_celery_app_of_a_job_carries_the_job_and_no_broker_until_asked(job: Job, clean_env: Any) -> None:
    app = job.celery

    assert isinstance(app, ServiceCelery) and app is job.celery
    assert (app.main, app.service, app.job, app.service_config) == ("svc", "svc", job, job.config)
    clean_env.setenv("SCALABLEJOB_BROKER", "redis://127.0.0.1:1/0")  # looked up on first use, not at import
    assert app.conf.broker_url == "redis://127.0.0.1:1/0"


def test_a_job_for_any_service_has_no_celery_app(clean_env: Any) -> None:
    with pytest.raises(UserCodeError, match=r"Job\(\) serves any service, so it has no Celery app"):
        _ = Job().celery


def test_the_broker_is_celerys_option_else_ours_else_the_running_embedded_one(clean_env: Any) -> None:
    with pytest.raises(BrokerError, match="no broker: no embedded broker runs in"):
        broker_default()
    clean_env.setenv("SCALABLEJOB_BROKER", "redis://ours:1/0")
    assert broker_default() == {"broker_url": "redis://ours:1/0"}
    clean_env.setenv("CELERY_BROKER_URL", "redis://celerys:1/0")
    assert broker_default() == {}  # `celery --broker URL`: Celery reads its variable before any default


@pytest.mark.parametrize(
    ("value", "body"),
    [(b"raw", b"raw"), ("tëxt", "tëxt".encode()), ({"epochs": 3}, b'{"epochs": 3}'), ([1], b"[1]"), (None, b"null")],
)
def test_a_task_argument_becomes_the_request_body(value: Any, body: bytes) -> None:
    assert request_body(value) == body


def test_an_argument_without_bytes_is_refused() -> None:
    with pytest.raises(RequestError, match="request body of type object: expected bytes, str or JSON"):
        request_body(object())


def test_apply_async_maps_its_arguments_to_tags(job: Job) -> None:
    task = job.task(name="train", task_type="command")(echo)

    tags = request_tags(task, (b"{}",), {"env.LR": "0.1"}, priority=1, task_id="my-id", options={})

    assert tags == {"env.LR": "0.1", "task": "train", "taskType": "command", "_priority_": "1", "requestId": "my-id"}
    assert "_priority_" not in request_tags(task, (), {}, priority=0, task_id=None, options={})


@pytest.mark.parametrize(
    ("args", "priority", "options", "message"),
    [
        ((b"a", b"b"), None, {}, "task echo: expected one argument, the request body, got 2"),
        ((), 9, {}, "priority 9: expected 0 or None (normal) or 1 (ahead of normal requests)"),
        ((), None, {"countdown": 5}, "apply_async option countdown: not supported by the queue service"),
    ],
    ids=["two-args", "priority", "countdown"],
)
def test_what_the_queue_service_cannot_honour_is_refused_not_dropped(
    job: Job, args: tuple[Any, ...], priority: int | None, options: dict[str, Any], message: str
) -> None:
    task = job.task(echo)

    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        request_tags(task, args, {}, priority=priority, task_id=None, options=options)
