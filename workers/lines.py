"""Turning a child's raw output into log lines: pure, so every edge case is tested without processes.

Output arrives in arbitrary chunks. A line ends at `\\n` (or `\\r\\n`); a `\\r` alone ends a progress-bar
frame, of which only the latest is worth keeping; a line longer than `max_line` is cut; bytes are kept as
they are (a reader decodes with replacement), so non-UTF-8 output never breaks anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from scalablejob.progress import MARKER

MAX_LINE_BYTES = 16 * 1024
NOTICE_STREAM = "scalablejob"  # lines the service adds to a job's log (not the job's own output) carry this stream
_ENDINGS = re.compile(rb"\r\n|\n|\r")
_MARKER = MARKER.encode()
_PROGRESS = re.compile(re.escape(_MARKER) + rb"\s+([0-9]*\.?[0-9]+)(%?)(?:\s+(.*))?")


class Ending(str, Enum):
    NEWLINE = "newline"  # a complete line
    CARRIAGE_RETURN = "cr"  # a progress-bar frame, to be overwritten by the next one
    CUT = "cut"  # longer than the limit: the rest follows as another piece
    PARTIAL = "partial"  # no ending yet, flushed because the program went quiet or exited


@dataclass(frozen=True)
class Line:
    text: bytes
    ending: Ending


class LineSplitter:
    """Feeds on output chunks and returns the lines they complete."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._pending = b""

    def feed(self, chunk: bytes) -> list[Line]:
        data = self._pending + chunk
        held = b""
        if data.endswith(b"\r"):  # maybe the first half of a \r\n split across chunks: decide next time
            data, held = data[:-1], b"\r"
        if b"\r" not in data:  # most output: plain lines, split at C speed
            *complete, rest = data.split(b"\n")
            if all(len(text) <= self.max_line for text in complete):
                return [Line(text, Ending.NEWLINE) for text in complete] + self._rest(rest, held)
        lines: list[Line] = []
        start = 0
        for match in _ENDINGS.finditer(data):
            *cut, last = self._pieces(data[start : match.start()])
            lines += [Line(piece, Ending.CUT) for piece in cut]
            lines.append(Line(last, Ending.CARRIAGE_RETURN if match.group() == b"\r" else Ending.NEWLINE))
            start = match.end()
        return lines + self._rest(data[start:], held)

    def _rest(self, text: bytes, held: bytes) -> list[Line]:
        """The pieces of `text` (after the last ending) cut at max_line; what is left waits for more output."""
        *cut, rest = self._pieces(text)
        self._pending = rest + held
        return [Line(piece, Ending.CUT) for piece in cut]

    def _pieces(self, text: bytes) -> list[bytes]:
        """`text` in pieces of at most max_line bytes; always at least one (maybe empty) piece."""
        return [text[i : i + self.max_line] for i in range(0, len(text), self.max_line)] or [b""]

    def flush(self) -> list[Line]:
        """What is left without an ending (the program went quiet or exited)."""
        pending, self._pending = self._pending, b""
        if pending.endswith(b"\r"):
            return [Line(pending[:-1], Ending.CARRIAGE_RETURN)]
        return [Line(pending, Ending.PARTIAL)] if pending else []

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)


def parse_progress(text: bytes) -> tuple[float, str] | None:
    """(fraction, message) of a `::progress 0.42 message` or `::progress 42% message` line, else None."""
    if _MARKER not in text:  # most lines: a substring test, not a regex
        return None
    match = _PROGRESS.fullmatch(text.strip())
    if match is None:
        return None
    value = float(match.group(1)) / (100 if match.group(2) else 1)
    if not 0.0 <= value <= 1.0:
        return None
    return value, (match.group(3) or b"").decode("utf-8", "replace")


class LogBudget:
    """A per-job cap on what its log costs the output queue, so Redis memory stays bounded: each line counts its
    bytes plus `entry_overhead` (what an entry costs beyond its data), so a flood of short lines is capped as
    surely as a few long ones."""

    def __init__(self, cap_bytes: int, entry_overhead: int = 0) -> None:
        self.cap_bytes = cap_bytes
        self.entry_overhead = entry_overhead
        self.spent = 0  # of the cap, overheads included
        self.dropped = 0  # bytes of output kept out of the queue
        self.dropped_lines = 0

    def take(self, size: int) -> bool:
        """True if a line of `size` bytes fits under the cap; False (and counted as dropped) once it is reached."""
        cost = size + self.entry_overhead
        if self.dropped_lines or self.spent + cost > self.cap_bytes:
            self.dropped += size
            self.dropped_lines += 1
            return False
        self.spent += cost
        return True

    @property
    def exhausted(self) -> bool:
        return self.dropped_lines > 0


class FrameThrottle:
    """Keeps progress-bar frames (`\\r`) to at most one per `interval_s`; time is a parameter."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: float | None = None

    def admit(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval_s:
            return False
        self._last = now
        return True
