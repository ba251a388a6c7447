"""`scalablejob up`: the whole stack of one service in the foreground, stopped cleanly by Ctrl-C.

The parts are the commands a Procfile runs (frontend, scaler, flower, the user's front-end script), each a
child in its own session, so Ctrl-C reaches only this supervisor, which then stops them in order: the scaler
first (its workers finish their tasks), then the rest, then the embedded Redis, whose append-only file keeps
every queued task for the next `up`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from scalablejob.broker import EmbeddedBroker, resolve_broker
from scalablejob.config import ServiceConfig
from scalablejob.errors import ScalableJobError
from scalablejob.processes import dying_with_parent, stop_group, wait_for_listener

READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 15.0
ENDPOINT_ENV, SERVICE_ENV, TOKEN_ENV = "SCALABLEJOB_ENDPOINT", "SCALABLEJOB_SERVICE", "SCALABLEJOB_TOKEN"
_LISTENING = re.compile(r"listening on (http://\S+)")
_TOKEN = re.compile(r"token (\S+) \(")


@dataclass
class Part:
    """One child of the stack: how to start it and what it printed that the others need."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    seen: dict[str, str] = field(default_factory=dict)
    _seen_event: threading.Event = field(default_factory=threading.Event)

    def start(self, out: TextIO) -> None:
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            dying_with_parent(self.argv, env), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        threading.Thread(target=self._forward, args=(out,), name=f"{self.name}-output", daemon=True).start()

    def _forward(self, out: TextIO) -> None:
        """Print the child's lines with its name in front, and remember its address and token lines."""
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            for key, pattern in (("url", _LISTENING), ("token", _TOKEN)):
                if key not in self.seen and (match := pattern.search(line)):
                    self.seen[key] = match.group(1)
                    self._seen_event.set()
            print(f"{self.name:>9} | {line}", file=out, flush=True)

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


_CHECK_USER_CODE = "import sys; from scalablejob.user_code import load_job; load_job(sys.argv[1], sys.argv[2])"


def check_user_code(app_spec: str, service: str) -> None:
    """Load --app once in a throwaway process, so a bad module is one clear error, not workers that keep dying."""
    run = subprocess.run(
        [sys.executable, "-c", _CHECK_USER_CODE, app_spec, service], capture_output=True, text=True, timeout=120
    )
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines() or [f"exit status {run.returncode}"]
        raise ScalableJobError(lines[-1].split(": ", 1)[-1] if "UserCodeError" in lines[-1] else lines[-1])


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scalablejob", *args]


class Stack:
    """Starts, watches and stops every part of one service's stack."""

    def __init__(self, config: ServiceConfig, options: StackOptions, out: TextIO = sys.stdout) -> None:
        self.config = config
        self.options = options
        self.out = out
        self.parts: list[Part] = []
        self.embedded: EmbeddedBroker | None = None
        self.broker_url = ""

    def start(self) -> dict[str, str]:
        """Start every part; returns what `up` prints: where each part listens, and the token."""
        self.broker_url, self.embedded = resolve_broker(self.options.broker, self.options.data_dir)
        opts, url = self.options, self.broker_url
        frontend = self._spawn("frontend", _cli("frontend", opts.config_path, "--port", str(opts.frontend_port),
                                                "--broker", url))  # fmt: skip
        endpoint, token = frontend.wait_seen("url", READY_TIMEOUT_S), frontend.wait_seen("token", READY_TIMEOUT_S)
        scaler_args = ["--metrics-port", str(opts.metrics_port), "--log-dir", str(opts.data_dir / "logs")]
        scaler = self._spawn("scaler", _cli("scaler", opts.config_path, "--broker", url, *scaler_args,
                                            *(["--app", opts.app_spec] if opts.app_spec else [])))  # fmt: skip
        flower = self._spawn("flower", [sys.executable, "-m", "celery", "--broker", url, "flower",
                                        f"--port={opts.flower_port}", "--address=127.0.0.1"])  # fmt: skip
        wait_for_port("127.0.0.1", opts.flower_port, flower)
        wait_for_port("127.0.0.1", opts.metrics_port, scaler)
        addresses = {"broker": url, "frontend": endpoint, "token": token,
                     "flower": f"http://127.0.0.1:{opts.flower_port}",
                     "metrics": f"http://127.0.0.1:{opts.metrics_port}/metrics"}  # fmt: skip
        self._start_user_front_end(endpoint, token, addresses)
        return addresses

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Part:
        part = Part(name, argv, env or {})
        part.start(self.out)
        self.parts.append(part)
        return part

    def _start_user_front_end(self, endpoint: str, token: str, addresses: dict[str, str]) -> None:
        """Integrated mode: the user's own front-end program, told where the queue service is."""
        front_end = self.config.front_end
        if front_end is None or not front_end.script:
            return
        env = {ENDPOINT_ENV: endpoint, SERVICE_ENV: self.config.name, TOKEN_ENV: token}
        if front_end.port:
            env["PORT"] = str(front_end.port)
        self._spawn("script", ["/bin/sh", "-c", front_end.script], env)
        if front_end.port:
            addresses["script"] = f"http://127.0.0.1:{front_end.port}"

    def first_exited(self) -> Part | None:
        return next((part for part in self.parts if part.exited), None)

    def stop(self, is_urgent: Callable[[], bool] = lambda: False) -> None:
        """Scaler first (warm: running tasks finish, or go back on the queue when urgent), then the rest."""
        for part in sorted(self.parts, key=lambda p: p.name != "scaler"):
            if part.process is None:
                continue
            if part.name == "scaler" and not part.exited:
                part.process.send_signal(signal.SIGTERM)
                while part.process.poll() is None:
                    if is_urgent():
                        part.process.send_signal(signal.SIGTERM)  # the scaler's second signal: stop tasks now
                        break
                    time.sleep(0.1)
            stop_group(part.process, STOP_GRACE_S)
        if self.embedded is not None:
            self.embedded.stop()


SCRIPT_RESTART_S = 5.0


def run_up(config: ServiceConfig, options: StackOptions, out: TextIO = sys.stdout) -> int:
    """Run the stack until SIGINT/SIGTERM (0) or until a part dies (1); a second signal hurries the stop."""
    signals_seen: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: signals_seen.append(number))
    if options.app_spec:
        check_user_code(options.app_spec, config.name)  # before anything starts, so nothing needs stopping
    stack = Stack(config, options, out)
    status = 0
    try:
        addresses = stack.start()
        print_addresses(config, addresses, out)
        status = _watch(stack, signals_seen, out)
    finally:
        print("stopping: workers finish their tasks first (Ctrl-C again: stop them now, tasks back on the queue)",
              file=out, flush=True)  # fmt: skip
        count_before = len(signals_seen)
        stack.stop(is_urgent=lambda: len(signals_seen) > count_before)
        print("stopped", file=out, flush=True)
    return status


def _watch(stack: Stack, signals_seen: list[int], out: TextIO) -> int:
    """Wait for a stop signal; restart the user's front-end script if it dies, give up if another part does."""
    last_restart = 0.0
    while not signals_seen:
        part = stack.first_exited()
        if part is not None and part.name == "script" and time.monotonic() - last_restart > SCRIPT_RESTART_S:
            print(f"front-end script exited {part.exit_status}: restarting it", file=out, flush=True)
            last_restart = time.monotonic()
            part.start(out)
        elif part is not None and part.name != "script":
            print(f"{part.name} exited {part.exit_status}: stopping the stack", file=out, flush=True)
            return 1
        time.sleep(0.1)
    return 0


def print_addresses(config: ServiceConfig, addresses: dict[str, str], out: TextIO) -> None:
    rows = [
        ("broker", addresses["broker"]),
        ("front end", f"{addresses['frontend']}/api/predict/{config.name}   token {addresses['token']}"),
        ("flower", addresses["flower"]),
        ("metrics", addresses["metrics"]),
        *([("your app", addresses["script"])] if "script" in addresses else []),
    ]
    print(f"scalablejob up: service {config.name} ({config.metadata.type})", file=out)
    for name, where in rows:
        print(f"  {name:<10} {where}", file=out)
    print("  Ctrl-C stops everything", file=out, flush=True)
