"""The pure policy, by tables: each case is a timeline of observations and the replicas decided at each step.

Between steps the pool is taken to obey at once: the replicas observed at a step are those decided at the one
before.
"""

from __future__ import annotations

import pytest

from scalablejob.model.config import AutoscalerConfig
from scalablejob.scaler.policy import History, Policy, Snapshot, decide

# (time, queued, running, busy, expected desired)
Step = tuple[float, int, int, int, int]


def policy(**changes: object) -> Policy:
    base: dict[str, object] = {"min": 1, "max": 10, "avg_waiting_length": 2.0, "scale_down_window_s": 5.0}
    base.update(changes)
    return Policy(**base)  # type: ignore[arg-type]


def replay(rules: Policy, replicas: int, steps: list[Step]) -> list[int]:
    history = History()
    decided = []
    for now, queued, running, busy, _ in steps:
        decision = decide(Snapshot(queued, running, replicas, busy), rules, history, now)
        history, replicas = decision.history, decision.desired
        decided.append(decision.desired)
    return decided


CASES = {
    "a burst scales up at once": (
        policy(),
        1,
        [(0, 0, 0, 0, 1), (1, 7, 0, 0, 4), (2, 5, 4, 4, 5), (3, 40, 1, 1, 10)],
    ),
    "scale from zero when min is 0 and a task arrives": (
        policy(min=0, to_zero_grace_s=60),
        0,
        [(0, 0, 0, 0, 0), (1, 0, 0, 0, 0), (2, 1, 0, 0, 1)],
    ),
    "flapping load inside the window causes no oscillation": (
        policy(avg_waiting_length=1, scale_down_window_s=5),
        4,
        [
            (0, 4, 0, 0, 4),
            (1, 1, 0, 0, 4),
            (2, 4, 0, 0, 4),
            (3, 1, 0, 0, 4),
            (4, 0, 4, 4, 4),
            (5, 1, 0, 0, 4),
            (6, 1, 0, 0, 4),
            (9, 1, 0, 0, 4),
            (10, 1, 0, 0, 1),
        ],
    ),
    "scale down only once the lower value held for the whole window": (
        policy(avg_waiting_length=1, scale_down_window_s=3),
        3,
        [(0, 3, 0, 0, 3), (1, 2, 0, 0, 3), (3.5, 2, 0, 0, 3), (4, 2, 0, 0, 2), (5, 1, 0, 0, 2), (8, 1, 0, 0, 1)],
    ),
    "a scaler that just started shrinks only after a full window": (
        policy(scale_down_window_s=2),
        5,
        [(0, 0, 0, 0, 5), (1, 0, 0, 0, 5), (2, 0, 0, 0, 1)],
    ),
    "to zero only after the grace period with the queue empty and all idle": (
        policy(min=0, scale_down_window_s=1, to_zero_grace_s=10),
        1,
        [(0, 0, 0, 0, 1), (5, 0, 0, 0, 1), (9.9, 0, 0, 0, 1), (10, 0, 0, 0, 0)],
    ),
    "new work restarts the grace period": (
        policy(min=0, scale_down_window_s=1, to_zero_grace_s=10),
        1,
        [(0, 0, 0, 0, 1), (8, 0, 1, 1, 1), (9, 0, 0, 0, 1), (18, 0, 0, 0, 1), (19, 0, 0, 0, 0)],
    ),
    "never fewer workers than busy ones (running tasks)": (
        policy(min=0, avg_waiting_length=4, scale_down_window_s=1, to_zero_grace_s=0),
        3,
        [(0, 0, 3, 3, 3), (5, 0, 3, 3, 3), (6, 0, 2, 2, 2), (8, 0, 0, 0, 1), (9, 0, 0, 0, 0)],
    ),
    "bounded by max": (
        policy(max=3),
        1,
        [(0, 100, 0, 0, 3), (1, 100, 3, 3, 3)],
    ),
    "bounded by the GPUs available": (
        policy(max=10, gpu_capacity=2),
        0,
        [(0, 100, 0, 0, 2), (1, 100, 2, 2, 2)],
    ),
    "min above the GPUs available is capped by them": (
        policy(min=4, gpu_capacity=2),
        0,
        [(0, 0, 0, 0, 2)],
    ),
    "a scale-up window waits for the higher value to hold": (
        policy(scale_up_window_s=3),
        1,
        [(0, 0, 0, 0, 1), (1, 8, 0, 0, 1), (3, 8, 0, 0, 1), (4.5, 8, 0, 0, 4)],
    ),
}


@pytest.mark.parametrize(("rules", "replicas", "steps"), list(CASES.values()), ids=list(CASES))
def test_policy_timeline(rules: Policy, replicas: int, steps: list[Step]) -> None:
    assert replay(rules, replicas, steps) == [step[-1] for step in steps]


@pytest.mark.parametrize(
    ("rules", "snapshot", "words"),
    [
        (policy(max=3), Snapshot(9, 0, 1), "= 5, capped at 3 by max"),
        (policy(gpu_capacity=2), Snapshot(9, 0, 1), "capped at 2 by the GPUs"),
        (policy(min=2), Snapshot(0, 0, 2), "= 0, raised to min 2"),
        (policy(), Snapshot(3, 1, 1), "ceil((3 queued + 1 running) / 2) = 2"),
    ],
)
def test_the_reason_names_the_inputs_and_the_bound(rules: Policy, snapshot: Snapshot, words: str) -> None:
    assert words in decide(snapshot, rules, History(), 0.0).reason


def test_the_reason_says_why_zero_waits() -> None:
    rules = policy(min=0, scale_down_window_s=0, to_zero_grace_s=60)
    decision = decide(Snapshot(0, 0, 1), rules, History(), 0.0)
    assert decision.desired == 1
    assert "until idle for the 60 s grace period" in decision.reason


def test_history_keeps_only_what_the_windows_need() -> None:
    rules = policy(scale_down_window_s=2)
    history = History()
    for now in range(10):
        history = decide(Snapshot(0, 0, 1), rules, history, float(now)).history
    # the samples of the last 2 s, and the one before them, whose value held until the next one was taken
    assert [sample.at for sample in history.samples] == [7.0, 8.0, 9.0]


def test_policy_from_config_takes_every_knob() -> None:
    config = AutoscalerConfig(0, 7, 3.0, 1.0, 2.0, 30.0)
    assert Policy.from_config(config, gpu_capacity=4) == Policy(0, 7, 3.0, 1.0, 2.0, 30.0, 4)
    assert Policy.from_config(config, gpu_capacity=4).upper == 4
