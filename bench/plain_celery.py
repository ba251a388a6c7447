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

from scalablejob.scaler.harness import RUN_MARKER_ENV

BASELINE_APP = '''
"""A plain Celery app: one task that records when (and in which process) it starts, then sleeps."""
import json, os, time
import redis
from celery import Celery

app = Celery("baseline", broker=os.environ["BASELINE_BROKER"])
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1, task_ignore_result=True,
                broker_transport_options=json.loads(os.environ.get("BASELINE_TRANSPORT", "{}")))
starts = redis.Redis.from_url(os.environ["BASELINE_BROKER"])


@app.task(name="baseline.sleep")
def sleep(key, seconds):
    starts.rpush(key, json.dumps({"at": time.time(), "pid": os.getpid()}))
    time.sleep(seconds)
'''


class PlainCelery:
    """Plain `celery worker` processes of BASELINE_APP, started in `folder`, and tasks sent to them."""

    def __init__(self, folder: Path, broker_url: str, marker: str, transport: Mapping[str, object] | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "baseline_app.py").write_text(BASELINE_APP)
        self.folder = folder
        self.client = redis.Redis.from_url(broker_url)
        self.env = {**os.environ, "BASELINE_BROKER": broker_url, "BASELINE_TRANSPORT": json.dumps(transport or {})}
        self.env[RUN_MARKER_ENV] = marker
        self._producer = Celery("baseline", broker=broker_url, set_as_current=False)
        self._producer.conf.broker_transport_options = dict(transport or {})

    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "celery", "-A", "baseline_app", "worker", "-P", "threads", "-c", "1",
                "-n", name, "-l", "WARNING", "--without-mingle", "--without-gossip"]  # fmt: skip
        with (self.folder / f"{name}.log").open("ab") as log:
            return subprocess.Popen(
                argv, cwd=self.folder, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def send(self, key: str, seconds: float) -> None:
        self._producer.send_task("baseline.sleep", args=(key, seconds))

    def starts(self, key: str) -> list[dict[str, Any]]:
        """Each start of the task that reports under `key`: its time and its process id."""
        raw: Any = self.client.lrange(key, 0, -1)
        return [json.loads(item) for item in raw]

    def close(self) -> None:
        self._producer.close()
        self.client.close()

    def __enter__(self) -> PlainCelery:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
