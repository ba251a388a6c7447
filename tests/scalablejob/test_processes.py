"""Process helpers: wait_for_listener (true once a child listens, false as soon as it exits, false when time runs
out), dying_with_parent, and kill_processes_with_env."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import wait_until
from scalablejob.host.processes import dying_with_parent, kill_processes_with_env, stop_group, wait_for_listener
from scalablejob.local.ports import free_port
from scalablejob.local.scaler_process import is_gone

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


def test_a_child_started_dying_with_parent_ends_when_its_parent_is_killed(tmp_path):
    # given a parent with a thread running, which starts a sleeper through the trampoline and writes its pid
    pid_file = tmp_path / "child.pid"
    parent_code = f"""
import subprocess, sys, threading, time
from scalablejob.host.processes import dying_with_parent
threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
child = subprocess.Popen(dying_with_parent([sys.executable, "-c", "import time; time.sleep(60)"]),
                         start_new_session=True)
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(60)
"""
    parent = start(parent_code)
    try:
        wait_until(lambda: pid_file.exists() and pid_file.read_text(), 30, "the parent never started its child")
        child = psutil.Process(int(pid_file.read_text()))
        program = [sys.executable, "-c", "import time; time.sleep(60)"]
        wait_until(lambda: child.cmdline() == program, 30, "the trampoline never exec'd the program")

        # when the parent is killed with kill -9
        parent.kill()
        parent.wait(10)

        # then the child (the exec'd program, same pid) is signalled and ends (psutil.TimeoutExpired if not)
        child.wait(10)
        assert not child.is_running()
    finally:
        stop_group(parent, 5)
        with contextlib.suppress(psutil.NoSuchProcess, ValueError):
            psutil.Process(int(pid_file.read_text())).kill()


def test_a_program_that_is_not_on_the_path_is_an_error_before_anything_starts():
    with pytest.raises(FileNotFoundError, match="no-such-program-here"):
        dying_with_parent(["no-such-program-here", "--flag"], {"PATH": "/nonexistent"})
    assert dying_with_parent(["ls"], {"PATH": "/usr/bin:/bin"})[-1] == "ls"


def test_kill_processes_with_env_kills_the_marked_ones_wherever_they_went(tmp_path):
    # given a marked process whose daemon (its own session, its parent gone) writes its pid, and an unmarked one
    marker = {"SCALABLEJOB_TEST_MARK": f"mark-{time.monotonic_ns()}"}
    pid_file = tmp_path / "daemon.pid"
    daemon = f"setsid sh -c 'sleep 60 & echo $! > {pid_file}'; exec sleep 60"
    marked = subprocess.Popen(["sh", "-c", daemon], env={**os.environ, **marker}, start_new_session=True)
    unmarked = subprocess.Popen(
        ["sleep", "60"], env={**os.environ, "SCALABLEJOB_TEST_MARK": "other"}, start_new_session=True
    )
    try:
        grandchild = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "no daemon"))

        # when the marked ones are killed
        killed = kill_processes_with_env(*marker.popitem())

        # then both of them are gone, and the other one still runs
        assert killed >= 2  # the daemon's parent shell too, if it had not exited yet
        assert marked.wait(10) == -signal.SIGKILL
        wait_until(lambda: is_gone(grandchild), 10, "the marked daemon outlived the kill")
        assert unmarked.poll() is None
    finally:
        for process in (marked, unmarked):
            stop_group(process, 0)
        with contextlib.suppress(ValueError, OSError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
