"""Every process one job starts, killed when the job ends (it exits, is cancelled, times out), whatever session or
process group it moved to: the job's process group, its cgroup where one can be made, and every process whose
environment carries the job's token.

The cgroup is the sure way: nothing a job starts can leave it (host/job_cgroup.py). The token is the way that
needs no privilege: a job's processes inherit its environment, so a daemon that setsid()s and forks twice still
carries it, and /proc shows it. Both run, so the token also finds what a job forked in the instant before the
worker moved it into its cgroup. Without a cgroup, a process that drops its environment (`env -i`) or changes user
outlives its job; the worker says so in one warning line.
"""

from __future__ import annotations

import logging
import os
import signal
import uuid

from scalablejob.host.job_cgroup import NAME_PREFIX, CgroupBases, CgroupUnavailable, JobCgroup, host_oom_kills
from scalablejob.host.processes import kill_processes_with_env, signal_group
from scalablejob.host.worker_limits import applied, limit_job
from scalablejob.model.exits import OomKills

logger = logging.getLogger(__name__)

JOB_TOKEN_ENV = "SCALABLEJOB_JOB_TOKEN"  # in every job's environment: what its processes are found by
_warned: set[str] = set()  # why jobs run without a cgroup here, each said once per worker process


class JobProcesses:
    """The processes of one run of a command: give its `env` to the command, call `started` with its pid, `kill`
    when it ended, then `close`."""

    def __init__(self, bases: CgroupBases | None = None) -> None:
        """`bases`: where the job's cgroup goes, default under this process's own cgroups (CgroupBases(None, None):
        no cgroup, as where none can be made)."""
        self.token = uuid.uuid4().hex
        self.env = {JOB_TOKEN_ENV: self.token}
        self._leader: int | None = None
        self._cgroup = self._make_cgroup(bases)
        self._host_oom_kills = host_oom_kills()

    @property
    def cgroup(self) -> JobCgroup | None:
        return self._cgroup

    def _make_cgroup(self, bases: CgroupBases | None) -> JobCgroup | None:
        try:
            return JobCgroup.make(f"{NAME_PREFIX}{os.getpid()}-{self.token}", bases)
        except CgroupUnavailable as exc:
            _warn_without_cgroup(str(exc))
            return None

    def started(self, pid: int) -> None:
        """The job's first process runs: move it into the job's cgroup (what it starts from now on stays there)."""
        self._leader = pid
        limit_job(pid)  # where the worker's memory limit has no cgroup: the job's address space
        if self._cgroup is None:
            return
        try:
            self._cgroup.enter(pid)
        except OSError as exc:
            _warn_without_cgroup(f"cannot move a job into a cgroup in {self._cgroup.folders[0].parent}: {exc.strerror}")
            self._cgroup.remove()
            self._cgroup = None

    def kill(self) -> None:
        """SIGKILL everything the job started: its process group, its cgroup, every process with its token."""
        if self._leader is not None:
            signal_group(self._leader, signal.SIGKILL)
        if self._cgroup is not None:
            self._cgroup.kill()
        kill_processes_with_env(JOB_TOKEN_ENV, self.token)

    def close(self) -> OomKills | None:
        """After `kill`: remove the job's cgroup; returns the OOM kills seen while it ran (None: not told here)."""
        oom = self._oom_kills()
        if self._cgroup is not None:
            self._cgroup.remove()
        return oom

    def _oom_kills(self) -> OomKills | None:
        if self._cgroup is not None and (count := self._cgroup.oom_kills()) is not None:
            return OomKills(count, of_job=True, limit_mb=applied().memory_mb)
        after = host_oom_kills()
        if self._host_oom_kills is None or after is None:
            return None
        return OomKills(after - self._host_oom_kills, of_job=False)


def _warn_without_cgroup(reason: str) -> None:
    if reason in _warned:
        return
    _warned.add(reason)
    logger.warning(
        "jobs run without a cgroup of their own here (%s): what a job leaves behind is found by the %s in its "
        "environment, so a process that drops its environment can outlive its job, and an OOM kill is told only "
        "from the host's counter",
        reason, JOB_TOKEN_ENV,
    )  # fmt: skip
