"""What a pod's status says about its worker, read from the API's JSON. Pure.

A pod whose phase is Succeeded or Failed has ended (its worker exited, was killed, or the pod was evicted); one in
Pending has not started its worker yet: the scheduler found no node for it (e.g. no free `nvidia.com/gpu`), or its
image is being pulled. The scaler counts a Pending pod as a starting worker, against max, and says why it waits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

PENDING = "Pending"
ENDED_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class PodState:
    """One pod as the pool sees it: its phase, the worker's exit code once known, and why it waits or ended."""

    name: str
    phase: str
    exit_code: int | None = None
    reason: str = ""  # why it is Pending (the scheduler's message, the container's waiting reason) or ended
    terminating: bool = False  # deleted, in its grace period

    @property
    def ended(self) -> bool:
        return self.phase in ENDED_PHASES

    @property
    def pending(self) -> bool:
        return self.phase == PENDING and not self.terminating


def pod_state(pod: Mapping[str, Any]) -> PodState:
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = str(status.get("phase") or PENDING)
    terminated = _first_container_state(status).get("terminated") or {}
    code = terminated.get("exitCode")
    return PodState(
        str(metadata.get("name", "")), phase, int(code) if code is not None else None,
        _reason(status, phase, terminated), metadata.get("deletionTimestamp") is not None,
    )  # fmt: skip


def _first_container_state(status: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = status.get("containerStatuses") or []
    return (statuses[0].get("state") or {}) if statuses else {}


def _reason(status: Mapping[str, Any], phase: str, terminated: Mapping[str, Any]) -> str:
    if phase in ENDED_PHASES:
        parts = [status.get("reason"), status.get("message"), terminated.get("reason")]
        return ": ".join(str(part) for part in parts if part)
    if phase != PENDING:
        return ""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".rstrip(": ")
    waiting = _first_container_state(status).get("waiting") or {}
    return str(waiting.get("reason") or "")


def pending_remark(states: Sequence[PodState], pending_since: Mapping[str, float], now: float) -> str:
    """What `status` says of the pods that wait to start ('' when none does): how many, for how long, and why."""
    waiting = [state for state in states if state.pending]
    if not waiting:
        return ""
    longest = max(now - pending_since.get(state.name, now) for state in waiting)
    reasons = sorted({state.reason for state in waiting if state.reason})
    why = f": {'; '.join(reasons)}" if reasons else ""
    return f"{len(waiting)} pod(s) Pending for up to {longest:.0f} s (counted as starting, against max){why}"


def created_at(pod: Mapping[str, Any]) -> float:
    """The pod's creationTimestamp as a Unix time (0 when absent or unreadable): the newest pods go first at
    scale-down, as the newest processes do."""
    raw = (pod.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp() if raw else 0.0
    except ValueError:
        return 0.0
