"""`metadata.cpu` (cores) and `metadata.memory` (MB), enforced on a worker and every job it runs.

The worker moves itself, at start, into a cgroup of its own with the limits (`scalablejob-worker-<pid>`, beside
the cgroup it was started in); its jobs' cgroups (job_cgroup.py) are made under its own, so the limits cover the
worker and its jobs together. A job that goes over the memory is the process the kernel's OOM killer picks (the
biggest in the cgroup), its result says so with the limit, and the worker takes the next task. cgroup v2 where
the controllers are delegated to us, else the v1 hierarchies (a hybrid host). Where neither can be had (not root,
nothing delegated), the fallback: the worker's CPU affinity (ceil(cores) CPUs, which its jobs inherit) and each
job's RLIMIT_AS (its allocations fail past the memory instead of its being killed); the worker says at start what
it could not enforce.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from scalablejob.host.cgroups import CPU, MEMORY, MIB, UNIFIED, affinity_for, cfs_quota_us, cpu_max, own_folder
from scalablejob.host.job_cgroup import MOUNTINFO, PROC_CGROUP, remove_dead_owners

NAME_PREFIX = "scalablejob-worker-"  # then the worker's pid
# set (to who enforces them) where something outside already holds the worker to the limits: a Kubernetes pod's
# resources, which the scaler fills in from the same fields; the worker then makes no cgroup of its own
LIMITS_BY_ENV = "SCALABLEJOB_LIMITS_ENFORCED_BY"


@dataclass
class LimitsReport:
    """What a worker could enforce, and how; what it could not, and why (each a phrase for its start-up lines)."""

    enforced: list[str] = field(default_factory=list)
    not_enforced: list[str] = field(default_factory=list)
    memory_mb: int | None = None  # the memory limit a cgroup enforces, for the OOM message of a job
    job_address_space: int | None = None  # the fallback: RLIMIT_AS of each job, in bytes


_applied = LimitsReport()  # this process's limits: what its jobs' processes and OOM messages read


def applied() -> LimitsReport:
    """The limits this worker process put itself under (empty until `apply_worker_limits`)."""
    return _applied


def apply_worker_limits(cpu: float | None, memory_mb: int | None) -> LimitsReport:
    """Put this process (and so every job it starts later) under `cpu` cores and `memory_mb` MB, as well as this
    host allows; returns what it did. Call it once, early: the cgroup takes every thread, affinity the ones now."""
    global _applied
    report = LimitsReport()
    if cpu is None and memory_mb is None:
        return report
    if enforcer := os.environ.get(LIMITS_BY_ENV):
        limits = [
            *([f"cpu {cpu:g} cores"] if cpu is not None else []),
            *([f"memory {memory_mb} MB"] if memory_mb else []),
        ]
        report.enforced.append(f"{' and '.join(limits)} (by {enforcer})")
        report.memory_mb = memory_mb
        _applied = report
        return report
    folders = _Folders(f"{NAME_PREFIX}{os.getpid()}")
    if memory_mb is not None:
        how = folders.limit(
            UNIFIED, "memory", {"memory.max": str(memory_mb * MIB), "memory.swap.max": "0"}
        ) or folders.limit(MEMORY, MEMORY, {"memory.limit_in_bytes": str(memory_mb * MIB),
                                            "memory.memsw.limit_in_bytes": str(memory_mb * MIB)})  # fmt: skip
        if how:
            report.enforced.append(f"memory {memory_mb} MB ({how})")
            report.memory_mb = memory_mb
        else:
            report.job_address_space = memory_mb * MIB
            report.not_enforced.append(
                f"memory {memory_mb} MB for the worker itself (no memory cgroup could be made: {folders.why()}); "
                "each job's address space is limited to it instead (RLIMIT_AS: its allocations fail past it)"
            )
    if cpu is not None:
        how = folders.limit(UNIFIED, "cpu", {"cpu.max": cpu_max(cpu)}) or folders.limit(
            CPU, CPU, {"cpu.cfs_period_us": str(100_000), "cpu.cfs_quota_us": str(cfs_quota_us(cpu))}
        )
        if how:
            report.enforced.append(f"cpu {cpu:g} cores ({how})")
        else:
            cpus = _pin(cpu)
            report.not_enforced.append(
                f"cpu {cpu:g} cores as a quota (no cpu cgroup could be made: {folders.why()}); the worker and its "
                f"jobs run on CPUs {', '.join(map(str, sorted(cpus)))} instead"
            )
    folders.enter()
    atexit.register(folders.leave)
    _applied = report
    return report


def limit_job(pid: int) -> None:
    """The fallback's per-job part: RLIMIT_AS on a job's first process (what it starts inherits it)."""
    if _applied.job_address_space is not None:
        with contextlib.suppress(psutil.Error, OSError, ValueError):
            limit = _applied.job_address_space
            psutil.Process(pid).rlimit(resource.RLIMIT_AS, (limit, limit))


class _Folders:
    """The worker's cgroup in each hierarchy, made when a limit is first written there, entered once all are."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.made: dict[str, Path] = {}
        self.reasons: list[str] = []
        try:
            self._proc_cgroup, self._mountinfo = PROC_CGROUP.read_text(), MOUNTINFO.read_text()
        except OSError as exc:
            self._proc_cgroup = self._mountinfo = ""
            self.reasons.append(f"/proc unreadable: {exc.strerror}")

    def limit(self, hierarchy: str, controller: str, files: dict[str, str]) -> str | None:
        """Write `files` (the first one must take) in this worker's cgroup of `hierarchy`; how, or None."""
        folder = self._folder(hierarchy)
        if folder is None:
            return None
        if hierarchy == UNIFIED and controller not in _read(folder / "cgroup.controllers").split():
            self.reasons.append(f"the {controller} controller is not delegated to {folder.parent}")
            return None
        (first, value), *others = files.items()
        try:
            (folder / first).write_text(value)
        except OSError as exc:
            self.reasons.append(f"cannot write {folder / first}: {exc.strerror}")
            return None
        for name, other in others:  # optional (swap accounting may be off): best effort
            with contextlib.suppress(OSError):
                (folder / name).write_text(other)
        return f"cgroup {'v2' if hierarchy == UNIFIED else 'v1'} {folder}"

    def enter(self) -> None:
        """Move this process (every thread of it) into each cgroup made; one it may not enter is removed."""
        for hierarchy, folder in list(self.made.items()):
            try:
                (folder / "cgroup.procs").write_text(str(os.getpid()))
            except OSError as exc:
                self.reasons.append(f"cannot enter {folder}: {exc.strerror}")
                with contextlib.suppress(OSError):
                    folder.rmdir()
                del self.made[hierarchy]

    def leave(self) -> None:
        """At exit: back into the cgroups it came from, and its own removed (what this cannot remove, such as a v2
        cgroup whose parent may hold no process, the next worker started here removes)."""
        for folder in self.made.values():
            with contextlib.suppress(OSError):
                (folder.parent / "cgroup.procs").write_text(str(os.getpid()))
                for inner in folder.glob("*/"):  # job cgroups that would not empty in time
                    inner.rmdir()
                folder.rmdir()

    def why(self) -> str:
        return "; ".join(self.reasons) or "no cgroup hierarchy is mounted here"

    def _folder(self, hierarchy: str) -> Path | None:
        if hierarchy in self.made:
            return self.made[hierarchy]
        base = own_folder(self._proc_cgroup, self._mountinfo, hierarchy)
        if base is None:
            return None
        remove_dead_owners(Path(base), NAME_PREFIX)  # of workers gone, and the job cgroups left inside them
        folder = Path(base) / self.name
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            self.reasons.append(f"cannot make a cgroup in {base}: {exc.strerror}")
            return None
        self.made[hierarchy] = folder
        return folder


def _pin(cores: float) -> set[int]:
    """Restrict every thread of this process to ceil(cores) of the CPUs it may use; returns them."""
    cpus = affinity_for(cores, sorted(os.sched_getaffinity(0)))
    for thread in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(thread), cpus)
    return cpus


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
