"""No secret on a command line or in what `up` prints: every process of a running `up` (front end, scaler, worker, the
job it runs, Flower, redis-server, the keeper) is read in /proc and `ps`, on the embedded broker and on an external
Redis with a password."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from conftest import REPO, TEST_HANDLERS, UpProcess, python_command, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.cli.options import APPENDFSYNC_ENV
from scalablejob.local.flower import flower_login
from scalablejob.local.redis_server import RedisServer
from scalablejob.local.up import frontend_token
from scalablejob.model.config import load_config
from scalablejob.model.redaction import url_password
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV, PASSWORD_FILE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
PARTS = ("redis-server", "scalablejob frontend", "scalablejob scaler", "scalablejob worker", "flower", "stack_keeper")


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator:
    running: list[UpProcess] = []

    def start(*extra: str, env: dict[str, str] | None = None) -> UpProcess:
        config = tmp_path / "service.json"
        config.write_text(json.dumps({"metadata": {"name": "secrets", "type": "ScalableJob", "gpu": 0},
                                      "autoscaler": {"min": 1, "max": 1}}))  # fmt: skip
        base = {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}
        running.append(UpProcess(config, tmp_path / "data", "--app", str(TEST_HANDLERS), *extra,
                                 env={**base, **(env or {})}))  # fmt: skip
        return running[-1]

    yield start
    for up in running:
        if up.process.poll() is None:
            up.kill()


def command_lines(up: UpProcess) -> dict[int, bytes]:
    """The command line of `up` and of every process under it, as the kernel shows it to any local user."""
    lines = {}
    for process in [psutil.Process(up.process.pid), *up.descendants()]:
        try:
            lines[process.pid] = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except FileNotFoundError:
            continue
    return lines


def running_job(url: str, release: Path) -> str:
    """A command task that runs until `release` exists: its process is part of the stack while we look."""
    with JobClient("secrets", url) as client:
        wait = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)\n"
        _, request_id = client.put(python_command(wait), {"taskType": "command"})
        wait_until(lambda: client.state(request_id).status is RequestStatus.RUNNING, 60, "the job never started")
    return request_id


def assert_nowhere(secrets: list[str], up: UpProcess, parts: tuple[str, ...] = PARTS) -> None:
    lines = command_lines(up)
    shown = b"\n".join(lines.values()).decode()
    for part in parts:
        assert part in shown, f"{part} is not running: {shown}"
    ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, timeout=30).stdout
    printed = "\n".join(up.lines)
    for secret in secrets:
        assert secret not in shown and secret not in ps, "a secret is on a command line"
        assert secret not in printed, "up printed a secret"


def test_no_process_of_a_running_up_has_a_password_on_its_command_line(start_up, tmp_path):
    # given a running stack on the embedded broker, with a job running on its worker
    up = start_up(env={APPENDFSYNC_ENV: "always"})
    where = up.wait_ready()
    release = tmp_path / "release"
    request_id = running_job(where["broker"], release)

    # then neither the broker's password nor Flower's is on any command line, nor in what up printed
    data = tmp_path / "data"
    password = (data / PASSWORD_FILE).read_text().strip()
    assert password == url_password(where["broker"])
    assert_nowhere([password, flower_login(data).password], up)
    assert any(line.startswith("  broker     redis://:***@127.0.0.1:") for line in up.lines)
    # and what the environment asked for reached the embedded Redis
    assert redis.Redis.from_url(where["broker"]).config_get("appendfsync") == {"appendfsync": "always"}

    release.touch()
    with JobClient("secrets", where["broker"]) as client:
        assert client.result(request_id, timeout=60).tags["exitCode"] == "0"
    assert up.interrupt() == 0


def test_an_external_redis_password_given_in_the_environment_stays_off_every_command_line(start_up, tmp_path):
    # given a Redis of someone else's with a password, named to `up` in its environment
    with RedisServer(tmp_path / "external", persistent=False, password="external-pass-4567") as server:
        up = start_up(env={BROKER_ENV: server.url})
        where = up.wait_ready()
        assert where["broker"] == f"redis://:***@127.0.0.1:{server.port}/0"  # printed masked
        release = tmp_path / "release"
        request_id = running_job(server.url, release)

        # then every part works through it, and the password is on no command line
        assert_nowhere(["external-pass-4567"], up, tuple(part for part in PARTS if part != "redis-server"))
        with JobClient("secrets", server.url) as client:
            _, query_id = client.put(b"through the external one", {"taskType": "query"})
            release.touch()
            assert client.result(query_id, timeout=60).data == b"echo:through the external one"
            assert client.result(request_id, timeout=60).tags["exitCode"] == "0"
        assert up.interrupt() == 0


def test_up_help_tells_where_the_secrets_go():
    shown = subprocess.run([sys.executable, "-m", "scalablejob", "up", "--help"], cwd=REPO, capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    for expected in ("--appendfsync", "--flower-no-auth", "redis.password", "flower-login"):
        assert expected in shown.stdout


def test_ups_front_end_token_is_kept_0600_in_the_data_folder_and_printed_only_when_made(tmp_path):
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"metadata": {"name": "tok", "type": "ScalableJob", "gpu": 0}}))
    token, shown = frontend_token(load_config(str(path)), tmp_path / "data")
    again, shown_again = frontend_token(load_config(str(path)), tmp_path / "data")
    assert again == token and shown == f"token {token}"
    assert shown_again == f"token in {tmp_path / 'data' / 'frontend.token'}" and token not in shown_again
    assert stat.S_IMODE(os.stat(tmp_path / "data" / "frontend.token").st_mode) == 0o600
