"""redis-py internals: which socket a connection has now (the transport's wake-up), and the options that keep the
front end's redis.asyncio client off redis-py's maintenance notifications."""

from __future__ import annotations

from typing import Any

from redis.connection import AbstractConnection

try:
    from redis import maint_notifications
except ImportError:  # pragma: no cover - redis-py before 7 has none
    maint_notifications = None  # type: ignore[assignment]

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


def without_maintenance_notifications() -> dict[str, Any]:
    """Client options that turn redis-py's maintenance notifications off (redis-py 7 and later; none before): they
    follow a managed cluster's planned failovers, which a self-run Redis never announces, and cost the front end
    about 10-20 us of CPU per command (issue 26). A failover is still followed (redis_url.py: Sentinel)."""
    if maint_notifications is None:  # pragma: no cover
        return {}
    return {"maint_notifications_config": maint_notifications.MaintNotificationsConfig(enabled=False)}
