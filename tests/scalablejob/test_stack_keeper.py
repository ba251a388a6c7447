"""The keeper that stops a dead `up`'s stack in order: the parts first, hurried and then killed, Redis last."""

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
from scalablejob.local import stack_keeper
from scalablejob.local.stack_keeper import Order, Watched, parse_order, read_orders, stop_in_order


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("part scaler 12\n", Order("part", "scaler", 12)),
        ("redis 34\n", Order("redis", "redis-server", 34)),
        ("done\n", Order("done")),
        ("part scaler\n", None),
        ("part scaler x\n", None),
        ("redis\n", None),
        ("", None),
        ("reboot\n", None),
    ],
)
def test_orders_are_parsed_and_anything_else_is_ignored(line, expected):
    assert parse_order(line) == expected


def test_done_means_up_stopped_everything_itself():
    watched = read_orders([f"part frontend {os.getpid()}\n", "done\n"])
    assert watched.done and [name for name, _ in watched.parts] == ["frontend"]


def test_a_child_already_gone_when_announced_is_not_watched():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert read_orders([f"part flower {gone.pid}\n", f"redis {gone.pid}\n"]) == Watched()


# A part that records the moment it ends, and a stand-in for Redis that records, when it gets SIGTERM, whether the
# part had ended by then.
PART = "import sys, time; time.sleep(float(sys.argv[2])); open(sys.argv[1], 'w').close()"
STUBBORN_PART = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); open(sys.argv[1], 'w').close(); "
    "time.sleep(600)"
)
REDIS = (
    "import os, signal, sys, time\n"
    "def stop(*_):\n"
    "    open(sys.argv[2], 'w').write(str(os.path.exists(sys.argv[1]))); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, stop)\n"
    "time.sleep(600)\n"
)


@contextlib.contextmanager
def started(*argvs: list[str]):
    processes = [subprocess.Popen(argv, start_new_session=True) for argv in argvs]
    try:
        yield processes
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_redis_is_stopped_only_after_the_parts_have_ended(tmp_path):
    part_ended, redis_saw = tmp_path / "part-ended", tmp_path / "redis-saw"
    with started([sys.executable, "-c", PART, str(part_ended), "1"],
                 [sys.executable, "-c", REDIS, str(part_ended), str(redis_saw)]) as (part, redis):  # fmt: skip
        stop_in_order(Watched([("frontend", psutil.Process(part.pid))], psutil.Process(redis.pid)))
        assert redis.wait(10) == 0
        assert redis_saw.read_text() == "True"


def test_a_part_that_does_not_stop_is_hurried_then_killed_and_redis_still_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(stack_keeper, "WARM_STOP_S", 0.3)
    monkeypatch.setattr(stack_keeper, "HURRIED_STOP_S", 0.3)
    part_ready, redis_saw = tmp_path / "part-ready", tmp_path / "redis-saw"
    with started([sys.executable, "-c", STUBBORN_PART, str(part_ready)],
                 [sys.executable, "-c", REDIS, str(tmp_path / "unused"), str(redis_saw)]) as (part, redis):  # fmt: skip
        wait_until(part_ready.exists, 10, "the part never started")
        stop_in_order(Watched([("scaler", psutil.Process(part.pid))], psutil.Process(redis.pid)))
        assert part.wait(10) == -signal.SIGKILL
        assert redis.wait(10) == 0 and redis_saw.exists()


def test_a_part_without_tasks_that_ignores_sigterm_is_killed_after_a_short_grace_not_the_warm_stop(tmp_path):
    part_ready, redis_saw = tmp_path / "part-ready", tmp_path / "redis-saw"
    with started([sys.executable, "-c", STUBBORN_PART, str(part_ready)],
                 [sys.executable, "-c", REDIS, str(tmp_path / "unused"), str(redis_saw)]) as (part, redis):  # fmt: skip
        wait_until(part_ready.exists, 10, "the part never started")
        began = time.monotonic()
        stop_in_order(Watched([("flower", psutil.Process(part.pid))], psutil.Process(redis.pid)))
        assert part.wait(10) == -signal.SIGKILL
        assert time.monotonic() - began < stack_keeper.WARM_STOP_S
        assert redis.wait(10) == 0 and redis_saw.exists()


def test_a_redis_holding_writes_not_yet_on_disk_is_left_running(tmp_path):
    part_ended, redis_saw = tmp_path / "part-ended", tmp_path / "redis-saw"
    with started([sys.executable, "-c", PART, str(part_ended), "0"],
                 [sys.executable, "-c", REDIS, str(part_ended), str(redis_saw)]) as (part, redis):  # fmt: skip
        watched = Watched([("frontend", psutil.Process(part.pid))], psutil.Process(redis.pid))
        assert stop_in_order(watched, redis_may_stop=lambda: False) is False
        assert part.wait(10) == 0
        assert redis.poll() is None and not redis_saw.exists()
