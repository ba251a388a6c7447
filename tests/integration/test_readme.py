"""README's first command must work as written on a fresh copy: a new virtualenv, `pip install .`, the demo."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import REPO, copy_checkout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def readme_commands() -> list[str]:
    """The shell blocks under README's 'Two commands' heading, in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)


def test_readme_has_the_two_commands_near_the_top():
    commands = readme_commands()
    assert len(commands) == 2
    assert "examples/quickstart.py" in commands[0] and "pytest" in commands[1]
    assert (REPO / "README.md").read_text().index("## Two commands") < 1500


def test_readme_first_command_runs_the_demo_on_a_fresh_copy(tmp_path):
    copy = copy_checkout(tmp_path / "scalablejob")

    run = subprocess.run(
        ["bash", "-c", readme_commands()[0]], cwd=copy, capture_output=True, text=True, timeout=540,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
    )  # fmt: skip

    assert run.returncode == 0, run.stdout + run.stderr
    assert "HELLO SCALABLE WORLD" in run.stdout and "exit code 2" in run.stdout
    assert "worker and redis-server stopped" in run.stdout
    assert run.stdout.rstrip().endswith("removed (--keep keeps it)")
