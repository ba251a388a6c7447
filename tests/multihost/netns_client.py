"""The multi-host tests' client, run inside a node's namespace (the test process cannot route to the rig's
addresses): `python netns_client.py OP URL ...`, one JSON document per line on stdout.

Ops:
- `wait URL SECONDS`: until the broker (the master, for a sentinel:// URL) answers a PING; `{"ok": true}`.
- `put URL SERVICE ITEMS_JSON [GAP_S]`: put each [body, taskType, requestId] of ITEMS_JSON through JobClient, GAP_S
  apart; one line per put as it returns: `{"requestId", "index", "at"}`, or `{"requestId", "refused", "at"}`
  (a put that raised). Lines are flushed at once, so a put in flight when a fault lands is told apart.
- `delivery URL SERVICE [REQUEST_ID ...]`: `{"finals": {id: n}, "states": {id: state}}`: the final entries (result
  or error) per request id over the whole output queue, and each named request's state from RequestStore.
- `topology URL`: what the Sentinels of a sentinel:// URL say now: `{"master": "HOST:PORT", "replicas": [...],
  "others": {sentinel: how many other Sentinels it knows}}` (a Sentinel that does not answer is left out).

A sentinel:// URL is kombu's sentinel transport form: `sentinel://H:P;sentinel://H:P/DB?master=NAME[&replicas=N]`
(scalablejob.store.redis_url: `replicas=N` makes a put acknowledged only once N replicas have it).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import redis
from redis.sentinel import Sentinel

from scalablejob import JobClient
from scalablejob.store.redis_url import connect as broker_client
from scalablejob.store.redis_url import parse_broker_url
from scalablejob.store.state import RequestStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))  # the chaos suite's count of final entries
from chaos_rig import final_counts

SOCKET_TIMEOUT_S = 2.0


def connect(url: str) -> redis.Redis:
    """A client of the broker (of the master the Sentinels name now, for sentinel://), as every command connects."""
    return broker_client(url, socket_timeout=SOCKET_TIMEOUT_S)


def emit(document: dict[str, object]) -> None:
    print(json.dumps(document), flush=True)


def op_wait(url: str, seconds: str) -> None:
    deadline = time.monotonic() + float(seconds)
    while True:
        try:
            with connect(url) as client:
                client.ping()
            emit({"ok": True})
            return
        except (redis.RedisError, OSError) as exc:
            if time.monotonic() > deadline:
                emit({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
                sys.exit(1)
        time.sleep(0.1)


def op_put(url: str, service: str, items: str, gap_s: str = "0") -> None:
    with JobClient(service, url) as client:
        for body, task_type, request_id in json.loads(items):
            try:
                index, _ = client.put(body, {"taskType": task_type, "requestId": request_id})
            except Exception as exc:  # any error is a refusal the caller saw, which is all a refusal must be
                emit({"requestId": request_id, "refused": f"{type(exc).__name__}: {exc}", "at": time.time()})
            else:
                emit({"requestId": request_id, "index": index, "at": time.time()})
            if float(gap_s):
                time.sleep(float(gap_s))  # the burst's pace, not a wait for anything


def op_delivery(url: str, service: str, *request_ids: str) -> None:
    with connect(url) as client:
        store = RequestStore(client, service)
        states = {rid: store.get(rid) for rid in request_ids}
        emit({
            "finals": dict(final_counts(client, service)),
            "states": {rid: None if state is None else asdict(state) for rid, state in states.items()},
        })  # fmt: skip


def op_topology(url: str) -> None:
    address = parse_broker_url(url)
    sentinel = Sentinel(list(address.sentinels), socket_timeout=SOCKET_TIMEOUT_S)
    host, port = sentinel.discover_master(address.master)
    replicas = [f"{h}:{p}" for h, p in sentinel.discover_slaves(address.master)]
    others, known = {}, {}
    for watcher in sentinel.sentinels:
        try:
            state = watcher.sentinel_master(address.master)
            healthy = [r for r in watcher.sentinel_slaves(address.master) if r.get("flags") == "slave"]
        except (redis.RedisError, OSError):
            continue
        name = watcher.connection_pool.connection_kwargs
        others[f"{name['host']}:{name['port']}"] = int(state.get("num-other-sentinels", 0))
        known[f"{name['host']}:{name['port']}"] = len(healthy)  # each Sentinel learns the replicas on its own
    emit({"master": f"{host}:{port}", "replicas": sorted(replicas), "others": others, "known": known})


OPS: dict[str, Callable[..., None]] = {
    "wait": op_wait, "put": op_put, "delivery": op_delivery, "topology": op_topology,
}  # fmt: skip


def main(argv: Sequence[str]) -> None:
    if not argv or argv[0] not in OPS:
        sys.exit(f"usage: netns_client.py {{{','.join(OPS)}}} URL ...")
    OPS[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
