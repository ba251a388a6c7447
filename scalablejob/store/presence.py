"""Worker presence, the read side: one Redis hash per service, one field per worker, JSON with its state, pid,
GPUs and the tasks it holds.

Several components read it: the scaler counts tasks in flight, tells idle workers from busy ones and, when a worker
dies, learns which messages (kombu delivery tags) it held; the front end counts live workers; `status` shows them.
Only the worker writes its own field (scalablejob.workers.presence); this module owns the record and its reader.
The record says the protocol version its worker runs (scalablejob.model.protocol; none: a release before versions)
and how many messages it put back because it could not run them.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import redis

from scalablejob.model import keys
from scalablejob.model.protocol import PROTOCOL_VERSION, RECORD_FIELD, version_of

logger = logging.getLogger(__name__)

HEARTBEAT_S = 2.0
STALE_AFTER_S = 5 * HEARTBEAT_S  # a field not seen changing for this long belongs to a worker that is gone or frozen


class WorkerState(str, Enum):
    """Where a worker is in its life, as the worker itself sees it."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Presence:
    """One worker's published state; `held` maps each task id it holds to its kombu delivery tag. `heartbeat` is the
    worker host's wall time, for display only; `seq` changes at every write, so that readers judge liveness by
    seeing it change on their own clock (scalablejob.model.freshness), never by comparing clocks."""

    name: str
    pid: int
    host: str
    state: WorkerState
    gpus: str = ""
    held: Mapping[str, str] = field(default_factory=dict)
    heartbeat: float = 0.0
    seq: int = 0
    protocol: int | None = PROTOCOL_VERSION  # the version its worker runs (None: unreadable)
    put_back: int = 0  # messages it put back on their queue because it cannot run them
    put_back_reason: str = ""  # the latest one's reason

    def encode(self) -> str:
        fields = {"pid": self.pid, "host": self.host, "state": self.state.value, "gpus": self.gpus}
        unhandled = {"put_back": self.put_back, "put_back_reason": self.put_back_reason} if self.put_back else {}
        return json.dumps({
            **fields, "held": dict(self.held), "heartbeat": self.heartbeat, "seq": self.seq,
            RECORD_FIELD: self.protocol, **unhandled,
        })  # fmt: skip

    @classmethod
    def decode(cls, name: str, raw: str | bytes) -> Presence:
        data = json.loads(raw)
        return cls(
            name, int(data["pid"]), str(data["host"]), WorkerState(data["state"]), str(data.get("gpus", "")),
            {str(k): str(v) for k, v in data.get("held", {}).items()}, float(data.get("heartbeat", 0.0)),
            int(data.get("seq", 0)), version_of(data.get(RECORD_FIELD)), int(data.get("put_back", 0)),
            str(data.get("put_back_reason", "")),
        )  # fmt: skip

    @functools.cached_property
    def token(self) -> tuple[int, float]:
        """What changes at every write (the heartbeat too, for a writer older than `seq`). Cached, as `scaler_host`:
        a leader asks every worker's record for both on every pass, and a record that has not changed is reused."""
        return self.seq, self.heartbeat

    @functools.cached_property
    def scaler_host(self) -> str:
        """The host of the scaler that started it: the part of its node name after `@` (else its hostname)."""
        return scaler_host_of(self.name) or self.host

    def is_fresh(self, reference: float) -> bool:
        """For a one-shot reader only (`status`), which cannot watch the record change:
        whether the heartbeat is within the bound of `reference`, best a wall time of the worker's own host (its
        scaler's record); a scaler never judges this way."""
        return reference - self.heartbeat < STALE_AFTER_S


def scaler_host_of(node_name: str) -> str | None:
    """The host of the scaler that started a worker: the part of its node name `<service>-<hex>@<host>` after `@`
    (None for a name without one, a worker started by hand)."""
    return node_name.rsplit("@", 1)[1] if "@" in node_name else None


def decode_presence(raw: Mapping[bytes, bytes]) -> dict[str, Presence]:
    """Every worker's state from the raw hash; a field that does not decode is skipped (and logged), not fatal."""
    decoded = {name.decode(): _decoded(name.decode(), value) for name, value in raw.items()}
    return {name: presence for name, presence in decoded.items() if presence is not None}


def _decoded(name: str, value: bytes) -> Presence | None:
    try:
        return Presence.decode(name, value)
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("ignoring unreadable presence of worker %s: %s", name, exc)
        return None


def read_presence(client: redis.Redis, service: str) -> dict[str, Presence]:
    """Every worker's published state, in one round trip."""
    raw: Any = client.hgetall(keys.worker_presence(service))
    return decode_presence(raw)


class PresenceReader:
    """Every worker's published state, as `read_presence` gives it, decoding only the fields that changed since its
    last read: a leader's pass reads the whole hash four times a second, and a worker rewrites its field every 2 s,
    so at fleet size most fields are as they were (and a decoded Presence is immutable, so it is reused)."""

    def __init__(self, client: redis.Redis, service: str) -> None:
        self._client = client
        self._key = keys.worker_presence(service)
        self._known: dict[bytes, tuple[bytes, Presence | None]] = {}  # field -> its raw value, decoded

    def read(self) -> dict[str, Presence]:
        raw: Any = self._client.hgetall(self._key)
        known: dict[bytes, tuple[bytes, Presence | None]] = {}
        for name, value in raw.items():
            last = self._known.get(name)
            known[name] = last if last is not None and last[0] == value else (value, _decoded(name.decode(), value))
        self._known = known
        return {presence.name: presence for _, presence in known.values() if presence is not None}


def presence_of(client: redis.Redis, service: str, name: str) -> Presence | None:
    """One worker's published state, read now; None if it has none (or none that decodes)."""
    raw: Any = client.hget(keys.worker_presence(service), name)
    return None if raw is None else _decoded(name, raw)


def forget_presence(client: redis.Redis, service: str, name: str) -> None:
    """Drop a worker's field once it is gone: the worker cannot do it after a crash."""
    client.hdel(keys.worker_presence(service), name)
