"""What a real worker says at start: a worker that cannot answer queries warns once, before it takes work."""

from __future__ import annotations

import pytest

from conftest import service_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WARNING = "no query handler: this worker consumes {service}.query and fails every query task it takes"


def test_a_worker_without_a_query_handler_warns_once_at_start(start_worker):
    # when a worker starts with no --app and no model server (it still consumes the query queue)
    worker = start_worker(service_config("noquery"), app=None)

    # then, by the time it answers, its log has said so in one line that names the way out
    lines = [line for line in worker.log().splitlines() if "no query handler" in line]
    assert len(lines) == 1, worker.log()
    assert WARNING.format(service="noquery") in lines[0] and "WARNING" in lines[0]
    assert "--app MODULE" in lines[0] and "containers[0].command and port" in lines[0]


def test_a_worker_with_a_query_handler_does_not_warn(start_worker):
    worker = start_worker(service_config("withquery"))

    assert "no query handler" not in worker.log()
