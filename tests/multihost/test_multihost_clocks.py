"""Hosts whose wall clocks disagree and jump, and a scaler that dies while its workers live (issue 22).

How the clock is shifted: clock_shim.c, compiled with gcc into the test's tmp dir and LD_PRELOADed into one host's
scaler and its workers, moves CLOCK_REALTIME (clock_gettime, gettimeofday, time) by the nanoseconds held in a file
it maps shared; the test rewrites that file to step the clock of the running processes. CLOCK_MONOTONIC is not
touched. Redis, `status` and the client run on the real clock.

Runs alone: `pytest tests/multihost/test_multihost_clocks.py` (two hosts, about 40 s each).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from multihost_fleet import POLL_S, Fleet, fleet_config, twice
from netns_rig import NetnsRig

from conftest import wait_until

pytest_plugins = ["multihost_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(150)]

SHIM = Path(__file__).with_name("clock_shim.c")
MAX = 4
HOSTS = ("h1", "h2")
SKEW_S = {"h1": 60, "h2": -60}  # static: the two hosts 120 s apart, each a minute off Redis's clock
STEP_S = {"h1": 30, "h2": -30}  # then, mid-burst, h1 jumps 30 s ahead and h2 30 s back
TASKS, TASK_S = 8, 6.0
BURST_DEADLINE_S = 45.0  # 8 x 6 s on 4 workers is 12 s once they run; the workers start cold on 2 cores
DEAD_TASKS, DEAD_TASK_S = 12, 5.0
BACK_UNDER_MAX_S = 15.0


@pytest.fixture
def shim(tmp_path: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("the clock shim needs gcc")
    library = tmp_path / "clock_shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(SHIM), "-ldl"], check=True)
    return library


def set_offset(path: Path, seconds: float) -> None:
    """Write (or rewrite in place: the shim maps the file) the clock offset of a host."""
    with path.open("r+b" if path.exists() else "wb") as file:
        file.write(struct.pack("q", int(seconds * 1e9)))


def start(fleet: Fleet, capacities: dict[str, int], env: dict[str, dict[str, str]] | None = None) -> None:
    fleet.config_path.write_text(json.dumps(fleet_config(fleet.service, MAX)))
    for host, capacity in capacities.items():
        fleet.start_scaler(host, capacity, env=(env or {}).get(host))
    wait_until(lambda: fleet.alive() == set(capacities), 45, f"{sorted(capacities)} never all alive", POLL_S)


def watch_max(fleet: Fleet, until: float) -> Iterator[int]:
    """The number of live workers each status shows, until `until` (monotonic)."""
    while time.monotonic() < until:
        snapshot = fleet.status()
        if snapshot:
            yield len(snapshot.workers())
        time.sleep(POLL_S)


def extra_starts(fleet: Fleet, tokens: list[str]) -> dict[str, int]:
    return {token: len(fleet.started_on(token)) for token in tokens if len(fleet.started_on(token)) != 1}


def scaler_lines(fleet: Fleet, needle: str) -> list[str]:
    return [line for host in HOSTS for line in fleet.log(host).splitlines() if needle in line]


def test_skewed_and_stepping_clocks_cause_no_false_death_no_extra_start_and_no_slower_burst(
    fleet: Fleet, netns: NetnsRig, shim: Path, tmp_path: Path
) -> None:
    # given two hosts whose wall clocks are 60 s ahead of and 60 s behind Redis's
    offsets = {host: tmp_path / f"offset-{host}" for host in HOSTS}
    env = {}
    for host in HOSTS:
        set_offset(offsets[host], SKEW_S[host])
        env[host] = {"LD_PRELOAD": str(shim), "SJ_CLOCK_OFFSET_FILE": str(offsets[host])}
    start(fleet, {"h1": 2, "h2": 2}, env)

    # when a burst comes, and mid-burst h1's clock jumps 30 s ahead and h2's 30 s back
    began = time.monotonic()
    tokens = fleet.burst(TASKS, TASK_S)
    fleet.all_busy(HOSTS, MAX)
    for host in HOSTS:
        set_offset(offsets[host], SKEW_S[host] + STEP_S[host])
    seen = max(watch_max(fleet, time.monotonic() + TASK_S), default=0)
    fleet.settle(tokens, BURST_DEADLINE_S)
    burst_s = time.monotonic() - began

    # then nobody is declared dead or killed, each request starts once, never more than max workers, in time
    print(f"burst of {TASKS} x {TASK_S:g} s on {MAX} workers with skewed, stepping clocks: {burst_s:.1f} s")
    assert not scaler_lines(fleet, "declared dead"), scaler_lines(fleet, "declared dead")
    assert not scaler_lines(fleet, "killing it"), scaler_lines(fleet, "killing it")
    assert not extra_starts(fleet, tokens), extra_starts(fleet, tokens)
    assert seen <= MAX and fleet.seen_workers <= MAX, (seen, fleet.seen_workers)
    assert burst_s < BURST_DEADLINE_S
    assert not fleet.restarted(HOSTS), fleet.exit_reasons(HOSTS)


def scaler_of(rig: NetnsRig, host: str) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The supervisor loop(s) and the scaler process of `host`'s namespace."""
    processes = [psutil.Process(pid) for pid in rig.pids(host)]
    supervisors = [p for p in processes if p.name() == "sh" and "supervise" in p.cmdline()]
    scalers = [p for p in processes if "scaler" in p.cmdline() and p.cmdline()[:1] != ["sh"] and "-m" in p.cmdline()]
    return supervisors, scalers


def test_a_scaler_killed_for_good_leaves_workers_that_finish_their_tasks_and_go(
    fleet: Fleet, netns: NetnsRig
) -> None:  # fmt: skip
    # given h1 and h2 (2 workers each, max 4) busy with a burst of 5 s commands
    start(fleet, {"h1": 2, "h2": 2})
    tokens = fleet.burst(DEAD_TASKS, DEAD_TASK_S)
    fleet.all_busy(HOSTS, MAX)

    # when h2's scaler is killed -9 and not restarted (its supervisor first), its workers left running
    supervisors, scalers = scaler_of(netns, "h2")
    assert supervisors and scalers, "h2's scaler was not found"
    for process in [*supervisors, *scalers]:
        process.kill()
    killed_at = time.monotonic()

    # then h2's workers finish what they hold and go, every request starts once and ends, never above max
    seen = max(watch_max(fleet, killed_at + BACK_UNDER_MAX_S), default=0)
    gone = wait_until(
        lambda: (s := fleet.status()) and not [w for w in s.workers() if w["host"] == "h2"] and time.monotonic(),
        30, "h2's workers never left", POLL_S,
    )  # fmt: skip
    document = fleet.settle(tokens, 60)
    print(f"h2's workers gone {gone - killed_at:.1f} s after its scaler's kill; at most {seen} live workers")
    assert not extra_starts(fleet, tokens), extra_starts(fleet, tokens)
    assert not twice(document) and all(document["finals"][token] == 1 for token in tokens)
    assert seen <= MAX and fleet.seen_workers <= MAX, (seen, fleet.seen_workers)
    assert fleet.worker_log_lines("h2", "taking no new task"), "h2's workers never saw their scaler gone"
