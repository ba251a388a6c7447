"""The yardstick's figures, pure: each test's outcome read from the events that yardstick_plugin writes, plain
Celery's run against ours, and the table and failure list that bench/celery_yardstick.py prints."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

REASON_WIDTH = 160  # one line per failure: the first line of pytest's message, cut here


class Outcome(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # a fixture's setup or teardown failed
    SKIPPED = "skipped"


# Several reports for one test (setup, call, teardown, subtests): the worst one is the test's outcome.
_RANK = {Outcome.PASSED: 0, Outcome.SKIPPED: 1, Outcome.FAILED: 2, Outcome.ERROR: 3}


@dataclass(frozen=True)
class TestResult:
    """One test's outcome and, unless it passed, the first line of why."""

    __test__ = False  # not a pytest test class

    name: str  # Class::test_name (the file is the run's)
    outcome: Outcome
    reason: str = ""


def one_line(text: str | None) -> str:
    """The first non-empty line of `text`, cut to REASON_WIDTH characters."""
    line = next((part.strip() for part in (text or "").splitlines() if part.strip()), "")
    return line if len(line) <= REASON_WIDTH else line[: REASON_WIDTH - 3] + "..."


def short_name(nodeid: str) -> str:
    """`t/integration/test_tasks.py::test_tasks::test_eta` -> `test_tasks::test_eta`."""
    return nodeid.split("::", 1)[-1]


def _outcome(event: Mapping[str, str]) -> Outcome:
    if event["outcome"] == "failed":
        return Outcome.FAILED if event.get("when") == "call" else Outcome.ERROR
    return Outcome.SKIPPED if event["outcome"] == "skipped" else Outcome.PASSED


@dataclass
class Progress:
    """What a run's events say: each test's outcome so far (by node id), and the test running, since when."""

    results: dict[str, TestResult] = field(default_factory=dict)
    running: str | None = None
    since: float = 0.0

    def add(self, nodeid: str, outcome: Outcome, reason: str = "") -> None:
        known = self.results.get(nodeid)
        if known is None or _RANK[outcome] > _RANK[known.outcome]:
            self.results[nodeid] = TestResult(short_name(nodeid), outcome, one_line(reason))


def read_events(lines: Iterable[str]) -> Progress:
    """Fold yardstick_plugin's JSON lines (a start per test, an outcome per phase); a torn last line is skipped."""
    progress = Progress()
    started: list[str] = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if "start" in event:
            progress.running, progress.since = event["start"], float(event["at"])
            started.append(event["start"])
            continue
        if event["outcome"] != "passed" or event.get("when") == "call":  # a passed setup is no pass of the test
            progress.add(event["test"], _outcome(event), event.get("reason", ""))
        if event.get("when") == "teardown" and event["test"] == progress.running:
            progress.running = None
    for nodeid in started:
        if nodeid not in progress.results and nodeid != progress.running:
            progress.add(nodeid, Outcome.ERROR, "started, and no outcome: its pytest process was stopped")
    return progress


def by_name(results: Mapping[str, TestResult]) -> dict[str, TestResult]:
    return {result.name: result for result in results.values()}


def counts(results: Mapping[str, TestResult]) -> dict[Outcome, int]:
    totals = dict.fromkeys(Outcome, 0)
    for result in results.values():
        totals[result.outcome] += 1
    return totals


@dataclass
class FileComparison:
    """One test file run against plain Celery and against ours: which of plain's passes ours keeps."""

    file: str
    plain: dict[str, TestResult]
    ours: dict[str, TestResult]
    missing: str = "not run against ours (its run ended before it)"  # why a test of plain's is not in ours
    lost: list[TestResult] = field(init=False)  # passed against plain, not against ours (ours' outcome and reason)
    gained: list[str] = field(init=False)  # passed against ours, not against plain

    def __post_init__(self) -> None:
        self.lost = [
            self.ours.get(name, TestResult(name, Outcome.ERROR, self.missing))
            for name, result in sorted(self.plain.items())
            if result.outcome is Outcome.PASSED and self.ours.get(name, _NOT_RUN).outcome is not Outcome.PASSED
        ]
        self.gained = sorted(
            name
            for name, result in self.ours.items()
            if result.outcome is Outcome.PASSED and self.plain.get(name, _NOT_RUN).outcome is not Outcome.PASSED
        )

    @property
    def plain_passed(self) -> int:
        return counts(self.plain)[Outcome.PASSED]

    @property
    def kept(self) -> int:
        return self.plain_passed - len(self.lost)


_NOT_RUN = TestResult("", Outcome.ERROR, "not run")


def ratio(comparisons: Iterable[FileComparison]) -> float:
    """Of the tests that pass against plain Celery, the share that also passes against ours (0.0 when none pass)."""
    items = list(comparisons)
    passed = sum(item.plain_passed for item in items)
    return sum(item.kept for item in items) / passed if passed else 0.0


def _count_cells(results: Mapping[str, TestResult]) -> list[str]:
    totals = counts(results)
    return [str(totals[outcome]) for outcome in Outcome]


def table(comparisons: list[FileComparison]) -> str:
    """Passed/failed/error/skipped per file, plain and ours, and how many of plain's passes ours keeps."""
    header = ["file", *(f"plain {o.value}" for o in Outcome), *(f"ours {o.value}" for o in Outcome), "kept", "ratio"]
    rows = [header]
    for item in comparisons:
        share = f"{item.kept / item.plain_passed:.1%}" if item.plain_passed else "-"
        kept = f"{item.kept}/{item.plain_passed}"
        rows.append([item.file, *_count_cells(item.plain), *_count_cells(item.ours), kept, share])
    all_plain = {f"{c.file}::{n}": r for c in comparisons for n, r in c.plain.items()}
    all_ours = {f"{c.file}::{n}": r for c in comparisons for n, r in c.ours.items()}
    kept_total = sum(item.kept for item in comparisons)
    passed_total = sum(item.plain_passed for item in comparisons)
    total_row = ["total", *_count_cells(all_plain), *_count_cells(all_ours), f"{kept_total}/{passed_total}"]
    rows.append([*total_row, f"{ratio(comparisons):.1%}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )

    return "\n".join(line(row) for row in rows)


def failure_lines(comparisons: Iterable[FileComparison]) -> list[str]:
    """One line per test that passes against plain Celery and not against ours: where, how it ended, why."""
    return [
        f"{item.file}::{result.name}  {result.outcome.value}: {result.reason}"
        for item in comparisons
        for result in item.lost
    ]
