"""Names of every Redis key a service uses, in one place, so components agree without sharing code paths."""

from __future__ import annotations

KEY_PREFIX = "scalablejob"


def sink_stream(service: str) -> str:
    """The output queue: a Redis Stream of results, logs and progress."""
    return f"{service}/sink"


def sink_index_counter(service: str) -> str:
    """The counter that gives sink entries their monotonically increasing index."""
    return f"{KEY_PREFIX}:{service}:sink:index"


def input_index_counter(service: str) -> str:
    """The counter that gives input requests their monotonically increasing index."""
    return f"{KEY_PREFIX}:{service}:input:index"


def input_index_map(service: str) -> str:
    """Hash from input index to request id, so a request can be found by its index."""
    return f"{KEY_PREFIX}:{service}:input:by-index"


def request_state(service: str, request_id: str) -> str:
    """Hash holding one request's state (queued, running, done, ...) and timestamps."""
    return f"{KEY_PREFIX}:{service}:request:{request_id}"
