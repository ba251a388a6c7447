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

import heapq
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
    for room in (lambda load: load.replicas, lambda load: load.capacity):  # warm workers first, then new ones
        limits = {load.host: (min(room(load), load.capacity), load.capacity) for load in hosts}
        remaining = _hand_out(remaining, shares, limits)
    return shares


def _hand_out(remaining: int, shares: dict[str, int], limits: Mapping[str, tuple[int, int]]) -> int:
    """Give `remaining` workers one at a time, each to the host below its limit that would be the least full for its
    capacity with it (ties: by name); returns what no host had room for. A heap keeps this O(n log hosts): a pass of
    the leader splits thousands of workers over hundreds of hosts. `limits`: host -> (limit, capacity)."""
    heap = [((shares[host] + 1) / capacity, host) for host, (limit, capacity) in limits.items() if shares[host] < limit]
    heapq.heapify(heap)
    while remaining > 0 and heap:
        _, host = heapq.heappop(heap)
        shares[host] += 1
        remaining -= 1
        limit, capacity = limits[host]
        if shares[host] < limit:
            heapq.heappush(heap, ((shares[host] + 1) / capacity, host))
    return remaining


def total_capacity(hosts: Sequence[HostLoad]) -> int:
    return sum(load.capacity for load in hosts)


def totals(hosts: Sequence[HostLoad]) -> tuple[int, int]:
    """(replicas, busy) of the whole service, for the policy."""
    return sum(load.replicas for load in hosts), sum(load.busy for load in hosts)


def describe(shares: Mapping[str, int]) -> str:
    return ", ".join(f"{host} {share}" for host, share in sorted(shares.items()))
