"""One desired count, split across hosts. Pure.

Each host's scaler reports its capacity (the most workers it may run: its GPUs, `--max-local`) and its workers
(active, busy). The leader (scaler.membership) runs the policy once for the service and gives each live host a
share that the host's scaler then keeps, spawning or warm-stopping its own workers:
- a host never gets fewer than its busy workers (a busy worker is never stopped) nor more than its capacity;
- existing idle workers are kept before new ones are started (they are warm), and both go to the host that is the
  least full for its capacity, so the workers spread over the hosts by capacity;
- the shares add up to the desired count whenever the capacities allow it, and never below the busy workers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HostLoad:
    """A live host as its scaler last reported it."""

    host: str
    capacity: int
    replicas: int = 0  # its workers that are not stopping
    busy: int = 0


def split(desired: int, hosts: Sequence[HostLoad]) -> dict[str, int]:
    """Each host's share of `desired` workers (see the module's rules)."""
    shares = {load.host: min(load.busy, load.capacity) for load in hosts}
    remaining = desired - sum(shares.values())
    by_name = {load.host: load for load in hosts}

    def fill(host: str) -> float:
        """How full the host would be with one more worker: the next one goes where this is lowest."""
        return (shares[host] + 1) / by_name[host].capacity

    for room in (lambda load: load.replicas, lambda load: load.capacity):  # warm workers first, then new ones
        while remaining > 0:
            open_hosts = [load.host for load in hosts if shares[load.host] < min(room(load), load.capacity)]
            if not open_hosts:
                break
            host = min(open_hosts, key=lambda name: (fill(name), name))
            shares[host] += 1
            remaining -= 1
    return shares


def total_capacity(hosts: Sequence[HostLoad]) -> int:
    return sum(load.capacity for load in hosts)


def totals(hosts: Sequence[HostLoad]) -> tuple[int, int]:
    """(replicas, busy) of the whole service, for the policy."""
    return sum(load.replicas for load in hosts), sum(load.busy for load in hosts)


def describe(shares: Mapping[str, int]) -> str:
    return ", ".join(f"{host} {share}" for host, share in sorted(shares.items()))
