"""The local HTTP model server of `containers[0]`: started once per worker, each query POSTed to it."""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping

from scalablejob.host.job_user import JobUser, as_user
from scalablejob.host.processes import dying_with_parent, stop_group, wait_for_listener
from scalablejob.model.errors import HandlerError, ModelServerError
from scalablejob.model.redaction import without_secrets
from scalablejob.workers.command import with_worker_python

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 120.0
REQUEST_TIMEOUT_S = 600.0
STOP_GRACE_S = 10.0
DEATH_GRACE_S = 1.0


class ModelServer:
    """One model server process and the port it answers on."""

    def __init__(
        self, command: str, port: int, *, env: Mapping[str, str] | None = None, host: str = "127.0.0.1",
        user: JobUser | None = None,
    ) -> None:  # fmt: skip
        self.command = command
        self.port = port
        self.host = host
        self.url = f"http://{host}:{port}/"
        self._env = dict(env or {})
        self._user = user  # scalable_job.run_as
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    def start(self, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        """Start the server and return once its port accepts connections."""
        env = {**without_secrets(os.environ), **self._env}  # user code too: no broker URL, password or token
        try:
            self._process = subprocess.Popen(
                dying_with_parent(with_worker_python(shlex.split(self.command)), env),
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                **as_user(self._user, env),
            )
        except OSError as exc:
            raise ModelServerError(f"model server {self.command!r} could not start: {exc}") from exc
        if not wait_for_listener(self._process, self.host, self.port, timeout_s):
            code = self.exit_code
            self.stop()
            if code is not None:
                raise ModelServerError(f"model server {self.command!r} exited with code {code} before listening")
            raise ModelServerError(
                f"model server {self.command!r} did not listen on port {self.port} within the startup timeout"
            )
        logger.info("model server %r answers on %s", self.command, self.url)

    @property
    def exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def forward(self, body: bytes, timeout_s: float = REQUEST_TIMEOUT_S) -> bytes:
        """POST one query body and return the response body; HandlerError for an HTTP error answer."""
        request = urllib.request.Request(
            self.url, data=body, method="POST", headers={"Content-Type": "application/octet-stream"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:2048].decode("utf-8", "replace")
            raise HandlerError(f"model server answered HTTP {exc.code}: {detail}") from None
        except OSError as exc:
            code = self._exit_code_within(DEATH_GRACE_S)  # a dropped connection is often the first sign of death
            if code is not None:
                raise ModelServerError(f"model server {self.command!r} died (exit code {code})") from exc
            raise ModelServerError(f"model server on port {self.port} did not answer: {exc}") from exc

    def _exit_code_within(self, seconds: float) -> int | None:
        if self._process is None:
            return None
        try:
            return self._process.wait(seconds)
        except subprocess.TimeoutExpired:
            return None

    def watch(self, on_death: Callable[[int], None]) -> None:
        """Call `on_death(exit_code)` from a daemon thread if the server exits without being asked to."""

        def wait() -> None:
            assert self._process is not None
            code = self._process.wait()
            if not self._stopping.is_set():
                on_death(code)

        threading.Thread(target=wait, name="model-server-watch", daemon=True).start()

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM the server's process group, SIGKILL it after `grace_s`."""
        self._stopping.set()
        if self._process is not None:
            stop_group(self._process, grace_s)
