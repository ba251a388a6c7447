"""The Job's request handlers as Celery tasks of the worker: each under its own name and type, answering through the
runtime; a cancelled one ends like Celery's revoke; a message for a task the worker lacks fails its request."""

from __future__ import annotations

from types import SimpleNamespace

import fakeredis
import pytest
from celery import Celery, states

from scalablejob.api.job import Job, QueryContext
from scalablejob.model.config import ScalableJobConfig
from scalablejob.model.routing import TaskInfo, TaskType
from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestStatus, RequestStore
from scalablejob.workers.held import request_task_type
from scalablejob.workers.named_tasks import register_named_tasks
from scalablejob.workers.protocol_check import UnhandledMessages
from scalablejob.workers.runtime import WorkerRuntime

SERVICE = "svc"


def shout(body: bytes, ctx: QueryContext) -> str:
    return body.decode().upper() + ctx.tags.get("suffix", "")


def fit(body: bytes) -> dict[str, float]:
    return {"loss": 0.5}


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def runtime(client: fakeredis.FakeRedis) -> WorkerRuntime:
    return WorkerRuntime(SERVICE, client, settings=ScalableJobConfig(shell=False))


@pytest.fixture
def app(runtime: WorkerRuntime) -> Celery:
    job = Job(SERVICE)
    job.query(shout)  # a request handler: registered by the worker, for requests only
    job.task(name="train", task_type="command")(fit)  # a Celery task: on the Job's app already
    app = job.celery
    assert register_named_tasks(app, runtime, job, UnhandledMessages(lambda *_: None, lambda *_: None)) == {
        "shout": TaskInfo(TaskType.QUERY, default=True)
    }  # fmt: skip
    return app


def put(client: fakeredis.FakeRedis, request_id: str, task_type: TaskType = TaskType.QUERY) -> None:
    RequestStore(client, SERVICE).create(request_id, task_type.value, tags={"requestId": request_id})


def test_each_task_is_registered_under_its_name_with_its_type(app: Celery) -> None:
    assert request_task_type(SimpleNamespace(name="shout", task=app.tasks["shout"])) is TaskType.QUERY
    assert request_task_type(SimpleNamespace(name="train", task=app.tasks["train"])) is TaskType.COMMAND
    assert request_task_type(SimpleNamespace(name="scalablejob.command", task=None)) is TaskType.COMMAND
    assert request_task_type(SimpleNamespace(name="celery.ping", task=None)) is None


def test_a_named_query_answers_with_its_value_and_encoding(client: fakeredis.FakeRedis, app: Celery) -> None:
    put(client, "r1")

    app.tasks["shout"].apply(args=(b"hi", {"suffix": "!"}), task_id="r1")

    [entry] = Sink(client, SERVICE).read()
    assert (entry.data, entry.tags["resultEncoding"], entry.tags["type"]) == (b"HI!", "text", "result")


def test_a_named_query_cancelled_before_it_ran_ends_ignored_not_succeeded(
    client: fakeredis.FakeRedis, app: Celery
) -> None:
    put(client, "r1")
    RequestStore(client, SERVICE).request_cancel("r1")

    result = app.tasks["shout"].apply(args=(b"hi", {}), task_id="r1")

    assert result.state == states.IGNORED
    assert RequestStore(client, SERVICE).require("r1").status is RequestStatus.CANCELLED


def test_a_message_for_a_task_the_worker_lacks_fails_its_request_naming_what_it_has(
    client: fakeredis.FakeRedis, runtime: WorkerRuntime
) -> None:
    put(client, "r1")

    runtime.fail_unknown_task("r1", "renamed", ["shout", "train"])

    state = RequestStore(client, SERVICE).require("r1")
    assert state.status is RequestStatus.FAILED
    assert state.error == "unknown task 'renamed': this worker of svc has the named tasks shout, train"


def test_a_celery_call_of_a_request_handler_fails_saying_why(app: Celery) -> None:
    result = app.tasks["shout"].apply(args=("hi",), task_id="c1")

    assert result.state == states.FAILURE
    assert "task shout is a request handler (@job.query): only queue-service requests call it" in str(result.result)
