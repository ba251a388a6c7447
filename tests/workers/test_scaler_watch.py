"""A worker whose scaler is gone warm-stops itself after a grace; a live or restarted scaler keeps it. Time and the
process check are parameters; Redis is fakeredis."""

from __future__ import annotations

import json
import os
import subprocess

import fakeredis
import psutil

from scalablejob.host.processes import holder_alive
from scalablejob.model import keys
from scalablejob.workers.scaler_watch import ScalerWatch

LEASE = keys.scaler_lease("svc", "h1")


def test_holder_alive_is_true_only_for_the_same_running_process() -> None:
    me = psutil.Process(os.getpid())
    assert holder_alive(json.dumps({"pid": me.pid, "create_time": me.create_time()}))
    assert not holder_alive(json.dumps({"pid": me.pid, "create_time": me.create_time() - 100}))  # a reused pid
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not holder_alive(json.dumps({"pid": gone.pid, "create_time": 0.0}))
    assert not holder_alive(None) and not holder_alive(b"not json")


def test_the_worker_stops_once_no_live_scaler_held_the_lease_for_the_grace() -> None:
    client = fakeredis.FakeRedis()
    stops: list[str] = []
    alive = {"yes": True}
    watch = ScalerWatch(client, "svc", "h1", lambda: stops.append("stop"), grace_s=5.0,
                        alive=lambda raw: raw is not None and alive["yes"])  # fmt: skip
    client.set(LEASE, b"scaler")
    assert not watch.check(0.0)
    alive["yes"] = False  # its scaler was killed -9: the lease is still there, its holder is dead
    assert not watch.check(1.0) and not watch.check(5.9)
    client.set(LEASE, b"restarted")  # a restarted scaler took the lease: it adopts the worker
    alive["yes"] = True
    assert not watch.check(7.0)
    client.delete(LEASE)  # gone for good (its TTL ran out on the Redis server's clock)
    assert not watch.check(8.0) and not watch.check(12.9)
    assert watch.check(13.0) and watch.check(14.0)
    assert stops == ["stop"]  # once


def test_a_redis_error_stops_nothing() -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    down = fakeredis.FakeRedis(server=server)
    watch = ScalerWatch(down, "svc", "h1", lambda: None, grace_s=0.0)
    assert not watch.check(0.0) and not watch.check(100.0)


def test_while_redis_is_silent_the_scaler_seen_last_decides() -> None:
    # given a worker that read its scaler's lease once, and then lost its Redis
    server = fakeredis.FakeServer()
    client = fakeredis.FakeRedis(server=server)
    client.set(LEASE, b"scaler")
    running = {b"scaler": True}
    stops: list[str] = []
    watch = ScalerWatch(client, "svc", "h1", lambda: stops.append("stop"), grace_s=5.0,
                        alive=lambda raw: raw is not None and running.get(raw, False))  # fmt: skip
    assert not watch.check(0.0)
    server.connected = False

    # when Redis stays silent, the outage alone stops nothing while that scaler runs
    assert not watch.check(1.0) and not watch.check(100.0)

    # but once that scaler has ended too, the worker stops after the grace
    running[b"scaler"] = False
    assert not watch.check(101.0) and not watch.check(105.9)
    assert watch.check(106.0)
    assert stops == ["stop"]


def test_a_worker_that_never_reached_its_redis_goes_when_the_process_that_started_it_has_ended() -> None:
    # given a worker whose Redis never answered (a stack stopped while the worker started), started by a process
    server = fakeredis.FakeServer()
    server.connected = False
    starter = subprocess.Popen(["sleep", "60"])
    identity = json.dumps({"pid": starter.pid, "create_time": psutil.Process(starter.pid).create_time()}).encode()
    stops: list[str] = []
    watch = ScalerWatch(fakeredis.FakeRedis(server=server), "svc", "h1", lambda: stops.append("stop"), grace_s=1.0,
                        last_holder=identity)  # fmt: skip
    try:
        # then it waits while its starter runs
        assert not watch.check(0.0) and not watch.check(10.0)
    finally:
        starter.kill()
        starter.wait()
    # and goes once the starter has ended, after the grace
    assert not watch.check(11.0)
    assert watch.check(12.0) and stops == ["stop"]
