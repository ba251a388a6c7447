"""Files only their owner may read: the data folder (0700), and the secrets in it (0600), made once and then reused.

A secret is written to a private temporary file and linked into place, so that two commands that start at once agree
on one value and no reader ever sees a half-written file. Folders and secrets left wider by an older version are
tightened when they are next used.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600
SECRET_BYTES = 32  # 256 bits, 43 URL-safe characters: safe in a URL, a Redis config line and a basic-auth pair


def random_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def private_folder(path: str | os.PathLike[str]) -> Path:
    """`path`, made if missing (with its parents), readable by its owner only."""
    folder = Path(path)
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    _tighten(folder, FOLDER_MODE)
    return folder


def write_private(path: Path, text: str) -> None:
    """Replace `path` by a 0600 file holding `text`, atomically."""
    temporary = _write_temporary(path, text)
    os.replace(temporary, path)


def read_secret(path: Path) -> str | None:
    """The secret kept in `path` (stripped), or None when there is none (no file, or an empty one)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    _tighten(path, FILE_MODE)
    return text or None


def ensure_secret(path: Path, make: Callable[[], str] = random_secret) -> tuple[str, bool]:
    """The secret kept in `path`, made with `make` and kept there first if there is none; True if this call made it."""
    existing = read_secret(path)
    if existing is not None:
        return existing, False
    temporary = _write_temporary(path, make())
    try:
        os.link(temporary, path)  # fails if another command made it first: then theirs is the one
    except FileExistsError:
        if (theirs := read_secret(path)) is not None:
            return theirs, False
        os.replace(temporary, path)  # an empty file is no secret: ours replaces it
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    made = read_secret(path)
    assert made is not None
    return made, True


def _write_temporary(path: Path, text: str) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")  # one per writer
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return temporary


def _tighten(path: Path, mode: int) -> None:
    """Narrow `path` to `mode` if it is wider (a file of someone else's is theirs to fix: left as it is)."""
    with contextlib.suppress(PermissionError):
        if stat.S_IMODE(path.stat().st_mode) & ~mode:
            os.chmod(path, mode)
