"""Plain Celery worker processes, the baseline the benchmarks measure scalablejob against in the same run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from scalablejob.local.scaler_process import RUN_MARKER_ENV

BASELINE_APP = '''
"""A plain Celery app: tasks that record when (and in which process) they run; settings from the environment."""
import json, os, subprocess, time
import redis
from celery import Celery

app = Celery("baseline", broker=os.environ["BASELINE_BROKER"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                broker_transport_options=json.loads(os.environ.get("BASELINE_TRANSPORT", "{}")))
app.conf.update(json.loads(os.environ.get("BASELINE_SETTINGS", "{}")))
starts = redis.Redis.from_url(os.environ["BASELINE_BROKER"])


@app.task(name="baseline.sleep")
def sleep(key, seconds):
    starts.rpush(key, json.dumps({"at": time.time(), "pid": os.getpid()}))
    time.sleep(seconds)


@app.task(name="baseline.timed")
def timed(key, seconds, tag):
    """Sleeps, then records its start and end; the end is taken before the push, so the push counts as a gap."""
    started = time.time()
    time.sleep(seconds)
    starts.rpush(key, json.dumps({"tag": tag, "start": started, "end": time.time()}))


@app.task(name="baseline.noop")
def noop():
    return None


@app.task(name="baseline.command")
def command(argv):
    """A command line run to its end, as a plain Celery task runs a training script: no shell, output inherited."""
    subprocess.run(argv, check=True)
'''


def answering(app: Celery, names: list[str]) -> bool:
    """True once every worker named (Celery node names) answers a ping through `app`: it consumes."""
    replies = app.control.ping(destination=names, timeout=0.5)
    return {name for reply in replies for name in reply} >= set(names)


def _runs_in_the_workers(*_: object) -> None:
    """The producer's stand-in for a task body: BASELINE_APP's runs in the workers."""


class PlainCelery:
    """Plain `celery worker` processes of BASELINE_APP, started in `folder`, and tasks sent to them.

    `settings` (Celery settings, e.g. a result backend, a queue of its own, Celery's default prefetch) apply to the
    workers and to the producer alike, over the defaults of BASELINE_APP (prefetch 1, late acks, no results)."""

    def __init__(
        self, folder: Path, broker_url: str, marker: str, transport: Mapping[str, object] | None = None,
        settings: Mapping[str, object] | None = None,
    ):  # fmt: skip
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "baseline_app.py").write_text(BASELINE_APP)
        self.folder = folder
        self.client = redis.Redis.from_url(broker_url)
        self.env = {**os.environ, "BASELINE_BROKER": broker_url, "BASELINE_TRANSPORT": json.dumps(transport or {})}
        self.env.update({"BASELINE_SETTINGS": json.dumps(settings or {}), RUN_MARKER_ENV: marker})
        self._producer = Celery("baseline", broker=broker_url, set_as_current=False)
        self._producer.conf.broker_transport_options = dict(transport or {})
        self._producer.conf.update(settings or {})

    def start_worker(self, name: str, pool: str = "threads", concurrency: int = 1) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "celery", "-A", "baseline_app", "worker", "-P", pool, "-c", str(concurrency),
                "-n", name, "-l", "WARNING", "--without-mingle", "--without-gossip"]  # fmt: skip
        with (self.folder / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                argv, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def send(self, key: str, seconds: float) -> None:
        self._producer.send_task("baseline.sleep", args=(key, seconds))

    def send_timed(self, key: str, seconds: float, tag: int) -> None:
        """A task that records its start and end under `key` once it ends (see `starts`)."""
        self._producer.send_task("baseline.timed", args=(key, seconds, tag))

    def task(self, name: str) -> Any:
        """BASELINE_APP's task `name` as a task of the producer, for `.delay()` and `.get()` as a user calls them."""
        return self._producer.task(name=name)(_runs_in_the_workers)

    def answering(self, names: list[str]) -> bool:
        return answering(self._producer, names)

    def starts(self, key: str) -> list[dict[str, Any]]:
        """What each run of the tasks that report under `key` recorded: times and process id (`sleep`), or tag,
        start and end (`timed`)."""
        raw: Any = self.client.lrange(key, 0, -1)
        return [json.loads(item) for item in raw]

    def close(self) -> None:
        self._producer.close()
        self.client.close()

    def __enter__(self) -> PlainCelery:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
