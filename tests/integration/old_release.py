"""The last release of scalablejob, installed from this repository's history into a virtualenv of its own, made once
per test session: what an upgrade replaces, run beside this checkout's code on one Redis.

The release is LAST_RELEASE: main just before task messages carried a protocol version. Move it to the newest release
when one is cut, so that the upgrade tests always upgrade from the release before this one. The virtualenv holds only
that commit's scalablejob (`pip install --no-deps`, built from `git archive`); a .pth file lends it this interpreter's
site-packages for Celery, kombu, redis and the rest, so no dependency is downloaded (this checkout's own scalablejob
is not on that path: its editable install needs a .pth of this venv, which a plain path entry does not run).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import pytest

from conftest import REPO

LAST_RELEASE = "438105f41134cec3b5d038df67434b61e876cb1c"  # main before protocol versions (2026-12-07)
READY = "ready"
BUILD_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def old_release_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python of a virtualenv holding LAST_RELEASE's scalablejob, built once for all of this run's processes."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: one base per worker, one run
    folder = shared / f"old-release-{LAST_RELEASE[:12]}"
    with (shared / "old-release.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process builds, the others wait and reuse it
        return _built(folder)


def _built(folder: Path) -> Path:
    python = folder / "venv" / "bin" / "python"
    if (folder / READY).is_file():
        return python
    _require_commit()
    started = time.monotonic()
    source = folder / "src"
    source.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "archive", "--format=tar", LAST_RELEASE], cwd=REPO, stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(source)], stdin=archive.stdout, check=True, timeout=BUILD_TIMEOUT_S)
    if archive.wait(timeout=BUILD_TIMEOUT_S) != 0:
        pytest.fail(f"git archive {LAST_RELEASE} failed with exit code {archive.returncode}")
    venv.EnvBuilder(clear=True, with_pip=False).create(folder / "venv")
    site = Path(_run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    lent = dict.fromkeys(sysconfig.get_paths()[name] for name in ("purelib", "platlib"))
    (site / "lent-dependencies.pth").write_text("".join(f"{path}\n" for path in lent))
    # this interpreter's pip installs into the new venv (pip --python); the build gets setuptools from the index
    _run(Path(sys.executable), "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps",
         "--disable-pip-version-check", str(source))  # fmt: skip
    where = _run(python, "-c", "import scalablejob; print(scalablejob.__file__)").strip()
    if not where.startswith(str(site)):
        pytest.fail(f"the old release's venv imports scalablejob from {where}, not from its own {site}")
    (folder / READY).write_text(f"{LAST_RELEASE} built in {time.monotonic() - started:.1f} s\n")
    return python


def _require_commit() -> None:
    """LAST_RELEASE must be in the history: skipped outside a git checkout, an error in a shallow one."""
    try:
        found = subprocess.run(
            ["git", "cat-file", "-e", f"{LAST_RELEASE}^{{commit}}"], cwd=REPO, capture_output=True, timeout=60
        )
        inside = subprocess.run(["git", "rev-parse", "--git-dir"], cwd=REPO, capture_output=True, timeout=60)
    except OSError as exc:
        pytest.skip(f"the upgrade tests install the last release from git history, and git cannot run: {exc}")
    if inside.returncode != 0:
        pytest.skip(f"the upgrade tests install the last release from git history, and {REPO} is no git checkout")
    if found.returncode != 0:
        shallow = subprocess.run(["git", "rev-parse", "--is-shallow-repository"], cwd=REPO, capture_output=True,
                                 text=True, timeout=60).stdout.strip() == "true"  # fmt: skip
        if shallow:  # not this checkout's fault: its history was cut (`git clone --depth`)
            pytest.skip(f"the last release ({LAST_RELEASE[:12]}) is not in this shallow clone's history: "
                        "`git fetch --unshallow` fetches it")  # fmt: skip
        pytest.fail(f"commit {LAST_RELEASE} (the last release) is not in this clone's history: LAST_RELEASE must "
                    "name a commit of main")  # fmt: skip


def _run(program: Path, *args: str) -> str:
    done = subprocess.run(
        [str(program), *args], cwd=program.parent, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
        env=old_release_env(),
    )  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"{program} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def old_release_env() -> dict[str, str]:
    """The environment of an old release's process: no PYTHONPATH that could lend it this checkout's code."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env
