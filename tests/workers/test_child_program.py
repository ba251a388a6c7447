"""A named training task's child process: what it reports (value or exception) and how the worker reads it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from scalablejob.workers.child_program import child_program, program_result
from scalablejob.workers.command import run_command
from scalablejob.workers.task_child import failure_record, read_record, success_record

TASKS = """
from scalablejob import Job
job = Job("svc")

@job.task(name="train", task_type="command")
def train(body, ctx):
    print("epoch 1", flush=True)
    ctx.progress(0.5, "half")
    if body == b"fail":
        raise ValueError("diverged")
    return {"body": body.decode(), "request": ctx.request_id, "tag": ctx.tags["lr"]}
"""


def test_a_success_record_gives_the_value_and_its_encoding() -> None:
    got = program_result(success_record(b'{"loss": 1}', "json"), 0)

    assert (got.data, dict(got.tags), got.error) == (b'{"loss": 1}', {"resultEncoding": "json"}, None)


def test_a_failure_record_gives_the_exceptions_text_and_type() -> None:
    got = program_result(failure_record(KeyError("lr")), 1)

    assert got.error == "KeyError: 'lr'" and dict(got.tags) == {"errorType": "KeyError", "errorModule": "builtins"}


@pytest.mark.parametrize(
    ("record", "exit_code", "error"),
    [
        (None, 137, None),  # killed: its exit code says it
        (None, 0, "the task's process exited 0 without reporting a result"),
        ({"encoding": "json"}, 0, "the task's process exited 0 without reporting a result"),
    ],
    ids=["killed", "no-record", "no-data"],
)
def test_a_child_without_a_record_leaves_the_exit_code_to_speak(
    record: dict[str, str] | None, exit_code: int, error: str | None
) -> None:
    got = program_result(record, exit_code)

    assert got.data is None and got.error == error


def test_records_round_trip_through_their_file(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    assert read_record(path) is None
    path.write_text(json.dumps(success_record(b"\x00", "bytes")))
    assert read_record(path) == {"encoding": "bytes", "data": "AA=="}


@pytest.mark.parametrize(
    ("body", "exit_code", "data", "error"),
    [
        (b"ok", 0, {"body": "ok", "request": "r1", "tag": "0.1"}, None),
        (b"fail", 1, None, "ValueError: diverged"),
    ],
)
def test_the_child_runs_the_task_streams_its_output_and_reports(
    tmp_path: Path, body: bytes, exit_code: int, data: object, error: str | None
) -> None:
    module = tmp_path / "sj_child_tasks.py"
    module.write_text(TASKS)
    lines: list[tuple[str, bytes]] = []

    with child_program(str(module), "train", "r1", body, {"lr": "0.1"}) as program:
        env = {**os.environ, **program.env}
        outcome = run_command(program.argv, env=env, on_line=lambda stream, line: lines.append((stream, line.text)))
        got = program.result(outcome)
        folder = program.result_path.parent
    assert not folder.exists()  # its files go with the run

    assert outcome.exit_code == exit_code
    assert ("stdout", b"epoch 1") in lines and ("stdout", b"::progress 0.5000 half") in lines
    assert (json.loads(got.data) if got.data else None, got.error) == (data, error)
    if error:
        assert any(b"ValueError: diverged" in text for stream, text in lines if stream == "stderr")  # its traceback
