"""Private folders and secrets: 0700 and 0600, made once, agreed on by commands that start at once."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from scalablejob.host.secret_files import ensure_secret, private_folder, read_secret, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_private_folder_is_made_0700_and_an_older_wider_one_is_tightened(tmp_path):
    assert mode(private_folder(tmp_path / "new" / "data")) == 0o700
    (tmp_path / "old").mkdir()
    os.chmod(tmp_path / "old", 0o755)
    assert mode(private_folder(tmp_path / "old")) == 0o700


def test_a_secret_is_made_once_0600_and_then_read_back(tmp_path):
    path = tmp_path / "secret"
    made, created = ensure_secret(path, lambda: "first")
    again, created_again = ensure_secret(path, lambda: "second")
    assert (made, created, again, created_again) == ("first", True, "first", False)
    assert mode(path) == 0o600 and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_empty_secret_file_is_replaced_and_a_wide_one_tightened(tmp_path):
    path = tmp_path / "secret"
    path.write_text("")
    assert ensure_secret(path, lambda: "made") == ("made", True)
    os.chmod(path, 0o644)
    assert read_secret(path) == "made" and mode(path) == 0o600
    assert read_secret(tmp_path / "missing") is None


def test_commands_that_start_at_once_agree_on_one_secret(tmp_path):
    path, seen = tmp_path / "secret", []
    threads = [threading.Thread(target=lambda i=i: seen.append(ensure_secret(path, lambda: f"v{i}"))) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({value for value, _ in seen}) == 1 and sum(created for _, created in seen) == 1


def test_write_private_replaces_a_file_with_a_0600_one(tmp_path):
    path = tmp_path / "record.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private(path, "new")
    assert path.read_text() == "new\n" and mode(path) == 0o600
