"""A Redis restart (celery #8030, #9054): workers reconnect and keep taking work, still one command at a time."""

from __future__ import annotations

import pytest

from conftest import max_overlap, python_command, service_config
from scalablejob import RequestStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_worker_keeps_taking_work_after_a_redis_restart(redis_server, start_worker, client_for):
    # given a worker that has answered a query
    start_worker(service_config("restart"))
    client = client_for("restart")
    _, before = client.put(b"before", {"taskType": "query"})
    assert client.result(before, timeout=30).data == b"echo:before"

    # when Redis restarts on the same port
    redis_server.stop()
    redis_server.start()

    # then new work is taken, and the idle-first gate still lets only one command run at a time
    commands = [client.put(python_command("import time; time.sleep(0.5)"), {"taskType": "command"})[1]
                for _ in range(2)]  # fmt: skip
    _, after = client.put(b"after", {"taskType": "query"})
    assert client.result(after, timeout=60).data == b"echo:after"
    spans = []
    for request_id in commands:
        client.result(request_id, timeout=60)
        state = client.state(request_id)
        assert state.status is RequestStatus.DONE
        spans.append((state.started_at, state.finished_at))
    assert max_overlap(spans) == 1
