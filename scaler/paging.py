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

import time
from collections.abc import Callable, Iterable

import redis

from scalablejob.queues import queued_task_ids
from scalablejob.state import RequestStore

TARGET_S = 0.004  # how long one page may take, seen from here (with the transfer): Redis's own share is under it
FIRST_PAGE = 100
LEAST_PAGE = 20  # fewer would not help: each LRANGE page first walks the list to its offset (below)
MOST_PAGE = 500  # a page of 500 queued messages of 1 KiB takes Redis about 0.4 ms, plus the walk
Clock = Callable[[], float]


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
    found: set[str] = set()
    for key in lists:
        start, size = 0, FIRST_PAGE
        while True:
            began = clock()
            read, ids = queued_task_ids(client, key, start, size)
            found.update(ids)
            if read < size:
                break
            start += read
            size = next_page(size, clock() - began)
    return found


def open_ids(store: RequestStore, clock: Clock = time.perf_counter) -> set[str]:
    """Ids of the service's open requests (queued or running), from every front end's input stream."""
    found: set[str] = set()
    for stream in store.input_streams():
        after, size = "", FIRST_PAGE
        while True:
            began = clock()
            after, ids = store.open_ids_page(stream, after, size)
            found.update(ids)
            if not after:
                break
            size = next_page(size, clock() - began)
    return found
