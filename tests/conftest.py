"""Fixtures that start real parts: a redis-server on a free loopback port and real worker processes; and a check
that the test run leaves the checkout as it found it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from scalablejob import JobClient
from scalablejob.api.celery_app import make_app
from scalablejob.local.ports import free_port
from scalablejob.local.redis_server import RedisServer
from scalablejob.local.scaler_process import is_gone
from scalablejob.store.broker import running_embedded

REPO = Path(__file__).resolve().parents[1]
TEST_HANDLERS = REPO / "tests" / "support" / "sj_test_handlers.py"
MULTIHOST = REPO / "tests" / "multihost"
WORKER_READY_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 15.0
CLI = (sys.executable, "-m", "scalablejob")


def copy_checkout(dest: Path) -> Path:
    """The work tree as git sees it (tracked files and untracked ones it does not ignore; links stay links, such as
    scalablejob/workers), copied to `dest`: what a fresh clone would hold, with no build or cache folder."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, names):
        source, target = REPO / name, dest / name
        if source.is_symlink() or source.is_file():  # a file deleted but not yet committed is left out
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target, follow_symlinks=False)
    return dest


# Ignored by git, so `git status` cannot see them, yet no test may create them in the checkout: the embedded broker's
# data folder (a command run with the checkout as its folder) and examples/train.py's default checkpoints.
MUST_NOT_APPEAR = (".scalablejob", "checkpoints")
IGNORED_CHANGES = (".pytest_cache",)


@dataclass(frozen=True)
class WorkTreeSnapshot:
    """What git says of a work tree (untracked files one by one), and which of MUST_NOT_APPEAR exist in it."""

    status: frozenset[str]
    present: frozenset[str]


def work_tree_snapshot(root: Path) -> WorkTreeSnapshot | None:
    """A snapshot of `root`, or None when it is not in a git work tree (an unpacked sdist, a copy)."""
    try:
        run = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all", "--", "."], cwd=root, capture_output=True,
            text=True, timeout=60,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if run.returncode != 0:
        return None
    lines = {line for line in run.stdout.splitlines() if not any(part in line for part in IGNORED_CHANGES)}
    return WorkTreeSnapshot(frozenset(lines), frozenset(name for name in MUST_NOT_APPEAR if (root / name).exists()))


def work_tree_changes(before: WorkTreeSnapshot | None, after: WorkTreeSnapshot | None) -> list[str]:
    """What changed between two snapshots: a tree already dirty before is compared with itself, not with clean."""
    if before is None or after is None:
        return []
    changed = [f"git status: {line}" for line in sorted(after.status ^ before.status)]
    return changed + [f"created: {name}" for name in sorted(after.present - before.present)]


_WORK_TREE_BEFORE = pytest.StashKey[WorkTreeSnapshot | None]()


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not _is_xdist_worker(session.config):  # the controller checks the whole run, before and after its workers
        session.config.stash[_WORK_TREE_BEFORE] = work_tree_snapshot(REPO)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The multi-host tests run one after another in one xdist worker (`--dist loadgroup`): each builds three hosts
    and times their faults, which two rigs at once on a small machine would slow past their bounds."""
    for item in items:
        if MULTIHOST in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("multihost"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if it changed the checkout: tests write into tmp_path, never into the repository."""
    if _is_xdist_worker(session.config):
        return
    changes = work_tree_changes(session.config.stash.get(_WORK_TREE_BEFORE, None), work_tree_snapshot(REPO))
    if not changes:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")  # the progress line has no newline yet
        reporter.write_sep("=", "the test run changed the checkout (tests must write into tmp_path)", red=True)
        for change in changes:
            reporter.write_line(f"  {change}")
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def service_config(name: str, **metadata: Any) -> dict[str, Any]:
    """A minimal valid service JSON for tests."""
    return {"metadata": {"name": name, "type": "ScalableJob", "gpu": 0, **metadata}}


def python_command(code: str) -> str:
    """A command task body running `code` in this interpreter (a JSON argv: no shell, no quoting)."""
    return json.dumps([sys.executable, "-c", code])


def max_overlap(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that are open at one instant."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


def wait_until(
    condition: Callable[[], Any], timeout: float, message: str | Callable[[], str], interval: float = 0.05
) -> Any:
    """Poll `condition` until it returns something truthy; fail the test with `message` after `timeout` s (a callable
    is called then: a message that quotes a log must quote it at the failure, not as it was before the wait)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s: {message() if callable(message) else message}")
        time.sleep(interval)


class WorkerProcess:
    """A `scalablejob worker` child process, its node name and its log."""

    def __init__(self, process: subprocess.Popen[bytes], hostname: str, log_path: Path) -> None:
        self.process = process
        self.hostname = hostname
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def call_processes(self) -> list[psutil.Process]:
        """Its child processes that run Celery calls of command tasks (workers/call_process.py)."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                if "scalablejob.workers.call_child" in child.cmdline():
                    found.append(child)
        return found

    def wait_ready(self, service: str, broker_url: str, timeout: float = WORKER_READY_TIMEOUT_S) -> None:
        app = make_app(service, broker_url)
        try:

            def answers() -> bool:
                if self.process.poll() is not None:
                    pytest.fail(f"worker {self.hostname} exited {self.process.returncode}:\n{self.log()}")
                return bool(app.control.ping(destination=[self.hostname], timeout=0.3))

            wait_until(
                answers, timeout, lambda: f"worker {self.hostname} never answered a ping:\n{self.log()}", interval=0
            )
        finally:
            app.close()

    def stop(self, timeout: float = WORKER_STOP_TIMEOUT_S) -> int:
        """Warm shutdown (SIGTERM); the whole process group is killed if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # children too: commands, model servers
        return self.process.wait()


READY_LINE = "Ctrl-C stops everything"


class UpProcess:
    """A running `scalablejob up`, its output, and the addresses it printed."""

    def __init__(
        self, config: Path, data_dir: Path, *extra: str, command: Sequence[str] = CLI, cwd: Path = REPO,
        env: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.ports = {"port": free_port(), "flower": free_port()}
        self.data_dir = Path(cwd, data_dir)
        argv = [*command, "up", str(config), "--data-dir", str(data_dir),
                "--port", str(self.ports["port"]), "--flower-port", str(self.ports["flower"]), *extra]  # fmt: skip
        self.process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if READY_LINE in line:
                self.ready.set()

    def wait_ready(self, timeout: float = 90) -> dict[str, str]:
        assert self.ready.wait(timeout), "\n".join(self.lines)
        text = "\n".join(self.lines)
        labels = {"broker": "broker", "frontend": "front end", "flower": "flower", "metrics": "metrics"}
        found = {name: re.search(rf"^  {label}\s+(\S+)", text, re.M).group(1) for name, label in labels.items()}
        shown = re.search(r"token (\S+)$", text, re.M)  # only when made: later `up`s say where it is kept
        found["token"] = shown.group(1) if shown else (self.data_dir / "frontend.token").read_text().strip()
        found["broker"] = running_embedded(self.data_dir) or found["broker"]  # up prints it with the password masked
        return found

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def interrupt(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout)

    def kill(self) -> None:
        for child in [*self.descendants(), psutil.Process(self.process.pid)]:
            child.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path / "redis", persistent=False) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def launch_worker(
    argv: list[str], hostname: str, log_path: Path, *, cwd: Path, env: dict[str, str] | None = None
) -> WorkerProcess:
    """A worker process in a session of its own (so its stop reaches every child), its output in `log_path`."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    return WorkerProcess(process, hostname, log_path)


@pytest.fixture
def start_worker(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start real worker processes for a service config; all of them are stopped after the test."""
    workers: list[WorkerProcess] = []

    def start(config: dict[str, Any], *, app: str | None = str(TEST_HANDLERS), wait: bool = True) -> WorkerProcess:
        service = config["metadata"]["name"]
        config_path = tmp_path / f"{service}.json"
        config_path.write_text(json.dumps(config))
        hostname = f"{service}-w{len(workers)}@test"
        log_path = tmp_path / f"{hostname}.log"
        argv = [sys.executable, "-m", "scalablejob", "worker", str(config_path), "--broker", redis_url, "-n", hostname]
        worker = launch_worker([*argv, *(["--app", app] if app else [])], hostname, log_path, cwd=REPO)
        workers.append(worker)
        if wait:
            worker.wait_ready(service, redis_url)
        return worker

    yield start
    for worker in workers:
        worker.stop()


@pytest.fixture
def client_for(redis_url: str) -> Iterator[Callable[[str], JobClient]]:
    clients: list[JobClient] = []

    def make(service: str) -> JobClient:
        clients.append(JobClient(service, redis_url))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def leftover_pids() -> Iterator[list[int]]:
    """Pids of processes a test's jobs started, such as daemons: SIGKILLed after the test if they still run (where
    the code under test failed to end them), so that no test leaves a process behind."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if not is_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
