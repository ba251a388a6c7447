"""Where this process's cgroups are, and the counters a cgroup keeps. Pure: the texts of /proc/self/cgroup,
/proc/self/mountinfo and a cgroup's flat-keyed files in, folders and numbers out; job_cgroup.py does the I/O.

A job's processes can leave its session and process group (setsid, a double fork), but not its cgroup: a cgroup
per job is what finds and kills all of them, and its memory counters tell an OOM kill from any other SIGKILL.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

UNIFIED = ""  # the key of the unified (v2) hierarchy, whose /proc/self/cgroup line is `0::/path`
MEMORY = "memory"  # the v1 controller whose hierarchy holds the memory counters where v2 does not
CPU = "cpu"  # the v1 controller of CPU bandwidth (cfs quota), where v2's cpu.max is not to be had
CFS_PERIOD_US = 100_000  # the kernel's default bandwidth period: a quota of N cores is N times it
MIN_CFS_QUOTA_US = 1_000  # the smallest quota the kernel takes
MIB = 1024 * 1024
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")  # mountinfo writes a space in a path as \040


@dataclass(frozen=True)
class CgroupMount:
    """A mounted cgroup hierarchy: where it is mounted, and which of its cgroups that mount shows as its root (not
    `/` inside a container that sees only its own part of the host's hierarchy)."""

    point: str
    root: str


def own_cgroups(proc_cgroup: str) -> dict[str, str]:
    """The cgroup path of the process in each hierarchy of its /proc/PID/cgroup: UNIFIED for v2, and each v1
    controller by its name (a line `4:memory:/a/b`, or `3:cpu,cpuacct:/a` for a hierarchy of several)."""
    paths: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        number, controllers, path = parts
        if number == "0" and not controllers:
            paths[UNIFIED] = path
        for controller in filter(None, controllers.split(",")):
            paths[controller] = path
    return paths


def cgroup_mounts(mountinfo: str) -> dict[str, CgroupMount]:
    """The first mount of each hierarchy in a /proc/PID/mountinfo: UNIFIED for the cgroup2 one, and each v1
    controller by its name (from the mount's super options)."""
    mounts: dict[str, CgroupMount] = {}
    for line in mountinfo.splitlines():
        fields = line.split()
        try:
            dash = fields.index("-", 6)  # after the optional fields, before the file system's type
        except ValueError:
            continue
        if len(fields) < dash + 4:
            continue
        kind, options = fields[dash + 1], fields[dash + 3]
        mount = CgroupMount(_unescape(fields[4]), _unescape(fields[3]))
        if kind == "cgroup2":
            mounts.setdefault(UNIFIED, mount)
        elif kind == "cgroup":
            for option in options.split(","):
                mounts.setdefault(option, mount)
    return mounts


def cgroup_folder(mount: CgroupMount, path: str) -> str | None:
    """The folder of cgroup `path` in `mount`; None when the mount does not show it (it lies outside the mount's
    root, as the path of a process outside a container's cgroup namespace does)."""
    root = mount.root.rstrip("/")
    if not path.startswith("/") or "/../" in f"{path}/" or (path != root and not path.startswith(f"{root}/")):
        return None
    return mount.point.rstrip("/") + path[len(root) :].rstrip("/")


def own_folder(proc_cgroup: str, mountinfo: str, hierarchy: str) -> str | None:
    """The folder of this process's own cgroup in `hierarchy` (UNIFIED or a v1 controller), if mounted here."""
    path, mount = own_cgroups(proc_cgroup).get(hierarchy), cgroup_mounts(mountinfo).get(hierarchy)
    return None if path is None or mount is None else cgroup_folder(mount, path)


def counter(text: str, name: str) -> int | None:
    """The value of `name` in a flat-keyed file of `name value` lines (memory.events, v1 memory.oom_control,
    /proc/vmstat); None when it has none."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def cfs_quota_us(cores: float, period_us: int = CFS_PERIOD_US) -> int:
    """The CPU time per period that `cores` cores get (v1 cpu.cfs_quota_us, the first number of v2's cpu.max)."""
    return max(MIN_CFS_QUOTA_US, round(cores * period_us))


def cpu_max(cores: float, period_us: int = CFS_PERIOD_US) -> str:
    """v2's cpu.max for `cores` cores: `QUOTA PERIOD`."""
    return f"{cfs_quota_us(cores, period_us)} {period_us}"


def affinity_for(cores: float, available: list[int]) -> set[int]:
    """The CPUs a process limited to `cores` cores runs on without a cgroup: the first ceil(cores) of those it may
    use (at least one)."""
    wanted = max(1, math.ceil(cores))
    return set(sorted(available)[:wanted])


def _unescape(text: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), text)
