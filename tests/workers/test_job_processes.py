"""Nothing a command starts outlives it: a daemon that left the job's session is killed when the job ends, with the
job's cgroup where one can be made and by the job's token in its environment everywhere."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import wait_until
from scalablejob.host.job_cgroup import CgroupBases
from scalablejob.local.scaler_process import is_gone
from scalablejob.model.exits import OomKills
from scalablejob.workers.command import run_command
from scalablejob.workers.job_processes import JOB_TOKEN_ENV, JobProcesses

NO_CGROUPS = CgroupBases(None, None)
GONE_WITHIN_S = 5.0


def daemon_script(pid_file: Path, *, drop_env: bool = False, wait_for: Path | None = None) -> list[str]:
    """A job that starts a daemon (setsid, its parent shell exits at once) writing its pid, and exits 0; with
    `wait_for`, the job first writes its own pid to that file's name + ".leader" and waits for the file."""
    shell = "env -i /bin/sh" if drop_env else "sh"
    daemon = f"setsid {shell} -c 'sleep 1000 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}'"
    wait = f"echo $$ > {wait_for}.leader; while [ ! -e {wait_for} ]; do sleep 0.01; done; " if wait_for else ""
    return ["sh", "-c", f"{wait}{daemon}; echo started"]


def read_pid(path: Path) -> int:
    return int(wait_until(lambda: path.exists() and path.read_text().strip(), 30, f"{path} was never written"))


def in_cgroup(pid: int, name: str) -> bool:
    """Whether process `pid` is in a cgroup called `name`, in any hierarchy."""
    return any(line.endswith(f"/{name}") for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines())


def with_cgroup() -> JobProcesses:
    job = JobProcesses()
    if job.cgroup is None:
        job.close()
        pytest.skip("no job cgroup can be made here")
    return job


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "token-only"])
def test_a_daemon_a_command_leaves_is_gone_when_run_command_returns(tmp_path, cgroup, leftover_pids) -> None:
    pid_file = tmp_path / "daemon.pid"
    job = with_cgroup() if cgroup else JobProcesses(NO_CGROUPS)

    outcome = run_command(daemon_script(pid_file), job=job)
    leftover_pids.append(daemon := read_pid(pid_file))

    assert (outcome.exit_code, outcome.output_tail) == (0, b"started\n")
    wait_until(lambda: is_gone(daemon), GONE_WITHIN_S, f"the daemon (pid {daemon}) outlived its command")


def test_with_a_cgroup_a_daemon_that_drops_its_environment_is_gone_too(tmp_path, leftover_pids) -> None:
    # given a job in its cgroup (the test waits until it is in) that starts a daemon without the job's environment
    pid_file, go = tmp_path / "daemon.pid", tmp_path / "go"
    job = with_cgroup()
    assert job.cgroup is not None
    name = job.cgroup.folders[0].name
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_command, daemon_script(pid_file, drop_env=True, wait_for=go), job=job)
        try:
            leader = read_pid(Path(f"{go}.leader"))
            wait_until(lambda: in_cgroup(leader, name), 10, "the job never was in its cgroup")
        finally:
            go.touch()  # the job goes on in any case, so that the test ends

        # when it ends
        outcome = running.result(timeout=30)
    leftover_pids.append(daemon := read_pid(pid_file))

    # then the daemon is gone too
    assert outcome.exit_code == 0
    wait_until(lambda: is_gone(daemon), GONE_WITHIN_S, f"the daemon (pid {daemon}) outlived its command")


def test_without_a_cgroup_a_daemon_that_drops_its_environment_outlives_its_job(tmp_path, leftover_pids) -> None:
    """The documented limit of a host where no cgroup can be made: the token is all that finds a job's process."""
    pid_file = tmp_path / "daemon.pid"

    run_command(daemon_script(pid_file, drop_env=True), job=JobProcesses(NO_CGROUPS))
    leftover_pids.append(daemon := read_pid(pid_file))

    assert not is_gone(daemon)


def test_a_command_gets_its_job_s_token_in_its_environment() -> None:
    job = JobProcesses(NO_CGROUPS)

    outcome = run_command(["sh", "-c", f"echo ${JOB_TOKEN_ENV}"], env={"PATH": os.environ["PATH"]}, job=job)

    assert outcome.output_tail == f"{job.token}\n".encode()


def test_where_no_cgroup_can_be_made_the_worker_says_so_once(tmp_path, caplog) -> None:
    missing = CgroupBases(tmp_path / "no-cgroup-fs", None)

    with caplog.at_level(logging.WARNING, logger="scalablejob.workers.job_processes"):
        first, second = JobProcesses(missing), JobProcesses(missing)

    assert (first.cgroup, second.cgroup) == (None, None)
    assert [record.getMessage() for record in caplog.records] == [
        f"jobs run without a cgroup of their own here (cannot make a cgroup in {tmp_path / 'no-cgroup-fs'}: No such "
        f"file or directory): what a job leaves behind is found by the {JOB_TOKEN_ENV} in its environment, so a "
        f"process that drops its environment can outlive its job, and an OOM kill is told only from the host's "
        f"counter"
    ]


def test_without_a_cgroup_the_oom_kills_are_the_host_s() -> None:
    if not Path("/proc/vmstat").read_text().count("oom_kill "):
        pytest.skip("this kernel counts no OOM kills in /proc/vmstat")

    outcome = run_command(["true"], job=JobProcesses(NO_CGROUPS))

    assert outcome.oom == OomKills(outcome.oom.count if outcome.oom else -1, of_job=False)
