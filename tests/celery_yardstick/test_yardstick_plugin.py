"""The yardstick's pytest plugin: exact node ids left out on a resumed run, every time limit capped, events written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from yardstick_plugin import DONE_ENV, EVENTS_ENV

pytest_plugins = ["pytester"]

TESTS = """
import pytest

def test_fail():
    pass

def test_fail_with_unpickleable_exception():
    pass

@pytest.mark.timeout(300)
def test_marked_over_the_cap(request):
    assert request.node.get_closest_marker("timeout").args == (7.0,)

@pytest.mark.timeout(2)
def test_marked_under_the_cap(request):
    assert request.node.get_closest_marker("timeout").args == (2,)
"""


def test_a_resumed_run_leaves_out_exactly_the_tests_done_caps_time_limits_and_writes_events(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytester.makepyfile(test_celery_like=TESTS)
    done, events = tmp_path / "done.txt", tmp_path / "events.jsonl"
    done.write_text("test_celery_like.py::test_fail\n")
    monkeypatch.setenv(DONE_ENV, str(done))
    monkeypatch.setenv(EVENTS_ENV, str(events))

    result = pytester.runpytest_inprocess("-p", "yardstick_plugin", "-p", "no:cacheprovider", "--timeout", "7")

    result.assert_outcomes(passed=3, deselected=1)  # pytest's --deselect would drop test_fail_with_... too
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    assert [line["start"] for line in lines if "start" in line] == [
        "test_celery_like.py::test_fail_with_unpickleable_exception",
        "test_celery_like.py::test_marked_over_the_cap",
        "test_celery_like.py::test_marked_under_the_cap",
    ]
    assert {(line["when"], line["outcome"]) for line in lines if "test" in line} == {
        ("setup", "passed"), ("call", "passed"), ("teardown", "passed"),
    }  # fmt: skip
