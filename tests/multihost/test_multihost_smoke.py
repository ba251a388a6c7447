"""The multi-host rig itself (issue 13), with no worker: its nodes reach Redis, each host has its own hostname, the
root namespace has no address or route in the rig's range, faults act, and nothing is left once it is closed."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from netns_rig import HOSTS, REDIS_NODES, REDIS_PORT, SUBNET, NetnsRig, ip, namespace_exists, sweep_orphans

from conftest import wait_until

pytest_plugins = ["multihost_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def reaches_redis(rig: NetnsRig, node: str) -> bool:
    """Whether a TCP connection from `node` to Redis opens within 1 s."""
    code = f"import socket; socket.create_connection(({rig.address('redis')!r}, {REDIS_PORT}), 1).close()"
    return rig.run(node, [sys.executable, "-c", code]).returncode == 0


def test_every_host_reaches_redis_under_its_own_hostname(netns: NetnsRig) -> None:
    for host in HOSTS:
        assert netns.ask("wait", netns.redis_url(), "10", node=host) == [{"ok": True}]
    names = [netns.run(host, ["hostname"], hostname=host).stdout.strip() for host in HOSTS]
    assert names == list(HOSTS)
    assert socket.gethostname() not in names  # the root's own name is untouched
    python = [sys.executable, "-c", "import socket; print(socket.gethostname())"]
    assert netns.run("h2", python, hostname="h2").stdout.strip() == "h2"


def test_the_root_namespace_has_no_address_or_route_in_the_range(netns: NetnsRig) -> None:
    for what in (["-4", "addr", "show"], ["-4", "route", "show", "table", "all"]):
        listing = subprocess.run(["ip", *what], capture_output=True, text=True, check=True).stdout
        assert SUBNET not in listing, f"ip {' '.join(what)} in the root namespace:\n{listing}"
    inside = netns.run("h1", ["ip", "-4", "route", "show"]).stdout
    assert f"{SUBNET}.0/24" in inside  # the range exists, only inside the rig


def test_a_partitioned_host_is_cut_off_until_healed_and_a_killed_one_has_no_process(netns: NetnsRig) -> None:
    netns.partition("h1")
    assert not reaches_redis(netns, "h1")
    assert reaches_redis(netns, "h2")
    netns.heal("h1")
    wait_until(lambda: reaches_redis(netns, "h1"), 10, "h1 never reached redis again after the heal")
    netns.spawn("h2", ["sleep", "600"], netns.folder / "sleep.log", hostname="h2")
    wait_until(lambda: netns.pids("h2"), 10, "the sleep never showed up in h2")
    assert netns.kill_host("h2") >= 1
    assert netns.pids("h2") == []
    assert netns.pids("redis")  # the other namespaces are untouched


def test_close_leaves_no_namespace_and_no_process(netns: NetnsRig) -> None:
    names = [netns.bridge, *(netns.ns(node) for node in netns.nodes)]
    assert all(namespace_exists(name) for name in names)
    started = list(netns.processes)  # the redis-server at least
    netns.close()  # the fixture's close after it does nothing more
    assert not [name for name in names if namespace_exists(name)]
    assert started and all(process.poll() is not None for process in started)


def test_a_rig_left_by_a_killed_run_is_swept_and_a_live_one_is_not(netns: NetnsRig) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # its pid: an owner that died
    orphan = f"sj-{gone.pid}-0bad-h1"
    ip("netns", "add", orphan)
    try:
        assert orphan in sweep_orphans()
    finally:
        ip("netns", "del", orphan, check=False)
    assert namespace_exists(netns.ns("h1"))  # this run's own rig stays


def test_sentinel_promotes_a_replica_when_the_master_is_killed(sentinel_netns: NetnsRig) -> None:
    rig = sentinel_netns
    master, *replicas = REDIS_NODES
    rig.kill(rig.redis_servers[master])

    def promoted() -> str | None:
        address = rig.master()
        return address if address != rig.address(master) else None

    assert wait_until(promoted, 30, "Sentinel never promoted a replica", 0.5) in {rig.address(n) for n in replicas}
    assert rig.ask("wait", rig.sentinel_url(), "10") == [{"ok": True}]  # the new master answers
