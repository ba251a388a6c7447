"""Runs a test's snippet (read from stdin) with the real eas-prediction SDK, in the SDK's own virtualenv.

The snippet finds `inq` and `sink` (QueueClients of the queue named in $SDK_QUEUE and of its sink), the helpers
below, and reports what it saw with `out(name=value, ...)`: one marked JSON line on stdout per call.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid

from eas_prediction import QueueClient
from eas_prediction.exception import PredictException
from eas_prediction.queue_client import DataFrameCodec  # noqa: F401 (for the snippets, which see these globals)

ENDPOINT = os.environ["SDK_ENDPOINT"]
TOKEN = os.environ["SDK_TOKEN"]
QUEUE = os.environ["SDK_QUEUE"]
MARK = "SDK-RESULT "


def client(queue: str = QUEUE, *, token: str | None = TOKEN, uid: str | None = None, timeout_ms: int = 60_000):
    """A QueueClient as a user makes one; its timeout outlasts the longest get a test waits for."""
    queue_client = QueueClient(ENDPOINT, queue)
    queue_client.set_token(token if token is not None else "")
    queue_client.set_timeout(timeout_ms)
    queue_client.init(uid=uid)
    return queue_client


def out(**values) -> None:
    print(MARK + json.dumps(values), flush=True)


def frame(df) -> dict:
    return {"index": int(df.index), "data": df.data.decode("utf-8", "replace"), "tags": dict(df.tags)}


def collect(queue_client, count: int, *, index: int = 0, window: int = 5, auto_commit: bool = True,
            commit: bool = False, timeout: float = 30.0, shared: list | None = None, tags: dict | None = None,
            until=None) -> list[dict]:  # fmt: skip
    """Watch until `count` items arrived (in `shared` too, when watchers share one count), or `until()` is true
    when given, or `timeout` passed. The SDK's watcher reconnects forever on errors, so it runs in a daemon thread
    that the deadline abandons."""
    frames: list[dict] = []
    seen = frames if shared is None else shared
    done = until or (lambda: len(seen) >= count)
    watcher = queue_client.watch(index, window, auto_commit=auto_commit, tags=tags)

    def run() -> None:
        for df in watcher.run():
            if commit:  # before it counts as seen: a caller that reads the queue once `count` came sees it committed
                queue_client.commit(df.index)
            frames.append(frame(df))
            if shared is not None:
                shared.append(frames[-1])

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)
    watcher.url = "ws://127.0.0.1:1/closed"  # the abandoned thread's reconnect loop must not reach the server
    watcher.close()
    return list(frames)


def error_of(call) -> dict:
    """What an SDK call raised: its type, and the status and message of a PredictException."""
    try:
        call()
    except PredictException as exc:
        message = exc.message.decode() if isinstance(exc.message, bytes) else str(exc.message)
        return {"type": "PredictException", "code": exc.code, "message": message}
    except Exception as exc:  # websocket handshake refusals come as websocket-client's own exceptions
        return {"type": type(exc).__name__, "code": getattr(exc, "status_code", None), "message": str(exc)}
    return {"type": None}


def wait_for(condition, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


inq = client(QUEUE)
sink = client(f"{QUEUE}/sink")
namespace = {**globals(), "uuid": uuid, "threading": threading, "time": time}
exec(compile(sys.stdin.read(), "<snippet>", "exec"), namespace)
