"""The return address: a worker writes each request's entries to the output queue of the front end named in its task,
without asking Redis where the request came from, and the final entry takes the request off that front end's input
queue."""

from __future__ import annotations

import sys

import fakeredis
import pytest
from celery import Celery

from scalablejob.api.job import QueryContext
from scalablejob.model import keys
from scalablejob.model.config import ScalableJobConfig
from scalablejob.model.routing import TaskType, task_name_for
from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestState, RequestStatus, RequestStore
from scalablejob.workers.protocol_check import UnhandledMessages
from scalablejob.workers.runtime import WorkerRuntime
from scalablejob.workers.tasks import register_tasks

SERVICE = "svc"


def answer(body: bytes, _ctx: QueryContext) -> bytes:
    return b"answer to " + body


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def runtime(client: fakeredis.FakeRedis) -> WorkerRuntime:
    settings = ScalableJobConfig(enable_write_log_to_queue=True, shell=False)
    return WorkerRuntime(SERVICE, client, query_runner=answer, settings=settings)


def put(client: fakeredis.FakeRedis, request_id: str, frontend: str, task_type: TaskType = TaskType.QUERY) -> int:
    """A request as JobClient.put records it (the Celery message itself is the test's to deliver)."""
    tags = {"requestId": request_id, "taskType": task_type.value}
    return RequestStore(client, SERVICE).create(request_id, task_type.value, frontend=frontend, data=b"q", tags=tags)


def state(client: fakeredis.FakeRedis, request_id: str) -> RequestState:
    found = RequestStore(client, SERVICE).get(request_id)
    assert found is not None
    return found


def output(client: fakeredis.FakeRedis, frontend: str) -> list[tuple[str | None, bytes]]:
    return [(entry.type, entry.data) for entry in Sink(client, SERVICE, frontend=frontend).read()]


def test_a_query_answers_to_the_front_end_its_task_names(client: fakeredis.FakeRedis, runtime: WorkerRuntime) -> None:
    # given a request put through front end web, waiting in web's input queue
    put(client, "r1", "web")

    # when a worker runs its task, which carries the return address
    runtime.run_query("r1", b"q", {}, "w1@host", "web")

    # then the result is in web's output queue only, and the request left web's input queue as it ended
    assert output(client, "web") == [("result", b"answer to q")]
    assert output(client, SERVICE) == []
    assert client.xlen(keys.input_stream(SERVICE, "web")) == 0
    ended = state(client, "r1")
    assert (ended.status, ended.result_index, ended.worker) == (RequestStatus.DONE, 1, "w1@host")


def test_the_output_follows_the_task_not_a_read_back_of_the_request(
    client: fakeredis.FakeRedis, runtime: WorkerRuntime
) -> None:
    # given a request whose state names front end web, and a task that names api
    put(client, "r1", "web")

    runtime.run_query("r1", b"q", {}, "w1@host", "api")

    # then the task's address wins: the worker did not look the request up
    assert output(client, "api") == [("result", b"answer to q")]
    assert output(client, "web") == []


def test_a_task_sent_before_tasks_carried_a_return_address_answers_to_the_requests_front_end(
    client: fakeredis.FakeRedis, runtime: WorkerRuntime
) -> None:
    # given a message from before tasks carried their front end, for a request put through web
    put(client, "r1", "web")

    runtime.run_query("r1", b"q", {}, "w1@host")

    # then the request's state tells where it goes, and it leaves web's input queue
    assert output(client, "web") == [("result", b"answer to q")]
    assert output(client, SERVICE) == []
    assert client.xlen(keys.input_stream(SERVICE, "web")) == 0


def test_a_commands_log_and_result_go_to_its_front_end(client: fakeredis.FakeRedis, runtime: WorkerRuntime) -> None:
    put(client, "r1", "web", TaskType.COMMAND)
    body = f"{sys.executable} -u -c \"print('hello')\"".encode()

    ended = runtime.run_command("r1", body, {}, "w1@host", "web")

    assert ended.status is RequestStatus.DONE
    assert [entry_type for entry_type, _ in output(client, "web")] == ["log", "result"]
    assert output(client, "web")[0] == ("log", b"hello")
    assert output(client, SERVICE) == []
    assert state(client, "r1").log_index == 1


def test_a_request_cancelled_while_queued_ends_in_its_front_ends_output_queue(
    client: fakeredis.FakeRedis, runtime: WorkerRuntime
) -> None:
    put(client, "r1", "web")
    RequestStore(client, SERVICE).request_cancel("r1")

    runtime.run_query("r1", b"q", {}, "w1@host", "web")

    assert output(client, "web") == [("error", b"cancelled before it started")]
    assert state(client, "r1").status is RequestStatus.CANCELLED
    assert client.xlen(keys.input_stream(SERVICE, "web")) == 0


def test_the_query_task_hands_the_return_address_to_the_runtime(
    client: fakeredis.FakeRedis, runtime: WorkerRuntime
) -> None:
    # one app for both messages: Celery shares a task name's first registration with every later app
    app = Celery("test", set_as_current=False)
    register_tasks(app, runtime, lambda: None, UnhandledMessages(lambda *_: None, lambda *_: None))
    query = app.tasks[task_name_for(TaskType.QUERY)]
    put(client, "r-web", "web")
    put(client, "r-old", SERVICE)

    query.apply(args=(b"web", {}), kwargs={"frontend": "web"}, task_id="r-web")
    query.apply(args=(b"old", {}), task_id="r-old")  # sent before messages carried their front end

    assert output(client, "web") == [("result", b"answer to web")]
    assert output(client, SERVICE) == [("result", b"answer to old")]
