"""The command runner: a request body becomes a child process (argv, no shell unless the config says so)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from scalablejob.errors import RequestError

TAIL_LINES = 50  # the result entry keeps the last lines of output, capped in bytes too
TAIL_BYTES = 8192
MAX_LINE_BYTES = 64 * 1024  # a longer line is cut into pieces rather than buffered without bound
EXIT_NOT_FOUND = 127
EXIT_NOT_EXECUTABLE = 126
SHELL = "/bin/sh"


@dataclass(frozen=True)
class CommandOutcome:
    """How a command ended: exit code (128 + N when killed by signal N), output tail and duration."""

    exit_code: int
    output_tail: bytes
    duration_s: float


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


def run_command(argv: list[str], *, on_line: Callable[[bytes], None] | None = None) -> CommandOutcome:
    """Run argv to completion in its own session, feeding each output line (stdout and stderr) to `on_line`."""
    started = time.monotonic()
    tail: deque[bytes] = deque(maxlen=TAIL_LINES)
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
    except FileNotFoundError:
        return CommandOutcome(EXIT_NOT_FOUND, f"command not found: {argv[0]}\n".encode(), time.monotonic() - started)
    except OSError as exc:  # permission denied, exec format error, ...
        message = f"cannot execute {argv[0]}: {exc.strerror}\n".encode()
        return CommandOutcome(EXIT_NOT_EXECUTABLE, message, time.monotonic() - started)
    assert process.stdout is not None
    with process.stdout:
        for line in iter(lambda: process.stdout.readline(MAX_LINE_BYTES), b""):  # type: ignore[union-attr]
            tail.append(line)
            if on_line is not None:
                on_line(line)
    returncode = process.wait()
    exit_code = returncode if returncode >= 0 else 128 - returncode
    return CommandOutcome(exit_code, b"".join(tail)[-TAIL_BYTES:], time.monotonic() - started)
