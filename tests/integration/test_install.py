"""One distribution, one import name: a regular install holds only `scalablejob`, and the installed CLI runs from a
folder whose own `workers/`, `scaler/` and `frontend/` packages (any ML project may have them) would shadow ours."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, UpProcess, copy_checkout
from scalablejob import JobClient

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTS = ("workers", "scaler", "frontend")


@pytest.fixture(scope="module")
def regular_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install .` (not editable, no dependencies: the test's environment has them) into a folder of its own."""
    source = copy_checkout(tmp_path_factory.mktemp("checkout"))
    site = tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)]
    subprocess.run(pip, check=True, timeout=180)
    return site


@pytest.fixture
def decoy_project(tmp_path: Path) -> Path:
    """A user's project folder with packages named like our parts; importing any of them (or a module in it, which
    runs its __init__ first) leaves a marker file and fails."""
    project = tmp_path / "project"
    for part in PARTS:
        (project / part).mkdir(parents=True)
        marker = project / f"imported-{part}"
        (project / part / "__init__.py").write_text(
            f"open({str(marker)!r}, 'w').close()\nraise ImportError('the decoy {part} package was imported')\n"
        )
    shutil.copy(REPO / "examples" / "handlers.py", project / "handlers.py")
    (project / "service.json").write_text(json.dumps(SERVICE))
    return project


def imported_decoys(project: Path) -> list[str]:
    return sorted(path.name for path in project.glob("imported-*"))


WHERE_ARE_THE_PARTS = (
    "import scalablejob.workers.main, scalablejob.scaler.loop, scalablejob.frontend.app as app; print(app.__file__)"
)
SERVICE = {"metadata": {"name": "decoy", "type": "ScalableJob", "gpu": 0}, "autoscaler": {"min": 1, "max": 1}}


def test_a_regular_install_holds_only_the_scalablejob_package(regular_install: Path) -> None:
    top = {path.name for path in regular_install.iterdir() if not path.name.endswith(".dist-info")}
    assert top == {"scalablejob", "bin"}
    package = regular_install / "scalablejob"
    assert all((package / part / "__init__.py").is_file() for part in PARTS)
    assert not any(path.is_symlink() for path in package.iterdir())  # the linked folders are copied in
    assert (package / "workers" / "gate.py").is_file() and (package / "frontend" / "app.py").is_file()
    # the Lua scripts ship: the store's in its lua/ folder, the others beside their modules
    assert (package / "store" / "lua" / "state_finish.lua").is_file()
    assert (package / "transport" / "unacked_record.lua").is_file()
    assert (package / "frontend" / "tag_scan.lua").is_file() and (package / "scaler" / "lease_take.lua").is_file()
    # and the dashboard's static files, uPlot with its license among them
    static = package / "frontend" / "static"
    assert {"dashboard.html", "login.html", "dashboard.js", "uPlot.iife.min.js", "uPlot.LICENSE"} <= {
        path.name for path in static.iterdir()
    }


def installed_env(site: Path) -> dict[str, str]:
    """An environment whose `scalablejob` is the one in `site`: its folder comes before the test's own install."""
    return {**os.environ, "PYTHONPATH": str(site)}


@pytest.mark.parametrize("install", ["regular", "editable"])
def test_the_installed_cli_runs_every_part_from_a_folder_with_decoy_packages(
    install: str, regular_install: Path, decoy_project: Path, tmp_path: Path
) -> None:
    # given the installed `scalablejob` command, run in a project folder with decoy workers/, scaler/, frontend/
    if install == "regular":
        cli, env = [str(regular_install / "bin" / "scalablejob")], installed_env(regular_install)
    else:
        cli, env = [str(Path(sys.executable).parent / "scalablejob")], dict(os.environ)
    where = subprocess.run(
        [sys.executable, "-c", WHERE_ARE_THE_PARTS], cwd=decoy_project, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    expected_home = regular_install if install == "regular" else REPO
    assert Path(where.stdout.strip()).is_relative_to(expected_home)
    for part in ("worker", "scaler", "frontend", "up"):
        shown = subprocess.run([*cli, part, "--help"], cwd=decoy_project, env=env, capture_output=True, timeout=60)
        assert shown.returncode == 0, shown.stderr

    # when it brings the whole stack up there (front end, scaler, a worker with the project's own handlers)
    up = UpProcess(
        decoy_project / "service.json", tmp_path / "data", "--app", "handlers.py", command=cli, cwd=decoy_project,
        env=env,
    )  # fmt: skip
    try:
        address = up.wait_ready()

        # then a query is answered by the project's handler, and Ctrl-C stops it cleanly
        with JobClient("decoy", address["broker"]) as client:
            _, request_id = client.put(b"from any folder", {"taskType": "query"})
            answer = json.loads(client.result(request_id, timeout=90).data)
        assert answer["text"] == "FROM ANY FOLDER"
        assert up.interrupt() == 0, "\n".join(up.lines)
    finally:
        if up.process.poll() is None:
            up.kill()
    assert imported_decoys(decoy_project) == []
