"""A job's log within its cap: the truncation notice is a line of its own as `scalablejob logs` prints it."""

from __future__ import annotations

from typing import Any

import pytest

from scalablejob.cli.requests import _print_entry
from scalablejob.store.sink import LOG_ENTRY_OVERHEAD_BYTES, EntryType, SinkEntry, entry_tags
from scalablejob.workers.joblog import JobLog, truncation_notice
from scalablejob.workers.lines import Ending, Line, LogBudget

CAP = LOG_ENTRY_OVERHEAD_BYTES + 10  # one short line fits, two do not


class FakeDelivery:
    """Keeps the entries a delivery would append to the output queue, with increasing indexes."""

    def __init__(self) -> None:
        self.entries: list[SinkEntry] = []

    def log(self, data: bytes, entry_type: EntryType, **tags: str) -> None:
        self.entries.append(SinkEntry(len(self.entries) + 1, data, entry_tags("r1", "command", entry_type, **tags)))

    def progress(self, fraction: float, message: str) -> None:
        pass


def job_log(sink: FakeDelivery) -> JobLog:
    delivery: Any = sink
    return JobLog(delivery, to_queue=True, cap_bytes=CAP)


def printed(entries: list[SinkEntry], capsys: pytest.CaptureFixture[str]) -> str:
    """What `scalablejob logs` shows of these entries on stdout."""
    for entry in entries:
        _print_entry(entry)
    return capsys.readouterr().out


def test_after_a_cut_piece_the_truncation_notice_starts_its_own_line(capsys: pytest.CaptureFixture[str]) -> None:
    # given a job whose long line was cut into pieces, the cap reached in the middle of that line
    sink = FakeDelivery()
    log = job_log(sink)
    for piece in (b"x" * 8, b"y" * 8):
        log.line("stdout", Line(piece, Ending.CUT))

    # when its log is printed, then the notice is not glued to the cut line
    lines = printed(sink.entries, capsys).splitlines()
    assert lines == ["x" * 8, truncation_notice(CAP, line_open=False).decode()]


def test_after_a_complete_line_the_notice_needs_no_extra_line_break(capsys: pytest.CaptureFixture[str]) -> None:
    sink = FakeDelivery()
    log = job_log(sink)
    for text in (b"epoch 1", b"epoch 2"):
        log.line("stdout", Line(text, Ending.NEWLINE))

    assert printed(sink.entries, capsys).splitlines() == ["epoch 1", truncation_notice(CAP, line_open=False).decode()]
    assert sink.entries[-1].tags["truncated"] == "true"


def test_the_cap_counts_each_lines_overhead_so_a_flood_of_short_lines_is_capped_by_entries() -> None:
    budget = LogBudget(cap_bytes=1000, entry_overhead=99)

    taken = sum(budget.take(1) for _ in range(1_000_000))

    assert taken == 10  # not a million one-byte lines under a 1000-byte cap
    assert (budget.dropped, budget.dropped_lines) == (1_000_000 - 10, 1_000_000 - 10)


def test_the_result_says_how_many_bytes_and_lines_the_cap_kept_out() -> None:
    sink = FakeDelivery()
    log = job_log(sink)
    for text in (b"epoch 1", b"epoch 2", b"epoch 3"):
        log.line("stdout", Line(text, Ending.NEWLINE))

    assert log.summary_tags() == {"logBytesDropped": "14", "logLinesDropped": "2"}
