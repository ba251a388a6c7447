"""The command runner: a request body becomes a child process (argv, no shell unless the config says so)."""

from __future__ import annotations

import json
import os
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from scalablejob.api.client import REQUEST_ID_TAG
from scalablejob.host.job_user import JobUser, as_user
from scalablejob.host.processes import signal_group
from scalablejob.model.errors import RequestError
from scalablejob.model.exits import OomKills, oom_notice, shell_exit_code
from scalablejob.model.redaction import without_secrets
from scalablejob.workers.job_processes import JobProcesses
from scalablejob.workers.lines import NOTICE_STREAM, Ending, Line, LineSplitter

TAIL_LINES = 50  # the result entry keeps the last lines of output, capped in bytes too
TAIL_BYTES = 8192
READ_BYTES = 64 * 1024
POLL_S = 0.05  # how often the runner looks at cancel requests, deadlines and quiet partial lines
STOP_CHECK_S = 0.25  # how often it asks whether the job was cancelled
PARTIAL_FLUSH_S = 0.5  # a line without an ending is shown after the program has been quiet this long
DRAIN_S = 0.5  # after the command exits, how long its descendants may keep its pipes open
PIPES_CLOSED_NOTICE_S = 1.0  # pipes closed this long before the leader exits: it redirected its output, say so
# (coreutils close theirs just before they exit; on a loaded machine that last step took over 0.2 s)
STOP_GRACE_S = 10.0
ENV_TAG_PREFIX = "env."
REQUEST_ID_ENV = "SCALABLEJOB_REQUEST_ID"  # each job knows its request, e.g. to keep its own checkpoint folder
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
SHELL = "/bin/sh"


OnLine = Callable[[str, Line], None]  # (stream name "stdout" or "stderr", line)
StopCheck = Callable[[], "str | None"]  # a reason to stop the command now ("cancelled"), or None


@dataclass(frozen=True)
class CommandOutcome:
    """How a command ended: exit code (128 + N when killed by signal N), output tail, duration, why stopped."""

    exit_code: int
    output_tail: bytes
    duration_s: float
    stopped: str | None = None  # "cancelled" or "timeout" when the runner stopped it
    oom: OomKills | None = None  # the kernel's OOM kills while it ran (None: not told here)


PYTHON_NAMES = ("python", "python3")


def with_worker_python(argv: list[str]) -> list[str]:
    """`python ...` runs on the worker's own interpreter, so a command sees the packages the worker has."""
    if argv and argv[0] in PYTHON_NAMES:
        return [sys.executable, *argv[1:]]
    return argv


def parse_argv(body: bytes, *, shell: bool = False) -> list[str]:
    """The argv a command request asks for: a JSON array of strings, or a command line split like a shell would."""
    try:
        text = body.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise RequestError(f"command body: expected UTF-8 text, got undecodable bytes at {exc.start}") from None
    if not text:
        raise RequestError("command body: expected a command line, got nothing")
    if shell:
        return [SHELL, "-c", text]
    if text.startswith("[") and (argv := _json_argv(text)) is not None:
        return with_worker_python(argv)
    try:
        return with_worker_python(shlex.split(text))
    except ValueError as exc:
        raise RequestError(f"command body: expected a command line with balanced quotes ({exc})") from None


def _json_argv(text: str) -> list[str] | None:
    """The argv of a JSON array body; None when the text is not JSON at all (e.g. `[ -f x ]`)."""
    try:
        argv = json.loads(text)
    except json.JSONDecodeError:
        return None
    if not isinstance(argv, list) or not argv or not all(isinstance(arg, str) for arg in argv):
        raise RequestError("command body: expected a non-empty JSON array of strings")
    return argv


def command_env(
    base: Mapping[str, str], config_env: Mapping[str, str], tags: Mapping[str, str], allowed: tuple[str, ...]
) -> dict[str, str]:
    """A job's environment: the worker's minus its secrets, the container's from the config, the `env.NAME` tags it
    allows, and its request id in SCALABLEJOB_REQUEST_ID.

    The worker's own environment holds the broker's URL and password: with them a job could read every front end's
    requests and tokens and enqueue work as anyone, so they go, with every other credential the worker was given
    (redaction.without_secrets: a deny-list, since a job needs the rest of what its host gives it). What the config
    and the allowed tags give is the service's explicit choice, and is kept."""
    env = {"PYTHONUNBUFFERED": "1", **without_secrets(base), **config_env}  # prints reach the log as they happen
    for tag, value in tags.items():
        if not tag.startswith(ENV_TAG_PREFIX):
            continue
        name = tag[len(ENV_TAG_PREFIX) :]
        if name not in allowed:
            allowed_text = ", ".join(allowed) or "none"
            raise RequestError(
                f"tag {tag}: expected an environment variable the service allows in scalable_job.request_env "
                f"({allowed_text})"
            )
        env[name] = value
    if REQUEST_ID_TAG in tags:
        env[REQUEST_ID_ENV] = tags[REQUEST_ID_TAG]
    return env


def run_command(
    argv: list[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    on_line: OnLine | None = None,
    should_stop: StopCheck | None = None,
    timeout_s: float | None = None,
    grace_s: float = STOP_GRACE_S,
    job: JobProcesses | None = None,
    user: JobUser | None = None,
) -> CommandOutcome:
    """Run argv in its own session (and cgroup, where one can be made), as `user` if given, streaming its output
    lines; nothing of it outlives the call (job_processes.py). `job` is for tests that choose how its processes are
    found."""
    started = time.monotonic()
    job = JobProcesses() if job is None else job
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, cwd=cwd, **as_user(user, {**(os.environ if env is None else env), **job.env}),
        )  # fmt: skip
    except OSError as exc:  # not found, permission denied, exec format error, ...
        job.close()
        exit_code, message = spawn_error(argv, cwd, exc)
        if on_line is not None:  # the job's log says why, as a shell would on stderr, not only its exit code
            on_line("stderr", Line(message.encode(), Ending.NEWLINE))
        return CommandOutcome(exit_code, f"{message}\n".encode(), time.monotonic() - started)
    job.started(process.pid)
    try:
        pump = _OutputPump(process, on_line)
        stopped = pump.run(should_stop, None if timeout_s is None else started + timeout_s, grace_s)
    finally:
        job.kill()  # nothing of this job may outlive it, even if a callback raised
        returncode = process.wait()
        oom = job.close()
    if on_line is not None and (notice := oom_notice(oom)) is not None:
        on_line(NOTICE_STREAM, Line(notice.encode(), Ending.NEWLINE))
    exit_code = shell_exit_code(returncode)
    return CommandOutcome(exit_code, pump.tail(), time.monotonic() - started, stopped, oom)


def spawn_error(argv: list[str], cwd: str | None, exc: OSError) -> tuple[int, str]:
    """The exit code and message of a command that could not start, as a shell reports them (127, 126)."""
    if isinstance(exc, FileNotFoundError):
        if exc.filename is not None and exc.filename == cwd != argv[0]:
            return EXIT_NOT_FOUND, f"working directory {cwd}: not found"
        missing = argv[0] if exc.filename in (None, argv[0]) else exc.filename
        return EXIT_NOT_FOUND, f"{missing}: command not found"
    return EXIT_NOT_EXECUTABLE, f"cannot execute {argv[0]}: {exc.strerror}"


class _Leader:
    """The job's first process, watched for its exit without reaping it: until it is reaped its pid stays taken, so
    the process group named after it is still this job's when what it left there is killed."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        try:  # readable once the process exits (Linux 5.3+): the pump wakes at once, pipes open or not
            self.fd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None  # elsewhere the pump looks every POLL_S

    def exited(self) -> bool:
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # reaped already: it certainly exited
            return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_LEADER_EXIT = "exit"  # the selector's tag of the leader's pidfd, beside the tags "stdout" and "stderr"
PIPES_CLOSED_NOTICE = (
    b"the job closed its stdout and stderr (its output goes elsewhere, e.g. a file it writes): nothing more of it is "
    b"streamed; the job runs on until it exits"
)


class _OutputPump:
    """Reads a child's stdout and stderr as they come, and stops the child when asked to or out of time.

    The job ends when its leader exits, never because its pipes closed: a program that redirects its own output
    closes them at once, and coreutils close them in an atexit handler just before they exit."""

    def __init__(self, process: subprocess.Popen[bytes], on_line: OnLine | None) -> None:
        self.process = process
        self.on_line = on_line
        self.selector = selectors.DefaultSelector()
        self.splitters: dict[str, LineSplitter] = {}
        self.last_data: dict[str, float] = {}
        self._tail: deque[bytes] = deque(maxlen=TAIL_LINES)
        self._said_pipes_closed = False
        self.leader = _Leader(process.pid)
        for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
            assert pipe is not None
            os.set_blocking(pipe.fileno(), False)
            self.selector.register(pipe, selectors.EVENT_READ, name)
            self.splitters[name] = LineSplitter()
        if self.leader.fd is not None:
            self.selector.register(self.leader.fd, selectors.EVENT_READ, _LEADER_EXIT)

    def run(self, should_stop: StopCheck | None, deadline: float | None, grace_s: float) -> str | None:
        """Pump output until the leader has exited and its pipes closed (or stayed open DRAIN_S longer, held by
        what it left behind); returns why the child was stopped, if it was."""
        try:
            stopped = self._pump(should_stop, deadline, grace_s)
        finally:
            self._release()  # the caller kills what is left of the job
        for stream, splitter in self.splitters.items():
            self._emit(stream, splitter.flush())
        return stopped

    def _pump(self, should_stop: StopCheck | None, deadline: float | None, grace_s: float) -> str | None:
        stopped: str | None = None
        kill_at = next_check = exited_at = pipes_closed_at = None
        while True:
            for key, _ in self.selector.select(POLL_S):
                if key.data == _LEADER_EXIT:
                    self.selector.unregister(key.fileobj)  # readable for good: looked at once is enough
                else:
                    self._read(key)
            now = time.monotonic()
            self._flush_quiet(now)
            if stopped is None and (next_check is None or now >= next_check):
                next_check = now + STOP_CHECK_S
                stopped = (should_stop() if should_stop else None) or (
                    "timeout" if deadline is not None and now >= deadline else None
                )
                if stopped is not None:
                    signal_group(self.process.pid, signal.SIGTERM)
                    kill_at = now + grace_s
            if kill_at is not None and now >= kill_at:
                signal_group(self.process.pid, signal.SIGKILL)
                kill_at = None
            if exited_at is None and self.leader.exited():
                exited_at = now
            if exited_at is not None and (not self._pipes_open() or now - exited_at > DRAIN_S):
                break  # descendants that still hold the pipes are killed with the rest of the job
            if exited_at is None and not self._pipes_open():
                pipes_closed_at = pipes_closed_at or now
                if now - pipes_closed_at >= PIPES_CLOSED_NOTICE_S:
                    self._say_pipes_closed()
        return stopped

    def _pipes_open(self) -> bool:
        return any(key.data != _LEADER_EXIT for key in self.selector.get_map().values())

    def _say_pipes_closed(self) -> None:
        """A job that redirects its own output is still running: its log says why nothing more shows."""
        if not self._said_pipes_closed and self.on_line is not None:
            self.on_line(NOTICE_STREAM, Line(PIPES_CLOSED_NOTICE, Ending.NEWLINE))
        self._said_pipes_closed = True

    def _read(self, key: selectors.SelectorKey) -> None:
        stream = key.data
        try:
            chunk = os.read(key.fd, READ_BYTES)
        except BlockingIOError:
            return
        if not chunk:
            self.selector.unregister(key.fileobj)
            self._emit(stream, self.splitters[stream].flush())
            return
        self.last_data[stream] = time.monotonic()
        self._emit(stream, self.splitters[stream].feed(chunk))

    def _flush_quiet(self, now: float) -> None:
        """A line without an ending is shown once the program has been quiet for PARTIAL_FLUSH_S."""
        for stream, splitter in self.splitters.items():
            if splitter.has_pending and now - self.last_data.get(stream, now) >= PARTIAL_FLUSH_S:
                self._emit(stream, splitter.flush())

    def _emit(self, stream: str, lines: list[Line]) -> None:
        for line in lines:
            if line.ending is not Ending.CARRIAGE_RETURN:  # progress-bar frames stay out of the result's tail
                self._tail.append(line.text + (b"" if line.ending is Ending.CUT else b"\n"))
            if self.on_line is not None:
                self.on_line(stream, line)

    def _release(self) -> None:
        for key in list(self.selector.get_map().values()):
            self.selector.unregister(key.fileobj)
        self.selector.close()
        for pipe in (self.process.stdout, self.process.stderr):
            if pipe is not None:
                pipe.close()
        self.leader.close()

    def tail(self) -> bytes:
        return b"".join(self._tail)[-TAIL_BYTES:]
