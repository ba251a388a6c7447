"""`scalablejob frontend --workers N`: N real processes on one port, started and stopped as one."""

from __future__ import annotations

import os
import re
import signal
import sys

import httpx
import psutil
import pytest

from conftest import service_config, wait_until
from scalablejob.frontend.processes import Supervisor
from scalablejob.model.restart_budget import RestartBudget

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "forked"
TOKEN = "forked-token"
ENV = {"SCALABLEJOB_FRONTEND_TOKEN": TOKEN}
_PIDS = re.compile(r"(\d+) processes serving, pids ([\d ]+)")


def _put(url: str) -> None:
    answer = httpx.post(f"{url}/api/predict/{SERVICE}?taskType=query", content=b"{}", headers={"Authorization": TOKEN})
    assert answer.status_code == 200, answer.text


def _children(pid: int) -> set[int]:
    return {child.pid for child in psutil.Process(pid).children() if child.status() != psutil.STATUS_ZOMBIE}


def _gone(pids: set[int]) -> bool:
    return not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in pids)


def test_workers_serve_one_port_say_the_start_once_and_all_stop_on_sigterm(start_frontend):
    frontend = start_frontend(service_config(SERVICE), "--workers", "2", env=ENV)
    url, _ = frontend.started()
    found = wait_until(lambda: _PIDS.search(frontend.log()), 10, "the front end never named its processes")
    pids = {int(pid) for pid in found.group(2).split()}
    assert found.group(1) == "2" and _children(frontend.process.pid) == pids
    for _ in range(20):
        _put(url)
    log = frontend.log()
    assert log.count("listening on") == 1 and log.count("token from") == 1
    assert "Application startup complete" not in log  # uvicorn's lines per process are not repeated N times
    frontend.process.send_signal(signal.SIGTERM)
    assert frontend.process.wait(20) == 0
    assert _gone(pids)


def test_a_killed_process_is_replaced_and_a_killed_supervisor_leaves_none(start_frontend):
    frontend = start_frontend(service_config(SERVICE), "--workers", "2", env=ENV)
    url, _ = frontend.started()
    pids = wait_until(lambda: _children(frontend.process.pid) if len(_children(frontend.process.pid)) == 2 else None,
                      10, "two processes never served")  # fmt: skip
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    replaced = wait_until(lambda: re.search(rf"process {victim} was killed by SIGKILL: replaced by process (\d+)",
                                            frontend.log()), 10, "the killed process was not replaced")  # fmt: skip
    now = _children(frontend.process.pid)
    assert now == pids - {victim} | {int(replaced.group(1))}
    for _ in range(10):
        _put(url)
    os.kill(frontend.process.pid, signal.SIGKILL)
    frontend.process.wait(10)
    wait_until(lambda: _gone(now), 15, "processes outlived their supervisor")


def test_processes_that_keep_crashing_end_the_supervisor_with_exit_1(capfd):
    supervisor = Supervisor(2, lambda: sys.exit(3), budget=RestartBudget(restarts=3, window_s=60))
    assert supervisor.run() == 1
    assert supervisor.children == {}
    err = capfd.readouterr().err
    assert err.count("exited 3: replaced by process") == 3 and "processes keep ending (more than 3 times" in err
