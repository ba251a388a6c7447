"""The yardstick's figures: outcomes read from pytest's JUnit XML, and which of plain Celery's passes ours keeps."""

from __future__ import annotations

from yardstick_report import FileComparison, Outcome, TestResult, failure_lines, ratio, read_junit, table

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
 <testcase classname="t.integration.test_tasks.test_tasks" name="test_basic_task" time="0.3"/>
 <testcase classname="t.integration.test_tasks.test_tasks" name="test_fail" time="10.0">
  <failure message="celery.exceptions.TimeoutError: The operation timed out.&#10;second line">trace</failure>
 </testcase>
 <testcase classname="t.integration.test_tasks.test_tasks" name="test_eta" time="0.1">
  <skipped type="pytest.skip" message="Requires redis result backend.">skip</skipped>
 </testcase>
 <testcase classname="t.integration.test_tasks.test_tasks" name="test_revoked" time="0.1"/>
 <testcase classname="t.integration.test_tasks.test_tasks" name="test_revoked" time="0.1">
  <error message="failed on teardown with &quot;Failed: queues changed&quot;">trace</error>
 </testcase>
</testsuite></testsuites>
"""


def test_read_junit_keeps_each_tests_worst_entry_and_the_first_line_of_its_message() -> None:
    results = read_junit(JUNIT)

    assert results == {
        "test_tasks::test_basic_task": TestResult("test_tasks::test_basic_task", Outcome.PASSED),
        "test_tasks::test_fail": TestResult(
            "test_tasks::test_fail", Outcome.FAILED, "celery.exceptions.TimeoutError: The operation timed out."
        ),
        "test_tasks::test_eta": TestResult("test_tasks::test_eta", Outcome.SKIPPED, "Requires redis result backend."),
        "test_tasks::test_revoked": TestResult(
            "test_tasks::test_revoked", Outcome.ERROR, 'failed on teardown with "Failed: queues changed"'
        ),
    }


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
