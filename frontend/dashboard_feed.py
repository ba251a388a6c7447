"""The dashboard's server-sent events: on connect the last 30 minutes and the newest failures, then each new sample
as it is stored, and the failures again when a new one comes. Read from Redis (scalablejob.store.history), so a
restarted front end streams the same history; a Redis error ends the stream, and the browser's EventSource connects
again by itself (after `retry` ms) and gets the whole window anew."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from typing import Any

import redis.exceptions

from scalablejob.model.history import WINDOW_S
from scalablejob.store.history import HistoryReader

logger = logging.getLogger(__name__)

POLL_S = 0.5  # how often Redis is asked for new samples (one XRANGE and one LINDEX)
KEEPALIVE_S = 15.0  # a comment line after this much silence, so that proxies and the browser keep the stream
FAILURES_SHOWN = 20
RETRY_MS = 2000


def event(name: str, data: Any) -> bytes:
    """One server-sent event: its name and one line of compact JSON."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def feed(reader: HistoryReader, poll_s: float = POLL_S) -> AsyncGenerator[bytes, None]:
    """The events of one dashboard connection, until the client goes away (the response cancels this) or Redis
    fails (the stream ends; the client reconnects)."""
    try:
        samples = await reader.window()
        failures = await reader.failures(FAILURES_SHOWN)
        newest = failures[0].request_id if failures else ""
        last_id = samples[-1].id if samples else ""
        yield f"retry: {RETRY_MS}\n\n".encode()
        yield event("history", {"service": reader.service, "windowS": WINDOW_S,
                                "samples": [s.to_json() for s in samples],
                                "failures": [f.to_json() for f in failures]})  # fmt: skip
        quiet_s = 0.0
        while True:
            await asyncio.sleep(poll_s)
            quiet_s += poll_s
            for sample in await reader.after(last_id):
                last_id, quiet_s = sample.id, 0.0
                yield event("sample", sample.to_json())
            if (head := await reader.newest_failure()) != newest:
                newest, quiet_s = head, 0.0
                yield event("failures", [f.to_json() for f in await reader.failures(FAILURES_SHOWN)])
            if quiet_s >= KEEPALIVE_S:
                quiet_s = 0.0
                yield b": keep-alive\n\n"
    except redis.exceptions.RedisError as exc:
        logger.warning("dashboard stream ended, the browser reconnects: Redis failed: %s", exc)
