"""What a scaler keeps in Redis: a record of each worker process it spawned, its lease, and its last decision.

The records let a restarted scaler find the workers of its previous run and adopt them (pid and process start
time, checked with psutil, so a reused pid is never mistaken for a worker). The lease makes sure only one scaler
owns a service's workers on one host.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psutil
import redis

from scalablejob.host.processes import holder_alive, holder_identity
from scalablejob.model import keys
from scalablejob.model.errors import ScalerError
from scalablejob.store.lua import lua_script
from scalablejob.store.presence import Presence, forget_presence, presence_of

logger = logging.getLogger(__name__)

LEASE_TTL_S = 10.0


@dataclass(frozen=True)
class ProcessRecord:
    """A worker process a scaler spawned: enough to find it again and to know which GPUs it holds."""

    name: str
    pid: int
    create_time: float  # psutil's process start time: with the pid, it names one process for good
    host: str
    gpus: tuple[str, ...] = ()  # GPU UUIDs it is pinned to
    started_at: float = 0.0

    def encode(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def decode(cls, raw: str | bytes) -> ProcessRecord:
        data = json.loads(raw)
        return cls(
            str(data["name"]), int(data["pid"]), float(data["create_time"]), str(data["host"]),
            tuple(str(uuid) for uuid in data.get("gpus", ())), float(data.get("started_at", 0.0)),
        )  # fmt: skip


def this_process() -> tuple[int, float]:
    pid = os.getpid()
    return pid, psutil.Process(pid).create_time()


DECISION_HISTORY = 50


class LeaseLost(ScalerError):
    """Another scaler holds this scaler's lease: it may own the workers now."""


class ScalerStore:
    """The scaler's keys for one service and host."""

    def __init__(self, client: redis.Redis, service: str, host: str) -> None:
        self._client = client
        self._service = service
        self.host = host
        self._records_key = keys.scaler_processes(service)
        self._lease_key = keys.scaler_lease(service, host)
        self._status_key = keys.scaler_status(service, host)
        pid, create_time = this_process()
        # the nonce tells this store's lease from another store's of the same process (tests run two)
        self._me = holder_identity(pid, create_time, nonce=secrets.token_hex(8))
        self._lease_ms = int(LEASE_TTL_S * 1000)
        self._take = client.register_script(lua_script("lease_take.lua", "scalablejob.scaler"))
        self._renew = client.register_script(lua_script("lease_renew.lua", "scalablejob.scaler"))

    def save(self, record: ProcessRecord) -> None:
        self._client.hset(self._records_key, record.name, record.encode())

    def records(self) -> list[ProcessRecord]:
        """The records of this host: other hosts' scalers own theirs."""
        raw: Any = self._client.hgetall(self._records_key)
        found = [ProcessRecord.decode(value) for value in raw.values()]
        return [record for record in found if record.host == self.host]

    def presence_of(self, name: str) -> Presence | None:
        """A worker's presence read now (at its death the last observation may be a pass old)."""
        return presence_of(self._client, self._service, name)

    def forget_worker(self, name: str) -> None:
        """A worker is gone for good: drop its record and the presence field it can no longer drop itself."""
        self._client.hdel(self._records_key, name)
        forget_presence(self._client, self._service, name)

    def acquire_lease(self) -> None:
        """Become the service's scaler on this host, unless a live scaler already is. Compare-and-set: of two
        scalers that find the same dead holder, one wins and the other is refused."""
        if self._take(keys=[self._lease_key], args=[self._me, self._lease_ms, ""]):
            return
        if self._renew(keys=[self._lease_key], args=[self._me, self._lease_ms]):
            return  # ours already: a start tried again after the answer to its first take was lost
        holder: Any = self._client.get(self._lease_key)
        if holder_alive(holder):
            raise ScalerError(
                f"another scaler (pid {json.loads(holder)['pid']}) already runs service {self._service} on "
                f"{self.host}: expected one scaler per service and host; stop it first"
            )
        if not self._take(keys=[self._lease_key], args=[self._me, self._lease_ms, holder or ""]):
            raise ScalerError(
                f"another scaler took the lease of service {self._service} on {self.host} at the same time: "
                "expected one scaler per service and host"
            )

    def renew_lease(self) -> bool:
        """Keep the lease; a scaler that lost it to another (paused past its TTL, and another took over) must stop
        acting. A lease that is merely gone, held by nobody, is taken again: it expired while Redis was out of
        reach, or a Sentinel failover promoted a replica that had not received its last renewals. No other scaler
        owns the workers then, so stopping would only restart this one for nothing. Returns True when it was taken
        again (what else was written before the loss may be gone too)."""
        if self._renew(keys=[self._lease_key], args=[self._me, self._lease_ms]):
            return False
        if self._take(keys=[self._lease_key], args=[self._me, self._lease_ms, ""]):
            logger.warning(
                "the lease of service %s on %s had vanished (expired while Redis was out of reach, or lost in a "
                "failover) and no other scaler held it: taken again", self._service, self.host,
            )  # fmt: skip
            return True
        raise LeaseLost(
            f"this scaler (pid {os.getpid()}) lost its lease on service {self._service} on {self.host}: it was "
            f"not renewed within {LEASE_TTL_S:g} s (paused or cut off from Redis) and another scaler took it; "
            "it stops without touching the workers"
        )

    def report(self, status: Mapping[str, str | int | float]) -> None:
        """Publish the last decision (always the same fields, and our pid)."""
        fields: dict[Any, Any] = {**status, "pid": os.getpid()}
        self._client.hset(self._status_key, mapping=fields)

    def record_decision(self, decision: Mapping[str, str | int | float]) -> None:
        """Keep a decision that changed something in the short history `scalablejob status` shows."""
        key = keys.scaler_decisions(self._service)
        with self._client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, json.dumps({**decision, "host": self.host}))
            pipe.ltrim(key, 0, DECISION_HISTORY - 1)
            pipe.execute()

    def release(self) -> None:
        """The scaler stopped and its workers are gone: drop the status, and the lease if it is still ours."""
        self._client.delete(self._status_key)
        if self._client.get(self._lease_key) == self._me.encode():
            self._client.delete(self._lease_key)
