"""Training jobs on real workers: live logs, progress, cancel, timeout, init command, bounded log memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, python_command, service_config, wait_until
from scalablejob import RequestStatus
from scalablejob.local.scaler_process import is_gone
from scalablejob.model.keys import init_failures
from scalablejob.store.cancel import CancelOutcome, cancel_request
from scalablejob.store.logs import request_entries
from scalablejob.store.queues import queue_depth
from scalablejob.store.sink import LOG_ENTRY_OVERHEAD_BYTES
from scalablejob.workers.command import PIPES_CLOSED_NOTICE
from scalablejob.workers.init_command import EXIT_INIT_FAILED
from scalablejob.workers.lines import NOTICE_STREAM

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def training_config(**scalable_job) -> dict:
    return {**service_config("train"), "scalable_job": scalable_job}


def wait_for_file(path) -> str:
    """Code for a job that blocks until the test creates `path`: the test decides when the job ends."""
    return f"import os, time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.02)\n"


def log_texts(client, request_id) -> list[str]:
    return [entry.data.decode() for entry in client.logs(request_id) if entry.type == "log"]


def test_log_lines_reach_the_queue_in_order_while_the_job_runs(tmp_path, start_worker, client_for):
    # given a job that prints two epochs and then waits for the test
    start_worker(training_config())
    client = client_for("train")
    release = tmp_path / "release"
    code = "import sys\nprint('epoch 1')\nprint('warn', file=sys.stderr)\nprint('epoch 2')\n"
    _, request_id = client.put(python_command(code + wait_for_file(release) + "print('done')"), {"taskType": "command"})

    # when its lines are read from the output queue
    wait_until(lambda: len(log_texts(client, request_id)) == 3, 30, "the first lines never reached the queue")

    # then they are there, in order per stream, while the job still runs
    assert client.state(request_id).status is RequestStatus.RUNNING
    entries = list(request_entries(client.sink, client.requests, request_id, follow=False))
    by_stream = {stream: [e.data for e in entries if e.tags.get("stream") == stream] for stream in ("stdout", "stderr")}
    assert by_stream == {"stdout": [b"epoch 1", b"epoch 2"], "stderr": [b"warn"]}
    release.touch()
    final = client.result(request_id, timeout=30)
    assert log_texts(client, request_id)[-1] == "done"
    assert final.tags["exitCode"] == "0"


def test_a_job_that_sends_its_own_output_to_a_file_runs_to_its_end(tmp_path, start_worker, client_for):
    # given a shell job that sends its output to its own file, as a training launcher does, then works for 2 s
    start_worker(training_config())
    client = client_for("train")
    log = tmp_path / "train.log"
    body = json.dumps(["sh", "-c", f"exec >{log} 2>&1; echo epoch 1; sleep 2; echo saved; exit 0"])

    # when it runs on a real worker
    _, request_id = client.put(body.encode(), {"taskType": "command"})
    final = client.result(request_id, timeout=30)

    # then it ran to its end, its own file has its lines, and its log says why the queue has none of them
    assert client.state(request_id).status is RequestStatus.DONE
    assert final.tags["exitCode"] == "0"
    assert float(final.tags["durationSeconds"]) >= 2
    assert log.read_text() == "epoch 1\nsaved\n"
    notices = [e for e in client.logs(request_id) if e.type == "log" and e.tags.get("stream") == NOTICE_STREAM]
    assert [e.data for e in notices] == [PIPES_CLOSED_NOTICE]


def test_progress_markers_update_the_state_and_the_queue(start_worker, client_for):
    start_worker(training_config())
    client = client_for("train")

    _, request_id = client.put(python_command("print('::progress 0.25 epoch 1/4')"), {"taskType": "command"})
    client.result(request_id, timeout=30)

    state = client.state(request_id)
    assert (state.progress, state.message) == (0.25, "epoch 1/4")
    progress = [
        e for e in request_entries(client.sink, client.requests, request_id, follow=False) if e.type == "progress"
    ]
    assert [(e.data, e.tags["progress"]) for e in progress] == [(b"epoch 1/4", "0.2500")]
    assert log_texts(client, request_id) == []  # a marker is progress, not a log line


def test_cancel_of_a_running_job_ends_it_and_its_grandchildren(start_worker, client_for, redis_client):
    # given a running job whose child process runs long
    start_worker(training_config(cancel_grace_seconds=5))
    client = client_for("train")
    code = "import subprocess, sys, time\nchild = subprocess.Popen(['sleep', '60'])\nprint(child.pid)\ntime.sleep(60)"
    _, request_id = client.put(python_command(code), {"taskType": "command"})
    grandchild = int(wait_until(lambda: log_texts(client, request_id), 30, "the job never printed its child")[0])

    # when it is cancelled
    assert cancel_request(redis_client, "train", request_id) is CancelOutcome.STOPPING

    # then it ends cancelled, by SIGTERM, and its grandchild is gone too
    result = client.result(request_id, timeout=30)
    assert (result.tags["stopped"], result.tags["exitCode"]) == ("cancelled", "143")
    assert client.state(request_id).status is RequestStatus.CANCELLED
    assert wait_until(lambda: is_gone(grandchild), 10, "the grandchild outlived the cancelled job")


def test_cancel_of_a_queued_job_takes_it_off_the_queue(tmp_path, start_worker, client_for, redis_client):
    # given a busy worker and a job waiting behind it
    start_worker(training_config())
    client = client_for("train")
    release = tmp_path / "release"
    _, busy_id = client.put(python_command(wait_for_file(release)), {"taskType": "command"})
    wait_until(lambda: client.state(busy_id).status is RequestStatus.RUNNING, 30, "the first job never started")
    _, queued_id = client.put(python_command("print('must not run')"), {"taskType": "command"})

    # when the waiting job is cancelled from the Python client
    assert client.cancel(queued_id) is CancelOutcome.REMOVED

    # then it never runs and ends with an error entry that says so
    release.touch()
    client.result(busy_id, timeout=30)
    entry = client.result(queued_id, timeout=5)
    assert (entry.type, entry.data, entry.tags["cancelled"]) == ("error", b"cancelled before it started", "true")
    assert client.state(queued_id).status is RequestStatus.CANCELLED
    assert queue_depth(redis_client, "train.command") == 0 and log_texts(client, queued_id) == []


def test_a_job_past_its_timeout_fails(start_worker, client_for):
    start_worker(training_config(task_timeout_seconds=1, cancel_grace_seconds=1))
    client = client_for("train")

    _, request_id = client.put(python_command("import time; time.sleep(60)"), {"taskType": "command"})
    result = client.result(request_id, timeout=30)

    assert result.tags["stopped"] == "timeout"
    state = client.state(request_id)
    assert (state.status, state.error) == (RequestStatus.FAILED, "timed out after 1 s")


def test_jobs_get_the_configured_working_dir_and_allowed_env_tags_only(tmp_path, start_worker, client_for):
    start_worker(training_config(working_dir=str(tmp_path), request_env=["LR"]))
    client = client_for("train")
    code = "import os; print(os.getcwd(), os.environ.get('LR'), os.environ.get('LEAK'))"

    _, first = client.put(python_command(code), {"taskType": "command", "env.LR": "0.1"})
    _, second = client.put(python_command(code), {"taskType": "command"})
    _, refused = client.put(python_command(code), {"taskType": "command", "env.PATH": "/tmp"})

    assert client.result(first, timeout=30).data == f"{tmp_path} 0.1 None\n".encode()
    assert client.result(second, timeout=30).data == f"{tmp_path} None None\n".encode()  # nothing leaks between jobs
    error = client.result(refused, timeout=30)
    assert error.type == "error" and b"tag env.PATH" in error.data


def test_each_training_job_keeps_its_checkpoint_in_its_own_folder(tmp_path, start_worker, client_for):
    # given two runs of the example training script with no --checkpoint-dir, in the same working dir
    start_worker(training_config(working_dir=str(tmp_path)))
    client = client_for("train")
    command = json.dumps(["python", str(REPO / "examples" / "train.py"), "--epochs", "2", "--epoch-seconds", "0"])
    ids = [client.put(command, {"taskType": "command"})[1] for _ in range(2)]

    # when both are done
    assert [client.result(request_id, timeout=60).tags["exitCode"] for request_id in ids] == ["0", "0"]

    # then each wrote its own checkpoints/<request id>, and neither overwrote the other's
    folders = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert folders == sorted(ids)
    for request_id in ids:
        assert json.loads((tmp_path / "checkpoints" / request_id / "checkpoint.json").read_text())["epoch"] == 2


def test_the_training_script_run_by_hand_checkpoints_to_a_local_folder(tmp_path):
    env = {name: value for name, value in os.environ.items() if name != "SCALABLEJOB_REQUEST_ID"}
    argv = [sys.executable, str(REPO / "examples" / "train.py"), "--epochs", "1", "--epoch-seconds", "0"]

    run = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    assert run.returncode == 0, run.stderr
    assert json.loads((tmp_path / "checkpoints" / "local" / "checkpoint.json").read_text())["epoch"] == 1


def test_the_init_command_runs_exactly_once_per_worker(tmp_path, start_worker, client_for):
    marks = tmp_path / "init-marks"
    init = f"python -c \"import os; open({str(marks)!r}, 'a').write(str(os.getppid()) + '\\n')\""
    workers = [start_worker(training_config(init_command=init)) for _ in range(2)]
    client = client_for("train")

    for request_id in [client.put(python_command("pass"), {"taskType": "command"})[1] for _ in range(4)]:
        client.result(request_id, timeout=30)

    assert sorted(marks.read_text().split()) == sorted(str(w.process.pid) for w in workers)


def test_a_failing_init_command_stops_the_worker_before_it_takes_a_task(start_worker, client_for, redis_client):
    client = client_for("train")
    _, request_id = client.put(python_command("pass"), {"taskType": "command"})

    worker = start_worker(training_config(init_command="python -c \"print('no dataset'); exit(9)\""), wait=False)

    assert worker.process.wait(30) == EXIT_INIT_FAILED
    assert "init command" in worker.log() and "exit code 9" in worker.log()
    failure = json.loads(redis_client.hget(init_failures("train"), worker.hostname))
    assert (failure["exit_code"], failure["output_tail"]) == (9, "no dataset\n")
    assert client.state(request_id).status is RequestStatus.QUEUED


def test_a_job_printing_far_more_than_the_cap_leaves_redis_memory_bounded(start_worker, client_for, redis_client):
    cap = 64 * 1024
    start_worker(training_config(log_cap_bytes=cap))
    client = client_for("train")
    before = redis_client.info("memory")["used_memory"]

    code = "import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(20 * 1024): sys.stdout.write(line)"  # 20 MiB
    _, request_id = client.put(python_command(code), {"taskType": "command"})
    result = client.result(request_id, timeout=60)

    logs = [e for e in request_entries(client.sink, client.requests, request_id, follow=False) if e.type == "log"]
    stdout = [e for e in logs if e.tags["stream"] == "stdout"]
    stored = sum(len(e.data) for e in stdout)
    cost = stored + len(stdout) * LOG_ENTRY_OVERHEAD_BYTES  # what the cap counts
    assert cap - (1023 + LOG_ENTRY_OVERHEAD_BYTES) < cost <= cap
    assert logs[-1].tags == {**logs[-1].tags, "stream": "scalablejob", "truncated": "true"}
    assert int(result.tags["logBytesDropped"]) == 20 * 1024 * 1023 - stored  # line text, without newlines
    assert redis_client.info("memory")["used_memory"] - before < 4 * 1024 * 1024


def test_logs_follow_prints_a_jobs_lines_until_it_ends(tmp_path, start_worker, client_for, redis_url):
    start_worker(training_config())
    client = client_for("train")
    release = tmp_path / "release"
    code = "print('epoch 1', flush=True)\n" + wait_for_file(release) + "import sys; print('bye', file=sys.stderr)"
    _, request_id = client.put(python_command(code), {"taskType": "command"})

    follower = subprocess.Popen(
        [sys.executable, "-m", "scalablejob", "logs", "-f", request_id, "--broker", redis_url],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert follower.stdout.readline() == "epoch 1\n"  # printed while the job still runs
        release.touch()
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0
    assert out.startswith("[result: exit code 0, seconds ")
    assert err == "bye\n"


def test_a_running_query_sees_its_cancel_and_ends_cancelled(start_worker, client_for):
    start_worker(service_config("train"))
    client = client_for("train")
    _, request_id = client.put(b'{"until_cancelled": true}', {"taskType": "query"})
    wait_until(lambda: client.state(request_id).status is RequestStatus.RUNNING, 30, "the query never started")

    assert client.cancel(request_id) is CancelOutcome.STOPPING

    entry = client.result(request_id, timeout=30)
    assert (entry.type, entry.data, entry.tags["cancelled"]) == ("error", b"cancelled while running", "true")
    assert client.state(request_id).status is RequestStatus.CANCELLED
