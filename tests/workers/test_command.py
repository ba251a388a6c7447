"""The command runner: how a request body becomes argv, and how a real child process's output and exit are reported."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from scalablejob.errors import RequestError
from workers.command import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    MAX_LINE_BYTES,
    SHELL,
    TAIL_BYTES,
    TAIL_LINES,
    parse_argv,
    run_command,
)


def python(source: str) -> list[str]:
    """argv that runs a Python snippet unbuffered, so stdout and stderr interleave as printed."""
    return [sys.executable, "-u", "-c", source]


# ---- parse_argv ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "shell", "argv"),
    [
        (b"echo hello world", False, ["echo", "hello", "world"]),
        (b"  trainer fit --epochs 3 \n", False, ["trainer", "fit", "--epochs", "3"]),
        (b"echo \"a b\" 'c d' e\\ f", False, ["echo", "a b", "c d", "e f"]),
        (b"echo $HOME | wc -l", False, ["echo", "$HOME", "|", "wc", "-l"]),  # no shell: no expansion, no pipes
        (b'["trainer", "-c", "print(1)"]', False, ["trainer", "-c", "print(1)"]),
        (b'  ["a b", "c"]  ', False, ["a b", "c"]),
        (b"[ -f x ]", False, ["[", "-f", "x", "]"]),  # not JSON: a command line that starts with the test program
        ("echo ünï".encode(), False, ["echo", "ünï"]),
        (b"echo $HOME | wc -l", True, [SHELL, "-c", "echo $HOME | wc -l"]),
        (b"  echo 'unbalanced \n", True, [SHELL, "-c", "echo 'unbalanced"]),  # the shell reports it, not us
        (b'["not", "split"]', True, [SHELL, "-c", '["not", "split"]']),
        (b"python train.py", False, [sys.executable, "train.py"]),  # python is the worker's own interpreter
        (b"python3 -m pip list", False, [sys.executable, "-m", "pip", "list"]),
        (b'["python3", "-c", "print(1)"]', False, [sys.executable, "-c", "print(1)"]),
        (b"python3.11 x.py", False, ["python3.11", "x.py"]),
        (b"/usr/bin/python x.py", False, ["/usr/bin/python", "x.py"]),
        (b"echo python", False, ["echo", "python"]),
        (b"python train.py", True, [SHELL, "-c", "python train.py"]),
    ],
    ids=[
        "plain",
        "padded",
        "quoted",
        "no-shell-syntax",
        "json",
        "json-padded",
        "bracket-not-json",
        "utf8",
        "shell",
        "shell-unbalanced",
        "shell-json",
        "python",
        "python3",
        "python-json",
        "python-versioned",
        "python-path",
        "python-argument",
        "python-shell",
    ],
)
def test_parse_argv(body: bytes, shell: bool, argv: list[str]) -> None:
    assert parse_argv(body, shell=shell) == argv


@pytest.mark.parametrize(
    ("body", "shell", "expected"),
    [
        (b"", False, "expected a command line, got nothing"),
        (b" \n\t ", False, "expected a command line, got nothing"),
        (b"", True, "expected a command line, got nothing"),
        (b"echo \xff\xfe", False, "expected UTF-8 text, got undecodable bytes at 5"),
        (b"\xff", True, "expected UTF-8 text"),
        (b"echo 'open", False, "expected a command line with balanced quotes"),
        (b'echo "open', False, "expected a command line with balanced quotes"),
        (b"[]", False, "expected a non-empty JSON array of strings"),
        (b'["python", 1]', False, "expected a non-empty JSON array of strings"),
        (b'[["nested"]]', False, "expected a non-empty JSON array of strings"),
    ],
    ids=[
        "empty",
        "blank",
        "empty-shell",
        "non-utf8",
        "non-utf8-shell",
        "unbalanced-single",
        "unbalanced-double",
        "empty-json",
        "non-string-json",
        "nested-json",
    ],
)
def test_parse_argv_rejects_a_bad_body_naming_the_command_body(body: bytes, shell: bool, expected: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_argv(body, shell=shell)

    assert str(caught.value).startswith("command body: ")
    assert expected in str(caught.value)


# ---- run_command ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3])
def test_run_command_reports_the_exit_code(code: int) -> None:
    outcome = run_command(python(f"import sys; sys.exit({code})"))

    assert outcome.exit_code == code
    assert outcome.duration_s >= 0


def test_run_command_tail_has_stdout_and_stderr_lines_in_order() -> None:
    source = (
        "import sys\nprint('out 1')\nprint('err 2', file=sys.stderr)\nprint('out 3')\nprint('err 4', file=sys.stderr)"
    )

    outcome = run_command(python(source))

    assert outcome.output_tail == b"out 1\nerr 2\nout 3\nerr 4\n"


def test_run_command_feeds_each_line_to_on_line_as_printed() -> None:
    lines: list[bytes] = []
    count = TAIL_LINES + 10

    outcome = run_command(python(f"for n in range({count}): print(n)"), on_line=lines.append)

    assert lines == [f"{n}\n".encode() for n in range(count)]  # every line, not only the tail
    assert outcome.exit_code == 0


def test_run_command_tail_keeps_only_the_last_lines() -> None:
    count = TAIL_LINES + 10

    outcome = run_command(python(f"for n in range({count}): print(n)"))

    assert outcome.output_tail == b"".join(f"{n}\n".encode() for n in range(count - TAIL_LINES, count))


def test_run_command_tail_keeps_only_the_last_bytes() -> None:
    # 40 lines of 1000 bytes: few enough lines to fit TAIL_LINES, too many bytes for TAIL_BYTES
    source = "for n in range(40): print(str(n % 10) * 999)"
    everything = b"".join((str(n % 10) * 999 + "\n").encode() for n in range(40))

    outcome = run_command(python(source))

    assert len(outcome.output_tail) == TAIL_BYTES
    assert outcome.output_tail == everything[-TAIL_BYTES:]


def test_run_command_cuts_a_very_long_line_into_pieces() -> None:
    lines: list[bytes] = []

    run_command(python(f"print('x' * {MAX_LINE_BYTES + 10})"), on_line=lines.append)

    assert lines == [b"x" * MAX_LINE_BYTES, b"x" * 10 + b"\n"]


def test_run_command_keeps_a_last_line_without_newline() -> None:
    lines: list[bytes] = []

    outcome = run_command(python("import sys; sys.stdout.write('a\\nno newline')"), on_line=lines.append)

    assert lines == [b"a\n", b"no newline"]
    assert outcome.output_tail == b"a\nno newline"


def test_run_command_of_a_missing_program_exits_127() -> None:
    outcome = run_command(["/nonexistent/scalablejob-no-such-program", "arg"])

    assert outcome.exit_code == EXIT_NOT_FOUND == 127
    assert outcome.output_tail == b"command not found: /nonexistent/scalablejob-no-such-program\n"


def test_run_command_of_a_file_that_is_not_executable_exits_126(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)

    outcome = run_command([str(script)])

    assert outcome.exit_code == EXIT_NOT_EXECUTABLE == 126
    assert outcome.output_tail == f"cannot execute {script}: Permission denied\n".encode()


def test_run_command_of_an_executable_without_interpreter_line_exits_126(tmp_path: Path) -> None:
    # given an executable text file with no #! line: execve fails with ENOEXEC (Exec format error)
    script = tmp_path / "no_shebang"
    script.write_text("echo hi\n")
    script.chmod(stat.S_IRWXU)

    # when it is run as a command, then it is reported as a command that cannot execute, not raised
    outcome = run_command([str(script)])

    assert outcome.exit_code == EXIT_NOT_EXECUTABLE


def test_run_command_of_a_process_killed_by_sigkill_exits_137() -> None:
    outcome = run_command(python("import os, signal; print('before'); os.kill(os.getpid(), signal.SIGKILL)"))

    assert outcome.exit_code == 137
    assert outcome.output_tail == b"before\n"


def test_run_command_starts_the_process_in_its_own_session() -> None:
    outcome = run_command(python("import os; print(os.getsid(0) == os.getpid())"))

    assert outcome.output_tail == b"True\n"


def test_run_command_gives_the_process_no_stdin() -> None:
    outcome = run_command(python("import sys; print(repr(sys.stdin.read()))"))

    assert outcome.output_tail == b"''\n"
