"""The command line: clear errors, and commands that run real processes and stop cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import REPO, service_config, wait_until
from scalablejob import JobClient
from scalablejob.cli.main import main
from scalablejob.store.broker import BROKER_RECORD, running_embedded


def test_worker_with_an_invalid_config_names_the_field_and_exits_1(tmp_path):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"metadata": {"name": "svc", "type": "ScalableJob", "gpu": -1}}))

    result = CliRunner().invoke(main, ["worker", str(config), "--broker", "redis://127.0.0.1:1/0"])

    assert result.exit_code == 1
    assert "$.metadata.gpu" in result.output and "expected an integer >= 0" in result.output


def test_worker_with_an_unloadable_app_says_so_and_exits_1(tmp_path):
    config = tmp_path / "svc.json"
    config.write_text(json.dumps(service_config("svc")))

    result = CliRunner().invoke(main, ["worker", str(config), "--broker", "redis://127.0.0.1:1/0", "--app", "nope_mod"])

    assert result.exit_code == 1
    assert "--app nope_mod: could not import it: ModuleNotFoundError" in result.output


def test_worker_help_explains_every_option():
    result = CliRunner().invoke(main, ["worker", "--help"])
    for option in ("--app", "--broker", "--hostname", "--data-dir", "SCALABLEJOB_BROKER"):
        assert option in result.output


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_redis_command_runs_the_embedded_broker_until_interrupted(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "scalablejob", "redis", "--data-dir", str(tmp_path)],
        stdout=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    try:
        assert "listening on redis://:***@127.0.0.1:" in process.stdout.readline()
        url = running_embedded(tmp_path)
        assert url is not None
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
        assert running_embedded(tmp_path) is None
        assert not (tmp_path / BROKER_RECORD).exists()
    finally:
        process.kill()
        process.wait()


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_worker_without_a_broker_starts_the_embedded_one_and_stops_it_on_exit(tmp_path):
    # given a worker started with no broker at all
    config = tmp_path / "solo.json"
    config.write_text(json.dumps(service_config("solo")))
    env = {k: v for k, v in os.environ.items() if k != "SCALABLEJOB_BROKER"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "scalablejob", "worker", str(config), "--data-dir", str(tmp_path), "-n", "solo@t"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        url = wait_until(lambda: running_embedded(tmp_path), 30, "the worker never started an embedded broker")

        # when a command is submitted to that broker
        with JobClient("solo", url) as client:
            _, request_id = client.put("python -c \"print('on the embedded broker')\"", {"taskType": "command"})
            entry = client.result(request_id, timeout=30)

        # then it runs, and a warm shutdown of the worker stops the broker it started
        assert entry.data == b"on the embedded broker\n"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert running_embedded(tmp_path) is None
    finally:
        os.killpg(worker.pid, signal.SIGKILL) if worker.poll() is None else None
        worker.wait()


def test_an_unreachable_broker_is_a_one_line_error():
    result = CliRunner().invoke(
        main, ["submit", "-s", "svc", "--type", "query", "hi", "--broker", "redis://127.0.0.1:1/0"]
    )

    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach the broker: Error 111 connecting to 127.0.0.1:1")


def test_every_command_is_registered_in_the_one_group() -> None:
    expected = [
        "cancel", "config", "down", "frontend", "logs", "redis", "scaler", "status", "submit", "up", "watch", "worker",
    ]  # fmt: skip
    assert sorted(main.commands) == expected


def test_find_request_takes_a_unique_start_of_an_id_and_refuses_a_short_or_shared_one():
    import fakeredis

    from scalablejob.cli.requests import find_request
    from scalablejob.model import keys
    from scalablejob.model.errors import RequestError

    client = fakeredis.FakeRedis()
    for service, request_id in (("a", "0123456789ab" + "0" * 20), ("a", "0123459999ab" + "0" * 20),
                                ("b", "fedcba987654" + "1" * 20)):  # fmt: skip
        client.hset(keys.request_state(service, request_id), "status", "queued")

    assert find_request(client, "fedcba98", None) == ("b", "fedcba987654" + "1" * 20)
    assert find_request(client, "0123456789ab", "a") == ("a", "0123456789ab" + "0" * 20)
    for prefix, message in (("01234", "is too short"), ("012345", "is the start of 2 requests"),
                            ("fedcba98", "is unknown to service a"), ("ffffff", "found in no service")):  # fmt: skip
        service = "a" if prefix == "fedcba98" else None
        with pytest.raises(RequestError, match=message):
            find_request(client, prefix, service)


def test_up_with_a_data_dir_says_when_the_broker_comes_from_the_environment_instead(tmp_path):
    # given a broker named only in the environment (a .env a Procfile runner loaded), and --data-dir on the line
    config = tmp_path / "service.json"
    config.write_text(json.dumps(service_config("envbroker")))
    env = {"SCALABLEJOB_BROKER": "redis://127.0.0.1:1/0", "SCALABLEJOB_BROKER_WAIT": "0"}

    # when `up` starts
    result = CliRunner().invoke(main, ["up", str(config), "--data-dir", str(tmp_path / "data")], env=env)

    # then it says, before anything else, which broker it uses and that the folder's own Redis is not started
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith("Warning: using the broker that SCALABLEJOB_BROKER names, not a Redis of its own in ")
    assert str(tmp_path / "data") in first
    assert "127.0.0.1:1" not in first  # a broker URL may hold its password


def test_up_names_no_environment_broker_when_the_broker_is_on_the_line(tmp_path):
    config = tmp_path / "service.json"
    config.write_text(json.dumps(service_config("linebroker")))
    argv = ["up", str(config), "--data-dir", str(tmp_path / "data"), "--broker", "redis://127.0.0.1:1/0"]

    result = CliRunner().invoke(main, argv, env={"SCALABLEJOB_BROKER_WAIT": "0"})

    assert result.exit_code == 1
    assert "Warning" not in result.output
