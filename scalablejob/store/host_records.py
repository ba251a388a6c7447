"""What each host's scaler of a service reports, and the leader's plan: written by scaler.membership, read by it
and by `scalablejob status`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from scalablejob.model import keys
from scalablejob.model.protocol import PROTOCOL_VERSION, RECORD_FIELD, version_of

HOST_STALE_AFTER_S = 10.0  # a host whose scaler has not written its record for this long is declared dead


@dataclass(frozen=True)
class HostRecord:
    """One host's scaler as it reported itself on its last pass: `seq` changes at every write (liveness is seeing
    it change, scalablejob.model.freshness); `heartbeat` is that host's wall time, for display only."""

    host: str
    member: str
    capacity: int
    replicas: int = 0
    busy: int = 0
    heartbeat: float = 0.0
    seq: int = 0
    protocol: int | None = PROTOCOL_VERSION  # the version its scaler runs (None: unreadable; none written: 1)

    @property
    def token(self) -> tuple[str, int, float]:
        return self.member, self.seq, self.heartbeat

    def encode(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def decode(cls, raw: str | bytes) -> HostRecord:
        data = json.loads(raw)
        return cls(
            str(data["host"]), str(data["member"]), int(data["capacity"]), int(data.get("replicas", 0)),
            int(data.get("busy", 0)), float(data.get("heartbeat", 0.0)), int(data.get("seq", 0)),
            version_of(data.get(RECORD_FIELD)),
        )  # fmt: skip


@dataclass(frozen=True)
class SharePlan:
    """The leader's decision: the service's desired count and each host's share of it; `at` is the leader's wall
    time, for display only (a plan is current while its leader holds the lease, `current_plan`)."""

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


def current_plan(client: redis.Redis, service: str) -> SharePlan | None:
    """The plan, if its leader still holds the leader lease: the lease's TTL runs on the Redis server's clock, so
    no host's clock is compared with another's. Both are read in one transaction."""
    with client.pipeline(transaction=True) as pipe:
        pipe.get(keys.scaler_leader(service))
        pipe.hgetall(keys.scaler_plan(service))
        holder, raw = pipe.execute()
    plan = SharePlan.from_hash(raw) if raw else None
    return plan if plan_is_current(plan, holder.decode() if holder else None) else None


def plan_is_current(plan: SharePlan | None, holder: str | None) -> bool:
    """A plan is current while the member that published it still holds the leader lease."""
    return plan is not None and holder is not None and plan.leader == holder
