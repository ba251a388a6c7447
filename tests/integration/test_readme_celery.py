"""README's section for Celery users runs as written: its shell blocks, one terminal each, in a copy of the example
folder; the commands that keep running (broker, worker, Flower) run in the background until the test ends. Every
other command must succeed, and those the section shows an output for must print it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import REPO, wait_until
from scalablejob.api.celery_app import make_app
from scalablejob.local.ports import free_port
from scalablejob.store.broker import running_embedded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

README = REPO / "README.md"
SECTION = "## For Celery users"
EXAMPLE_FILES = ("celery_style.py", "celery_style.json")
SERVICE = "celery-style"
BROKER, WORKER, FLOWER = "scalablejob redis", "celery -A celery_style worker", "celery -A celery_style flower"
EXPECTED = {  # a command of the section (a part of it) -> what it prints
    "shout.delay(": "HELLO WORLD\n",
    "train.delay(": "{'epochs': 3, 'loss': 0.125}\n",
    "chain(add.s(1, 2), add.s(3))": "6 [0, 2, 4]\n",
    "download.delay(": "weights after 2 retries\n",
    "celery -A celery_style result": "5\n",
}


def section_blocks(text: str) -> list[list[str]]:
    """The lines of each shell block of the Celery section, in order: one block per terminal."""
    assert SECTION in text, f"{README} has no {SECTION!r} section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return [block.splitlines() for block in re.findall(r"```sh\n(.*?)\n```", section, flags=re.S)]


def test_the_section_has_a_broker_a_worker_and_a_client_terminal():
    blocks = section_blocks(README.read_text())

    assert [block[0] for block in blocks] == ["cd examples"] * 3
    assert blocks[0][1].startswith(BROKER) and blocks[1][1].startswith(WORKER)
    assert any(line.startswith(FLOWER) for line in blocks[2])
    assert any(".delay(" in line and ".get(" in line for line in blocks[2])


class Terminals:
    """Runs README lines as a user types them, each block from the root of a fresh folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.flower_port = free_port()
        self.env = {
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(root),
            "TMPDIR": str(root), "FLOWER_PORT": str(self.flower_port),  # Flower's own variable, instead of 5555
        }  # fmt: skip
        self.background: list[subprocess.Popen[bytes]] = []
        self.outputs: dict[str, str] = {}

    def run_block(self, lines: list[str]) -> None:
        cwd = self.root
        for line in lines:
            if line.startswith("cd "):
                cwd = cwd / line.split()[1]
            elif line.startswith((BROKER, WORKER, FLOWER)):
                self._start(line, cwd)
            else:
                run = subprocess.run(
                    ["bash", "-c", line], cwd=cwd, env=self.env, capture_output=True, text=True, timeout=90,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
                assert run.returncode == 0, f"{line}\n{run.stdout}{run.stderr}"
                self.outputs[line] = run.stdout

    def _start(self, line: str, cwd: Path) -> None:
        with (self.root / f"background-{len(self.background)}.log").open("wb") as log:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {line}"], cwd=cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.background.append(process)
        if line.startswith(BROKER):
            wait_until(lambda: running_embedded(cwd / ".scalablejob"), 30, "the broker never answered")
        elif line.startswith(WORKER):
            self._wait_for_worker(cwd)
        else:
            wait_until(lambda: self._flower_status() == 401, 30, "Flower never asked for its login")
            login = (cwd / ".scalablejob" / "flower-login").read_text().strip().partition(":")
            assert self._flower_status((login[0], login[2])) == 200  # up's login, from the data folder

    def _wait_for_worker(self, cwd: Path) -> None:
        app = make_app(SERVICE, running_embedded(cwd / ".scalablejob"))
        try:
            wait_until(lambda: app.control.ping(timeout=0.3), 30, "the worker never answered a ping", interval=0)
        finally:
            app.close()

    def _flower_status(self, auth: tuple[str, str] | None = None) -> int | None:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{self.flower_port}/", auth=auth, timeout=2).status_code
        return None

    def stop(self) -> None:
        """SIGTERM first (the broker stops its redis-server), then SIGKILL to whatever is left of each group."""
        for process in reversed(self.background):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(15)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_the_celery_section_runs_as_written(tmp_path):
    (tmp_path / "examples").mkdir()
    for name in EXAMPLE_FILES:
        (tmp_path / "examples" / name).write_bytes((REPO / "examples" / name).read_bytes())
    terminals = Terminals(tmp_path)
    try:
        for block in section_blocks(README.read_text()):
            terminals.run_block(block)
    finally:
        terminals.stop()

    for part, printed in EXPECTED.items():
        for line in [line for line in terminals.outputs if part in line]:
            assert terminals.outputs[line] == printed, line
    [registered] = [printed for line, printed in terminals.outputs.items() if "inspect registered" in line]
    for name in ("count", "shout", "train"):
        assert f"* {name}\n" in registered
