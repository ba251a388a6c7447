"""The session check in conftest.py: a test run that changes the checkout fails, one that does not, passes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import work_tree_changes, work_tree_snapshot


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                   capture_output=True)  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git work tree with one committed file and a .gitignore like the project's."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text(".scalablejob/\ncheckpoints/\n.pytest_cache/\n")
    (root / "tracked.txt").write_text("one\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "start")
    return root


def test_a_run_that_writes_nothing_is_clean_even_in_a_tree_dirty_before(repo: Path) -> None:
    # given a tree already dirty before the run: an edit, a new file, a broker folder of the developer's own
    (repo / "tracked.txt").write_text("edited\n")
    (repo / "notes.txt").write_text("mine\n")
    (repo / ".scalablejob").mkdir()
    before = work_tree_snapshot(repo)

    # when the run changes nothing but pytest's own cache, then nothing is reported
    (repo / ".pytest_cache").mkdir()
    (repo / ".pytest_cache" / "v").write_text("x")
    assert work_tree_changes(before, work_tree_snapshot(repo)) == []


def test_files_written_into_the_checkout_are_reported(repo: Path) -> None:
    before = work_tree_snapshot(repo)

    (repo / "tracked.txt").write_text("changed by a test\n")
    (repo / "examples").mkdir()
    (repo / "examples" / "out.json").write_text("{}")
    (repo / ".scalablejob").mkdir()
    (repo / "checkpoints" / "local").mkdir(parents=True)

    assert work_tree_changes(before, work_tree_snapshot(repo)) == [
        "git status:  M tracked.txt",
        "git status: ?? examples/out.json",
        "created: .scalablejob",
        "created: checkpoints",
    ]


def test_a_file_deleted_by_a_run_is_reported(repo: Path) -> None:
    before = work_tree_snapshot(repo)

    (repo / "tracked.txt").unlink()

    assert work_tree_changes(before, work_tree_snapshot(repo)) == ["git status:  D tracked.txt"]


def test_outside_a_git_work_tree_nothing_is_compared(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    before = work_tree_snapshot(plain)
    (plain / ".scalablejob").mkdir()

    assert before is None
    assert work_tree_changes(before, work_tree_snapshot(plain)) == []
