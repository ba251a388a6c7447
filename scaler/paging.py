"""Paged reads that keep every Redis call of the reconciler short, however deep the backlog.

One call that reads a whole queue holds Redis for as long as the queue is deep (127 ms for 100 000 messages), and
every other client waits. Here each call reads one page; the page doubles while calls are quick and halves when
one is slow, since no fixed count bounds a call's time: a request's body rides in its queued message and in its
input queue entry, and bodies differ in size by orders of magnitude. A call is timed from this client, which
overstates the server's share (the round trip, this process's other threads): pages come out smaller, never larger.

A list has no cursor: LRANGE at offset k first walks the list's nodes to k (from the head, in Redis 6.2; Redis 7
walks from the nearer end), about 2.5 ms at 100 000 messages of 1 KiB, 12 ms at 500 000. The queue's pages are
bounded by 5 ms up to a few hundred thousand messages; beyond, only bookkeeping that avoids reading the middle of
the list would keep them short (see the reconciler's notes in README).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

import redis

from scalablejob.store.queues import queued_task_ids
from scalablejob.store.state import RequestStore

TARGET_S = 0.004  # how long one page may take, seen from here (with the transfer): Redis's own share is under it
FIRST_PAGE = 100
LEAST_PAGE = 20  # fewer would not help: each LRANGE page first walks the list to its offset (below)
MOST_PAGE = 500  # a page of 500 queued messages of 1 KiB takes Redis about 0.4 ms, plus the walk
Clock = Callable[[], float]
C = TypeVar("C", int, str)  # where a page starts: a list's offset, a stream's last id read


def next_page(size: int, took_s: float, target_s: float = TARGET_S) -> int:
    """The next page's size: half after a slow call, twice after a quick one, the same in between."""
    if took_s > target_s:
        return max(LEAST_PAGE, size // 2)
    if took_s < target_s / 2:
        return min(MOST_PAGE, size * 2)
    return size


def queued_ids(client: redis.Redis, lists: Iterable[str], clock: Clock = time.perf_counter) -> set[str]:
    """Request ids with a message in any of `lists` (Redis lists of queues). Read from the head, where kombu pushes:
    a push meanwhile makes a page read one message twice, a pop from the tail skips nothing still there."""
    return set().union(*(_read_paged(functools.partial(_list_page, client, key), 0, clock) for key in lists))


def open_ids(store: RequestStore, clock: Clock = time.perf_counter) -> set[str]:
    """Ids of the service's open requests (queued or running), from every front end's input stream."""
    streams = store.input_streams()
    return set().union(*(_read_paged(functools.partial(_stream_page, store, stream), "", clock) for stream in streams))


def _read_paged(read: Callable[[C, int], tuple[C | None, list[str]]], start: C, clock: Clock) -> set[str]:
    """Every id `read` gives, page after page from `start` until it returns no next position, each page sized by
    how long the last one took (next_page)."""
    found: set[str] = set()
    position: C | None = start
    size = FIRST_PAGE
    while position is not None:
        began = clock()
        position, ids = read(position, size)
        found.update(ids)
        size = next_page(size, clock() - began)
    return found


def _list_page(client: redis.Redis, key: str, start: int, size: int) -> tuple[int | None, list[str]]:
    """A page of a list at offset `start`, and the next page's offset (None: the list ended within this page)."""
    read, ids = queued_task_ids(client, key, start, size)
    return (start + read if read == size else None), ids


def _stream_page(store: RequestStore, stream: str, after: str, size: int) -> tuple[str | None, list[str]]:
    """A page of an input stream after stream id `after`, and the last id read (None: the stream ended)."""
    last, ids = store.open_ids_page(stream, after, size)
    return (last or None), ids
