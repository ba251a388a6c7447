"""End to end against a real redis-server and real worker processes: results and outputs reach the sink."""

from __future__ import annotations

import base64
import json

import pytest

from conftest import max_overlap, python_command, service_config
from scalablejob import JobClient, RequestError, RequestStatus, TaskTypeError
from scalablejob.model import keys
from scalablejob.model.routing import TaskType, queue_for, service_queues
from scalablejob.store.queues import priority_lists, queue_depth
from scalablejob.store.sink import Sink

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_query_result_reaches_the_sink(start_worker, client_for):
    start_worker(service_config("e2e"))
    client = client_for("e2e")

    index, request_id = client.put(b'{"progress": 0.5}', {"taskType": "query"})
    entry = client.result(request_id, timeout=30)

    assert index == 1
    assert entry.data == b'echo:{"progress": 0.5}'
    assert dict(entry.tags) == {"requestId": request_id, "taskType": "query", "type": "result"}
    assert client.read_sink() == [entry]
    state = client.state(request_id)
    assert state.status is RequestStatus.DONE
    assert state.progress == 0.5 and state.message == "halfway"
    assert state.worker == "e2e-w0@test"
    assert state.queued_at <= state.started_at <= state.finished_at


def test_failing_query_handler_writes_an_error_entry(start_worker, client_for):
    start_worker(service_config("e2e"))
    client = client_for("e2e")

    _, request_id = client.put(b'{"fail": "no model loaded"}', {"taskType": "query"})
    entry = client.result(request_id, timeout=30)

    assert entry.type == "error"
    assert entry.data == b"RuntimeError: no model loaded"
    assert client.state(request_id).status is RequestStatus.FAILED


def test_command_exit_code_and_output_reach_the_sink(start_worker, client_for):
    start_worker(service_config("e2e"))
    client = client_for("e2e")

    _, ok_id = client.put(python_command("print('epoch 1'); print('epoch 2')"), {"taskType": "command"})
    _, bad_id = client.put(
        python_command("import sys; print('oops', file=sys.stderr); sys.exit(3)"), {"taskType": "command"}
    )

    ok, bad = client.result(ok_id, timeout=30), client.result(bad_id, timeout=30)
    assert (ok.data, ok.tags["exitCode"], ok.tags["type"]) == (b"epoch 1\nepoch 2\n", "0", "result")
    assert (bad.data, bad.tags["exitCode"]) == (b"oops\n", "3")
    assert client.state(ok_id).status is RequestStatus.DONE
    failed = client.state(bad_id)
    assert (failed.status, failed.exit_code) == (RequestStatus.FAILED, 3)


def test_bad_task_type_is_rejected_and_nothing_is_enqueued(redis_client, client_for):
    client = client_for("e2e")

    with pytest.raises(TaskTypeError, match=r"'train'.*command, query"):
        client.put(b"python train.py", {"taskType": "train"})
    with pytest.raises(TaskTypeError, match=r"required.*command, query"):
        client.put(b"python train.py")

    assert [queue_depth(redis_client, queue) for queue in service_queues("e2e")] == [0, 0]
    assert redis_client.keys("*") == []


def test_command_tasks_run_one_at_a_time_while_queries_share_the_threads(start_worker, client_for):
    # given one worker with two query threads
    start_worker(service_config("e2e", **{"rpc.worker_threads": 2}))
    client = client_for("e2e")

    # when two commands and three queries, each about 1 s long, arrive together
    commands = [client.put(python_command("import time; time.sleep(1)"), {"taskType": "command"})[1] for _ in range(2)]
    queries = [client.put(b'{"sleep": 1}', {"taskType": "query"})[1] for _ in range(3)]
    for request_id in commands + queries:
        client.result(request_id, timeout=30)

    # then the commands never overlap, at most two queries overlap, and queries ran beside a command
    spans = {rid: (s.started_at, s.finished_at) for rid in commands + queries if (s := client.state(rid))}
    assert max_overlap([spans[rid] for rid in commands]) == 1
    assert max_overlap([spans[rid] for rid in queries]) == 2
    assert max_overlap([spans[commands[0]], *[spans[rid] for rid in queries]]) >= 2


def test_a_priority_request_runs_ahead_of_normal_ones(start_worker, client_for):
    # given normal requests waiting before an urgent one, and no worker yet
    client = client_for("e2e")
    normal = [client.put(b"{}", {"taskType": "query"})[1] for _ in range(3)]
    _, urgent = client.put(b"{}", {"taskType": "query", "_priority_": "1"})

    # when a worker with one query slot starts
    start_worker(service_config("e2e", **{"rpc.worker_threads": 1}))
    for request_id in [*normal, urgent]:
        client.result(request_id, timeout=30)

    # then the urgent request ran first and the normal ones kept their order
    order = sorted([*normal, urgent], key=lambda rid: client.state(rid).started_at)
    assert order == [urgent, *normal]


def test_a_bad_priority_tag_is_refused(client_for, redis_client):
    with pytest.raises(RequestError, match=r"_priority_ 'high': expected 0 .* or 1"):
        client_for("e2e").put(b"{}", {"taskType": "query", "_priority_": "high"})
    assert redis_client.keys("*") == []


def test_the_return_address_travels_with_the_task(start_worker, redis_url, redis_client):
    # given a request put through front end web before any worker runs
    with JobClient("e2e", redis_url, frontend="web") as client:
        _, request_id = client.put(b"{}", {"taskType": "query"})
        lists = priority_lists(queue_for("e2e", TaskType.QUERY))
        [message] = [json.loads(raw) for key in lists for raw in redis_client.lrange(key, 0, -1)]

        # then its message names web, so no worker need ask Redis where the request came from
        assert message["headers"]["id"] == request_id
        _, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        assert kwargs == {"frontend": "web"}

        # when a worker runs it, the result reaches web's output queue, not the service's own
        start_worker(service_config("e2e"))
        assert client.result(request_id, timeout=30).type == "result"
        assert Sink(redis_client, "e2e").length() == 0
        assert redis_client.xlen(keys.input_stream("e2e", "web")) == 0
