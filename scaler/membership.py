"""Several hosts, one service: who is alive, who decides, and each host's share of the decision.

Every host's scaler writes its record (member id, capacity, workers, a sequence number) each pass. One of them holds the
leader lease (SET NX with a TTL, renewed by compare-and-set, with an epoch bumped at each new leadership as its
fencing token): it runs the policy for the whole service, splits the desired count across the live hosts
(scaler.hosts) and publishes the plan, again only while it holds the lease. Each scaler keeps its own host's
share. A host whose record the leader has not seen change for the bound, on the leader's own monotonic clock, is dead
(no host's clock is compared with another's): the leader drops its record (if it is still that stale one), so its
capacity is no longer counted; the tasks its workers held go back once those workers too fall silent. A plan is
current while its leader holds the lease (a TTL on the Redis server's clock). A host that
comes back finds its record gone and rejoins under a new member id; what its workers still write is refused by
fencing (the state scripts).
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import Any

import redis

from scalablejob.model import keys
from scalablejob.model.freshness import ChangeTracker
from scalablejob.store.host_records import HOST_STALE_AFTER_S, HostRecord, SharePlan, current_plan, read_hosts
from scalablejob.store.lua import lua_script

logger = logging.getLogger(__name__)

LEADER_TTL_S = 5.0
SCRIPTS = "scalablejob.scaler"


def new_member(host: str) -> str:
    return f"{host}:{secrets.token_hex(4)}"


class Membership:
    """This host's scaler among the service's scalers."""

    def __init__(
        self, client: redis.Redis, service: str, host: str, capacity: int, *,
        stale_after_s: float = HOST_STALE_AFTER_S, leader_ttl_s: float = LEADER_TTL_S,
    ) -> None:  # fmt: skip
        self._client = client
        self.service = service
        self.host = host
        self.capacity = capacity
        self.stale_after_s = stale_after_s
        self._leader_ttl_ms = int(leader_ttl_s * 1000)
        self.member = new_member(host)
        self.epoch: int | None = None  # our leadership's fencing token, while we lead
        self._hosts_key = keys.scaler_hosts(service)
        self._leader_key = keys.scaler_leader(service)
        self._take = client.register_script(lua_script("lease_take.lua", SCRIPTS))
        self._renew = client.register_script(lua_script("lease_renew.lua", SCRIPTS))
        self._publish = client.register_script(lua_script("leader_publish.lua", SCRIPTS))
        self._forget = client.register_script(lua_script("host_forget.lua", SCRIPTS))
        self._joined = False
        self._seq = 0
        self._seen = ChangeTracker()  # when this scaler last saw each host's record change (its monotonic clock)
        self.dead_hosts: set[str] = set()  # hosts this leader declared dead (until they come back)
        self.newly_dead: set[str] = set()  # ... in the last call of live_hosts

    def beat(self, replicas: int, busy: int, wall: float) -> None:
        """Write this host's record (`wall`: this host's wall time, shown by `status`), with a new sequence number.
        If the others declared it dead meanwhile (its record is gone or another member's), it rejoins as a new
        member: what it did before is fenced off by the state scripts."""
        raw: Any = self._client.hget(self._hosts_key, self.host)
        mine = raw is not None and HostRecord.decode(raw).member == self.member
        if self._joined and not mine:
            old, self.member = self.member, new_member(self.host)
            logger.warning("this host (%s) was declared dead by the others: rejoining as %s", old, self.member)
        self._seq += 1
        record = HostRecord(self.host, self.member, self.capacity, replicas, busy, wall, self._seq)
        self._client.hset(self._hosts_key, self.host, record.encode())
        self._joined = True

    def hosts(self) -> list[HostRecord]:
        return read_hosts(self._client, self.service)

    def live_hosts(self, now: float, since: float = -math.inf) -> list[HostRecord]:
        """The hosts whose record this scaler saw change within the bound (`now`, `since`: its monotonic clock; since
        when it could read Redis on every pass); as leader, the others are declared dead (their records dropped)."""
        live = []
        self.newly_dead = set()
        records = self.hosts()
        self._seen.observe({record.host: record.token for record in records}, now)
        for record in records:
            silent_s = self._seen.silent_for(record.host, now, since)
            if silent_s < self.stale_after_s or record.member == self.member:
                live.append(record)
                self.dead_hosts.discard(record.host)
            elif self.epoch is not None and self._forget(keys=[self._hosts_key], args=[record.host, record.encode()]):
                logger.warning(
                    "host %s: its scaler's record has not changed for %.0f s: declared dead; its share goes to the "
                    "other hosts, and its workers' tasks go back once they fall silent too", record.host, silent_s,
                )  # fmt: skip
                self.newly_dead.add(record.host)
        self.dead_hosts |= self.newly_dead
        return live

    def lead(self) -> bool:
        """Take or keep the leader lease; True while this scaler leads (and so decides for the service)."""
        if self.epoch is not None:
            if self._renew(keys=[self._leader_key], args=[self.member, self._leader_ttl_ms]):
                return True
            logger.warning("lost the leader lease of %s (epoch %d): following the new leader", self.service, self.epoch)
            self.epoch = None
        if self._take(keys=[self._leader_key], args=[self.member, self._leader_ttl_ms, ""]):
            self.epoch = int(self._client.incr(keys.scaler_leader_epoch(self.service)))
            logger.info("leading the scalers of %s (epoch %d)", self.service, self.epoch)
            return True
        return False

    def publish(self, plan: SharePlan) -> bool:
        """Publish the plan, if we still lead."""
        pairs = [item for pair in plan.fields().items() for item in pair]
        return bool(self._publish(keys=[self._leader_key, keys.scaler_plan(self.service)], args=[self.member, *pairs]))

    def plan(self) -> SharePlan | None:
        """The leader's plan while its leader holds the lease, else None (read in one transaction)."""
        return current_plan(self._client, self.service)

    def leave(self) -> None:
        """This scaler stops: its record goes, and its leadership if it leads, so another takes over at once."""
        raw: Any = self._client.hget(self._hosts_key, self.host)
        if raw is not None and HostRecord.decode(raw).member == self.member:
            self._client.hdel(self._hosts_key, self.host)
        if self.epoch is not None and self._client.get(self._leader_key) == self.member.encode():
            self._client.delete(self._leader_key)
