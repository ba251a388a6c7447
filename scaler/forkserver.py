"""Pre-warmed workers: a warm parent that has imported Celery, the config and the user's module once, and forks a
worker on demand (as multiprocessing's forkserver or Gunicorn's preload), so a new worker skips the interpreter
start and the imports.

Two ends, one module: `ForkServer` is the scaler's end (a client over a socketpair); `main` is the server, a process
of its own started with `python -m scalablejob.scaler.forkserver`. It knows nothing of workers: it calls a warm-up
entry once and a run entry in each child (both `module:attribute`, given by the launcher), so it imports no layer.

Messages are JSON lines. Server -> scaler: {"warm": true} once warm, or {"warm": false, "why": ...} when forking is
unsafe (the user module started threads or touched CUDA at import) and it exits; {"pid": N} per fork request;
{"exit": NAME, "code": C} per child that ended (C as Popen's returncode: -N for a signal), each followed by a
SIGCHLD to the scaler, whose loop wakes on it as for its own children. Scaler -> server: {"fork": NAME,
"env": {...}, "log": PATH|null}; closing the socket stops the server, never its children.

A forked child starts its own session, takes its environment (CUDA_VISIBLE_DEVICES, the worker's name) before it
runs anything, then runs the entry. Its /proc/PID/environ still shows the server's environment (set at exec), which
carries FORK_SERVER_ENV: that is how an adopting scaler recognises a forked worker; what the worker starts gets its
real environment, name included.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from scalablejob.host.processes import dying_with_parent, forbid_inspection

logger = logging.getLogger(__name__)

PREWARM_ENV = "SCALABLEJOB_PREWARM"  # "0": the scaler starts every worker cold (default: from a fork server)
FORK_SERVER_ENV = "SCALABLEJOB_FORK_SERVER"  # in the server's environment, so in what psutil shows of its children
# The `scalablejob worker` command, which the scaler runs as a process (pool.WORKER_COMMAND): the fork server loads it
# by name, in its own process, as `python -m scalablejob worker` would; the scaler imports nothing of the CLI.
WORKER_WARM = "scalablejob.cli.worker:prewarm"
WORKER_RUN = "scalablejob.cli.worker:worker"
REPLY_TIMEOUT_S = 10.0


class ForkServer:
    """The scaler's end: start the server, ask it for workers, hear of their exits. Until the server reports warm,
    and after it is found unsafe or dead, `ready` is False and the caller starts workers cold."""

    def __init__(self, process: subprocess.Popen[bytes], channel: socket.socket) -> None:
        self._process = process
        self._channel = channel
        self._buffer = b""
        self._exits: list[tuple[str, int]] = []
        self._state = "starting"  # starting -> warm -> closed

    @classmethod
    def start(cls, args: Sequence[str], *, warm: str = WORKER_WARM, run: str = WORKER_RUN) -> ForkServer:
        """Start warming up in the background (`args` go to both entries); spawning never waits for it."""
        ours, theirs = socket.socketpair()
        argv = [sys.executable, "-m", "scalablejob.scaler.forkserver", str(theirs.fileno()), warm, run, *args]
        try:
            process = subprocess.Popen(
                dying_with_parent(argv), pass_fds=(theirs.fileno(),), env={**os.environ, FORK_SERVER_ENV: "1"},
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        ours.setblocking(False)
        return cls(process, ours)

    @property
    def ready(self) -> bool:
        if self._state == "starting":
            self._pump()
        return self._state == "warm"

    @property
    def alive(self) -> bool:
        """Whether it still runs: while it does, it reports every exit of its children."""
        return self._state != "closed" and self._process.poll() is None

    def fork(self, name: str, env: Mapping[str, str], log: Path | None) -> int | None:
        """A new worker's pid; None when the server failed (it is then closed, and the caller starts it cold)."""
        try:
            self._send({"fork": name, "env": dict(env), "log": str(log) if log else None})
            reply = self._next_reply()
        except OSError as exc:
            logger.warning("fork server failed (%s): starting workers cold from now on", exc)
            self.close()
            return None
        return int(reply["pid"])

    def exits(self) -> list[tuple[str, int]]:
        """(name, exit code) of the children that ended since the last call."""
        self._pump()
        exits, self._exits = self._exits, []
        return exits

    def close(self) -> None:
        """Stop the server (closing its socket is the request); its children live on."""
        if self._state == "closed":
            return
        self._state = "closed"
        self._channel.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _send(self, message: dict[str, Any]) -> None:
        if self._state != "warm":
            raise OSError("the fork server is not running")
        self._channel.setblocking(True)
        try:
            self._channel.sendall(json.dumps(message).encode() + b"\n")
        finally:
            self._channel.setblocking(False)

    def _next_reply(self) -> dict[str, Any]:
        """Wait for the answer to the request just sent; exit reports met meanwhile are kept."""
        while True:
            for message in self._messages():
                if "pid" in message:
                    return message
            ready, _, _ = select.select([self._channel], [], [], REPLY_TIMEOUT_S)
            if not ready or not self._read():
                raise OSError("no answer from the fork server")

    def _pump(self) -> None:
        """Read whatever the server sent, without waiting."""
        if self._state != "closed":
            self._read()
            for message in self._messages():
                if "pid" in message:  # pragma: no cover - replies are read by _next_reply
                    logger.warning("fork server: unexpected reply %s", message)

    def _read(self) -> bool:
        """Append what is available to the buffer; False at end of stream (the server is gone)."""
        try:
            data = self._channel.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            if self._state == "starting":
                logger.warning("fork server exited while warming up: starting workers cold")
            self._state = "closed"
            self._channel.close()
            return False
        self._buffer += data
        return True

    def _messages(self) -> list[dict[str, Any]]:
        """The complete messages in the buffer; state changes and exits are taken in, replies returned."""
        *lines, self._buffer = self._buffer.split(b"\n")
        replies = []
        for line in lines:
            message = json.loads(line)
            if "exit" in message:
                self._exits.append((message["exit"], int(message["code"])))
            elif "warm" in message:
                self._on_warm(message)
            else:
                replies.append(message)
        return replies

    def _on_warm(self, message: dict[str, Any]) -> None:
        if message["warm"]:
            self._state = "warm"
            logger.info("fork server (pid %d) is warm: new workers are forked from it", self._process.pid)
        else:
            logger.warning("fork server: %s; starting workers cold", message["why"])


def unsafe_to_fork() -> str | None:
    """Why forking this process now would be unsafe (None: safe): threads other than this one would be missing in
    the child, with any lock they held; a CUDA context does not survive a fork."""
    threads = threading.active_count()
    if threads > 1:
        return f"the user module started {threads - 1} thread(s) at import, so forking is unsafe"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and cuda.is_initialized():
        return "the user module initialised CUDA at import, so forking is unsafe"
    if _gpu_device_open():
        return "the user module opened an NVIDIA device at import, so forking is unsafe"
    return None


def _gpu_device_open() -> bool:
    """Whether this process holds an NVIDIA device open: the CUDA driver was initialised (by whatever library)."""
    with contextlib.suppress(OSError):
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith("/dev/nvidia"):
                    return True
    return False


def entry(spec: str) -> Callable[[list[str]], Any]:
    """`module:attribute`, imported."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)  # type: ignore[no-any-return]


def exit_code(status: int) -> int:
    """A wait status as Popen reports it: the exit code, or -N when signal N ended the process."""
    return os.waitstatus_to_exitcode(status)


class _Server:
    """The warm parent's loop: fork on request, report each child's end."""

    def __init__(self, channel: socket.socket, run: Callable[[list[str]], Any], args: list[str]) -> None:
        self._channel = channel
        self._run = run
        self._args = args
        self._parent = os.getppid()
        self._children: dict[int, str] = {}
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wake only: select returns, the loop reaps
        signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        buffer = b""
        while True:
            ready, _, _ = select.select([self._channel.fileno(), self._wake_read], [], [])
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_read, 512):
                    pass
            self._reap()
            if self._channel.fileno() in ready:
                data = self._channel.recv(65536)
                if not data:
                    return  # the scaler closed its end, or died: stop; the children live on
                *lines, buffer = (buffer + data).split(b"\n")
                for line in lines:
                    request = json.loads(line)
                    pid = self._fork(request["fork"], request["env"], request["log"])
                    self._children[pid] = request["fork"]
                    self._send({"pid": pid})

    def _reap(self) -> None:
        ended = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            name = self._children.pop(pid, None)
            if name is not None:
                self._send({"exit": name, "code": exit_code(status)})
                ended = True
        if ended and os.getppid() == self._parent:
            os.kill(self._parent, signal.SIGCHLD)  # wakes the scaler's loop as its own child's end would

    def _send(self, message: dict[str, Any]) -> None:
        self._channel.sendall(json.dumps(message).encode() + b"\n")

    def _fork(self, name: str, env: dict[str, str], log: str | None) -> int:
        pid = os.fork()
        if pid:
            return pid
        code: Any = 1
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # as in a new interpreter
            signal.signal(signal.SIGINT, signal.default_int_handler)
            for fd in (self._wake_read, self._wake_write):
                os.close(fd)
            self._channel.close()
            os.environ.update(env)  # before anything runs: CUDA reads CUDA_VISIBLE_DEVICES when it starts
            _redirect(log)
            code = self._run([*self._args, "-n", name])
        except SystemExit as exc:
            code = exc.code
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            if code is not None and not isinstance(code, int):
                print(code, file=sys.stderr)
                code = 1
            os._exit(code or 0)


def _redirect(log: str | None) -> None:
    """stdin from /dev/null; stdout and stderr to the worker's log, when it has one."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    if log is not None:
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)


def main(argv: list[str]) -> int:
    """FD WARM RUN ARGS...: warm up with WARM(ARGS), tell the scaler on FD, then fork RUN(ARGS + [-n NAME])."""
    fd, warm, run, *args = argv
    channel = socket.socket(fileno=int(fd))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the scaler decides when this ends
    forbid_inspection()  # it imports the user code and holds the broker's URL, as the workers it forks do
    try:
        entry(warm)(args)
        why = unsafe_to_fork()
    except Exception as exc:  # the worker's own start will report it, cold
        why = f"warm-up failed ({type(exc).__name__}: {exc})"
    if why is not None:
        channel.sendall(json.dumps({"warm": False, "why": why}).encode() + b"\n")
        return 0
    channel.sendall(b'{"warm": true}\n')
    _Server(channel, entry(run), args).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
