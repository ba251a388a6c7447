"""README's first command runs examples/quickstart.py: it must work end to end on the embedded Redis."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_quickstart_submits_queries_and_commands_and_prints_their_results(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "examples/quickstart.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=100
    )

    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "HELLO SCALABLE WORLD" in out and "IDLE WORKERS FIRST" in out
    assert "exit code 0" in out and "training on" in out
    assert "failed on demo-1@quickstart" in out and "exit code 2" in out and "loss went up" in out
    assert "worker and redis-server stopped" in out
    assert out.rstrip().endswith("removed (--keep keeps it)")
    assert not list(tmp_path.glob("scalablejob-quickstart-*"))  # nothing left holding a password or requests


def test_quickstart_keeps_its_data_folder_when_asked_and_says_where(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "examples/quickstart.py", "--keep"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=100)  # fmt: skip

    assert run.returncode == 0, run.stderr
    (kept,) = tmp_path.glob("scalablejob-quickstart-*")
    assert f"data kept in {kept} " in run.stdout and (kept / "worker.log").exists()
