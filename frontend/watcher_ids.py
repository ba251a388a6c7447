"""The pure side of the shared watcher registry (watcher_registry.py): how a watcher is named in Redis, what the
acquire script's answer means, and how often a lease is renewed. No I/O."""

from __future__ import annotations

import enum
import json

WatcherKey = tuple[str, str, str]  # stream, group, consumer

LEASE_S = 5.0  # a front-end process's watchers count as connected while its lease lives: a dead one's expire in this
HEARTBEATS_PER_LEASE = 5  # renewed five times per lease, so four missed renewals (a stalled loop) still keep it


class Claim(enum.IntEnum):
    """The acquire script's answer."""

    HELD = 1  # this connection holds the watcher now
    BUSY = 0  # a live process (this one included) holds it
    CAPPED = -1  # the front end's token has max_watchers_per_token watchers connected, over all processes


def watcher_id(key: WatcherKey) -> str:
    """A watcher's field in Redis: its queue, group and consumer as a JSON array, unambiguous whatever characters a
    group (tag filters) or a consumer (the SDK's uid header) holds."""
    return json.dumps(list(key), separators=(",", ":"))


def count_field(instance: str, front_end: str) -> str:
    """The field of the per-process counts hash that holds how many watchers of `front_end` process `instance`
    holds (the scripts spell it as instance, newline, front end)."""
    return f"{instance}\n{front_end}"


def heartbeat_interval_s(lease_s: float = LEASE_S) -> float:
    return lease_s / HEARTBEATS_PER_LEASE
