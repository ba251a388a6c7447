"""wait_for_listener: true once a child listens, false as soon as it exits, false when time runs out."""

from __future__ import annotations

import subprocess
import sys
import time

from scalablejob.processes import stop_group, wait_for_listener
from scalablejob.redis_server import free_port

LISTEN = (
    "import socket, sys, time\ns = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\ntime.sleep(60)"
)


def start(code: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code, *args], start_new_session=True)


def test_true_once_the_child_listens():
    port = free_port()
    child = start(LISTEN, str(port))
    try:
        assert wait_for_listener(child, "127.0.0.1", port, timeout_s=30)
    finally:
        stop_group(child, 5)


def test_false_as_soon_as_the_child_exits():
    child = start("raise SystemExit(3)")
    started = time.monotonic()

    assert not wait_for_listener(child, "127.0.0.1", free_port(), timeout_s=30)
    assert time.monotonic() - started < 10 and child.returncode == 3


def test_false_when_time_runs_out():
    child = start("import time; time.sleep(60)")
    try:
        assert not wait_for_listener(child, "127.0.0.1", free_port(), timeout_s=0.3)
    finally:
        stop_group(child, 5)
