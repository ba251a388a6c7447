"""Raw sockets against a live front end: what a client that is no HTTP library sends, and what comes back."""

from __future__ import annotations

import socket
import struct
import time


def open_socket(endpoint: str, source: str | None = None, timeout_s: float = 10) -> socket.socket:
    """A TCP connection to `endpoint` (host:port), from address `source` (any 127.x.y.z is this host's loopback)."""
    host, port = endpoint.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout_s,
                                    source_address=(source, 0) if source else None)  # fmt: skip


def read_until_closed(sock: socket.socket, timeout_s: float = 10) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection (or `timeout_s` passes), and how long it took."""
    started, received = time.monotonic(), b""
    sock.settimeout(timeout_s)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        except TimeoutError:
            return received, time.monotonic() - started
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def read_head(sock: socket.socket, timeout_s: float = 10) -> bytes:
    """What the server sends up to the end of a response head (b"" if it closes first)."""
    sock.settimeout(timeout_s)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    return received


def still_open(sock: socket.socket, quiet_s: float = 0.3) -> bool:
    """Whether the server keeps the connection open, without a word, for `quiet_s`."""
    sock.settimeout(quiet_s)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    except ConnectionResetError:
        pass
    return False


def request_head(path: str, *lines: str, method: str = "GET") -> bytes:
    return "\r\n".join([f"{method} {path} HTTP/1.1", "Host: x", *lines, "", ""]).encode()


def hang_up(sock: socket.socket) -> None:
    """Close at once, with a reset: a client that goes away mid-request."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
