"""The embedded broker: the private redis-server of a data folder, started when no broker is given.

Its record (broker.json: address and pid) is what `scalablejob down` and every command find it by, so a server is
never left running unrecorded: one whose record cannot be written (a full disk) is stopped at once. Nor is one
stopped while it holds writes it could not append to its file: it is left running, recorded, to finish them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from pathlib import Path

import psutil

from scalablejob.host.secret_files import ensure_secret, private_folder, write_private
from scalablejob.local.redis_server import DEFAULT_APPENDFSYNC, STOP_TIMEOUT_S, Guard, RedisServer, servers_in
from scalablejob.model.errors import BrokerError
from scalablejob.model.redaction import masked_url
from scalablejob.store.broker import (
    BROKER_ENV,
    BROKER_RECORD,
    PASSWORD_FILE,
    broker_wait_s,
    checked_broker_url,
    running_embedded,
    wait_for_broker,
)

REDIS_FOLDER = "redis"  # the server's own folder in the data folder: its append-only file and log
UNSAVED_WAIT_S = 5.0  # a server that could not write its file retries every second: give it a few before leaving it


class EmbeddedBroker:
    """Starts the private redis-server of a data folder, with the folder's password, and records its address there
    for other commands."""

    def __init__(
        self, folder: Path, port: int | None = None, guard: Guard | None = None, appendfsync: str = DEFAULT_APPENDFSYNC
    ) -> None:
        self.folder = folder
        self.server = RedisServer(
            folder / REDIS_FOLDER, port=port, persistent=True, guard=guard, appendfsync=appendfsync
        )
        self.password_created = False

    @property
    def password_file(self) -> Path:
        return self.folder / PASSWORD_FILE

    def start(self) -> str:
        """Start the server; returns its URL, password included (print `masked_url` of it, never the URL itself)."""
        existing = running_embedded(self.folder)
        if existing:  # two servers appending to one data folder would corrupt it
            raise BrokerError(
                f"an embedded broker already serves {self.folder} at {masked_url(existing)}: commands given the same "
                "--data-dir use it"
            )
        private_folder(self.folder)
        self.server.password, self.password_created = ensure_secret(self.password_file)
        return self.restart()

    def restart(self) -> str:
        """Start the server (again: same port, data and password) and record it; BrokerError if it cannot start or
        be recorded, and then it does not run."""
        try:
            url = self.server.start()
        except BaseException:
            self._stop_strays()
            raise
        try:
            write_private(self.folder / BROKER_RECORD, json.dumps({"url": self.server.address, "pid": self.server.pid}))
        except OSError as exc:
            self.server.stop()  # unrecorded, nothing could find it to stop it
            full = f": free space on the disk of {self.folder}, then start again" if exc.errno == errno.ENOSPC else ""
            raise BrokerError(
                f"could not record the embedded broker in {self.folder / BROKER_RECORD} ({exc.strerror}), so it was "
                f"stopped again{full}"
            ) from exc
        return url

    def _stop_strays(self) -> None:
        """Stop any redis-server of this data folder: a stop signal that interrupts a start inside Popen leaves the
        new server running, unknown to the RedisServer (seen when `up` was stopped while restarting its Redis).
        The old one has exited, so every server working in this folder is the interrupted start's."""
        for process in servers_in(self.server.data_dir):
            with contextlib.suppress(psutil.Error):
                process.terminate()
                process.wait(STOP_TIMEOUT_S)

    def stop(self, unsaved_wait_s: float = UNSAVED_WAIT_S) -> str | None:
        """Stop the server, unless it holds writes it could not put in its file: then it is left running and recorded,
        and the reason is returned (free space, then `scalablejob down` stops it without loss)."""
        unsaved = self.server.unsaved_writes(unsaved_wait_s)
        if unsaved is not None:
            return f"the embedded redis-server (pid {self.server.pid}) was left running: {unsaved}"
        (self.folder / BROKER_RECORD).unlink(missing_ok=True)
        self.server.stop()
        return None


def resolve_broker(
    explicit: str | None, folder: Path, guard: Guard | None = None, appendfsync: str = DEFAULT_APPENDFSYNC
) -> tuple[str, EmbeddedBroker | None]:
    """The broker URL to use, and the embedded broker this process started (and must stop), if any; `guard` and
    `appendfsync` as for RedisServer (for a broker started here)."""
    url = explicit or os.environ.get(BROKER_ENV)
    if url:
        return wait_for_broker(checked_broker_url(url), broker_wait_s(), folder), None
    existing = running_embedded(folder)
    if existing:
        wait_for_broker(existing, 0)
        return existing, None
    broker = EmbeddedBroker(folder, guard=guard, appendfsync=appendfsync)
    return broker.start(), broker
