"""The process of a Celery call of a command task (workers/call_child.py), run as its worker runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def run_child(folder: Path, call: dict[str, object]) -> tuple[int, dict[str, object]]:
    """Run `python -m scalablejob.workers.call_child` on `call`: its exit status and its result record."""
    call_path, result_path = folder / "call.json", folder / "result.json"
    call_path.write_text(json.dumps(call))
    argv = [sys.executable, "-m", "scalablejob.workers.call_child", str(call_path), str(result_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=50, stdin=subprocess.DEVNULL)
    assert result_path.exists(), f"no result record (exit status {done.returncode}):\n{done.stdout}{done.stderr}"
    return done.returncode, json.loads(result_path.read_text())


def test_a_soft_time_limit_while_the_tasks_module_is_imported_fails_the_call_with_soft_time_limit_exceeded(
    tmp_path: Path,
) -> None:
    # given a tasks module whose import is still running when the worker's SIGUSR1 (the soft limit) comes
    module = tmp_path / "slow_tasks.py"
    module.write_text("import os, signal, time\nos.kill(os.getpid(), signal.SIGUSR1)\ntime.sleep(1)\n")

    # when a call of one of its tasks runs
    status, record = run_child(tmp_path, {"module": str(module), "name": "train", "args": [], "kwargs": {}})

    # then the call fails with SoftTimeLimitExceeded, as a soft limit in the task would, instead of its process
    # dying of SIGUSR1 without a result
    assert status == 1
    assert record["error"]["type"] == "SoftTimeLimitExceeded"  # type: ignore[index]
