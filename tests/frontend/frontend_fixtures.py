"""Fixtures for the front end: a live front end on a free loopback port (in a thread, or as a `scalablejob frontend`
process), and the real eas-prediction SDK.

The SDK pins an old protobuf, so it lives in a virtualenv of its own, made once and kept in pytest's cache
folder (.pytest_cache); tests drive it through small scripts (tests/frontend/sdk_runner.py) run by that venv's
Python, against the live front end.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import resource
import signal
import subprocess
import sys
import venv
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from round_robin_proxy import RoundRobinProxy

from conftest import REPO, wait_until
from scalablejob.frontend.app import FrontEndService, create_app
from scalablejob.frontend.binding import FrontEnd, bind
from scalablejob.frontend.server import ServerThread
from scalablejob.model.config import ServiceConfig, parse_config

EAS_SDK = "eas-prediction==0.36"  # the SDK version the protocol was written against
EAS_VENV_READY = "ready.json"
SDK_RUNNER = Path(__file__).with_name("sdk_runner.py")
SDK_RESULT_MARK = "SDK-RESULT "
SDK_TIMEOUT_S = 120.0
TOKEN = "test-token"
FRONTEND_START_TIMEOUT_S = 30.0
FRONTEND_STOP_TIMEOUT_S = 15.0
_LISTENING = re.compile(r"listening on (http://\S+)")
_TOKEN_SHOWN = re.compile(r"^  /api/predict/(\S+) and \S+  token (\S+) \(generated: ", re.MULTILINE)
_TOKEN_FROM = re.compile(r"^  /api/predict/(\S+) and \S+  token from (.+) \(may submit [^)]*\)$", re.MULTILINE)


@dataclass(frozen=True)
class Served:
    """A live front end: its base URL and the token of each front end it serves."""

    url: str
    tokens: Mapping[str, str]
    thread: ServerThread | None = field(default=None, compare=False)  # the server, when served in this process

    @property
    def endpoint(self) -> str:
        """host:port, as the SDK takes it."""
        return self.url.removeprefix("http://")

    def token(self, name: str | None = None) -> str:
        return self.tokens[name] if name else next(iter(self.tokens.values()))


@pytest.fixture
def serve(redis_url: str) -> Iterator[Callable[..., Served]]:
    """Start front ends (uvicorn in a thread, on a free port) for a service config; all stop after the test."""
    threads: list[ServerThread] = []

    def start(
        config: dict[str, Any], *, names: Sequence[str] = (), token: str | None = TOKEN,
        max_body_bytes: int | None = None,
    ) -> Served:  # fmt: skip
        service_config = parse_config(config)
        client = redis.Redis.from_url(redis_url)
        try:
            front_ends = bind(client, service_config, names, token)
        finally:
            client.close()
        limits = service_config.security.http
        service = FrontEndService(
            front_ends, redis_url, default_task_type=service_config.scalable_job.default_task_type,
            max_body_bytes=max_body_bytes or service_config.queue.max_payload_bytes, limits=limits,
        )  # fmt: skip
        threads.append(ServerThread(create_app(service), limits=limits).start())
        tokens = {fe.name: _known_token(fe, token, service_config) for fe in front_ends}
        return Served(threads[-1].url, tokens, threads[-1])

    yield start
    for thread in threads:
        thread.stop()


@dataclass
class FrontEndProcess:
    """A `scalablejob frontend` process, its stdout and stderr in one log file."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def started(self) -> tuple[str, dict[str, tuple[str, str]]]:
        """(base URL, name -> (token, where it came from)), once the process printed them."""
        url = wait_until(
            lambda: self._listening(), FRONTEND_START_TIMEOUT_S, "the front end never said where it listens"
        )
        log = self.log()
        shown = {name: (token, "generated") for name, token in _TOKEN_SHOWN.findall(log)}
        return url, shown | {name: ("not shown", source) for name, source in _TOKEN_FROM.findall(log)}

    def _listening(self) -> str | None:
        if self.process.poll() is not None:
            pytest.fail(f"the front end exited {self.process.returncode}:\n{self.log()}")
        found = _LISTENING.search(self.log())
        return found.group(1) if found and (_TOKEN_SHOWN.search(self.log()) or _TOKEN_FROM.search(self.log())) else None

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                return self.process.wait(FRONTEND_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


@pytest.fixture
def start_frontend(tmp_path: Path, redis_url: str) -> Iterator[Callable[..., FrontEndProcess]]:
    """Run `scalablejob frontend CONFIG --port 0 --broker URL [ARGS]` (with a soft limit of `open_files` open files,
    if given); every process is stopped after the test."""
    processes: list[FrontEndProcess] = []

    def start(
        config: dict, *args: str, env: dict[str, str] | None = None, open_files: int | None = None
    ) -> FrontEndProcess:
        config_path = tmp_path / "service.json"
        config_path.write_text(json.dumps(config))
        log_path = tmp_path / f"frontend-{len(processes)}.log"
        argv = [sys.executable, "-m", "scalablejob", "frontend", str(config_path), "--port", "0", "--broker", redis_url]
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*argv, *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                preexec_fn=None if open_files is None else lambda: _limit_open_files(open_files),
            )  # fmt: skip
        processes.append(FrontEndProcess(process, log_path))
        return processes[-1]

    yield start
    for frontend in processes:
        frontend.stop()


@pytest.fixture
def serve_spread(start_frontend: Callable[..., FrontEndProcess]) -> Iterator[Callable[..., Served]]:
    """Like `serve`, with two `scalablejob frontend` processes (as two hosts) behind a round-robin TCP proxy: the
    Served URL is the proxy's. The SDK keeps its HTTP connections alive, so each client (and each watcher's
    websocket) sticks to one process, and a test that opened two connections or more must have reached both."""
    proxies: list[RoundRobinProxy] = []

    def start(
        config: dict[str, Any], *, names: Sequence[str] = (), token: str | None = TOKEN,
        max_body_bytes: int | None = None,
    ) -> Served:  # fmt: skip
        args = [arg for name in names for arg in ("--name", name)]
        args += ["--max-body-bytes", str(max_body_bytes)] if max_body_bytes else []
        env = {"SCALABLEJOB_FRONTEND_TOKEN": token} if token else {}
        first_url, first_tokens = start_frontend(config, *args, env=env).started()  # binds (makes tokens) first
        second_url, _ = start_frontend(config, *args, env=env).started()
        backends = [urlsplit(url) for url in (first_url, second_url)]
        proxies.append(RoundRobinProxy([(b.hostname or "", b.port or 0) for b in backends]).start())
        shown = {name: token or shown for name, (shown, _) in first_tokens.items()}
        return Served(f"http://127.0.0.1:{proxies[-1].port}", shown)

    yield start
    for proxy in proxies:
        proxy.stop()
        if sum(proxy.connections.values()) >= 2:
            assert len(proxy.connections) == 2, f"connections did not reach both processes: {proxy.connections}"


def _limit_open_files(soft: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _known_token(front_end: FrontEnd, given: str | None, config: ServiceConfig) -> str:
    """The token a test can present: the one it gave, the config's, or the one made at bind (Redis has only hashes)."""
    configured = config.front_end.token if config.front_end is not None else None
    return front_end.new_token or given or (configured if front_end.token_source == "config" else None) or ""


def _venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


@pytest.fixture(scope="session")
def eas_python(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a virtualenv holding the eas-prediction SDK: made once, then reused from pytest's cache
    (.pytest_cache/d/eas-venv; without the cache plugin, a temporary folder for this session)."""
    cache = getattr(pytestconfig, "cache", None)
    folder = Path(cache.mkdir("eas-venv")) if cache is not None else tmp_path_factory.mktemp("eas-venv")
    with (folder.parent / "eas-venv.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist's workers share the cache: one builds, the others wait
        return _sdk_venv(folder)


def _sdk_venv(folder: Path) -> Path:
    """The SDK's virtualenv in `folder`, reused if it is ready, made again otherwise."""
    python = _venv_python(folder)
    ready = folder / EAS_VENV_READY
    if ready.is_file() and json.loads(ready.read_text()).get("sdk") == EAS_SDK and _sdk_imports(python):
        return python
    venv.EnvBuilder(clear=True, with_pip=True).create(folder)
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", EAS_SDK],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if install.returncode != 0 or not _sdk_imports(python):
        pytest.fail(f"could not install {EAS_SDK} into {folder}:\n{install.stdout}\n{install.stderr}")
    ready.write_text(json.dumps({"sdk": EAS_SDK, "python": sys.version}))
    return python


def _sdk_imports(python: Path) -> bool:
    if not python.is_file():
        return False
    probe = subprocess.run([str(python), "-c", "import eas_prediction"], capture_output=True, timeout=60)
    return probe.returncode == 0


@pytest.fixture
def run_sdk(eas_python: Path) -> Callable[..., dict[str, Any]]:
    """Run a snippet with the SDK against a live front end; returns what the snippet passed to `out(...)`."""

    def run(served: Served, code: str, *, name: str | None = None, timeout: float = SDK_TIMEOUT_S) -> dict[str, Any]:
        env = {
            **os.environ, "SDK_ENDPOINT": served.endpoint, "SDK_TOKEN": served.token(name),
            "SDK_QUEUE": name or next(iter(served.tokens)),
        }  # fmt: skip
        env.pop("PYTHONPATH", None)  # the SDK's venv must not see this project's packages
        done = subprocess.run(
            [str(eas_python), str(SDK_RUNNER)], input=code, capture_output=True, text=True, env=env, timeout=timeout
        )
        results: dict[str, Any] = {}
        for line in done.stdout.splitlines():
            if line.startswith(SDK_RESULT_MARK):
                results.update(json.loads(line.removeprefix(SDK_RESULT_MARK)))
        if done.returncode != 0:
            output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
            pytest.fail(f"SDK script failed ({done.returncode}):\n{code}\n{output}")
        return results

    return run
