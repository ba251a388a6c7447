"""The command runner: how a request body becomes argv, and how a real child process's output and exit are reported."""

from __future__ import annotations

import os
import signal
import stat
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from scalablejob.model.errors import RequestError
from scalablejob.workers.command import (
    EXIT_NOT_EXECUTABLE,
    EXIT_NOT_FOUND,
    PIPES_CLOSED_NOTICE,
    REQUEST_ID_ENV,
    SHELL,
    TAIL_BYTES,
    TAIL_LINES,
    command_env,
    parse_argv,
    run_command,
)
from scalablejob.workers.lines import MAX_LINE_BYTES, NOTICE_STREAM, Ending, Line


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


class Recorder:
    """An on_line callback that keeps (stream, line, time seen) for each line."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Line, float]] = []

    def __call__(self, stream: str, line: Line) -> None:
        self.seen.append((stream, line, time.monotonic()))

    def texts(self, stream: str | None = None) -> list[bytes]:
        return [line.text for name, line, _ in self.seen if stream in (None, name)]


@pytest.mark.parametrize("code", [0, 3])
def test_run_command_reports_the_exit_code(code: int) -> None:
    outcome = run_command(python(f"import sys; sys.exit({code})"))

    assert outcome.exit_code == code
    assert outcome.duration_s >= 0
    assert outcome.stopped is None


def test_run_command_tags_each_line_with_its_stream_in_order() -> None:
    recorder = Recorder()
    source = "import sys\nfor n in range(3):\n    print('out', n)\n    print('err', n, file=sys.stderr)"

    run_command(python(source), on_line=recorder)

    assert recorder.texts("stdout") == [b"out 0", b"out 1", b"out 2"]
    assert recorder.texts("stderr") == [b"err 0", b"err 1", b"err 2"]
    assert {line.ending for _, line, _ in recorder.seen} == {Ending.NEWLINE}


def test_run_command_feeds_every_line_not_only_the_tail() -> None:
    recorder = Recorder()
    count = TAIL_LINES + 10

    outcome = run_command(python(f"for n in range({count}): print(n)"), on_line=recorder)

    assert recorder.texts() == [str(n).encode() for n in range(count)]
    assert outcome.output_tail == b"".join(f"{n}\n".encode() for n in range(count - TAIL_LINES, count))


def test_run_command_tail_keeps_only_the_last_bytes() -> None:
    # 40 lines of 1000 bytes: few enough lines to fit TAIL_LINES, too many bytes for TAIL_BYTES
    everything = b"".join((str(n % 10) * 999 + "\n").encode() for n in range(40))

    outcome = run_command(python("for n in range(40): print(str(n % 10) * 999)"))

    assert outcome.output_tail == everything[-TAIL_BYTES:]


def test_run_command_cuts_a_very_long_line_into_pieces() -> None:
    recorder = Recorder()

    run_command(python(f"print('x' * {MAX_LINE_BYTES + 10})"), on_line=recorder)

    assert [(line.text, line.ending) for _, line, _ in recorder.seen] == [
        (b"x" * MAX_LINE_BYTES, Ending.CUT),
        (b"x" * 10, Ending.NEWLINE),
    ]


def test_a_line_without_newline_is_shown_while_the_program_still_runs() -> None:
    # given a program that prints a prompt-like partial line, then stays quiet, then finishes the line
    recorder = Recorder()
    source = "import sys, time\nsys.stdout.write('loading...'); sys.stdout.flush(); time.sleep(1.5); print(' done')"

    started = time.monotonic()
    outcome = run_command(python(source), on_line=recorder)

    # then the partial text was seen well before the program exited
    (_, first, seen_at), *_ = recorder.seen
    assert (first.text, first.ending) == (b"loading...", Ending.PARTIAL)
    assert seen_at - started < 1.4
    assert recorder.texts() == [b"loading...", b" done"]
    assert outcome.exit_code == 0


def test_carriage_return_frames_are_lines_of_their_own_and_stay_out_of_the_tail() -> None:
    recorder = Recorder()

    outcome = run_command(python("import sys; sys.stdout.write('10%\\r50%\\r100%\\n')"), on_line=recorder)

    assert [(line.text, line.ending) for _, line, _ in recorder.seen] == [
        (b"10%", Ending.CARRIAGE_RETURN),
        (b"50%", Ending.CARRIAGE_RETURN),
        (b"100%", Ending.NEWLINE),
    ]
    assert outcome.output_tail == b"100%\n"


def test_non_utf8_output_is_passed_through_as_bytes() -> None:
    recorder = Recorder()

    run_command(python("import sys; sys.stdout.buffer.write(b'\\xff\\xfe ok\\n')"), on_line=recorder)

    assert recorder.texts() == [b"\xff\xfe ok"]


def test_run_command_of_a_missing_program_exits_127() -> None:
    outcome = run_command(["/nonexistent/scalablejob-no-such-program", "arg"])

    assert outcome.exit_code == EXIT_NOT_FOUND == 127
    assert outcome.output_tail == b"/nonexistent/scalablejob-no-such-program: command not found\n"


def test_run_command_in_a_missing_working_dir_exits_127_naming_it(tmp_path: Path) -> None:
    outcome = run_command(python("pass"), cwd=str(tmp_path / "nowhere"))

    assert outcome.exit_code == EXIT_NOT_FOUND
    assert outcome.output_tail == f"working directory {tmp_path / 'nowhere'}: not found\n".encode()


def test_a_program_that_is_not_found_says_so_on_its_stderr_log() -> None:
    # given a job log listening to the command's lines
    recorder = Recorder()

    # when the program cannot even start
    outcome = run_command(["scalablejob-no-such-program", "arg"], on_line=recorder)

    # then the reason is a stderr line of its log, as a shell would print it, not only its exit code
    said = [(stream, line.text, line.ending) for stream, line, _ in recorder.seen]
    assert said == [("stderr", b"scalablejob-no-such-program: command not found", Ending.NEWLINE)]
    assert outcome.exit_code == EXIT_NOT_FOUND


def test_a_program_that_cannot_execute_says_so_on_its_stderr_log(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    recorder = Recorder()

    run_command([str(script)], on_line=recorder)

    assert recorder.texts("stderr") == [f"cannot execute {script}: Permission denied".encode()]


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


def test_run_command_starts_the_process_in_its_own_session_without_stdin() -> None:
    outcome = run_command(python("import os, sys; print(os.getsid(0) == os.getpid(), repr(sys.stdin.read()))"))

    assert outcome.output_tail == b"True ''\n"


def test_run_command_uses_the_given_working_dir_and_environment(tmp_path: Path) -> None:
    outcome = run_command(
        python("import os; print(os.getcwd(), os.environ['LR'], 'HOME' in os.environ)"),
        cwd=str(tmp_path), env={"LR": "0.1", "PATH": os.environ["PATH"]},
    )  # fmt: skip

    assert outcome.output_tail == f"{tmp_path} 0.1 False\n".encode()


def pid_alive(pid: int, settle_s: float = 5.0) -> bool:
    """Whether the process still runs once a SIGKILL has had time to land (a zombie counts as gone)."""
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            return False
        time.sleep(0.05)
    return True


GRANDCHILD = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "print(child.pid, flush=True)\n"
)


def test_a_stop_request_ends_the_command_and_its_grandchildren() -> None:
    # given a command whose own child runs long
    recorder = Recorder()
    stop_after_first_line = lambda: "cancelled" if recorder.seen else None  # noqa: E731

    # when it is asked to stop once it has printed its child's pid
    outcome = run_command(
        python(GRANDCHILD + "time.sleep(60)"), on_line=recorder, should_stop=stop_after_first_line, grace_s=5
    )

    # then it ended by SIGTERM and the grandchild is gone too
    grandchild = int(recorder.texts()[0])
    assert outcome.stopped == "cancelled"
    assert outcome.exit_code == 128 + signal.SIGTERM
    assert outcome.duration_s < 5
    assert not pid_alive(grandchild)


def test_a_command_that_ignores_sigterm_is_killed_after_the_grace_period() -> None:
    source = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)"
    )
    recorder = Recorder()

    outcome = run_command(
        python(source), on_line=recorder, should_stop=lambda: "cancelled" if recorder.seen else None, grace_s=0.5
    )

    assert (outcome.stopped, outcome.exit_code) == ("cancelled", 128 + signal.SIGKILL)


def test_a_command_past_its_timeout_is_stopped() -> None:
    outcome = run_command(python("import time; time.sleep(60)"), timeout_s=0.5, grace_s=1)

    assert outcome.stopped == "timeout"
    assert outcome.exit_code == 128 + signal.SIGTERM
    assert outcome.duration_s < 5


def test_a_finished_command_leaves_no_descendant_behind_even_one_holding_its_pipes() -> None:
    recorder = Recorder()

    outcome = run_command(python(GRANDCHILD), on_line=recorder)

    assert outcome.exit_code == 0
    assert not pid_alive(int(recorder.texts()[0]))


# ---- a job ends when its leader exits, never because its pipes closed (real programs) ---------------------------


def test_a_thousand_short_coreutils_sleeps_all_exit_0() -> None:
    # given coreutils sleep, which closes stdout and stderr in an atexit handler just before it exits
    # when it runs 1000 times, 8 at a time (the race lasts microseconds: many tries find it)
    recorder = Recorder()
    with ThreadPoolExecutor(8) as pool:
        codes = Counter(pool.map(lambda _: run_command(["sleep", "0.001"], on_line=recorder).exit_code, range(1000)))

    # then not one was killed on the way out, and none was taken for a job that redirected its output
    assert codes == {0: 1000}
    assert recorder.texts() == []


def test_a_job_that_redirects_its_own_output_runs_to_its_end_and_its_log_says_so() -> None:
    recorder = Recorder()

    outcome = run_command(["sh", "-c", "exec >/dev/null 2>&1; sleep 2; exit 0"], on_line=recorder)

    assert outcome.exit_code == 0
    assert outcome.stopped is None
    assert 2 <= outcome.duration_s < 4
    assert recorder.texts(NOTICE_STREAM) == [PIPES_CLOSED_NOTICE]


def test_a_job_that_closes_stdout_works_on_and_its_stderr_is_still_streamed() -> None:
    recorder = Recorder()

    outcome = run_command(["sh", "-c", "exec >&-; sleep 0.5; echo still here >&2; exit 4"], on_line=recorder)

    assert outcome.exit_code == 4
    assert outcome.duration_s >= 0.5
    assert recorder.texts("stderr") == [b"still here"]
    assert recorder.texts(NOTICE_STREAM) == []  # stderr stayed open: its output is still streamed


def test_a_child_the_job_sent_to_the_background_is_killed_when_the_job_exits() -> None:
    # given a job that starts a long sleep in the background, detached from its pipes, and exits at once
    recorder = Recorder()

    outcome = run_command(["sh", "-c", "sleep 300 >/dev/null 2>&1 </dev/null & echo $!; exit 0"], on_line=recorder)

    # then the job ended with its leader and what it left in its group is gone
    assert outcome.exit_code == 0
    assert outcome.duration_s < 2
    assert not pid_alive(int(recorder.texts("stdout")[0]))


def test_progress_bars_a_shell_writes_to_stderr_arrive_as_frames() -> None:
    recorder = Recorder()

    outcome = run_command(["sh", "-c", r"printf '10%%\r50%%\r100%%\ndone\n' >&2"], on_line=recorder)

    assert outcome.exit_code == 0
    frames = [(name, line.text, line.ending) for name, line, _ in recorder.seen]
    assert frames == [
        ("stderr", b"10%", Ending.CARRIAGE_RETURN),
        ("stderr", b"50%", Ending.CARRIAGE_RETURN),
        ("stderr", b"100%", Ending.NEWLINE),
        ("stderr", b"done", Ending.NEWLINE),
    ]


# ---- command_env ---------------------------------------------------------------------------------------------


def test_command_env_layers_worker_config_and_allowed_tags() -> None:
    env = command_env(
        {"PATH": "/bin", "LR": "base"}, {"LR": "config", "MODE": "train"},
        {"env.LR": "0.5", "taskType": "command"}, allowed=("LR",),
    )  # fmt: skip

    assert env == {"PATH": "/bin", "LR": "0.5", "MODE": "train", "PYTHONUNBUFFERED": "1"}


def test_command_env_gives_the_job_its_request_id() -> None:
    env = command_env({"PATH": "/bin"}, {}, {"requestId": "r-1", "taskType": "command"}, allowed=())

    assert REQUEST_ID_ENV == "SCALABLEJOB_REQUEST_ID"  # examples/train.py and users' scripts read it by this name
    assert env[REQUEST_ID_ENV] == "r-1"


def test_command_env_keeps_an_explicit_pythonunbuffered() -> None:
    assert command_env({"PYTHONUNBUFFERED": "0"}, {}, {}, allowed=())["PYTHONUNBUFFERED"] == "0"


@pytest.mark.parametrize("allowed", [(), ("OTHER",)])
def test_command_env_refuses_a_tag_the_config_does_not_allow(allowed: tuple[str, ...]) -> None:
    with pytest.raises(RequestError, match=r"tag env\.PATH: expected an environment variable the service allows"):
        command_env({}, {}, {"env.PATH": "/evil"}, allowed=allowed)
