"""`up`'s output: one stream written by many threads (its own lines and each part's pump), whose lines a reader must
be able to take apart again; tests read `up`'s lines by their start."""

from __future__ import annotations

import io
import threading
import time

from scalablejob.local.up import Output


class SlowStream(io.StringIO):
    """A stream that gives other threads the processor on every write, as a pipe to a slow reader does."""

    def write(self, text: str) -> int:
        written = super().write(text)
        time.sleep(0.0001)
        return written


def test_lines_written_from_many_threads_arrive_whole():
    # given one output shared by four threads, each writing its own lines
    stream = SlowStream()
    out = Output(stream)
    start = threading.Barrier(4)

    def write_lines(name: str) -> None:
        start.wait()
        for number in range(100):
            out.line(f"{name} {number}")

    threads = [threading.Thread(target=write_lines, args=(f"part{index}",)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then every line is one thread's line, whole: none is cut by another's
    lines = stream.getvalue().splitlines()
    expected = {f"part{index} {number}" for index in range(4) for number in range(100)}
    assert sorted(lines) == sorted(expected)
