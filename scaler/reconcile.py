"""The delivery invariant, as a pure decision: which requests are backed by nothing, and for long enough to re-send.

Every request that is queued or running must be backed by a message in a queue, an unacknowledged message that a
live worker holds (or that was delivered so recently that its worker may not have said so yet), or a live worker
that holds it. A request backed by nothing has lost its message: kombu pops a message and records it as unacked in
two steps, and a crash between them loses it. Being unbacked for a moment is normal (a re-send records the request
as queued before it sends the message; a worker takes a message before it records it), so only a request that
stays unbacked for `bound_s`, seen on passes that span that long, is re-sent.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

UNBACKED_AFTER_S = 10.0  # how long a request may be backed by nothing before it is re-sent
STALE_AFTER_S = 30.0  # a worker whose heartbeat is this old is frozen or cut off: killed, replaced, and holds nothing


@dataclass(frozen=True)
class Unacked:
    """An unacknowledged message of the service: its kombu delivery tag and when it was delivered."""

    tag: str
    delivered_at: float


@dataclass(frozen=True)
class Backing:
    """What backs the service's open requests, as read in one pass."""

    queued: Collection[str] = frozenset()  # request ids with a message waiting in a queue
    held: Collection[str] = frozenset()  # request ids held by workers heard from recently
    unacked: Mapping[str, Unacked] = field(default_factory=dict)  # request id -> its unacknowledged message
    orphaned: Collection[str] = frozenset()  # last held by a worker now silent, or on a host declared dead

    def backs(self, request_id: str, now: float, bound_s: float) -> bool:
        if request_id in self.queued or request_id in self.held:
            return True
        if request_id in self.orphaned:
            return False  # its message is unacknowledged, but the worker that took it is lost, however recently
        message = self.unacked.get(request_id)
        return message is not None and now - message.delivered_at < bound_s


@dataclass(frozen=True)
class Verdict:
    """What to re-send now, and since when each request still open and unbacked has been seen so."""

    due: list[str]
    unbacked_since: dict[str, float]


def reconcile(
    open_ids: Iterable[str], backing: Backing, unbacked_since: Mapping[str, float], now: float,
    bound_s: float = UNBACKED_AFTER_S,
) -> Verdict:  # fmt: skip
    """Requests open and unbacked on every pass for at least `bound_s` are due; a request seen backed (or no longer
    open) starts over. A request last held by a worker that fell silent or whose host was declared dead is due at
    once: that bound has already passed."""
    since: dict[str, float] = {}
    due: list[str] = []
    for request_id in open_ids:
        if request_id in since or backing.backs(request_id, now, bound_s):
            continue
        first = unbacked_since.get(request_id, now)
        since[request_id] = first
        if now - first >= bound_s or request_id in backing.orphaned:
            due.append(request_id)
    return Verdict(due, since)


def lost_calls(
    calls: Mapping[str, Unacked], held: Collection[str], now: float, bound_s: float = UNBACKED_AFTER_S
) -> list[str]:
    """Celery calls (messages that are no queue-service request) delivered at least `bound_s` ago that no live worker
    holds: their worker is gone, and the message goes back on its queue (Celery's acks_late, at once rather than
    after the visibility timeout)."""
    return [
        task_id for task_id, message in calls.items() if task_id not in held and now - message.delivered_at >= bound_s
    ]


def stale_acks(backing: Backing, open_ids: Collection[str], now: float, bound_s: float = UNBACKED_AFTER_S) -> list[str]:
    """Unacknowledged messages of requests that are no longer open and that no live worker holds: their worker ended
    the request but could not acknowledge (the broker was away, or it died in between). Safe to drop."""
    return [
        request_id
        for request_id, message in backing.unacked.items()
        if request_id not in open_ids and request_id not in backing.held and now - message.delivered_at >= bound_s
    ]
