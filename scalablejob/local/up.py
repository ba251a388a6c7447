"""`scalablejob up`: the whole stack of one service in the foreground, stopped cleanly by Ctrl-C.

The parts are the commands a Procfile runs (frontend, scaler, flower, the user's front-end script), each a
child in its own session, so Ctrl-C reaches only this supervisor, which then stops them in order: the scaler
first (its workers finish their tasks), then the rest, then the embedded Redis, whose append-only file keeps
every queued task for the next `up`.

Nothing keeps the stack from stopping: SIGINT, SIGTERM and SIGHUP (a closed terminal) stop it, also while it starts;
output that cannot be written (the reader of a pipe died, the terminal closed) is dropped instead of raising; and
if this process dies without stopping them (kill -9), the kernel sends every part SIGTERM, and a keeper process
(stack_keeper) waits for them and stops Redis last. The data folder records which `up` runs there, so a second one
refuses to start and `scalablejob down` can stop it. A Redis that exits while the stack runs is started again
(broker_restarts); one that holds acknowledged writes it could not put on a full disk is left running at the stop,
recorded, rather than lose them; and a data folder that cannot be written is one line, with nothing left running.

No part gets a secret on its command line (which every local user can read): the broker URL goes to the front end and
the scaler in SCALABLEJOB_BROKER (the scaler hands it on to its workers the same way), to Flower in CELERY_BROKER_URL
with its login in FLOWER_BASIC_AUTH; `up` prints the broker's URL with its password masked. The user's front-end
script gets none of them (see redaction.without_secrets).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from scalablejob.host.processes import dying_with_parent, stop_group, wait_for_listener
from scalablejob.host.secret_files import ensure_secret, private_folder
from scalablejob.local.broker_restarts import BrokerRestarts
from scalablejob.local.embedded_broker import EmbeddedBroker, resolve_broker
from scalablejob.local.flower import FlowerLogin, flower_env, flower_login
from scalablejob.local.redis_server import DEFAULT_APPENDFSYNC
from scalablejob.local.stack_keeper import Keeper
from scalablejob.local.stack_record import StackLock, StackRecord
from scalablejob.model.config import ServiceConfig
from scalablejob.model.errors import ScalableJobError
from scalablejob.model.redaction import masked_url, without_secrets
from scalablejob.store.broker import BROKER_ENV

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
ENDPOINT_ENV, SERVICE_ENV, TOKEN_ENV = "SCALABLEJOB_ENDPOINT", "SCALABLEJOB_SERVICE", "SCALABLEJOB_TOKEN"
FRONTEND_TOKEN_ENV = "SCALABLEJOB_FRONTEND_TOKEN"  # what `scalablejob frontend` reads its token from (its --token)
FRONTEND_TOKEN_FILE = "frontend.token"  # 0600 in the data folder: the front end's token, made by the first `up`
FRONTEND_TOKEN_BYTES = 24
_LISTENING = re.compile(r"listening on (http://\S+)")


class Output:
    """`up`'s output, which must never keep the stack from stopping: once a line cannot be written (the reader of the
    pipe died, the terminal closed), it and every later one are dropped.

    Each part's pump thread writes here beside `up`'s own lines, so a line goes out whole, in one write under a lock:
    print() writes the text and its newline apart, and another thread's line could land between them."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lost = False
        self._writing = threading.RLock()  # reentrant: a signal handler may write while its thread holds it

    def line(self, text: str) -> None:
        with self._writing:
            if self.lost:
                return
            try:
                self.stream.write(text + "\n")
                self.stream.flush()
            except (OSError, ValueError):  # EPIPE, EIO from a hung-up terminal; ValueError: the stream is closed
                self.lost = True
                _silence(self.stream)


def _silence(stream: TextIO) -> None:
    """Point the stream's descriptor at /dev/null, so that the interpreter's flush at exit has nothing to fail on."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


class StartInterrupted(BaseException):
    """A stop signal came while the stack was starting (a BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way swallows it)."""


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP, counted. While the stack starts (which may take minutes while Redis loads a big
    file) the first one also interrupts the start, so that the stack stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.count = 0
        self._interrupting = False
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, _signum: int, _frame: object) -> None:
        self.count += 1
        if self._interrupting:
            self._interrupting = False
            raise StartInterrupted

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """Within this block a stop signal raises StartInterrupted; one that came before it raises at once."""
        self._interrupting = True
        try:
            if self.count:
                raise StartInterrupted
            yield
        finally:
            self._interrupting = False


@dataclass
class Part:
    """One child of the stack: how to start it and what it printed that the others need. A `clean` part (user code)
    inherits `up`'s environment without its secrets."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    clean: bool = False
    process: subprocess.Popen[bytes] | None = None
    seen: dict[str, str] = field(default_factory=dict)
    _seen_event: threading.Event = field(default_factory=threading.Event)

    def start(self, out: Output) -> None:
        env = {**(without_secrets(os.environ) if self.clean else os.environ), **self.env}
        self.process = subprocess.Popen(
            dying_with_parent(self.argv, env), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._forward, args=(out,), name=f"{self.name}-output", daemon=True).start()

    def _forward(self, out: Output) -> None:
        """Print the child's lines with its name in front, and remember the address it listens on. It reads to the
        end even when the lines cannot be printed: a child blocked on a full pipe would never stop."""
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            for key, pattern in (("url", _LISTENING),):
                if key not in self.seen and (match := pattern.search(line)):
                    self.seen[key] = match.group(1)
                    self._seen_event.set()
            out.line(f"{self.name:>9} | {line}")

    def wait_seen(self, key: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while key not in self.seen:
            if self.exited or time.monotonic() > deadline:
                raise ScalableJobError(f"{self.name} did not report its {key} (exit status {self.exit_status})")
            self._seen_event.wait(0.1)
        return self.seen[key]

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    @property
    def exit_status(self) -> int | None:
        return None if self.process is None else self.process.poll()


def wait_for_port(host: str, port: int, part: Part, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Return once `port` accepts connections; fail early if the part that should open it exits."""
    assert part.process is not None
    if not wait_for_listener(part.process, host, port, timeout_s):
        raise ScalableJobError(f"{part.name} never listened on {host}:{port} (exit status {part.exit_status})")


@dataclass(frozen=True)
class StackOptions:
    config_path: str
    broker: str | None
    app_spec: str | None
    data_dir: Path
    frontend_port: int
    flower_port: int
    metrics_port: int
    appendfsync: str = DEFAULT_APPENDFSYNC
    flower_auth: bool = True  # False only when asked (--flower-no-auth)

    def ports(self) -> dict[str, int]:
        return {"frontend": self.frontend_port, "flower": self.flower_port, "metrics": self.metrics_port}


def flower_argv(port: int) -> list[str]:
    """Flower on loopback, `/metrics` behind its login; its broker and login come in its environment (flower_env).
    No --purge_offline_workers: Flower's totals are the sums of the rows it lists, and its `/metrics` counters go with
    a purged worker too, so a worker the scaler stopped stays listed, offline, with its counts."""
    return [
        sys.executable, "-m", "celery", "-A", "scalablejob.local.flower", "flower", f"--port={port}",
        "--address=127.0.0.1",
    ]  # fmt: skip


_CHECK_USER_CODE = "import sys; from scalablejob.api.user_code import load_job; load_job(sys.argv[1], sys.argv[2])"


def check_user_code(app_spec: str, service: str) -> None:
    """Load --app once in a throwaway process, so a bad module is one clear error, not workers that keep dying."""
    run = subprocess.run(
        [sys.executable, "-c", _CHECK_USER_CODE, app_spec, service], capture_output=True, text=True, timeout=120
    )
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines() or [f"exit status {run.returncode}"]
        raise ScalableJobError(lines[-1].split(": ", 1)[-1] if "UserCodeError" in lines[-1] else lines[-1])


def frontend_token(config: ServiceConfig, folder: Path) -> tuple[str, str]:
    """The front end's token (the config's, else the data folder's, made now if it has none), and what `up` may print
    of it: the token itself only when made now (Redis keeps only its hash, so it is never shown again)."""
    if config.front_end is not None and config.front_end.token:
        return config.front_end.token, "token from the config's front_end.token"
    path = private_folder(folder) / FRONTEND_TOKEN_FILE
    token, created = ensure_secret(path, lambda: secrets.token_urlsafe(FRONTEND_TOKEN_BYTES))
    return token, f"token {token}" if created else f"token in {path}"


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scalablejob", *args]


class Stack:
    """Starts, watches and stops every part of one service's stack."""

    def __init__(self, config: ServiceConfig, options: StackOptions, out: Output, keeper: Keeper) -> None:
        self.config = config
        self.options = options
        self.out = out
        self.keeper = keeper
        self.parts: list[Part] = []
        self.embedded: EmbeddedBroker | None = None
        self.broker_url = ""

    def start(self) -> dict[str, str]:
        """Start every part; returns what `up` prints: where each part listens, and the token."""
        opts = self.options
        self.broker_url, self.embedded = resolve_broker(
            opts.broker, opts.data_dir, guard=lambda pid: self.keeper.watch("redis", pid), appendfsync=opts.appendfsync
        )
        broker_env = {BROKER_ENV: self.broker_url}
        token, shown_token = frontend_token(self.config, opts.data_dir)
        frontend = self._spawn("frontend", _cli("frontend", opts.config_path, "--port", str(opts.frontend_port)),
                               {**broker_env, FRONTEND_TOKEN_ENV: token})  # fmt: skip
        endpoint = frontend.wait_seen("url", READY_TIMEOUT_S)
        scaler_args = ["--metrics-port", str(opts.metrics_port), "--log-dir", str(opts.data_dir / "logs")]
        scaler_args += ["--app", opts.app_spec] if opts.app_spec else []
        scaler = self._spawn("scaler", _cli("scaler", opts.config_path, *scaler_args), broker_env)
        login = self._flower_login()
        flower = self._spawn("flower", flower_argv(opts.flower_port), flower_env(self.broker_url, login))
        wait_for_port("127.0.0.1", opts.flower_port, flower)
        wait_for_port("127.0.0.1", opts.metrics_port, scaler)
        addresses = {"broker": masked_url(self.broker_url), "frontend": endpoint, "token": shown_token,
                     "dashboard": f"{endpoint}/dashboard",
                     "flower": f"http://127.0.0.1:{opts.flower_port}",
                     "flower_login": login.describe() if login else "no login (--flower-no-auth)",
                     "metrics": f"http://127.0.0.1:{opts.metrics_port}/metrics"}  # fmt: skip
        self._start_user_front_end(endpoint, token, addresses)
        return addresses

    def _flower_login(self) -> FlowerLogin | None:
        """The data folder's Flower login (made, and said so, the first time), or None when --flower-no-auth."""
        if not self.options.flower_auth:
            return None
        login = flower_login(self.options.data_dir)
        if login.created:
            self.out.line(f"flower login made: {login.describe()} (readable by you only)")
        return login

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None, *, clean: bool = False) -> Part:
        part = Part(name, argv, env or {}, clean=clean)
        self.parts.append(part)  # first: a start interrupted half way still gets stopped
        self.restart(part)
        return part

    def restart(self, part: Part) -> None:
        part.start(self.out)
        assert part.process is not None
        self.keeper.watch(part.name, part.process.pid)

    def _start_user_front_end(self, endpoint: str, token: str, addresses: dict[str, str]) -> None:
        """Integrated mode: the user's own front-end program, told where the queue service is."""
        front_end = self.config.front_end
        if front_end is None or not front_end.script:
            return
        env = {ENDPOINT_ENV: endpoint, SERVICE_ENV: self.config.name, TOKEN_ENV: token}
        if front_end.port:
            env["PORT"] = str(front_end.port)
        self._spawn("script", ["/bin/sh", "-c", front_end.script], env, clean=True)
        if front_end.port:
            addresses["script"] = f"http://127.0.0.1:{front_end.port}"

    def first_exited(self) -> Part | None:
        return next((part for part in self.parts if part.exited), None)

    @property
    def started_anything(self) -> bool:
        return bool(self.parts) or self.embedded is not None

    def stop(self, is_urgent: Callable[[], bool] = lambda: False) -> str | None:
        """Scaler first (warm: running tasks finish, or go back on the queue when urgent), then the rest, then Redis;
        returns why Redis was left running (it holds writes that it could not put in its file), if it was."""
        try:
            for part in sorted(self.parts, key=lambda p: p.name != "scaler"):
                if part.process is None:
                    continue
                if part.name == "scaler" and not part.exited:
                    _stop_scaler(part.process, is_urgent)
                stop_group(part.process, STOP_GRACE_S)
        finally:
            left = self.embedded.stop() if self.embedded is not None else None
        return left


def _stop_scaler(process: subprocess.Popen[bytes], is_urgent: Callable[[], bool]) -> None:
    """Warm: its workers finish their tasks; when urgent, its second signal puts them back on the queue instead."""
    process.send_signal(signal.SIGTERM)
    while process.poll() is None:
        if is_urgent():
            process.send_signal(signal.SIGTERM)
            return
        time.sleep(0.1)


SCRIPT_RESTART_S = 5.0


def run_up(config: ServiceConfig, options: StackOptions, out: TextIO = sys.stdout) -> int:
    """Run the stack until SIGINT, SIGTERM or SIGHUP (0) or until a part dies (1); a second signal hurries the stop.
    Refuses (StackAlreadyRunning) before starting anything if another `up` runs in the data folder."""
    output = Output(out)
    signals = StopSignals()
    with StackLock(options.data_dir) as lock:
        lock.acquire(StackRecord(os.getpid(), options.ports()))
        keeper = Keeper(options.data_dir, lock.fileno())
        stack = Stack(config, options, output, keeper)
        status = 1
        try:
            status = _start_and_watch(stack, signals)
        except OSError as exc:  # the data folder cannot be written (a full disk): one line, not a traceback
            raise ScalableJobError(f"scalablejob up could not start: {_what_failed(exc, options.data_dir)}") from exc
        finally:
            if not _stop(stack, signals):
                status = 1
            keeper.release()
        return status


def _what_failed(exc: OSError, folder: Path) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    full = f"; free space on the disk of {folder}, then start again" if exc.errno == errno.ENOSPC else ""
    return f"{exc.strerror or exc}{where}{full}"


def _start_and_watch(stack: Stack, signals: StopSignals) -> int:
    try:
        with signals.interrupting():
            if stack.options.app_spec:  # before anything starts, so that a bad module leaves nothing to stop
                check_user_code(stack.options.app_spec, stack.config.name)
            addresses = stack.start()
    except StartInterrupted:
        return 0
    print_addresses(stack.config, addresses, stack.out)
    return _watch(stack, signals)


def _stop(stack: Stack, signals: StopSignals) -> bool:
    """Stop the stack; False if its Redis had to be left running (said in one line, with what to do)."""
    if not stack.started_anything:
        return True
    stack.out.line("stopping: workers finish their tasks first (Ctrl-C again: stop them now, tasks back on the queue)")
    count_before = signals.count
    left = stack.stop(is_urgent=lambda: signals.count > count_before)
    if left is None:
        stack.out.line("stopped")
        return True
    folder = stack.options.data_dir
    stack.out.line(f"stopped, except Redis: {left}; stopping it now would lose them. Free space there, then "
                   f"`scalablejob down --data-dir {folder}` stops it once they are written")  # fmt: skip
    return False


def _watch(stack: Stack, signals: StopSignals) -> int:
    """Wait for a stop signal; restart the user's front-end script and the embedded Redis if they die, give up if
    another part does."""
    last_restart = 0.0
    broker = BrokerRestarts(stack.embedded, stack.out.line) if stack.embedded is not None else None
    while not signals.count:
        if broker is not None and broker.due:
            try:
                with signals.interrupting():  # a restart waits while Redis loads its file: a stop signal ends it
                    broker.check()
            except StartInterrupted:
                return 0
        part = stack.first_exited()
        if part is not None and part.name == "script" and time.monotonic() - last_restart > SCRIPT_RESTART_S:
            stack.out.line(f"front-end script exited {part.exit_status}: restarting it")
            last_restart = time.monotonic()
            stack.restart(part)
        elif part is not None and part.name != "script":
            stack.out.line(f"{part.name} exited {part.exit_status}: stopping the stack")
            return 1
        time.sleep(0.1)
    return 0


def print_addresses(config: ServiceConfig, addresses: dict[str, str], out: Output) -> None:
    rows = [
        ("broker", addresses["broker"]),
        ("front end", f"{addresses['frontend']}/api/predict/{config.name}   {addresses['token']}"),
        ("dashboard", f"{addresses['dashboard']}   log in with the front end's token"),
        ("flower", f"{addresses['flower']}   {addresses['flower_login']}"),
        ("metrics", addresses["metrics"]),
        *([("your app", addresses["script"])] if "script" in addresses else []),
    ]
    out.line(f"scalablejob up: service {config.name} ({config.metadata.type})")
    for name, where in rows:
        out.line(f"  {name:<10} {where}")
    out.line("  Ctrl-C stops everything")
