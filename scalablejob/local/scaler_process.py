"""A real `scalablejob scaler` process for integration tests and benchmarks, and a stop that leaves nothing behind."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis

from scalablejob.local.redis_server import RedisServer
from scalablejob.model import keys

T = TypeVar("T")

RUN_MARKER_ENV = "SCALABLEJOB_TEST_RUN"  # inherited by the scaler, its workers and their commands
SCALER_STOP_TIMEOUT_S = 20.0


class ScalerProcess:
    """A `scalablejob scaler` child process, what it publishes in Redis, and a stop that leaves nothing behind."""

    def __init__(self, process: subprocess.Popen[bytes], service: str, client: redis.Redis, log_path: Path) -> None:
        self.process = process
        self.service = service
        self.client = client
        self.log_path = log_path

    @classmethod
    def start(
        cls, config_path: Path, broker_url: str, *args: str, marker: str, log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> ScalerProcess:  # fmt: skip
        """Start it with `marker` in its environment, which every process it starts inherits (see kill_marked)."""
        service = json.loads(config_path.read_text())["metadata"]["name"]
        argv = [sys.executable, "-m", "scalablejob", "scaler", str(config_path), "--broker", broker_url, *args]
        full_env = {**os.environ, **(env or {}), RUN_MARKER_ENV: marker}
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env,
                start_new_session=True,
            )  # fmt: skip
        return cls(process, service, redis.Redis.from_url(broker_url), log_path)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, str]:
        """This scaler's last decision, as published in Redis (empty before its first pass)."""
        raw: Any = self.client.hgetall(keys.scaler_status(self.service, socket.gethostname()))
        status = {key.decode(): value.decode() for key, value in raw.items()}
        return status if status.get("pid") == str(self.process.pid) else {}  # not a previous scaler's

    def workers(self) -> dict[str, str]:
        """Its workers (node name -> state) as of its last pass."""
        return dict(json.loads(self.status().get("workers", "{}")))

    def count(self, state: str) -> int:
        return sum(1 for value in self.workers().values() if value == state)

    def stop(self, timeout: float = SCALER_STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (it drains its workers), then SIGKILL if it does not exit in time; its exit code, None if killed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        return self.process.returncode

    def kill(self) -> None:
        """kill -9 the scaler alone: its workers, in sessions of their own, live on (for adoption)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        self.client.close()


def poll(condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.005) -> T:
    """Call `condition` until it returns something truthy, and return that; TimeoutError naming `what` after."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s: {what}")
        time.sleep(interval)
    return value


def kill_marked(marker: str) -> int:
    """SIGKILL every process started under `marker` (scalers, workers, commands); returns how many were alive."""
    killed = 0
    for process in psutil.process_iter(["environ"]):
        if (process.info.get("environ") or {}).get(RUN_MARKER_ENV) == marker:
            with contextlib.suppress(psutil.Error):
                if process.status() != psutil.STATUS_ZOMBIE:
                    process.kill()
                    killed += 1
    return killed


def is_gone(pid: int) -> bool:
    """True once a process has ended (a zombie waiting for its parent counts as ended)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass(frozen=True)
class ScalerRig:
    """A scaler on a private redis-server, for benchmarks and checks: its process, the broker, a scratch folder."""

    scaler: ScalerProcess
    broker_url: str
    folder: Path
    marker: str


@contextlib.contextmanager
def scaler_rig(config: Mapping[str, Any], *args: str, env: Mapping[str, str] | None = None) -> Iterator[ScalerRig]:
    """Start a redis-server and a scaler of `config` (worker logs in the folder); on exit stop the scaler and kill
    whatever is left under its marker. On an error, the scaler's log goes to stderr."""
    marker = uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as name, RedisServer(Path(name) / "redis", persistent=False) as server:
        folder = Path(name)
        config_path = folder / "service.json"
        config_path.write_text(json.dumps(config))
        logs = ("--log-dir", str(folder / "workers"))
        scaler = ScalerProcess.start(
            config_path, server.url, *logs, *args, marker=marker, log_path=folder / "scaler.log", env=env
        )
        try:
            yield ScalerRig(scaler, server.url, folder, marker)
        except BaseException:
            print(scaler.log(), file=sys.stderr)
            raise
        finally:
            scaler.stop()
            scaler.close()
            kill_marked(marker)
