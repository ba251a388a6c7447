"""A disk that fills up, for the tests of a full one: a small tmpfs mounted for one test (root only: skipped,
saying why, elsewhere), filled with a ballast file to the page, freed by removing it; and a Redis made to meet it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

SIZE = "32m"
PAGE = os.sysconf("SC_PAGE_SIZE")
CHUNKS = (1 << 20, 1 << 16, PAGE)  # big writes first, then smaller ones to take the last pages


class SmallDisk:
    """A mounted tmpfs: `fill` leaves exactly `leave_pages` pages free, `free` gives the space back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ballast = path / "ballast"

    def fill(self, leave_pages: int = 0) -> None:
        with self.ballast.open("ab", buffering=0) as handle:
            for size in CHUNKS:
                with contextlib.suppress(OSError):
                    while True:
                        handle.write(b"\0" * size)
        used = self.ballast.stat().st_size
        pages = -(-used // PAGE)
        if leave_pages:
            os.truncate(self.ballast, (pages - leave_pages) * PAGE)
        free = os.statvfs(self.path).f_bavail
        assert free == leave_pages, f"{free} pages free on {self.path}, expected {leave_pages}"

    def free(self) -> None:
        self.ballast.unlink(missing_ok=True)


@contextlib.contextmanager
def small_disk(mount_point: Path) -> Iterator[SmallDisk]:
    """A tmpfs of SIZE at `mount_point` for the block's length; unmounted after it whatever happened (lazily, if a
    process the test failed to stop still holds a file there)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True, text=True,
    )  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"a full disk is a small tmpfs, and mounting one failed (needs root): {mounted.stderr.strip()}")
    try:
        yield SmallDisk(mount_point)
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


def refuse_writes(client: redis.Redis, timeout_s: float = 30.0) -> redis.ResponseError:
    """Write to Redis until it refuses with MISCONF (its append-only file no longer fits on the disk); the error."""
    deadline = time.monotonic() + timeout_s
    for attempt in range(1_000_000):
        try:
            client.set(f"padding:{attempt}", b"p" * (1 << 16))
        except redis.ResponseError as exc:
            if "MISCONF" not in str(exc):
                raise
            return exc
        if time.monotonic() > deadline:
            break
    pytest.fail(f"Redis never refused a write in {timeout_s} s: the disk did not fill")


def redis_servers_in(folder: Path) -> list[psutil.Process]:
    """The redis-server processes working in `folder` (Redis runs in its --dir; its title shows only its address)."""
    found = []
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] == "redis-server" and process.cwd() == str(folder.resolve()):
                found.append(process)
    return found


def kill_redis_servers_in(folder: Path) -> None:
    """Cleanup: no redis-server outlives the test that started it in `folder`."""
    for process in redis_servers_in(folder):
        with contextlib.suppress(psutil.Error):
            process.kill()
            process.wait(10)
