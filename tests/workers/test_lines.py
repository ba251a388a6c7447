"""Splitting output into lines: the same lines whatever the chunks, on the fast path (plain `\\n` lines) or not."""

from __future__ import annotations

import random

import pytest

from scalablejob.workers.lines import Ending, Line, LineSplitter, parse_progress


def split(chunks: list[bytes], max_line: int = 8) -> list[Line]:
    splitter = LineSplitter(max_line)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.flush()


def test_plain_lines_come_out_whole_with_the_rest_kept_for_the_next_chunk() -> None:
    splitter = LineSplitter(8)

    assert splitter.feed(b"one\ntwo\nthr") == [Line(b"one", Ending.NEWLINE), Line(b"two", Ending.NEWLINE)]
    assert splitter.feed(b"ee\n") == [Line(b"three", Ending.NEWLINE)]
    assert not splitter.has_pending


def test_a_plain_line_longer_than_the_limit_is_cut() -> None:
    assert split([b"abcdefghij\nk\n"]) == [
        Line(b"abcdefgh", Ending.CUT), Line(b"ij", Ending.NEWLINE), Line(b"k", Ending.NEWLINE),
    ]  # fmt: skip


@pytest.mark.parametrize("seed", range(20))
def test_any_chunking_of_any_output_gives_the_same_lines(seed: int) -> None:
    rng = random.Random(seed)
    data = b"".join(rng.choice([b"a", b"bb", b"\n", b"\r", b"\r\n", b"0123456789"]) for _ in range(400))
    cuts = sorted(rng.sample(range(1, len(data)), 30))
    chunks = [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]

    assert split(chunks) == split([data]) == split([bytes([byte]) for byte in data])


def test_a_line_without_the_marker_is_not_progress() -> None:
    assert parse_progress(b"epoch 3 loss 0.4 42%") is None
    assert parse_progress(b"::progress 42% epoch 3") == (0.42, "epoch 3")
