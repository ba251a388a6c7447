"""Reading one request's log, progress and final entries from the output queue, optionally as they come."""

from __future__ import annotations

from collections.abc import Iterator

from scalablejob.store.sink import Sink, SinkEntry
from scalablejob.store.state import RequestStore

READ_BATCH = 500
FOLLOW_BLOCK_MS = 1000


def request_entries(sink: Sink, requests: RequestStore, request_id: str, *, follow: bool) -> Iterator[SinkEntry]:
    """The request's entries in order; with `follow`, keep waiting for new ones until its final entry."""
    seen = sink.last_index()  # read before the state: an entry written in between is not missed
    state = requests.require(request_id)
    start = state.log_index or state.result_index or seen + 1
    while True:
        ended = _ended(requests, request_id)  # before reading: an ended request's final entry is already there
        batch = sink.read(start, READ_BATCH)
        for entry in batch:
            if entry.request_id == request_id:
                yield entry
                if entry.is_final:
                    return
        if batch:
            start = batch[-1].index + 1
            continue
        if not follow or ended:
            return
        sink.wait(start - 1, FOLLOW_BLOCK_MS, count=1)


def _ended(requests: RequestStore, request_id: str) -> bool:
    state = requests.get(request_id)
    return state is None or state.status.finished
