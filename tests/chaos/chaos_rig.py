"""The chaos suite's parts (issue 10), shared by tests/chaos and bench/chaos.py: real processes to break, and a
count of what an acknowledged request got.

- ChaosRedis: a persistent redis-server (append-only, fsync every second) that can be killed -9 and started again on
  the same port with the same data folder.
- ChaosRig: that Redis and real `scalablejob scaler` processes (which spawn real workers) of one service; every
  process it starts carries a marker in its environment, so whatever is left behind is found and killed.
- Ledger: puts through `JobClient`, recording what was acknowledged (an index returned) and what was refused (an
  error raised); Burst puts from a thread, so a fault can land in the middle of a burst.
- Delivery: per acknowledged request, its final entries in the whole output queue and its state.
- training_command / starts: a command that records each of its starts as a file, to tell "finished once" from
  "restarted".

No pytest here: the benchmark imports it too. A scaler option that this checkout's scaler does not have yet (the
ones issue 10 adds) is left out of the command line and recorded in `ChaosRig.missing_options`, so the fault is
still tried against what the scaler does today.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from scalablejob import JobClient, RequestStatus
from scalablejob.local.redis_server import RedisServer
from scalablejob.local.scaler_process import RUN_MARKER_ENV, ScalerProcess, kill_marked
from scalablejob.scaler.pool import WORKER_NAME_ENV
from scalablejob.store.presence import Presence, WorkerState, read_presence
from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestStore

REPO = Path(__file__).resolve().parents[2]
HANDLERS = REPO / "tests" / "support" / "sj_test_handlers.py"  # {"sleep": s} queries
INTERVAL_S = 0.2
# Options issue 10 adds to `scalablejob scaler`; one the scaler lacks is dropped and recorded, not a usage error.
NEW_SCALER_OPTIONS = ("--stale-after", "--unbacked-after")
PAGE = 1000


class ChaosRedis(RedisServer):
    """A persistent redis-server that a test kills -9 and starts again on its port, with the data it had."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        super().__init__(data_dir, persistent=True)

    def start(self, *args: Any, **kwargs: Any) -> str:
        url = super().start(*args, **kwargs)
        with redis.Redis.from_url(url) as client:
            client.config_set("appendfsync", "everysec")  # said, not assumed: a default may change with issue 10
        return url

    def kill(self) -> None:
        """kill -9: no flush, no goodbye; the append-only file keeps what reached it."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        self.stop()  # reaps it

    def processes(self) -> list[psutil.Process]:
        """Every redis-server still serving this port (after a stop: leftovers)."""
        return [p for p in psutil.process_iter(["cmdline"]) if _serves_port(p.info.get("cmdline") or [], self.port)]


def _serves_port(cmdline: Sequence[str], port: int) -> bool:
    return any("redis-server" in part for part in cmdline[:4]) and f"{port}" in cmdline and "--port" in cmdline


def command_body(code: str) -> str:
    """A command task running `code` in this interpreter (a JSON argv: no shell, no quoting)."""
    return json.dumps([sys.executable, "-c", code])


def training_command(folder: Path, token: str, seconds: float, again_s: float | None = None) -> str:
    """A command that records each start as `folder/<token>.<pid>`, prints a start line, runs `seconds` (`again_s`
    when it has started before) and exits 0."""
    again = seconds if again_s is None else again_s
    code = (
        "import os, time\n"
        f"folder, token = {str(folder)!r}, {token!r}\n"
        "before = any(name.startswith(token + '.') for name in os.listdir(folder))\n"
        "open(os.path.join(folder, f'{token}.{os.getpid()}'), 'w').close()\n"
        "print('start', token, flush=True)\n"
        f"time.sleep({again} if before else {seconds})\n"
        "print('end', token, flush=True)\n"
    )
    return command_body(code)


def starts(folder: Path, token: str) -> list[int]:
    """The pids of each start of the training command `token`."""
    return [int(path.suffix[1:]) for path in folder.glob(f"{token}.*")]


def query_body(sleep_s: float) -> bytes:
    return json.dumps({"sleep": sleep_s}).encode()


class Ledger:
    """Puts that record, per request id (chosen here, so a refused one is known too), what the put said."""

    def __init__(self) -> None:
        self.acknowledged: dict[str, str] = {}  # request id -> task type
        self.refused: dict[str, str] = {}  # request id -> the error the put raised
        self.commands: dict[str, str] = {}  # request id -> training token

    def put(self, client: JobClient, data: bytes | str, task_type: str, token: str | None = None) -> str | None:
        request_id = uuid.uuid4().hex
        try:
            client.put(data, {"taskType": task_type, "requestId": request_id})
        except Exception as exc:  # any error is a refusal the caller saw, which is all a refusal must be
            self.refused[request_id] = f"{type(exc).__name__}: {exc}"
            return None
        self.acknowledged[request_id] = task_type
        if token is not None:
            self.commands[request_id] = token
        return request_id


class Burst(threading.Thread):
    """Puts `items` (body, task type) one after another from a thread of its own, through a client of its own; after
    a refused put it backs off for BACKOFF_S, as a client would, so that a burst outlasts a short outage."""

    BACKOFF_S = 0.1

    def __init__(self, service: str, broker_url: str, ledger: Ledger, items: Sequence[tuple[bytes, str]],
                 gap_s: float = 0.0) -> None:  # fmt: skip
        super().__init__(daemon=True)
        self.service, self.broker_url, self.ledger, self.items, self.gap_s = service, broker_url, ledger, items, gap_s
        self.done = 0

    def run(self) -> None:
        with JobClient(self.service, self.broker_url) as client:
            for data, task_type in self.items:
                refused = self.ledger.put(client, data, task_type) is None
                self.done += 1
                pause = self.BACKOFF_S if refused else self.gap_s
                if pause:
                    time.sleep(pause)  # the burst's pace, not a wait for anything


@dataclass(frozen=True)
class Delivery:
    """What each acknowledged request got: its final entries (over the whole output queue) and its state."""

    finals: Counter[str]
    states: dict[str, RequestStatus | None]
    started: dict[str, float | None] = field(default_factory=dict)
    finished: dict[str, float | None] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    def lost(self) -> list[str]:
        """Acknowledged, and with no final entry or no final state."""
        return [rid for rid, status in self.states.items() if not self.finals[rid] or not _finished(status)]

    def twice(self) -> list[str]:
        return [rid for rid in self.states if self.finals[rid] > 1]

    def describe(self, request_ids: Iterable[str]) -> str:
        return ", ".join(
            f"{rid[:8]} (state {_status_name(self.states.get(rid))}, {self.finals[rid]} final, "
            f"retries {self.retries.get(rid, 0)})"
            for rid in request_ids
        )


def _finished(status: RequestStatus | None) -> bool:
    return status is not None and status.finished


def _status_name(status: RequestStatus | None) -> str:
    return "missing" if status is None else status.value


def final_counts(client: redis.Redis, service: str) -> Counter[str]:
    """Final entries (result or error) per request id, over the service's whole output queue."""
    sink, counts, start = Sink(client, service), Counter[str](), 1
    while batch := sink.read(start, PAGE):
        counts.update(entry.request_id for entry in batch if entry.is_final and entry.request_id)
        start = batch[-1].index + 1
    return counts


def delivery(client: redis.Redis, service: str, request_ids: Iterable[str]) -> Delivery:
    store = RequestStore(client, service)
    states = {rid: store.get(rid) for rid in request_ids}
    return Delivery(
        final_counts(client, service), {rid: s.status if s else None for rid, s in states.items()},
        {rid: s.started_at if s else None for rid, s in states.items()},
        {rid: s.finished_at if s else None for rid, s in states.items()},
        {rid: s.retries if s else 0 for rid, s in states.items()},
    )  # fmt: skip


def settled(client: redis.Redis, service: str, request_ids: Sequence[str], deadline_s: float) -> tuple[Delivery, bool]:
    """Poll until every request has a final entry and a final state, or the deadline passes (Redis may still be
    coming back: an error is a "not yet"); the last count, and whether all settled."""
    deadline = time.monotonic() + deadline_s
    last: Delivery | None = None
    while True:
        with contextlib.suppress(redis.RedisError):
            last = delivery(client, service, request_ids)
            if not last.lost():
                return last, True
        if time.monotonic() > deadline:
            return last or delivery(client, service, request_ids), False
        time.sleep(0.2)


def marked_processes(marker: str) -> list[psutil.Process]:
    """Live processes started under `marker` (scalers, workers, the commands they ran)."""
    found = []
    for process in psutil.process_iter(["environ"]):
        if (process.info.get("environ") or {}).get(RUN_MARKER_ENV) == marker:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
    return found


def describe_processes(processes: Iterable[psutil.Process]) -> str:
    lines = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            worker = process.environ().get(WORKER_NAME_ENV, "-")
            lines.append(f"pid {process.pid} worker {worker} {process.status()}: {' '.join(process.cmdline())[:120]}")
    return "\n".join(lines)


@functools.cache
def scaler_help() -> str:
    argv = [sys.executable, "-m", "scalablejob", "scaler", "--help"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout


def known_options(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """`args` without the NEW_SCALER_OPTIONS (and their values) that the scaler's --help does not list; and those."""
    kept: list[str] = []
    missing: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in NEW_SCALER_OPTIONS and arg not in scaler_help():
            missing.append(arg)
            skip = True
        else:
            kept.append(arg)
    return kept, missing


def poll(condition: Callable[[], Any], deadline_s: float, interval: float = 0.05) -> Any:
    """The first truthy value of `condition` within `deadline_s` (a Redis error counts as falsy), else None."""
    deadline = time.monotonic() + deadline_s
    while True:
        with contextlib.suppress(redis.RedisError):
            if value := condition():
                return value
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


class ChaosRig:
    """A ChaosRedis and the scalers of one service on it, in `folder`; `close` leaves nothing running."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        self.service: str = config["metadata"]["name"]
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.marker = uuid.uuid4().hex
        self.config_path = folder / f"{self.service}.json"
        self.config_path.write_text(json.dumps(config))
        self.starts_dir = folder / "starts"
        self.starts_dir.mkdir(parents=True, exist_ok=True)
        self.redis = ChaosRedis(folder / "redis")
        self.redis.start()
        self.url = self.redis.url
        self.raw = redis.Redis.from_url(self.url)
        self.client = JobClient(self.service, self.url)
        self.ledger = Ledger()
        self.scalers: list[ScalerProcess] = []
        self.missing_options: list[str] = []

    def start_scaler(self, *args: str) -> ScalerProcess:
        kept, missing = known_options(args)
        self.missing_options += [option for option in missing if option not in self.missing_options]
        options = ["--interval", str(INTERVAL_S), "--log-dir", str(self.folder / "workers"), "--app", str(HANDLERS)]
        log_path = self.folder / f"scaler{len(self.scalers)}.log"
        scaler = ScalerProcess.start(self.config_path, self.url, *options, *kept, marker=self.marker, log_path=log_path)
        self.scalers.append(scaler)
        return scaler

    def idle_workers(self, scaler: ScalerProcess, count: int, deadline_s: float) -> dict[str, str] | None:
        """The scaler's workers once it has `count`, all idle; None if the scaler exits or the deadline passes."""

        def ready() -> dict[str, str] | None:
            if scaler.process.poll() is not None:
                raise RuntimeError(f"the scaler exited {scaler.process.returncode}:\n{scaler.log()[-3000:]}")
            workers = scaler.workers()
            return workers if len(workers) == count and scaler.count("idle") == count else None

        return poll(ready, deadline_s)  # type: ignore[no-any-return]

    def presence(self) -> dict[str, Presence]:
        return read_presence(self.raw, self.service)

    def busy(self, task_type: str | None = None) -> dict[str, Presence]:
        """Busy workers holding at least one task (of `task_type`, when given)."""
        found = {}
        for name, presence in self.presence().items():
            held = [rid for rid in presence.held if task_type is None or self.ledger.acknowledged.get(rid) == task_type]
            if presence.state is WorkerState.BUSY and held:
                found[name] = presence
        return found

    def pick_busy(self, count: int, task_type: str | None = None) -> dict[str, Presence] | None:
        """`count` busy workers (holding a task of `task_type`, when given), or None while fewer are busy."""
        busy = self.busy(task_type)
        return dict(list(busy.items())[:count]) if len(busy) >= count else None

    def put_training(self, token: str, seconds: float, again_s: float | None = None) -> str | None:
        body = training_command(self.starts_dir, token, seconds, again_s)
        return self.ledger.put(self.client, body, "command", token)

    def starts(self, token: str) -> list[int]:
        return starts(self.starts_dir, token)

    def worker_log_lines(self, *needles: str, limit: int = 12) -> list[str]:
        """Lines of the workers' logs that carry any of `needles` (the first `limit`)."""
        lines = []
        for path in sorted((self.folder / "workers").glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if any(needle in line for needle in needles):
                    lines.append(f"{path.stem}: {line.strip()[:200]}")
        return lines[:limit]

    def stop_scalers(self) -> None:
        for scaler in self.scalers:
            scaler.stop()

    def close(self) -> None:
        """Stop the scalers (warmly), kill whatever is left under the marker, stop Redis."""
        with contextlib.suppress(Exception):
            self.stop_scalers()
        for scaler in self.scalers:
            scaler.close()
        kill_marked(self.marker)
        self.client.close()
        self.raw.close()
        self.redis.stop()
