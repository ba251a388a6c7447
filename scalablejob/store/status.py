"""What `scalablejob status` shows, read from Redis in one place: queues, scaler, workers, recent decisions.

Also whether Redis knows the service at all (a mistyped name must not look like an idle service) and the
snapshot as plain data for `status --json`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from scalablejob.model import keys
from scalablejob.model.routing import service_queues
from scalablejob.store.host_records import HOST_STALE_AFTER_S, HostRecord, SharePlan, current_plan, read_hosts
from scalablejob.store.presence import Presence, read_presence
from scalablejob.store.queues import queue_depth

RECENT_DECISIONS = 5


@dataclass(frozen=True)
class ServiceStatus:
    """A snapshot of one service, as its parts last reported it."""

    service: str
    queues: dict[str, int]
    scalers: list[dict[str, Any]]
    workers: list[Presence]
    decisions: list[dict[str, Any]]
    init_failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    hosts: list[HostRecord] = field(default_factory=list)  # the hosts whose scalers serve it
    plan: SharePlan | None = None  # the leader's last split of the desired count across them
    taken_at: float = 0.0
    known: bool = True  # False: nothing in Redis was ever written for this service (a typo, or the wrong broker)


# Keys that exist once a service has been used at all: a request put, an output entry, a worker, a scaler, a front end
_SERVICE_MARKERS = (
    keys.input_index_counter, keys.sink_index_counter, keys.worker_presence, keys.scaler_processes,
    keys.scaler_decisions, keys.init_failures, keys.frontend_registry,
)  # fmt: skip


def read_status(client: redis.Redis, service: str, now: float | None = None) -> ServiceStatus:
    queues = {queue: queue_depth(client, queue) for queue in service_queues(service)}
    scalers = _scalers(client, service)
    return ServiceStatus(
        service=service,
        queues=queues,
        scalers=scalers,
        workers=sorted(read_presence(client, service).values(), key=lambda presence: presence.name),
        decisions=[json.loads(raw) for raw in _lrange(client, keys.scaler_decisions(service), RECENT_DECISIONS)],
        init_failures={
            name.decode(): json.loads(raw) for name, raw in _hgetall(client, keys.init_failures(service)).items()
        },
        hosts=read_hosts(client, service),
        plan=current_plan(client, service),
        taken_at=time.time() if now is None else now,
        known=any(queues.values()) or bool(scalers) or _exists(client, *(key(service) for key in _SERVICE_MARKERS)),
    )


def known_services(client: redis.Redis) -> list[str]:
    """The services Redis holds keys of, for the hint after a name it does not know."""
    found: Any = client.scan_iter(match=f"{keys.KEY_PREFIX}:*", count=1000)
    return sorted({keys.service_of_request_state(key.decode()) for key in found} - {""})


def status_document(status: ServiceStatus) -> dict[str, Any]:
    """The snapshot as plain JSON data (`status --json`): what the tables show, unformatted."""
    return {
        "service": status.service,
        "takenAt": status.taken_at,
        "queues": status.queues,
        "scalers": status.scalers,
        "workers": [_worker_document(worker, worker_stale(status, worker)) for worker in status.workers],
        "initFailures": status.init_failures,
        "decisions": status.decisions,
        "hosts": host_documents(status),
    }


def host_documents(status: ServiceStatus) -> list[dict[str, Any]]:
    """Each host's scaler: capacity, its share of the leader's desired count, its workers, heartbeat, alive."""
    shares = status.plan.shares if status.plan is not None else {}
    leader = status.plan.leader if status.plan is not None else ""
    return [_host_document(record, shares.get(record.host, 0), record.member == leader, host_alive(status, record))
            for record in status.hosts]  # fmt: skip


def host_alive(status: ServiceStatus, record: HostRecord) -> bool:
    """A one-shot reader cannot watch a record change, and no clock is compared across hosts: a host is alive while
    the current leader counts it (it is in the plan of the lease holder); with no current plan, by this host's
    clock (display only)."""
    if status.plan is not None:
        return record.host in status.plan.shares
    return status.taken_at - record.heartbeat < HOST_STALE_AFTER_S


def worker_stale(status: ServiceStatus, worker: Presence) -> bool:
    """Judged against the last wall time its own host's scaler wrote (the same host's clock); a worker of no known
    host, against this host's clock (display only)."""
    hosts = {record.host: record for record in status.hosts}
    record = hosts.get(worker.scaler_host)
    reference = max(record.heartbeat, worker.heartbeat) if record is not None else status.taken_at
    return not worker.is_fresh(reference)


def _host_document(record: HostRecord, share: int, leads: bool, alive: bool) -> dict[str, Any]:
    return {
        "host": record.host, "capacity": record.capacity, "share": share, "replicas": record.replicas,
        "busy": record.busy, "heartbeat": record.heartbeat, "alive": alive, "leader": leads,
        "protocol": record.protocol,
    }  # fmt: skip


def _worker_document(worker: Presence, stale: bool) -> dict[str, Any]:
    return {
        "name": worker.name, "pid": worker.pid, "host": worker.host, "state": worker.state.value,
        "stale": stale, "gpus": worker.gpus, "tasks": sorted(worker.held), "heartbeat": worker.heartbeat,
        "protocol": worker.protocol, "putBack": worker.put_back, "putBackReason": worker.put_back_reason,
    }  # fmt: skip


def _scalers(client: redis.Redis, service: str) -> list[dict[str, Any]]:
    """The last report of each host's scaler (one per host)."""
    found: Any = client.scan_iter(match=keys.scaler_status(service, "*"), count=100)
    reports = []
    for key in sorted(found):
        raw = _hgetall(client, key)
        reports.append({"host": key.decode().rsplit(":", 1)[1], **{k.decode(): v.decode() for k, v in raw.items()}})
    return reports


def _hgetall(client: redis.Redis, key: str | bytes) -> dict[bytes, bytes]:
    raw: Any = client.hgetall(key)
    return dict(raw)


def _lrange(client: redis.Redis, key: str, count: int) -> list[bytes]:
    raw: Any = client.lrange(key, 0, count - 1)
    return list(raw)


def _exists(client: redis.Redis, *names: str) -> bool:
    count: Any = client.exists(*names)
    return int(count) > 0
