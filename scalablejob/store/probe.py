"""Asking a broker whether it answers and has loaded its data: a restarted redis-server that replays a large
append-only file answers every command with LOADING for a while, and every command that connects waits it out."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from scalablejob.model.errors import BrokerError
from scalablejob.store.redis_url import connect

LOADING_TIMEOUT_S = 120.0  # how long a server may take to load its data before a command gives up on it
LOADING_NOTICE_AFTER_S = 1.0  # a load that takes longer is worth one line, so a slow start is not a silent one
PROBE_TIMEOUT_S = 5.0  # a loading server answers between chunks of its file, so a probe may wait a little

Notify = Callable[[str], None]


def probe_client(url: str) -> redis.Redis:
    """A client that reports each failure at once: redis-py's own retries would hide a LOADING answer for seconds."""
    return connect(url, socket_connect_timeout=0.5, socket_timeout=PROBE_TIMEOUT_S, retry=Retry(NoBackoff(), 0))


def loading_size(client: redis.Redis) -> int | None:
    """None once the server has loaded its data; while it loads, the size in bytes of what it loads (0: unknown)."""
    try:
        client.ping()
        return None
    except redis.BusyLoadingError:
        pass
    except redis.ResponseError:  # any other refusal (MISCONF: Redis refuses even PING while its disk is full)
        return None  # is an answer from a server that has loaded its data
    try:
        return int(client.info("persistence").get("loading_total_bytes", 0))
    except (redis.ResponseError, redis.TimeoutError):  # INFO not allowed, or too busy: the size is for the notice
        return 0


def loading_notice(size: int) -> str:
    return f"redis is loading its data ({size / 1e6:.0f} MB)..." if size else "redis is loading its data..."


def wait_while_loading(
    client: redis.Redis, what: str, timeout_s: float = LOADING_TIMEOUT_S, notify: Notify | None = None
) -> None:
    """Return once the server has loaded its data; one notice if that takes over a second, an error after
    `timeout_s`. Connection errors are the caller's: only a server that answers is waited for (one that said LOADING
    and then is too busy to answer in time is still loading)."""
    started = time.monotonic()
    noticed = loading = False
    while (size := _loading_size(client, loading)) is not None:
        loading = True
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise BrokerError(f"{what} was still loading its data after {timeout_s:g} s")
        if not noticed and waited > LOADING_NOTICE_AFTER_S:
            (notify or _to_stderr)(loading_notice(size))
            noticed = True
        time.sleep(0.1)


def _loading_size(client: redis.Redis, was_loading: bool) -> int | None:
    try:
        return loading_size(client)
    except redis.TimeoutError:
        if was_loading:
            return 0
        raise


def _to_stderr(line: str) -> None:
    """A notice is never worth failing for: a closed terminal or a dead pipe just loses it."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)
