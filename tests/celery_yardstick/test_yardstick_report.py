"""The yardstick's figures: outcomes read from pytest's JUnit XML, and which of plain Celery's passes ours keeps."""

from __future__ import annotations

import json

from yardstick_report import FileComparison, Outcome, TestResult, failure_lines, ratio, read_events, table

TASKS = "t/integration/test_tasks.py::test_tasks"


def _event(nodeid: str, when: str, outcome: str, reason: str | None = None) -> str:
    return json.dumps({"test": nodeid, "when": when, "outcome": outcome, **({"reason": reason} if reason else {})})


def test_events_give_each_test_its_worst_phase_and_why_none_passes_by_its_setup_alone_and_the_test_running() -> None:
    lines = [
        json.dumps({"start": f"{TASKS}::test_basic_task", "at": 1.0}),
        *(_event(f"{TASKS}::test_basic_task", when, "passed") for when in ("setup", "call", "teardown")),
        json.dumps({"start": f"{TASKS}::test_fail", "at": 2.0}),
        _event(f"{TASKS}::test_fail", "call", "failed", "celery.exceptions.TimeoutError: timed out.\nsecond line"),
        _event(f"{TASKS}::test_eta", "setup", "skipped", "Requires redis result backend."),
        _event(f"{TASKS}::test_revoked", "call", "passed"),
        _event(f"{TASKS}::test_revoked", "teardown", "failed", "Failed: queues changed"),
        json.dumps({"start": f"{TASKS}::test_killed", "at": 4.0}),
        _event(f"{TASKS}::test_killed", "setup", "passed"),
        json.dumps({"start": f"{TASKS}::test_hangs", "at": 5.0}),
        _event(f"{TASKS}::test_hangs", "setup", "passed"),
        '{"test": "torn',
    ]

    progress = read_events(lines)

    assert {nodeid: (r.name, r.outcome, r.reason) for nodeid, r in progress.results.items()} == {
        f"{TASKS}::test_basic_task": ("test_tasks::test_basic_task", Outcome.PASSED, ""),
        f"{TASKS}::test_fail": ("test_tasks::test_fail", Outcome.FAILED, "celery.exceptions.TimeoutError: timed out."),
        f"{TASKS}::test_eta": ("test_tasks::test_eta", Outcome.SKIPPED, "Requires redis result backend."),
        f"{TASKS}::test_revoked": ("test_tasks::test_revoked", Outcome.ERROR, "Failed: queues changed"),
        f"{TASKS}::test_killed": (
            "test_tasks::test_killed",
            Outcome.ERROR,
            "started, and no outcome: its pytest process was stopped",
        ),
    }
    assert (progress.running, progress.since) == (f"{TASKS}::test_hangs", 5.0)


def _results(**outcomes: Outcome) -> dict[str, TestResult]:
    return {name: TestResult(name, outcome, f"why {name}") for name, outcome in outcomes.items()}


def test_a_comparison_loses_plain_passes_that_ours_fails_or_never_ran_and_counts_only_plain_passes() -> None:
    plain = _results(a=Outcome.PASSED, b=Outcome.PASSED, c=Outcome.PASSED, d=Outcome.FAILED, e=Outcome.SKIPPED)
    ours = _results(a=Outcome.PASSED, b=Outcome.FAILED, d=Outcome.FAILED, e=Outcome.PASSED)

    comparison = FileComparison("test_x.py", plain, ours)

    assert [(r.name, r.outcome) for r in comparison.lost] == [("b", Outcome.FAILED), ("c", Outcome.ERROR)]
    assert comparison.gained == ["e"]
    assert (comparison.plain_passed, comparison.kept) == (3, 1)
    assert failure_lines([comparison]) == [
        "test_x.py::b  failed: why b",
        "test_x.py::c  error: not run against ours (its run ended before it)",
    ]


def test_the_ratio_is_over_all_files_passes_against_plain_celery() -> None:
    one = FileComparison("one.py", _results(a=Outcome.PASSED, b=Outcome.PASSED), _results(a=Outcome.PASSED))
    two = FileComparison("two.py", _results(c=Outcome.PASSED, d=Outcome.FAILED), _results(c=Outcome.PASSED))

    assert ratio([one, two]) == 2 / 3
    assert ratio([FileComparison("none.py", {}, {})]) == 0.0
    last = table([one, two]).splitlines()[-1].split()
    assert last == ["total", "3", "1", "0", "0", "2", "0", "0", "0", "2/3", "66.7%"]
