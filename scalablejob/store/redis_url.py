"""Broker URLs, one Redis or a Sentinel-managed set, and the one place that turns them into clients.

A plain URL is what redis-py takes (`redis://[:password@]host:port/db`, `rediss://`, `unix://`). A Sentinel URL
lists the sentinels, as kombu's sentinel transport does, and names the master to ask them for:

    sentinel://[:password@]host:port;sentinel://host:port;.../db?master=NAME[&replicas=N]

The password (in the first part) is the master's; the sentinels themselves are asked without one. `replicas=N`
makes an acknowledged put durable: the put waits (WAIT) until N replicas have its writes, and fails (so it is not
acknowledged) if they do not within REPLICA_WAIT_MS. Every command, worker, scaler, front end and Celery app
connects through `connect` / `connect_async` / `kombu_connection_options`, so a failover needs no restart: the
clients ask the sentinels for the new master when the old one stops answering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis import asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from scalablejob.model.errors import BrokerError
from scalablejob.model.redaction import masked_url

SENTINEL_SCHEME = "sentinel"
REPLICA_WAIT_MS = 2000
SENTINEL_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class BrokerAddress:
    """What a broker URL says: a plain Redis URL, or sentinels, a master name, a db and the durable replica count."""

    url: str
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str = ""
    db: int = 0
    password: str | None = None
    username: str | None = None
    replicas: int = 0

    @property
    def is_sentinel(self) -> bool:
        return bool(self.sentinels)


def parse_broker_url(url: str) -> BrokerAddress:
    """Read a broker URL; a Sentinel URL without a master or with a bad part is a BrokerError naming it."""
    if not url.startswith(f"{SENTINEL_SCHEME}://"):
        return BrokerAddress(url, replicas=_replicas(urlsplit(url).query, url))
    parts = url.split(";")
    *_, last = parts
    tail = urlsplit(last)
    query = parse_qs(tail.query)
    master = (query.get("master") or query.get("master_name") or [""])[0]
    if not master:
        raise BrokerError(f"broker URL {_shown(url)}: a sentinel:// URL needs ?master=NAME (the monitored master)")
    sentinels = []
    for part in parts:
        split = urlsplit(part)
        if split.scheme != SENTINEL_SCHEME or not split.hostname:
            raise BrokerError(f"broker URL {_shown(url)}: expected sentinel://host:port parts separated by ';'")
        sentinels.append((split.hostname, split.port or 26379))
    first = urlsplit(parts[0])
    db = tail.path.strip("/") or "0"
    if not db.isdigit():
        raise BrokerError(f"broker URL {_shown(url)}: expected a database number after the last sentinel, got {db!r}")
    password = unquote(first.password) if first.password else None
    username = unquote(first.username) if first.username else None
    return BrokerAddress(url, tuple(sentinels), master, int(db), password, username, _replicas(tail.query, url))


def connect(url: str, **options: Any) -> redis.Redis:
    """A client of the broker (of its current master, for a Sentinel URL); options as redis.Redis takes them."""
    client: redis.Redis = _client(url, options, redis.Redis.from_url, Sentinel)
    return client


def connect_async(url: str, **options: Any) -> aioredis.Redis:
    """The same, on redis.asyncio (the front end)."""
    client: aioredis.Redis = _client(url, options, aioredis.Redis.from_url, AsyncSentinel)
    return client


def _client(url: str, options: dict[str, Any], from_url: Any, sentinel_class: Any) -> Any:
    address = parse_broker_url(url)
    if not address.is_sentinel:
        return from_url(_without_query(url) if address.replicas else url, **options)
    sentinel = sentinel_class(list(address.sentinels), sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S})
    return sentinel.master_for(
        address.master, db=address.db, password=address.password, username=address.username, **options
    )


def kombu_connection_options(url: str) -> tuple[str, dict[str, Any]]:
    """The URL and transport options kombu needs: its sentinel transport takes the master as `master_name`."""
    address = parse_broker_url(url)
    if not address.is_sentinel:
        return (_without_query(url) if address.replicas else url), {}
    auth = f"{address.username or ''}:{address.password}@" if address.password else ""
    hosts = ";".join(f"{SENTINEL_SCHEME}://{auth if n == 0 else ''}{host}:{port}"
                     for n, (host, port) in enumerate(address.sentinels))  # fmt: skip
    return f"{hosts}/{address.db}", {"master_name": address.master}


def wait_for_replicas(client: redis.Redis, url: str) -> None:
    """Make the writes this client made so far durable on the replicas the URL asks for; BrokerError if fewer have
    them in time (the caller must not acknowledge)."""
    wanted = parse_broker_url(url).replicas
    if wanted > 0:
        _check_replicas(client.execute_command("WAIT", wanted, REPLICA_WAIT_MS), wanted)


async def wait_for_replicas_async(client: aioredis.Redis, url: str) -> None:
    """The same, on redis.asyncio (the front end): only the call differs."""
    wanted = parse_broker_url(url).replicas
    if wanted > 0:
        _check_replicas(await client.execute_command("WAIT", wanted, REPLICA_WAIT_MS), wanted)


def _check_replicas(reply: Any, wanted: int) -> None:
    reached = int(reply)
    if reached < wanted:
        raise BrokerError(
            f"only {reached} of the {wanted} replicas the broker URL asks for (replicas={wanted}) confirmed the "
            f"write within {REPLICA_WAIT_MS} ms: not acknowledged"
        )


def _replicas(query: str, url: str) -> int:
    value = (parse_qs(query).get("replicas") or ["0"])[0]
    if not value.isdigit():
        raise BrokerError(f"broker URL {_shown(url)}: replicas={value!r}: expected a whole number of replicas")
    return int(value)


def _without_query(url: str) -> str:
    """The URL without our own `replicas` parameter (redis-py would refuse it); its other parameters stay."""
    base, _, query = url.partition("?")
    kept = "&".join(pair for pair in query.split("&") if pair and not pair.startswith("replicas="))
    return f"{base}?{kept}" if kept else base


def _shown(url: str) -> str:
    return masked_url(url)
