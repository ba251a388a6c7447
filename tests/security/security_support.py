"""What the security tests share: HTTP status with or without a login, and a raw Redis command sent without AUTH."""

from __future__ import annotations

import base64
import os
import socket
import stat
import urllib.error
import urllib.request
from pathlib import Path

from scalablejob.local.flower import flower_login


def status_of(url: str, authorization: str | None = None) -> int:
    """The HTTP status `url` answers, errors included."""
    request = urllib.request.Request(url, headers={"Authorization": authorization} if authorization else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def flower_authorization(data_dir: Path) -> str:
    """The Authorization header of a data folder's Flower login."""
    login = flower_login(data_dir)
    return basic(login.user, login.password)


def raw_reply(port: int, command: bytes = b"PING\r\n") -> bytes:
    """What Redis answers a local process that sends `command` without authenticating (no client library)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(command)
        return connection.recv(200)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)
