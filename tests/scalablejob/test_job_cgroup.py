"""A job's cgroup on this machine's real cgroup file system: made, entered, killed at once, counted, removed.
Skipped where no cgroup can be made (not root, a read-only mount): the runner then does without, see
tests/workers/test_job_processes.py."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import wait_until
from scalablejob.host.job_cgroup import NAME_PREFIX, CgroupBases, CgroupUnavailable, JobCgroup, own_bases
from scalablejob.local.scaler_process import is_gone


def job_name() -> str:
    return f"{NAME_PREFIX}{os.getpid()}-{uuid.uuid4().hex}"


@pytest.fixture
def cgroup() -> Iterator[JobCgroup]:
    try:
        made = JobCgroup.make(job_name())
    except CgroupUnavailable as exc:
        pytest.skip(f"no job cgroup can be made here: {exc}")
    yield made
    made.kill()
    made.remove()


@pytest.fixture
def processes() -> Iterator[list[int]]:
    """Pids a test started, SIGKILLed after it if they outlived it."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_kill_ends_a_daemon_that_left_the_job_s_session(tmp_path: Path, cgroup: JobCgroup, processes) -> None:
    # given a job in its cgroup that then starts a daemon in a session of its own, and goes on
    go, pid_file = tmp_path / "go", tmp_path / "daemon.pid"
    script = f"while [ ! -e {go} ]; do sleep 0.01; done; setsid sh -c 'sleep 1000 & echo $! > {pid_file}'; sleep 1000"
    leader = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    processes.append(leader.pid)
    cgroup.enter(leader.pid)
    go.touch()
    daemon = int(wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), 30, "no daemon started"))
    processes.append(daemon)

    # when the job's cgroup is killed
    cgroup.kill()

    # then the job and its daemon are gone, and so is the cgroup
    assert leader.wait(10) == -signal.SIGKILL
    wait_until(lambda: is_gone(daemon), 10, f"the daemon (pid {daemon}) outlived its job's cgroup")
    assert cgroup.remove()
    assert not any(folder.exists() for folder in cgroup.folders)


def test_a_new_job_cgroup_counts_no_oom_kill(cgroup: JobCgroup) -> None:
    if cgroup.memory is None:
        pytest.skip("no memory controller for a job's cgroup here")
    assert cgroup.oom_kills() == 0


@pytest.mark.parametrize(
    ("bases", "reason"),
    [
        (CgroupBases(None, None), "no cgroup2 or v1 memory hierarchy is mounted here"),
        (CgroupBases(Path("/nonexistent/cgroup"), None), "cannot make a cgroup in /nonexistent/cgroup: No such file"),
    ],
)
def test_make_says_why_no_cgroup_can_be_made(bases: CgroupBases, reason: str) -> None:
    with pytest.raises(CgroupUnavailable, match=reason):
        JobCgroup.make(job_name(), bases)


def test_make_removes_the_empty_cgroups_of_dead_workers_only() -> None:
    # given an empty job cgroup of a worker that died, and one of a worker that runs (pid 1 here)
    bases = own_bases()
    if bases.unified is None:
        pytest.skip("no cgroup v2 here")
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = bases.unified / f"{NAME_PREFIX}{dead.pid}-x", bases.unified / f"{NAME_PREFIX}1-{uuid.uuid4().hex}"
    try:
        stale.mkdir()
        live.mkdir()
    except OSError as exc:
        pytest.skip(f"no cgroup can be made here: {exc}")
    try:
        # when a worker makes a cgroup for a job
        JobCgroup.make(job_name(), bases).remove()

        # then the dead worker's is gone, the live one's kept
        assert (stale.exists(), live.exists()) == (False, True)
    finally:
        for folder in (stale, live):
            with contextlib.suppress(FileNotFoundError):
                folder.rmdir()
