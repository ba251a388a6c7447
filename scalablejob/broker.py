"""Which Redis a command talks to: --broker, else SCALABLEJOB_BROKER, else the embedded one in the data folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

from scalablejob.errors import BrokerError
from scalablejob.redis_server import Guard, RedisServer, probe_client, wait_while_loading

BROKER_ENV = "SCALABLEJOB_BROKER"
BROKER_WAIT_ENV = "SCALABLEJOB_BROKER_WAIT"  # seconds to wait for a given broker to answer (Procfile start order)
DATA_DIR_ENV = "SCALABLEJOB_DATA_DIR"
DEFAULT_DATA_DIR = Path(".scalablejob")
BROKER_RECORD = "broker.json"
_SCHEMES = ("redis", "rediss")


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the embedded broker's data: the argument, else $SCALABLEJOB_DATA_DIR, else ./.scalablejob."""
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def checked_broker_url(url: str) -> str:
    scheme = urlparse(url).scheme
    if scheme not in _SCHEMES:
        raise BrokerError(f"broker {url!r}: expected a redis:// or rediss:// URL")
    return url


def embedded_record(folder: Path) -> dict[str, object]:
    """What the embedded broker of `folder` recorded when it started (its url and pid); empty if nothing did."""
    try:
        record = json.loads((folder / BROKER_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("url"), str) else {}


def running_embedded(folder: Path) -> str | None:
    """The URL of an embedded broker already serving `folder`, if one answers. One that is loading its data, or too
    busy to answer in time, counts: a second server on the same folder would corrupt its file."""
    url = embedded_record(folder).get("url")
    if not isinstance(url, str):
        return None
    client = probe_client(url)
    try:
        client.ping()
        return url
    except (redis.BusyLoadingError, redis.TimeoutError):
        return url
    except redis.RedisError:
        return None
    finally:
        client.close()


class EmbeddedBroker:
    """Starts the private redis-server of a data folder and records its URL there for other commands."""

    def __init__(self, folder: Path, port: int | None = None, guard: Guard | None = None) -> None:
        self.folder = folder
        self.server = RedisServer(folder / "redis", port=port, persistent=True, guard=guard)

    def start(self) -> str:
        existing = running_embedded(self.folder)
        if existing:  # two servers appending to one data folder would corrupt it
            raise BrokerError(f"an embedded broker already serves {self.folder} at {existing}: use --broker {existing}")
        url = self.server.start()
        (self.folder / BROKER_RECORD).write_text(json.dumps({"url": url, "pid": self.server.pid}))
        return url

    def stop(self) -> None:
        (self.folder / BROKER_RECORD).unlink(missing_ok=True)
        self.server.stop()


def resolve_broker(explicit: str | None, folder: Path, guard: Guard | None = None) -> tuple[str, EmbeddedBroker | None]:
    """The broker URL to use, and the embedded broker this process started (and must stop), if any; `guard` as for
    RedisServer."""
    url = explicit or os.environ.get(BROKER_ENV)
    if url:
        wait_for_broker(checked_broker_url(url), broker_wait_s())
        return url, None
    existing = running_embedded(folder)
    if existing:
        wait_for_broker(existing, 0)
        return existing, None
    broker = EmbeddedBroker(folder, guard=guard)
    return broker.start(), broker


def existing_broker(explicit: str | None, folder: Path) -> str:
    """The broker URL for commands that only talk to a running service: never starts one, waits while it loads."""
    url = explicit or os.environ.get(BROKER_ENV) or running_embedded(folder)
    if not url:
        raise BrokerError(
            f"no broker: no embedded broker runs in {folder}; start the service with `scalablejob up CONFIG` "
            f"(same --data-dir), or pass --broker URL (or set {BROKER_ENV})"
        )
    wait_for_broker(checked_broker_url(url), 0)
    return url


def broker_wait_s() -> float:
    """How long to wait for a given broker, from $SCALABLEJOB_BROKER_WAIT (default: not at all)."""
    value = os.environ.get(BROKER_WAIT_ENV, "0")
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise BrokerError(f"{BROKER_WAIT_ENV}={value!r}: expected a number of seconds >= 0")
    return seconds


def wait_for_broker(url: str, timeout_s: float) -> None:
    """Return once the broker answers, trying for up to `timeout_s` (0: one try, and no error if nothing answers:
    the command reports that itself). A broker that answers but is still loading its data is waited for up to
    LOADING_TIMEOUT_S whatever `timeout_s` is: its commands would fail with LOADING until then."""
    deadline = time.monotonic() + timeout_s
    client = probe_client(url)
    try:
        while True:
            try:
                wait_while_loading(client, f"broker {url}")
                return
            except redis.RedisError as exc:
                if timeout_s <= 0:
                    return
                if time.monotonic() > deadline:
                    raise BrokerError(f"broker {url} did not answer within {timeout_s:g} s: {exc}") from None
                time.sleep(0.2)
    finally:
        client.close()
