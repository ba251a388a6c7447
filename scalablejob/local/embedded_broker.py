"""The embedded broker: the private redis-server of a data folder, started when no broker is given."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scalablejob.host.secret_files import ensure_secret, private_folder, write_private
from scalablejob.local.redis_server import DEFAULT_APPENDFSYNC, Guard, RedisServer
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


class EmbeddedBroker:
    """Starts the private redis-server of a data folder, with the folder's password, and records its address there
    for other commands."""

    def __init__(
        self, folder: Path, port: int | None = None, guard: Guard | None = None, appendfsync: str = DEFAULT_APPENDFSYNC
    ) -> None:
        self.folder = folder
        self.server = RedisServer(folder / "redis", port=port, persistent=True, guard=guard, appendfsync=appendfsync)
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
        url = self.server.start()
        write_private(self.folder / BROKER_RECORD, json.dumps({"url": self.server.address, "pid": self.server.pid}))
        return url

    def stop(self) -> None:
        (self.folder / BROKER_RECORD).unlink(missing_ok=True)
        self.server.stop()


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
