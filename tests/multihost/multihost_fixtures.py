"""Fixtures of the multi-host tests (issue 13): a NetnsRig per test (`netns`) and a service on it (`fleet`),
skipped with its reason where network namespaces cannot be made. Load with `pytest_plugins = ["multihost_fixtures"]`
(tests/multihost has no conftest.py of its own: a second conftest module would shadow tests/conftest.py)."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pytest
from multihost_fleet import Fleet
from netns_rig import DEFAULT_NODES, REDIS_NODES, SENTINEL_NODES, NetnsError, NetnsRig, unavailable_reason

from conftest import wait_until

# replicas in sync, every Sentinel knowing the two others (hello every 2 s) and both replicas (INFO every 10 s)
SENTINELS_READY_S = 40.0

_FAILED = pytest.StashKey[bool]()


class HasLogs(Protocol):
    def logs(self) -> str: ...


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Remember whether the test itself failed, for the teardown of fixtures that print logs then."""
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.stash[_FAILED] = True


def print_logs_if_failed(request: pytest.FixtureRequest, source: HasLogs) -> None:
    """At a fixture's teardown: the logs of `source` on stdout (which pytest shows with the failure)."""
    if request.node.stash.get(_FAILED, False):
        print(source.logs())


def open_rig(folder: Path, nodes: Mapping[str, int] = DEFAULT_NODES) -> NetnsRig:
    """A rig in `folder`, or a skip that says why namespaces cannot be made here."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"multi-host tests need network namespaces: {reason}")
    return NetnsRig(folder, nodes).open()


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[NetnsRig]:
    """The default layout (client, redis, h1..h3) with a redis-server running in `redis`."""
    rig = open_rig(tmp_path / "net")
    try:
        rig.start_redis()
        rig.ask("wait", rig.redis_url(), "20")
        yield rig
    finally:
        rig.close()


@pytest.fixture
def fleet(netns: NetnsRig, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """A service with no scaler yet, on the rig's Redis; after a failure, the logs of its scalers and workers are
    printed."""
    fleet = Fleet(netns, f"mh{uuid.uuid4().hex[:6]}", netns.redis_url())
    yield fleet
    print_logs_if_failed(request, fleet)


@pytest.fixture
def sentinel_netns(tmp_path: Path) -> Iterator[NetnsRig]:
    """The failover layout: a master in r1, replicas in r2 and r3, a Sentinel in each (quorum 2); ready once the
    Sentinels see the master and each other, and each of them knows both replicas."""
    rig = open_rig(tmp_path / "net", SENTINEL_NODES)
    try:
        master, *replicas = REDIS_NODES
        rig.start_redis(master)
        for node in replicas:
            rig.start_replica(node, master)
        for node in REDIS_NODES:
            rig.start_sentinel(node, master)
        expected = {"master": rig.address(master), "replicas": sorted(rig.address(node) for node in replicas)}

        def ready() -> bool:
            try:
                (seen,) = rig.ask("topology", rig.sentinel_url(), timeout=20)
            except NetnsError:
                return False
            hosts = {"master": seen["master"].split(":")[0], "replicas": [r.split(":")[0] for r in seen["replicas"]]}
            # every Sentinel must know both replicas itself (it learns them from the master's INFO every 10 s): one
            # that does not could be elected leader and then find "no good slave" to promote
            replicas_known = sorted(seen["known"].values()) == [len(replicas)] * len(REDIS_NODES)
            return hosts == expected and sorted(seen["others"].values()) == [2, 2, 2] and replicas_known

        wait_until(ready, SENTINELS_READY_S, "the Sentinels never saw the master, both replicas and each other", 1)
        yield rig
    finally:
        rig.close()


@pytest.fixture
def sentinel_fleet(sentinel_netns: NetnsRig, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    """A service with no scaler yet, on the Sentinel-managed Redis, every put acknowledged only once a replica has
    it (`replicas=1`: WAIT)."""
    fleet = Fleet(sentinel_netns, f"mh{uuid.uuid4().hex[:6]}", f"{sentinel_netns.sentinel_url()}&replicas=1")
    yield fleet
    print_logs_if_failed(request, fleet)
