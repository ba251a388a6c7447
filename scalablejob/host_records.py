"""What each host's scaler of a service reports, and the leader's plan: written by scaler.membership, read by it
and by `scalablejob status`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from scalablejob import keys

HOST_STALE_AFTER_S = 10.0  # a host whose scaler has not written its record for this long is declared dead


@dataclass(frozen=True)
class HostRecord:
    """One host's scaler as it reported itself on its last pass."""

    host: str
    member: str
    capacity: int
    replicas: int = 0
    busy: int = 0
    heartbeat: float = 0.0

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, raw: str | bytes) -> HostRecord:
        data = json.loads(raw)
        return cls(
            str(data["host"]), str(data["member"]), int(data["capacity"]), int(data.get("replicas", 0)),
            int(data.get("busy", 0)), float(data.get("heartbeat", 0.0)),
        )  # fmt: skip


@dataclass(frozen=True)
class SharePlan:
    """The leader's decision: the service's desired count and each host's share of it."""

    desired: int
    shares: dict[str, int] = field(default_factory=dict)
    epoch: int = 0
    at: float = 0.0
    leader: str = ""
    reason: str = ""

    def fields(self) -> dict[str, str]:
        return {
            "desired": str(self.desired), "shares": json.dumps(self.shares, sort_keys=True), "epoch": str(self.epoch),
            "at": repr(self.at), "leader": self.leader, "reason": self.reason,
        }  # fmt: skip

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> SharePlan | None:
        text = {key.decode(): value.decode() for key, value in raw.items()}
        try:
            shares = {str(host): int(share) for host, share in json.loads(text["shares"]).items()}
            return cls(int(text["desired"]), shares, int(text["epoch"]), float(text["at"]), text["leader"],
                       text.get("reason", ""))  # fmt: skip
        except (KeyError, ValueError, TypeError):
            return None


def read_hosts(client: redis.Redis, service: str) -> list[HostRecord]:
    raw: Any = client.hgetall(keys.scaler_hosts(service))
    return sorted((HostRecord.decode(value) for value in raw.values()), key=lambda record: record.host)


def read_plan(client: redis.Redis, service: str) -> SharePlan | None:
    raw: Any = client.hgetall(keys.scaler_plan(service))
    return SharePlan.from_hash(raw) if raw else None
