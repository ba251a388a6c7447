"""`scalablejob frontend` as a process: address printed at start, a token made at start printed once and kept (as a
hash) across restarts, a token given through the environment."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conftest import REPO, service_config, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
_LISTENING = re.compile(r"listening on (http://\S+)")
_TOKEN = re.compile(r"^  /api/predict/(\S+) and \S+  token (not shown|\S+) \(([^:;]+)[:;][^)]*\)$", re.MULTILINE)


@dataclass
class FrontEndProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def started(self) -> tuple[str, dict[str, tuple[str, str]]]:
        """(base URL, name -> (token, where it came from)), once the process printed them."""
        url = wait_until(lambda: self._listening(), START_TIMEOUT_S, "the front end never said where it listens")
        return url, {name: (token, source) for name, token, source in _TOKEN.findall(self.log())}

    def _listening(self) -> str | None:
        if self.process.poll() is not None:
            pytest.fail(f"the front end exited {self.process.returncode}:\n{self.log()}")
        found = _LISTENING.search(self.log())
        return found.group(1) if found and _TOKEN.search(self.log()) else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.fixture
def start_frontend(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., FrontEndProcess]]:
    """Run `scalablejob frontend CONFIG --port 0 --broker URL [ARGS]`; every process is stopped after the test."""
    processes: list[FrontEndProcess] = []

    def start(config: dict, *args: str, env: dict[str, str] | None = None) -> FrontEndProcess:
        config_path = tmp_path / "service.json"
        config_path.write_text(json.dumps(config))
        log_path = tmp_path / f"frontend-{len(processes)}.log"
        argv = [sys.executable, "-m", "scalablejob", "frontend", str(config_path), "--port", "0", "--broker", redis_url]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*argv, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )
        processes.append(FrontEndProcess(process, log_path))
        return processes[-1]

    yield start
    for frontend in processes:
        frontend.stop()


def answers(url: str, token: str) -> int:
    return httpx.get(
        f"{url}/api/predict/cli/sink", params={"_attrs_": "true"}, headers={"Authorization": token}
    ).status_code


def test_the_front_end_prints_a_generated_token_once_and_a_restart_keeps_it_unshown(start_frontend):
    # given a front end started without a token
    first = start_frontend(service_config("cli"))
    url, tokens = first.started()
    token, source = tokens["cli"]
    assert source == "generated" and len(token) >= 32

    # when a client uses it, with the token and without
    put = httpx.post(f"{url}/api/predict/cli", params={"taskType": "query"}, headers={"Authorization": token})
    refused = httpx.post(f"{url}/api/predict/cli", params={"taskType": "query"}, headers={"Authorization": "x"})
    assert (put.status_code, put.text, refused.status_code) == (200, "1", 401)
    assert first.stop() == 0

    # then a restart without a token keeps the token, without showing it again
    again = start_frontend(service_config("cli"))
    url, tokens = again.started()
    assert tokens["cli"] == ("not shown", "registry") and token not in again.log() and answers(url, token) == 200
    assert again.stop() == 0

    # and a token given through the environment replaces it, and is not shown either
    given = start_frontend(service_config("cli"), env={"SCALABLEJOB_FRONTEND_TOKEN": "mine-from-env"})
    url, tokens = given.started()
    assert tokens["cli"] == ("not shown", "--token") and "mine-from-env" not in given.log()
    assert (answers(url, "mine-from-env"), answers(url, token)) == (200, 401)


def test_a_standalone_service_serves_several_named_front_ends_each_with_its_own_token(start_frontend):
    url, tokens = start_frontend(service_config("cli"), "--name", "alpha", "--name", "beta").started()
    assert set(tokens) == {"alpha", "beta"} and tokens["alpha"][0] != tokens["beta"][0]
    alpha = httpx.get(f"{url}/api/predict/alpha/sink", headers={"Authorization": tokens["alpha"][0]})
    crossed = httpx.get(f"{url}/api/predict/alpha/sink", headers={"Authorization": tokens["beta"][0]})
    assert (alpha.status_code, crossed.status_code) == (200, 401)


def test_an_integrated_service_refuses_a_front_end_of_another_name(start_frontend):
    frontend = start_frontend(service_config("cli", type="ScalableJobService"), "--name", "other")
    assert frontend.process.wait(START_TIMEOUT_S) == 1
    assert "service cli is a ScalableJobService: it takes work from its own front end only" in frontend.log()
