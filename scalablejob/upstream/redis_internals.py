"""redis-py internals: which socket a connection has now. Only the transport's wake-up uses it."""

from __future__ import annotations

from typing import Any

from redis.connection import AbstractConnection

from scalablejob.upstream.check import require

require("redis", AbstractConnection, ("send_command", "read_response"))
_CLIENT_ID = "_scalablejob_client_id"  # stored on the connection: (its socket then, the id Redis gave it)


def connection_client_id(connection: Any) -> int:
    """The Redis client id of a connection, asked once per socket, while it is idle (a reconnect makes a new one)."""
    cached = getattr(connection, _CLIENT_ID, None)  # asked before every gated BRPOP: the cached answer is the rule
    if cached is not None and cached[0] is connection._sock:
        return int(cached[1])
    require("redis", connection, ("_sock",))  # an attribute of each connection, not of the class
    connection.send_command("CLIENT", "ID")
    client_id = int(connection.read_response())
    setattr(connection, _CLIENT_ID, (connection._sock, client_id))
    return client_id
