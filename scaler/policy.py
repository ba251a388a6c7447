"""The scaling policy: how many workers a service should have, from what the scaler observed. Pure: no clock, no I/O.

`desired = clamp(ceil((queued + running) / avg_waiting_length), min, max)`, with max also bounded by the GPUs.
Changes are stabilized the way Kubernetes' HPA does it: over the last `scaleUp` window the *lowest*
recommendation is the most it may grow to, and over the last `scaleDown` window the *highest* one is the least it
may shrink to; so it grows at once with a zero window, and shrinks only to a value that held for the whole window.
Going to zero waits, in addition, until the queue has been empty and nothing has run for the grace period.
Busy workers are never counted away: the result is never below the number of busy workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scalablejob.model.config import AutoscalerConfig


@dataclass(frozen=True)
class Snapshot:
    """What the scaler observed in one pass."""

    queued: int  # messages waiting in the service's queues
    running: int  # tasks held by workers (received, not yet finished)
    replicas: int  # this scaler's workers that are not stopping (starting, idle or busy)
    busy: int = 0  # of those, the workers holding at least one task


@dataclass(frozen=True)
class Policy:
    """The service's scaling knobs, plus the bound the GPUs set (None: CPU workers, no bound)."""

    min: int
    max: int
    avg_waiting_length: float
    scale_up_window_s: float = 0.0
    scale_down_window_s: float = 0.0
    to_zero_grace_s: float = 0.0
    gpu_capacity: int | None = None

    @classmethod
    def from_config(cls, config: AutoscalerConfig, gpu_capacity: int | None = None) -> Policy:
        return cls(
            config.min, config.max, config.avg_waiting_length, config.scale_up_window_s,
            config.scale_down_window_s, config.scale_to_zero_grace_s, gpu_capacity,
        )  # fmt: skip

    @property
    def upper(self) -> int:
        """The most workers allowed: max, or fewer when the GPUs do not allow max."""
        return self.max if self.gpu_capacity is None else min(self.max, self.gpu_capacity)

    @property
    def lower(self) -> int:
        return min(self.min, self.upper)

    @property
    def horizon_s(self) -> float:
        """How far back recommendations matter."""
        return max(self.scale_up_window_s, self.scale_down_window_s)


@dataclass(frozen=True)
class Sample:
    at: float
    replicas: int


@dataclass(frozen=True)
class History:
    """What the policy remembers between passes: recent recommendations, and since when the service is idle."""

    samples: tuple[Sample, ...] = ()
    idle_since: float | None = None  # queue empty and nothing running, continuously, since then


@dataclass(frozen=True)
class Decision:
    """The outcome of one pass: the replicas wanted, why, and the history to pass to the next pass."""

    desired: int
    target: int  # the clamped recommendation of this pass alone, before stabilization
    reason: str
    history: History
    snapshot: Snapshot

    @property
    def change(self) -> str:
        """`up`, `down` or `hold`, against the replicas observed."""
        if self.desired > self.snapshot.replicas:
            return "up"
        return "down" if self.desired < self.snapshot.replicas else "hold"


def recommend(snapshot: Snapshot, policy: Policy) -> tuple[int, str]:
    """The clamped recommendation for this pass alone, and how it was bounded."""
    load = snapshot.queued + snapshot.running
    raw = math.ceil(load / policy.avg_waiting_length)
    why = f"ceil(({snapshot.queued} queued + {snapshot.running} running) / {policy.avg_waiting_length:g}) = {raw}"
    if raw > policy.upper:
        bound = "the GPUs" if policy.upper < policy.max else "max"
        return policy.upper, f"{why}, capped at {policy.upper} by {bound}"
    if raw < policy.lower:
        return policy.lower, f"{why}, raised to min {policy.lower}"
    return raw, why


def remember(history: History, snapshot: Snapshot, target: int, policy: Policy, now: float) -> History:
    """Add this pass's recommendation; keep what the windows still need (see `in_effect`).

    The first pass also records the replicas there were, so that nothing shrinks before a full window passed.
    """
    seed = () if history.samples else (Sample(now, snapshot.replicas),)
    samples = in_effect((*seed, *history.samples), now, policy.horizon_s)
    idle = snapshot.queued == 0 and snapshot.running == 0
    idle_since = (history.idle_since if history.idle_since is not None else now) if idle else None
    return History((*samples, Sample(now, target)), idle_since)


def in_effect(samples: tuple[Sample, ...], now: float, window_s: float) -> tuple[Sample, ...]:
    """The samples whose value held at some time in the last `window_s`: the ones taken in it, and the last one
    taken before it (its value held until the next sample). Samples are in time order."""
    cutoff = now - window_s
    before = [sample for sample in samples if sample.at <= cutoff]
    return (*before[-1:], *(sample for sample in samples if sample.at > cutoff))


def stabilize(history: History, current: int, policy: Policy, now: float) -> int:
    """HPA's rule: grow to the lowest value of the up window, shrink to the highest value of the down window."""
    grow_to = min(sample.replicas for sample in in_effect(history.samples, now, policy.scale_up_window_s))
    shrink_to = max(sample.replicas for sample in in_effect(history.samples, now, policy.scale_down_window_s))
    return min(max(current, grow_to), shrink_to)


def decide(snapshot: Snapshot, policy: Policy, history: History, now: float) -> Decision:
    """One pass of the policy: the replicas wanted now, with the reason in words."""
    target, why = recommend(snapshot, policy)
    history = remember(history, snapshot, target, policy, now)
    desired = stabilize(history, snapshot.replicas, policy, now)
    if desired < snapshot.replicas:
        why += f"; {desired} held for the {policy.scale_down_window_s:g} s scale-down window"
    elif desired > target:
        why += f"; holding {desired} until {target} has held for the {policy.scale_down_window_s:g} s window"
    elif desired < target:
        why += f"; waiting for the {policy.scale_up_window_s:g} s scale-up window"
    desired, why = _hold_above_zero(desired, snapshot, policy, history, now, why)
    if desired < snapshot.busy:
        desired, why = snapshot.busy, f"{why}; kept at {snapshot.busy}: busy workers are never stopped"
    return Decision(desired, target, why, history, snapshot)


def _hold_above_zero(
    desired: int, snapshot: Snapshot, policy: Policy, history: History, now: float, why: str
) -> tuple[int, str]:
    """To zero only once the queue has been empty and nothing has run for the whole grace period."""
    if desired > 0 or snapshot.replicas == 0:
        return desired, why
    idle_for = 0.0 if history.idle_since is None else now - history.idle_since
    if idle_for >= policy.to_zero_grace_s:
        return 0, f"{why}; idle for {idle_for:.1f} s >= the {policy.to_zero_grace_s:g} s grace period"
    return 1, f"{why}; kept at 1 until idle for the {policy.to_zero_grace_s:g} s grace period ({idle_for:.1f} s so far)"
