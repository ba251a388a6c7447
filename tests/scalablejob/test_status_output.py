"""`status` and `watch --once` for pipes and scripts: whole tables, --json, and a mistyped service flagged."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner, Result

from conftest import service_config
from scalablejob.cli.main import main
from scalablejob.model import keys
from scalablejob.store.presence import Presence, WorkerState

LONG_WORKER = "svc-" + "w" * 40 + "@a-rather-long-host-name.example.internal"


def invoke(redis_url: str, *args: str) -> Result:
    """Run a command in-process; CliRunner's output is not a terminal, like a pipe's."""
    return CliRunner().invoke(main, [*args, "--broker", redis_url])


@pytest.fixture
def busy_service(redis_client, client_for) -> list[str]:
    """Service svc with two queued queries, a busy worker and a scaler report, all wider than 80 columns."""
    client = client_for("svc")
    ids = [client.put(b"x", {"taskType": "query"})[1] for _ in range(2)]
    worker = Presence(LONG_WORKER, 4242, "host", WorkerState.BUSY, "GPU-0,GPU-1", {"r0": "1"}, time.time())
    redis_client.hset(keys.worker_presence("svc"), LONG_WORKER, worker.encode())
    report = {"replicas": "1", "desired": "2", "busy": "1", "queued": "2", "running": "1", "at": str(time.time()),
              "reason": "ceil((2 queued + 1 running) / avg_waiting_length 2) = 2, within min 1 and max 4"}  # fmt: skip
    redis_client.hset(keys.scaler_status("svc", "host"), mapping=report)
    return ids


def test_status_in_a_pipe_shows_every_header_and_value_whole(redis_url, busy_service):
    result = invoke(redis_url, "status", "-s", "svc")

    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    for text in ("heartbeat", "updated", "reason", LONG_WORKER, "within min 1 and max 4", "GPU-0,GPU-1"):
        assert text in result.output


def test_watch_once_in_a_pipe_shows_every_header_whole(redis_url, busy_service):
    result = invoke(redis_url, "watch", "-s", "svc", "--once")

    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "request" in line and "state" in line)
    cells = [cell.strip() for cell in header.split("┃")[1:-1]]
    assert cells == ["request", "type", "state", "worker", "progress", "", "message", "for"]  # not "ty…", "st…"
    assert "…" not in result.output
    assert all(request_id[:12] in result.output for request_id in busy_service)


def test_status_json_is_the_snapshot_as_data(redis_url, busy_service):
    result = invoke(redis_url, "status", "-s", "svc", "--json")

    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["service"] == "svc"
    assert document["queues"] == {"svc.command": 0, "svc.query": 2}
    [worker] = document["workers"]
    assert (worker["name"], worker["state"], worker["stale"], worker["tasks"]) == (LONG_WORKER, "busy", False, ["r0"])
    assert document["scalers"][0]["desired"] == "2" and document["scalers"][0]["host"] == "host"
    assert {"initFailures", "decisions", "takenAt"} <= document.keys()


def test_status_json_with_a_config_adds_its_type(redis_url, busy_service, tmp_path):
    config = tmp_path / "svc.json"
    config.write_text(json.dumps(service_config("svc")))

    document = json.loads(invoke(redis_url, "status", str(config), "--json").output)

    assert (document["service"], document["type"], document["image"]) == ("svc", "ScalableJob", None)


def test_watch_json_lists_the_requests_in_flight(redis_url, busy_service):
    result = invoke(redis_url, "watch", "-s", "svc", "--json")

    assert result.exit_code == 0, result.output
    requests = json.loads(result.output)
    assert [request["requestId"] for request in requests] == busy_service
    assert {(request["taskType"], request["state"]) for request in requests} == {("query", "queued")}
    assert all(request["seconds"] >= 0 for request in requests)


def test_status_of_a_service_the_broker_does_not_know_is_an_error(redis_url, busy_service):
    result = invoke(redis_url, "status", "-s", "svcc")

    assert result.exit_code == 1
    assert "service 'svcc': the broker knows nothing of it" in result.output
    assert "known services: svc" in result.output


def test_status_of_an_unknown_service_on_an_empty_broker_says_so(redis_url):
    result = invoke(redis_url, "status", "-s", "TYPO", "--json")

    assert result.exit_code == 1
    assert "the broker knows nothing of it" in result.output and "it holds no service yet" in result.output


def test_status_of_a_configured_service_not_used_yet_is_shown_empty(redis_url, tmp_path):
    config = tmp_path / "fresh.json"
    config.write_text(json.dumps(service_config("fresh")))

    result = invoke(redis_url, "status", str(config))

    assert result.exit_code == 0, result.output
    assert "service fresh (ScalableJob)" in result.output and "(no scaler running)" in result.output


@pytest.mark.parametrize("command", ["status", "watch"])
def test_json_is_documented_in_help(command):
    result = CliRunner().invoke(main, [command, "--help"])

    assert "--json" in result.output and "JSON" in result.output
