"""Serving the front end with uvicorn: on a socket bound first (so `--port 0` can say which port it got), in the
foreground for the CLI, or in a thread for programs that embed it (tests, an integrated user front end); always
through the guarded httptools protocol (upstream.uvicorn_internals), with the service's connection limits."""

from __future__ import annotations

import resource
import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from scalablejob.model.config import HttpLimits
from scalablejob.model.errors import BindingError
from scalablejob.upstream.uvicorn_internals import guarded_protocol

GRACEFUL_SHUTDOWN_S = 3  # open watchers are closed after this on stop
START_TIMEOUT_S = 15.0
WS_MAX_MESSAGE_BYTES = 64 * 1024  # a watcher's client sends nothing we read: a small cap, not uvicorn's 16 MiB
OPEN_FILES_HEADROOM = 64  # files beyond client connections: the listening socket, Redis connections, logs, imports


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (0: a free port); BindingError if the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindingError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def allow_open_files(connections: int) -> str | None:
    """Raise this process's soft limit on open files so that `connections` client connections fit: many systems
    start a process with 1,024, about the default connection cap, past which accept() fails instead of the cap
    answering. A warning to show when the hard limit is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + OPEN_FILES_HEADROOM
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return None
    allowed = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (allowed, hard))
    if allowed >= wanted:
        return None
    return (f"warning: this process may open at most {allowed} files (its hard limit, ulimit -Hn), too few for "
            f"security.http.max_connections ({connections}) and {OPEN_FILES_HEADROOM} more: beyond that, new "
            "connections fail without an answer; raise the hard limit, or lower max_connections")  # fmt: skip


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app: ASGIApp, *, limits: HttpLimits | None = None, log_level: str = "info") -> uvicorn.Server:
    limits = limits or HttpLimits()
    config = uvicorn.Config(
        app, http=guarded_protocol(limits), timeout_keep_alive=limits.keep_alive_s, ws_max_size=WS_MAX_MESSAGE_BYTES,
        log_level=log_level, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, lifespan="on", access_log=False,
        proxy_headers=False,  # nothing reads the client address it would rewrite; the dashboard reads the header
    )  # fmt: skip
    return uvicorn.Server(config)


class ServerThread:
    """The front end served from a thread of this process, on a socket of its own; `stop` ends it."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, *, limits: HttpLimits | None = None,
        log_level: str = "warning",
    ) -> None:  # fmt: skip
        self.socket = bind_socket(host, port)
        self.url = base_url(self.socket)
        self.server = make_server(app, limits=limits, log_level=log_level)
        self._thread = threading.Thread(target=self._run, name=f"frontend {self.url}", daemon=True)

    def _run(self) -> None:
        self.server.run(sockets=[self.socket])

    def start(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise BindingError(f"the front end at {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(GRACEFUL_SHUTDOWN_S + 5)
        self.socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
