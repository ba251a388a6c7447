"""Which Redis a command talks to: --broker, else SCALABLEJOB_BROKER, else the embedded one in the data folder.

The embedded broker requires a password, made once per data folder and kept there in a 0600 file (the folder is
0700): a command finds the broker's address in the folder's record and the password beside it. A URL given without a
password that names the folder's embedded broker (the Procfile's .env does) gets that password too. Anything printed
shows a URL through `masked_url`.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import redis

from scalablejob.host.secret_files import read_secret
from scalablejob.model.errors import BrokerError, BrokerNotAnswering, BrokerNotRunning
from scalablejob.model.redaction import masked_url, url_password, with_password
from scalablejob.store.probe import PROBE_TIMEOUT_S, probe_client, wait_while_loading
from scalablejob.store.redis_url import SENTINEL_SCHEME, parse_broker_url

BROKER_ENV = "SCALABLEJOB_BROKER"
BROKER_WAIT_ENV = "SCALABLEJOB_BROKER_WAIT"  # seconds to wait for a given broker to answer (Procfile start order)
DATA_DIR_ENV = "SCALABLEJOB_DATA_DIR"
DEFAULT_DATA_DIR = Path(".scalablejob")
BROKER_RECORD = "broker.json"  # the embedded broker's address (no password) and pid
PASSWORD_FILE = "redis.password"  # 0600: the embedded broker's password, made once, kept across restarts
_SCHEMES = ("redis", "rediss")


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the embedded broker's data: the argument, else $SCALABLEJOB_DATA_DIR, else ./.scalablejob."""
    return Path(explicit or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def checked_broker_url(url: str) -> str:
    """A URL every part can connect to: redis://, rediss://, or a Sentinel set (scalablejob.store.redis_url)."""
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        parse_broker_url(url)  # a BrokerError names what is wrong
        return url
    scheme = urlparse(url).scheme
    if scheme not in _SCHEMES:
        raise BrokerError(
            f"broker {masked_url(url)!r}: expected a redis:// or rediss:// URL, or sentinel://HOST:PORT;...?master=NAME"
        )
    return url


def embedded_record(folder: Path) -> dict[str, object]:
    """What the embedded broker of `folder` recorded when it started (its url and pid); empty if nothing did."""
    try:
        record = json.loads((folder / BROKER_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) and isinstance(record.get("url"), str) else {}


def embedded_url(folder: Path) -> str | None:
    """The URL (with the password) of the embedded broker that `folder` records; None if it records none."""
    url = embedded_record(folder).get("url")
    if not isinstance(url, str):
        return None
    return url if url_password(url) else with_password(url, read_secret(folder / PASSWORD_FILE))


def with_folder_password(url: str, folder: Path) -> str:
    """`url`, with the password of `folder`'s embedded broker when it has none and names that broker's address."""
    recorded = embedded_record(folder).get("url")
    if url_password(url) or not isinstance(recorded, str) or _address(recorded) != _address(url):
        return url
    return with_password(url, read_secret(folder / PASSWORD_FILE))


def _address(url: str) -> tuple[str, int | None, str]:
    parts = urlparse(url)
    host = "127.0.0.1" if parts.hostname == "localhost" else parts.hostname or ""
    return host, parts.port, parts.path.strip("/") or "0"


def running_embedded(folder: Path) -> str | None:
    """The URL of an embedded broker already serving `folder`, if one answers. One that is loading its data, or too
    busy to answer in time, or refusing our password or even a PING (MISCONF: its disk is full), counts: a second
    server on the same folder would corrupt its file."""
    return _probe_embedded(folder)[0]


def _probe_embedded(folder: Path) -> tuple[str | None, bool]:
    """(running_embedded's URL, whether it answered in time): a silent one need not be asked again."""
    url = embedded_url(folder)
    if url is None:
        return None, False
    client = probe_client(url)
    try:
        client.ping()
        return url, True
    except redis.TimeoutError:
        return url, False
    except (redis.BusyLoadingError, redis.AuthenticationError, redis.ResponseError):
        return url, True
    except redis.RedisError:
        return None, False
    finally:
        client.close()


def existing_broker(explicit: str | None, folder: Path) -> str:
    """The broker URL for commands that only talk to a running service: never starts one, waits while it loads."""
    url, answered = (explicit or os.environ.get(BROKER_ENV)), True
    if not url:
        url, answered = _probe_embedded(folder)
    if not url:
        raise BrokerNotRunning(
            f"no broker: no embedded broker runs in {folder}; start the service with `scalablejob up CONFIG` "
            f"(same --data-dir), or pass --broker URL (or set {BROKER_ENV})"
        )
    if not answered:
        raise BrokerNotAnswering(f"it did not answer a PING within {PROBE_TIMEOUT_S:g} s")
    return wait_for_broker(checked_broker_url(url), 0, folder)


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


def wait_for_broker(url: str, timeout_s: float, folder: Path | None = None) -> str:
    """The URL to use, once the broker answers, trying for up to `timeout_s` (0: one try, and no error if nothing
    answers: the command reports that itself). A broker that answers but is still loading its data is waited for up to
    LOADING_TIMEOUT_S whatever `timeout_s` is: its commands would fail with LOADING until then. With `folder`, each
    try looks there for the password (see with_folder_password): a broker started at the same time records it late."""
    deadline = time.monotonic() + timeout_s
    while True:
        current = with_folder_password(url, folder) if folder is not None else url
        client = probe_client(current)
        try:
            wait_while_loading(client, f"broker {masked_url(current)}")
            return current
        except redis.RedisError as exc:
            if timeout_s <= 0:
                return current
            if time.monotonic() > deadline:
                what = f"broker {masked_url(current)}"
                raise BrokerError(f"{what} did not answer within {timeout_s:g} s: {exc}") from None
            time.sleep(0.2)
        finally:
            client.close()
