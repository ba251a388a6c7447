"""A job's output and progress, written to the output queue as they happen, within a per-job cap."""

from __future__ import annotations

import time
from collections.abc import Callable

from scalablejob.store.sink import LOG_ENTRY_OVERHEAD_BYTES, EntryType
from scalablejob.workers.delivery import Delivery
from scalablejob.workers.lines import NOTICE_STREAM, Ending, FrameThrottle, Line, LogBudget, parse_progress

FRAME_INTERVAL_S = 0.5  # progress-bar frames: at most two a second reach the queue


class JobLog:
    """Turns one request's output lines into `log` and `progress` entries of the sink, written by its delivery."""

    def __init__(
        self, delivery: Delivery, *, to_queue: bool, cap_bytes: int, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.delivery = delivery
        self.to_queue = to_queue
        self.budget = LogBudget(cap_bytes, LOG_ENTRY_OVERHEAD_BYTES)
        self._clock = clock
        self._throttles: dict[str, FrameThrottle] = {}
        self._line_open = False  # the last stored piece was cut: the next one continues its line

    def line(self, stream: str, line: Line) -> None:
        """One line of the job's stdout or stderr (the command runner's `on_line`)."""
        progress = parse_progress(line.text) if line.ending is not Ending.CARRIAGE_RETURN else None
        if progress is not None:
            self.progress(*progress)
            return
        if not self.to_queue or not self._admit_frame(stream, line):
            return
        if self.budget.take(len(line.text)):
            self._append(line.text, EntryType.LOG, stream=stream, **_ending_tag(line))
            self._line_open = line.ending is Ending.CUT
        elif self.budget.dropped_lines == 1:  # the first line over the cap: say so, once
            self._append(truncation_notice(self.budget.cap_bytes, self._line_open), EntryType.LOG,
                         stream=NOTICE_STREAM, truncated="true")  # fmt: skip

    def progress(self, fraction: float, message: str = "") -> None:
        """Progress goes to the request's state always, and to the queue when this job's log does."""
        self.delivery.progress(fraction, message)
        if self.to_queue:
            self._append(message.encode(), EntryType.PROGRESS, progress=f"{fraction:.4f}")

    def summary_tags(self) -> dict[str, str]:
        """Tags for the result entry: how much log the cap kept out of the queue."""
        if not self.budget.exhausted:
            return {}
        return {"logBytesDropped": str(self.budget.dropped), "logLinesDropped": str(self.budget.dropped_lines)}

    def _admit_frame(self, stream: str, line: Line) -> bool:
        if line.ending is not Ending.CARRIAGE_RETURN:
            return True
        throttle = self._throttles.setdefault(stream, FrameThrottle(FRAME_INTERVAL_S))
        return throttle.admit(self._clock())

    def _append(self, data: bytes, entry_type: EntryType, **tags: str) -> None:
        self.delivery.log(data, entry_type, **tags)


def truncation_notice(cap_bytes: int, line_open: bool) -> bytes:
    """The notice is a line of its own: after a cut piece, whose line a reader continues, it starts a new one."""
    notice = (
        f"log truncated: output past log_cap_bytes={cap_bytes} (each line counted with "
        f"{LOG_ENTRY_OVERHEAD_BYTES} bytes of overhead) is not stored in the queue"
    )
    return ("\n" if line_open else "").encode() + notice.encode()


def _ending_tag(line: Line) -> dict[str, str]:
    """Lines that are not plain complete lines say what they are, so a reader can render them."""
    return {} if line.ending is Ending.NEWLINE else {"ending": line.ending.value}
