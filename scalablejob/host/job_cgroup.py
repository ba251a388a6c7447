"""One job's cgroup, under the worker's own: whatever the job starts, in whatever session, is in it, so it can be
killed at once (`cgroup.kill`) and its OOM kills counted (`memory.events`, or v1's `memory.oom_control`).

On a cgroup v2 host the job gets a v2 cgroup; on a hybrid host (v2 mounted beside v1 controllers) the memory
controller is v1's, so the job gets a v1 memory cgroup as well, for its OOM counter. Where neither can be made (no
cgroup file system, not root and nothing delegated, a read-only mount) `JobCgroup.make` raises CgroupUnavailable
with the reason, and the caller does without.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from scalablejob.host.cgroups import MEMORY, UNIFIED, counter, own_folder

NAME_PREFIX = "scalablejob-job-"  # then the worker's pid, a dash, the job's token
PROC_CGROUP = Path("/proc/self/cgroup")
MOUNTINFO = Path("/proc/self/mountinfo")
VMSTAT = Path("/proc/vmstat")
OOM_KILL = "oom_kill"  # the counter's name in memory.events, memory.oom_control and /proc/vmstat
EMPTY_WAIT_S = 2.0  # how long removing a killed job's cgroup waits for its processes to have exited
POLL_S = 0.01

_unremoved: set[Path] = set()  # cgroups of this process's jobs that would not empty in time: tried again later


class CgroupUnavailable(Exception):
    """No cgroup could be made for a job here; the message says why."""


@dataclass(frozen=True)
class CgroupBases:
    """The folders of this process's own cgroups, under which its jobs' cgroups go: the v2 one, and on a hybrid
    host the v1 memory one."""

    unified: Path | None
    memory: Path | None


def own_bases() -> CgroupBases:
    """This process's own cgroup folders, as /proc says (none where /proc cannot be read)."""
    try:
        proc_cgroup, mountinfo = PROC_CGROUP.read_text(), MOUNTINFO.read_text()
    except OSError:
        return CgroupBases(None, None)
    unified, memory = (own_folder(proc_cgroup, mountinfo, hierarchy) for hierarchy in (UNIFIED, MEMORY))
    return CgroupBases(Path(unified) if unified else None, Path(memory) if memory else None)


def host_oom_kills() -> int | None:
    """How many processes the kernel's OOM killer has killed on this host since boot (None: not told here)."""
    try:
        return counter(VMSTAT.read_text(), OOM_KILL)
    except OSError:
        return None


class JobCgroup:
    """The cgroup folders of one job: `folders[0]` kills, `memory` (one of them, if any) counts OOM kills."""

    def __init__(self, folders: list[Path], memory: Path | None) -> None:
        self.folders = folders
        self.memory = memory

    @classmethod
    def make(cls, name: str, bases: CgroupBases | None = None) -> JobCgroup:
        """A new, empty cgroup `name` beside the worker's processes; CgroupUnavailable where none can be made."""
        bases = own_bases() if bases is None else bases
        _remove_stale(bases)
        folders: list[Path] = []
        reasons: list[str] = []
        unified = _made(bases.unified, name, reasons)
        if unified is not None:
            folders.append(unified)
        memory = unified if unified is not None and (unified / "memory.events").exists() else None
        if memory is None and (memory := _made(bases.memory, name, reasons)) is not None:
            folders.append(memory)
        if not folders:
            raise CgroupUnavailable("; ".join(reasons) or "no cgroup2 or v1 memory hierarchy is mounted here")
        return cls(folders, memory)

    def enter(self, pid: int) -> None:
        """Move process `pid` into the job's cgroups: OSError if it may not enter the first (e.g. not delegated to
        us); a v1 memory cgroup it may not enter is given up (its OOM kills are then not counted)."""
        first, *others = self.folders
        (first / "cgroup.procs").write_text(str(pid))
        for folder in others:
            try:
                (folder / "cgroup.procs").write_text(str(pid))
            except OSError:
                self.folders.remove(folder)
                self.memory = None if self.memory == folder else self.memory
                with contextlib.suppress(OSError):
                    folder.rmdir()

    def kill(self) -> None:
        """SIGKILL every process in the job's cgroups: at once where v2's cgroup.kill is, else one by one."""
        for folder in self.folders:
            try:
                (folder / "cgroup.kill").write_text("1")
            except OSError:  # v1, or a kernel before 5.14
                _kill_members(folder)

    def oom_kills(self) -> int | None:
        """How many of the job's processes the kernel's OOM killer killed (None: no memory cgroup of its own)."""
        if self.memory is None:
            return None
        for file in ("memory.events", "memory.oom_control"):  # v2, v1
            with contextlib.suppress(OSError):
                return counter((self.memory / file).read_text(), OOM_KILL)
        return None

    def remove(self, wait_s: float = EMPTY_WAIT_S) -> bool:
        """Remove the job's cgroups once their killed processes have exited; False if one would not empty in
        `wait_s` (its folder is removed by a later job of this process)."""
        deadline = time.monotonic() + wait_s
        removed = True
        for folder in self.folders:
            try:
                while not _removed(folder):
                    if time.monotonic() > deadline:
                        _unremoved.add(folder)
                        removed = False
                        break
                    time.sleep(POLL_S)
            except OSError:  # not ours to remove after all (permissions changed under us): nothing to retry
                removed = False
        return removed


def _made(base: Path | None, name: str, reasons: list[str]) -> Path | None:
    if base is None:
        return None
    folder = base / name
    try:
        folder.mkdir()
    except OSError as exc:
        reasons.append(f"cannot make a cgroup in {base}: {exc.strerror}")
        return None
    return folder


def _members(folder: Path) -> list[int]:
    try:
        return [int(pid) for pid in (folder / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def _kill_members(folder: Path) -> None:
    """SIGKILL the processes of a cgroup until none is left; what one forks meanwhile is found on the next read."""
    deadline = time.monotonic() + EMPTY_WAIT_S
    while (pids := _members(folder)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(POLL_S)


def _removed(folder: Path) -> bool:
    """Whether the cgroup is gone (rmdir works once no process is left in it)."""
    try:
        folder.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            return False
        raise
    return True


def _remove_stale(bases: CgroupBases) -> None:
    """Remove the empty job cgroups left behind: this process's that would not empty in time, and those of workers
    that died (kill -9) before removing theirs. A populated one is left as it is: rmdir refuses it."""
    for folder in list(_unremoved):
        with contextlib.suppress(OSError):
            if _removed(folder):
                _unremoved.discard(folder)
    for base in (bases.unified, bases.memory):
        if base is not None:
            remove_dead_owners(base, NAME_PREFIX)


def remove_dead_owners(base: Path, prefix: str) -> None:
    """Remove the cgroups `<prefix><pid>[-...]` under `base` whose owner process is gone, with the cgroups left inside
    them (a killed worker's jobs'). Empty ones only: rmdir refuses a cgroup that still holds a process."""
    with contextlib.suppress(OSError):
        for folder in base.glob(f"{prefix}*"):
            owner = folder.name[len(prefix) :].partition("-")[0]
            if owner.isdigit() and not psutil.pid_exists(int(owner)):
                for inner in sorted(folder.glob("*/"), reverse=True):
                    with contextlib.suppress(OSError):
                        inner.rmdir()
                with contextlib.suppress(OSError):
                    _removed(folder)
