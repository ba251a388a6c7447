"""Where this process's cgroups are and what their counters say, from the texts of /proc (pure)."""

from __future__ import annotations

import pytest

from scalablejob.host.cgroups import (
    MEMORY,
    UNIFIED,
    CgroupMount,
    cgroup_folder,
    cgroup_mounts,
    counter,
    own_cgroups,
    own_folder,
)

HYBRID_CGROUP = "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n"
HYBRID_MOUNTINFO = (
    "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct\n"
    "35 31 0:32 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory\n"
    "41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)
V2_CGROUP = "0::/system.slice/runner.service\n"
V2_MOUNTINFO = "30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
# a container without a cgroup namespace: the host's path, and a mount whose root is the container's cgroup
CONTAINER_CGROUP = "0::/docker/f00d\n"
CONTAINER_MOUNTINFO = "700 690 0:26 /docker/f00d /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n"


def test_own_cgroups_names_the_unified_path_and_each_v1_controller() -> None:
    assert own_cgroups(HYBRID_CGROUP) == {
        "name=systemd": "/",
        MEMORY: "/process_api/abc",
        "cpu": "/",
        "cpuacct": "/",
        UNIFIED: "/",
    }


def test_own_cgroups_skips_lines_it_cannot_read() -> None:
    assert own_cgroups("garbage\n\n0::/a:b\n") == {UNIFIED: "/a:b"}  # a colon in a path is the path's


def test_cgroup_mounts_finds_the_cgroup2_mount_and_the_v1_controllers() -> None:
    mounts = cgroup_mounts(HYBRID_MOUNTINFO)

    assert mounts[UNIFIED] == CgroupMount("/sys/fs/cgroup/unified", "/")
    assert mounts[MEMORY] == CgroupMount("/sys/fs/cgroup/memory", "/")
    assert mounts["cpuacct"] == CgroupMount("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert "mode=755" not in mounts  # the tmpfs above them is no cgroup


def test_cgroup_mounts_reads_escaped_paths_and_ignores_other_file_systems() -> None:
    mountinfo = "50 1 0:40 / /mnt/with\\040space rw - cgroup2 none rw\n60 1 8:1 / / rw - ext4 /dev/sda1 rw\nbad\n"

    assert cgroup_mounts(mountinfo) == {UNIFIED: CgroupMount("/mnt/with space", "/")}


@pytest.mark.parametrize(
    ("proc_cgroup", "mountinfo", "hierarchy", "folder"),
    [
        (HYBRID_CGROUP, HYBRID_MOUNTINFO, UNIFIED, "/sys/fs/cgroup/unified"),
        (HYBRID_CGROUP, HYBRID_MOUNTINFO, MEMORY, "/sys/fs/cgroup/memory/process_api/abc"),
        (V2_CGROUP, V2_MOUNTINFO, UNIFIED, "/sys/fs/cgroup/system.slice/runner.service"),
        (V2_CGROUP, V2_MOUNTINFO, MEMORY, None),  # pure v2: memory is a controller of the unified hierarchy
        (CONTAINER_CGROUP, CONTAINER_MOUNTINFO, UNIFIED, "/sys/fs/cgroup"),
        (HYBRID_CGROUP, "", UNIFIED, None),  # nothing mounted
        ("", HYBRID_MOUNTINFO, UNIFIED, None),  # no cgroup of its own told
    ],
    ids=["hybrid-v2", "hybrid-memory", "v2", "v2-no-v1-memory", "container", "unmounted", "untold"],
)
def test_own_folder(proc_cgroup: str, mountinfo: str, hierarchy: str, folder: str | None) -> None:
    assert own_folder(proc_cgroup, mountinfo, hierarchy) == folder


@pytest.mark.parametrize(
    ("root", "path", "folder"),
    [
        ("/", "/", "/sys/fs/cgroup"),
        ("/", "/a/b/", "/sys/fs/cgroup/a/b"),
        ("/docker/f00d", "/docker/f00d/job", "/sys/fs/cgroup/job"),
        ("/docker/f00d", "/docker/f00de", None),  # a sibling whose name starts alike is outside
        ("/docker/f00d", "/", None),
        ("/", "/../..", None),  # outside a cgroup namespace's root
        ("/", "relative", None),
    ],
)
def test_cgroup_folder_is_none_for_a_cgroup_the_mount_does_not_show(root: str, path: str, folder: str | None) -> None:
    assert cgroup_folder(CgroupMount("/sys/fs/cgroup", root), path) == folder


@pytest.mark.parametrize(
    ("text", "count"),
    [
        ("low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n", 1),  # v2 memory.events
        ("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n", 4),  # v1 memory.oom_control
        ("nr_free_pages 5\noom_kill 12\n", 12),  # /proc/vmstat
        ("oom_kill_disable 0\n", None),  # a kernel before 4.13 has no oom_kill
        ("oom_kill many\n", None),
    ],
)
def test_counter_reads_the_oom_kill_line(text: str, count: int | None) -> None:
    assert counter(text, "oom_kill") == count
