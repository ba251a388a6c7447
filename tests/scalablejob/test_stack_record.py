"""The record of the `up` that runs in a data folder: held under a lock that dies with its process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scalablejob.local.stack_record import (
    STACK_RECORD,
    StackAlreadyRunning,
    StackLock,
    StackRecord,
    forget_stale_record,
    running_stack,
)

RECORD = StackRecord(4242, {"frontend": 8080, "flower": 5555, "metrics": 9100})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (RECORD.to_json(), RECORD),
        ('{"pid": 7}', StackRecord(7)),
        ("", None),  # locked but not written yet
        ("{", None),
        ('{"pid": 0}', None),
        ('{"pid": "x"}', None),
        ('{"pid": 7, "ports": [1]}', None),
        ("[]", None),
    ],
)
def test_a_record_is_read_back_or_is_none(text, expected):
    assert StackRecord.from_json(text) == expected


def test_a_record_names_its_pid_and_ports():
    assert RECORD.describe() == "pid 4242, ports frontend 8080, flower 5555, metrics 9100"
    assert StackRecord(0).describe() == "pid unknown"


def test_the_holder_is_found_and_a_second_one_is_refused_with_its_name(tmp_path):
    folder = tmp_path / "data"
    with StackLock(folder) as first:
        first.acquire(RECORD)
        assert running_stack(folder) == RECORD
        with pytest.raises(StackAlreadyRunning, match=f"already runs in {folder} \\(pid 4242, ports frontend 8080"):
            StackLock(folder).acquire(StackRecord(1))
        assert running_stack(folder) == RECORD
    assert not (folder / STACK_RECORD).exists()  # a clean stop leaves nothing behind
    assert running_stack(folder) is None


def test_a_record_whose_process_died_is_not_a_running_stack(tmp_path):
    # given a record written by a process that held the lock and then died without cleaning up
    code = (
        "import os, sys; from pathlib import Path; from scalablejob.local.stack_record import StackLock, StackRecord\n"
        "StackLock(Path(sys.argv[1])).acquire(StackRecord(os.getpid())); os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=60)
    assert json.loads((tmp_path / STACK_RECORD).read_text())["pid"] > 0

    # then nobody runs there, the next holder takes the folder, and the leftover can be removed
    assert running_stack(tmp_path) is None
    assert forget_stale_record(tmp_path)
    assert not (tmp_path / STACK_RECORD).exists()
    with StackLock(tmp_path) as lock:
        lock.acquire(RECORD)
        assert not forget_stale_record(tmp_path)  # a live one is never removed
        assert running_stack(tmp_path) == RECORD
