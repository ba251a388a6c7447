"""Test support shipped in the package: fakes, so tests need no GPU and no processes where none is the point,
and a harness for a real scaler process (integration tests and benchmarks) that leaves no process behind.

Time is a parameter everywhere (`tick(now)`), so a `FakeClock` is only a number that tests move forward.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import redis
from celery import Celery

from scalablejob import keys
from scalablejob.gpus import StaticInventory, fake_gpus
from scalablejob.redis_server import RedisServer
from scaler.pool import Exited, WorkerSpec
from scaler.records import ProcessRecord

FAKE_HOST = "fakehost"
T = TypeVar("T")


@dataclass
class FakeClock:
    """A clock that moves only when told to."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class FakeGpuInventory(StaticInventory):
    """`count` made-up GPUs (GPU-fake-0000, ...), as a machine with that many NVIDIA cards would list them."""

    def __init__(self, count: int) -> None:
        super().__init__(fake_gpus(count))


@dataclass
class FakeLauncher:
    """A process backend without processes: it records what the loop asked, and tests decide who exits."""

    host: str = FAKE_HOST
    spawned: list[WorkerSpec] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    alive: dict[str, ProcessRecord] = field(default_factory=dict)
    adoptable: set[str] = field(default_factory=set)
    fail_spawn: bool = False
    _exits: list[Exited] = field(default_factory=list)
    _pids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))

    def spawn(self, spec: WorkerSpec) -> ProcessRecord:
        if self.fail_spawn:
            raise OSError("fake spawn failure")
        self.spawned.append(spec)
        pid = next(self._pids)
        record = ProcessRecord(spec.name, pid, float(pid), self.host, tuple(gpu.uuid for gpu in spec.gpus))
        self.alive[spec.name] = record
        return record

    def adopt(self, record: ProcessRecord) -> bool:
        if record.name not in self.adoptable:
            return False
        self.alive[record.name] = record
        return True

    def stop(self, name: str) -> None:
        self.stopped.append(name)

    def kill(self, name: str) -> None:
        self.killed.append(name)
        self.exit(name, -9)

    def reap(self) -> list[Exited]:
        exits, self._exits = self._exits, []
        return exits

    def kill_leftovers(self, name: str) -> int:
        return 0

    def exit(self, name: str, code: int | None) -> None:
        """Make a worker end, as reap() will report it."""
        if self.alive.pop(name, None) is not None:
            self._exits.append(Exited(name, code))

    @property
    def names(self) -> list[str]:
        return list(self.alive)


@dataclass
class FakeRecovery:
    """Records which tasks the loop asked to put back; every task it is given counts as requeued."""

    recovered: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    sweeps: int = 0
    broker_down: bool = False  # recover() raises as it would with Redis away

    def recover(self, worker: str, held: Mapping[str, str], reason: str) -> list[str]:
        if self.broker_down:
            raise redis.ConnectionError("fake: the broker is away")
        if held:
            self.recovered.append((worker, dict(held)))
        return list(held)

    def sweep(self, claimed: Collection[str], now: float) -> list[str]:
        self.sweeps += 1
        return []


# ---- A real scaler process, for integration tests and benchmarks ------------------------------------------

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


# ---- A plain Celery worker, the baseline the benchmarks measure against ----------------------------------

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
