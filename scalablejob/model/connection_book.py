"""Who holds the front end's HTTP connections: how many each client has, and which are idle, oldest first, so that
the connection caps (one client's, and all clients') reclaim an idle connection before they refuse a newcomer.

A client is known by its address alone: a connection is capped before any byte of it, let alone a token, is read.
A connection is idle from its start, and again from the end of each response, until the head of its next request
is complete: it holds nothing a client waits for, so closing it (as keep-alive expiry would) costs a client at most a
reconnect, while connections that are opened and never used are exactly what a client hogging the front end holds.
Only a newcomer whose way is blocked by connections all serving requests is refused. Pure: no sockets, no clock; a
connection is whatever hashable the caller names it by.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

C = TypeVar("C", bound=Hashable)

IPV6_CLIENT_PREFIX = 64  # an IPv6 host is commonly given a whole /64: all its addresses are one client


def client_of(address: str) -> str:
    """The client a peer address counts for: an IPv4 address (IPv4-mapped IPv6 too) as it is, an IPv6 address's
    /64 network, anything else (a Unix socket's empty peer) as given."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # no zone index: fe80::1%eth0
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))
    return str(ip)


@dataclass(frozen=True)
class Admit:
    """The newcomer fits under both caps."""


@dataclass(frozen=True)
class Reclaim(Generic[C]):
    """The newcomer gets in once `victim`, an idle connection, is closed."""

    victim: C


@dataclass(frozen=True)
class Refuse:
    """No room: the newcomer's client (`per_client`) or all clients hold the cap, every connection busy."""

    per_client: bool


Room = Admit | Reclaim[C] | Refuse


class ConnectionBook(Generic[C]):
    """The open connections by client, and the idle ones in the order they became idle."""

    def __init__(self) -> None:
        self._client: dict[C, str] = {}
        self._count: Counter[str] = Counter()
        self._idle: OrderedDict[C, None] = OrderedDict()  # of all clients, longest idle first
        self._idle_of: dict[str, OrderedDict[C, None]] = {}  # the same, per client

    def __len__(self) -> int:
        return len(self._client)

    def count(self, client: str) -> int:
        return self._count[client]

    def oldest_idle(self, client: str | None = None) -> C | None:
        """The connection idle longest, of `client` or of all."""
        idle = self._idle if client is None else self._idle_of.get(client)
        return next(iter(idle), None) if idle else None

    def make_room(self, client: str, open_now: int, per_client: int, total: int) -> Room[C]:
        """How a new connection of `client` gets in, `open_now` connections of all kinds being open without it."""
        if self.count(client) >= per_client:
            victim = self.oldest_idle(client)
            return Refuse(per_client=True) if victim is None else Reclaim(victim)
        if open_now >= total:
            victim = self.oldest_idle()
            return Refuse(per_client=False) if victim is None else Reclaim(victim)
        return Admit()

    def open(self, conn: C, client: str) -> None:
        """A connection let in: idle until its first request head is complete."""
        self._client[conn] = client
        self._count[client] += 1
        self.idle(conn)

    def idle(self, conn: C) -> None:
        """No request under way on `conn` (a response ended); it keeps its place if it was idle already."""
        client = self._client.get(conn)
        if client is not None and conn not in self._idle:
            self._idle[conn] = None
            self._idle_of.setdefault(client, OrderedDict())[conn] = None

    def busy(self, conn: C) -> None:
        """A request head came complete on `conn`: it is being served, not to be reclaimed."""
        client = self._client.get(conn)
        if client is not None:
            self._not_idle(client, conn)

    def close(self, conn: C) -> None:
        """`conn` is gone (or handed to a websocket, which the per-token watcher cap governs); unknown is fine."""
        client = self._client.pop(conn, None)
        if client is None:
            return
        self._not_idle(client, conn)
        self._count[client] -= 1
        if not self._count[client]:
            del self._count[client]

    def _not_idle(self, client: str, conn: C) -> None:
        if conn not in self._idle:
            return
        del self._idle[conn]
        of_client = self._idle_of[client]
        del of_client[conn]
        if not of_client:
            del self._idle_of[client]
