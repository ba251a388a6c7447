"""Real processes through the launcher: pinning by environment, warm stop, adoption by pid and start time,
and the processes a dead worker left behind. The "worker" here is a small Python program, not Celery."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from conftest import wait_until
from scalablejob.host.gpus import fake_gpus
from scalablejob.local.scaler_process import is_gone
from scalablejob.scaler.pool import WORKER_NAME_ENV, Exited, ProcessLauncher, WorkerSpec

pytestmark = pytest.mark.timeout(60)


def program(code: str) -> list[str]:
    """A stand-in worker; the launcher appends `-n NAME`, which `python -c` leaves in sys.argv."""
    return [sys.executable, "-c", textwrap.dedent(code)]


SLEEPER = program("import time; time.sleep(60)")


@pytest.fixture
def launchers() -> Iterator[list[ProcessLauncher]]:
    made: list[ProcessLauncher] = []
    yield made
    for launcher in made:
        for name in launcher.names:
            launcher.kill(name)
            launcher.kill_leftovers(name)
        wait_until(all_reaped(launcher), 10, "a test worker outlived its test")
        launcher.close()  # its fork server, if any


@pytest.fixture
def name() -> str:
    """A worker name of this test alone: the launcher finds a dead worker's leftovers by name on the whole machine,
    and the tests run in two processes at once."""
    return f"svc-{uuid.uuid4().hex[:8]}@testhost"


def all_reaped(launcher: ProcessLauncher) -> Callable[[], bool]:
    def check() -> bool:
        launcher.reap()
        return not launcher.names

    return check


def make(launchers: list[ProcessLauncher], argv: list[str], log_dir: Path | None = None) -> ProcessLauncher:
    launchers.append(ProcessLauncher(argv, "testhost", log_dir=log_dir))
    return launchers[-1]


def exec_done(pid: int) -> psutil.Process:
    """The process once its new program has its arguments and environment in place. Popen returns when exec closed
    the error pipe, which the kernel does before it lays out the new argv and environ: until then both read empty."""
    process = psutil.Process(pid)
    wait_until(lambda: process.environ() and process.cmdline(), 10, f"process {pid} never finished its exec")
    return process


def reaped(launcher: ProcessLauncher) -> list[Exited]:
    return wait_until(launcher.reap, 10, "no worker ended")


def test_a_worker_is_pinned_by_its_environment_and_named_on_its_command_line(launchers, tmp_path, name: str) -> None:
    launcher = make(launchers, SLEEPER, log_dir=tmp_path)
    record = launcher.spawn(WorkerSpec(name, fake_gpus(3)[1:]))

    process = exec_done(record.pid)
    assert process.environ()["CUDA_VISIBLE_DEVICES"] == "GPU-fake-0001,GPU-fake-0002"
    assert process.environ()[WORKER_NAME_ENV] == name
    assert process.cmdline()[-2:] == ["-n", name]
    assert (record.gpus, record.host, record.create_time) == (
        ("GPU-fake-0001", "GPU-fake-0002"), "testhost", process.create_time()
    )  # fmt: skip
    assert os.getsid(record.pid) == record.pid  # its own session: Ctrl-C on the scaler does not reach it

    cpu = launcher.spawn(WorkerSpec(f"cpu-{name}"))
    assert exec_done(cpu.pid).environ()["CUDA_VISIBLE_DEVICES"] == ""


def test_a_stop_is_a_sigterm_and_reap_reports_how_it_ended(launchers, name: str) -> None:
    launcher = make(launchers, SLEEPER)
    launcher.spawn(WorkerSpec(name))
    launcher.stop(name)
    assert reaped(launcher) == [Exited(name, -signal.SIGTERM)]
    launcher.stop(name)  # already gone: harmless


def test_a_live_worker_of_a_previous_run_is_adopted_a_reused_pid_is_not(launchers, name: str) -> None:
    record = make(launchers, SLEEPER).spawn(WorkerSpec(name))
    exec_done(record.pid)  # a worker of a previous run has long been running its program
    successor = make(launchers, SLEEPER)

    assert not successor.adopt(replace(record, create_time=record.create_time - 100))
    assert not successor.adopt(replace(record, name="svc-other@testhost"))
    assert successor.adopt(record)
    successor.kill(name)
    assert reaped(successor) == [Exited(name, None)]  # not our child: its code is unknown


def test_what_a_dead_worker_started_in_a_session_of_its_own_is_found_and_killed(launchers, tmp_path, name: str) -> None:
    pid_file = tmp_path / "grandchild"
    starts_a_command = program(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """)
    launcher = make(launchers, starts_a_command)
    record = launcher.spawn(WorkerSpec(name))
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, "the command never started")
    command = int(pid_file.read_text())

    os.kill(record.pid, signal.SIGKILL)
    assert reaped(launcher) == [Exited(name, -signal.SIGKILL)]
    assert launcher.kill_leftovers(name) == 1
    wait_until(lambda: is_gone(command), 10, "the command outlived its worker")


def test_prewarm_applies_to_scalablejob_worker_only_another_program_starts_cold(launchers, name: str) -> None:
    started: list[list[str]] = []
    launchers.append(ProcessLauncher(SLEEPER, "testhost", prewarm=True, fork_server=started.append))  # type: ignore[arg-type]

    record = launchers[-1].spawn(WorkerSpec(name))

    assert started == [] and psutil.Process(record.pid).ppid() == os.getpid()
