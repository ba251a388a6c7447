"""What `job.celery` and `@job.task` stand on: the app of a Job, its broker, and its real Celery tasks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scalablejob.api.celery_app import NO_BROKER, ServiceCelery, broker_url_of
from scalablejob.api.celery_service import broker_default
from scalablejob.api.celery_task import request_body
from scalablejob.api.job import Job
from scalablejob.model.errors import BrokerError, RequestError, TaskTypeError, UserCodeError


def echo(body: bytes) -> bytes:
    return body


def _add(x: int, y: int) -> int:
    return x + y


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
    assert broker_default() == {"broker_url": NO_BROKER}  # none yet: binding tasks needs none
    with pytest.raises(BrokerError, match="no broker: no embedded broker runs in"):
        broker_url_of(Job(config=None, service="svc").celery)  # the first use says why there is none
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


def test_job_task_makes_a_celery_task_registered_on_the_service_app(job: Job) -> None:
    from celery import Task

    add = job.task(name="add")(_add)

    assert isinstance(add, Task) and job.celery.tasks["add"].name == "add"
    assert add(2, 3) == 5  # called directly, it runs here, as Celery's tasks do
    assert job.tasks["add"].task_type.value == "query" and job.tasks["add"].celery_task is add


def test_a_task_on_a_queue_of_its_own_is_refused_where_it_is_declared(job: Job) -> None:
    with pytest.raises(UserCodeError, match=r"^queue 'other': task echo runs on its type's queue; expected no queue"):
        job.task(queue="other")(echo)


def test_a_task_type_no_worker_runs_is_refused_naming_the_option_and_the_task(job: Job) -> None:
    with pytest.raises(TaskTypeError, match=r"^task_type 'gpu' of task echo: expected one of command, query$"):
        job.task(echo, task_type="gpu")
    with pytest.raises(TaskTypeError, match=r"^task_type 'gpu' of task shouted: expected one of command, query$"):
        job.celery.task(name="shouted", task_type="gpu", shared=False)(echo).name  # noqa: B018  # made on first use
