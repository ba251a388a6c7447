"""`submit`, `logs -f` and `cancel` from the command line, against a real worker running examples/train.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, python_command, service_config, wait_until
from scalablejob import RequestStatus

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def cli(redis_url: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scalablejob", *args, "--broker", redis_url],
        cwd=REPO, input=stdin, capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def test_submit_wait_prints_the_result_of_a_query_read_from_stdin(start_worker, redis_url):
    start_worker(service_config("cli"))

    run = cli(redis_url, "submit", "--service", "cli", "--type", "query", "--wait", "--timeout", "30", stdin="hi")

    assert run.returncode == 0, run.stderr
    request_id, result = run.stdout.split("\n", 1)
    assert len(request_id) == 32 and result == "echo:hi\n"  # a line, so the shell prompt does not follow it
    assert f"follow it with: scalablejob logs -f {request_id}" in run.stderr


def test_submit_wait_of_a_failing_command_passes_its_exit_code_on(start_worker, redis_url):
    start_worker(service_config("cli"))
    command = python_command("import sys; print('bad input'); sys.exit(3)")

    run = cli(redis_url, "submit", "-s", "cli", "--type", "command", "--wait", "--timeout", "30", command)

    assert run.returncode == 3, run.stderr
    request_id, output = run.stdout.split("\n", 1)
    assert output == "bad input\n"
    assert f"request {request_id} failed: exit code 3" in run.stderr


def test_submit_wait_of_a_failing_query_exits_1_with_the_error_on_stderr(start_worker, redis_url):
    start_worker(service_config("cli"))

    run = cli(redis_url, "submit", "-s", "cli", "--type", "query", "--wait", "--timeout", "30", '{"fail": "no model"}')

    assert run.returncode == 1
    request_id = run.stdout.strip()
    assert run.stderr.endswith(f"request {request_id} failed: RuntimeError: no model\n")


def test_logs_of_a_command_that_was_not_found_say_so(start_worker, redis_url):
    start_worker(service_config("cli"))
    request_id = cli(redis_url, "submit", "-s", "cli", "--type", "command", "nosuchprog --flag").stdout.strip()

    run = cli(redis_url, "logs", "-f", request_id)

    assert run.returncode == 127, run.stderr  # how it ended, as `submit --wait` says it
    assert run.stderr == "nosuchprog: command not found\n"
    assert run.stdout.startswith("[result: exit code 127, ")


def test_a_training_job_submitted_and_followed_from_the_cli(tmp_path, start_worker, client_for, redis_url):
    # given a worker and the example training script submitted as a command
    start_worker(service_config("cli"))
    command = f"python examples/train.py --epochs 3 --epoch-seconds 0 --checkpoint-dir {tmp_path}"
    request_id = cli(redis_url, "submit", "-s", "cli", "--type", "command", command).stdout.strip()

    # when its logs are followed to the end
    run = cli(redis_url, "logs", "-f", request_id)

    # then every epoch was printed, progress reached 100 % and the checkpoint is there
    assert run.returncode == 0, run.stderr
    assert [line.split(" loss")[0] for line in run.stdout.splitlines()[:3]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "[progress 100%] epoch 3/3" in run.stderr
    assert run.stdout.splitlines()[-1].startswith("[result: exit code 0")
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 3
    assert client_for("cli").state(request_id).progress == 1.0


def test_cancel_from_the_cli_stops_a_training_job_which_saves_a_checkpoint(
    tmp_path, start_worker, client_for, redis_url
):
    start_worker(service_config("cli"))
    client = client_for("cli")
    command = f"python examples/train.py --epochs 100 --epoch-seconds 5 --checkpoint-dir {tmp_path}"
    request_id = cli(redis_url, "submit", "-s", "cli", "--type", "command", command).stdout.strip()
    wait_until(lambda: (tmp_path / "checkpoint.json").exists(), 30, "the job never wrote its first checkpoint")

    run = cli(redis_url, "cancel", request_id)

    assert run.returncode == 0, run.stderr
    assert run.stdout == f"request {request_id} of cli: its worker is stopping it\n"
    assert client.result(request_id, timeout=30).tags["stopped"] == "cancelled"
    assert client.state(request_id).status is RequestStatus.CANCELLED
    assert b"cancelled at epoch 1: checkpoint" in client.result(request_id, timeout=1).data


def test_the_short_id_that_watch_shows_is_taken_by_cancel_and_logs(redis_url, client_for):
    # given a command queued with no worker to run it, and watch's table of it
    request_id = cli(redis_url, "submit", "-s", "cli", "--type", "command", "sleep 60").stdout.strip()
    table = cli(redis_url, "watch", "-s", "cli", "--once").stdout
    short = request_id[:12]
    assert short in table and request_id not in table

    # when it is cancelled and its logs are read by that short id
    cancelled = cli(redis_url, "cancel", short)
    logs = cli(redis_url, "logs", short)

    # then both found it, and logs exits 1: it was cancelled before it ran
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.startswith(f"request {request_id} of cli: ")
    assert client_for("cli").state(request_id).status is RequestStatus.CANCELLED
    assert logs.returncode == 1 and "cancelled before it started" in logs.stdout, logs.stdout + logs.stderr


def test_logs_exit_status_says_how_the_request_ended(start_worker, redis_url):
    start_worker(service_config("cli"))
    done = cli(redis_url, "submit", "-s", "cli", "--type", "query", "--wait", "--timeout", "30", "hi").stdout.split()[0]
    failed = cli(redis_url, "submit", "-s", "cli", "--type", "command", "--wait", "--timeout", "30",
                 python_command("import sys; sys.exit(5)")).stdout.split()[0]  # fmt: skip

    assert [cli(redis_url, "logs", request_id).returncode for request_id in (done, failed)] == [0, 5]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("submit", "-s", "cli", "--tag", "novalue", "x"), "expected KEY=VALUE, got 'novalue'"),
        (("submit", "x"), "expected --service NAME or --config FILE"),
        (("submit", "-s", "cli", "--type", "query", "x", "--tag", "_priority_=9"), "expected 0 (normal) or 1"),
        (("cancel", "nope", "-s", "cli"), "requestId 'nope' is unknown to service cli"),
        (("logs", "nope"), "requestId 'nope' found in no service"),
    ],
)
def test_bad_cli_input_is_a_clear_error_and_a_nonzero_exit(redis_url, args, message):
    run = cli(redis_url, *args)

    assert run.returncode != 0
    assert message in run.stderr


def test_a_burst_shows_in_watch_with_running_progress_and_queued_requests(
    tmp_path, start_worker, client_for, redis_url
):
    # given one worker and a burst of three jobs that report progress, then wait for the test
    start_worker(service_config("cli"))
    release = tmp_path / "release"
    job = python_command(f"import os, time\nprint('::progress 0.5 halfway', flush=True)\n"
                         f"while not os.path.exists({str(release)!r}): time.sleep(0.02)")  # fmt: skip
    ids = cli(redis_url, "submit", "-s", "cli", "--type", "command", "--repeat", "3", job).stdout.split()
    client = client_for("cli")
    wait_until(lambda: client.state(ids[0]).progress == 0.5, 30, "the first job never reported progress")

    # when watch takes a snapshot
    argv = [sys.executable, "-m", "scalablejob", "watch", "-s", "cli", "--once", "--broker", redis_url]
    env = {name: value for name, value in os.environ.items() if name != "COLUMNS"}  # a pipe, no width given
    shown = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60, env=env)

    # then it lists the running job with its progress, and the two waiting ones, no column cut short
    assert "3 request(s) in flight" in shown.stdout, shown.stderr
    assert "…" not in shown.stdout
    running = next(line for line in shown.stdout.splitlines() if ids[0][:12] in line)
    assert "running" in running and "50%" in running and "halfway" in running
    assert sum("queued" in line for line in shown.stdout.splitlines() if any(i[:12] in line for i in ids[1:])) == 2
    release.touch()
    for request_id in ids:
        client.result(request_id, timeout=30)
