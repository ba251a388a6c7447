"""Free loopback ports that no outgoing connection can take before their server binds them.

Binding port 0 finds a free port in the kernel's ephemeral range, the range every outgoing connection on the
machine also takes its local port from: between that probe and the server's own bind, a client anywhere can take it,
and the server fails with "Address already in use" (seen in CI, with a front end and hundreds of Redis clients on
one machine). A port below that range is only ever taken by an explicit bind. So a port is picked at random there,
found free by a bind, and never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_EPHEMERAL_FLOOR = 32768  # the kernel's default, where its setting cannot be read
LOWEST_PORT = 10_000  # below: the ports of well-known and registered services
NODE_PORTS_FROM = 30_000  # Kubernetes' NodePort range (30000-32767), which a node's services take later
TRIES = 200

_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.SystemRandom()  # unlike the module's generator, no seed in the process makes its picks repeat


def ephemeral_floor(setting: Path = EPHEMERAL_RANGE) -> int:
    """The lowest port the kernel gives outgoing connections."""
    try:
        return int(setting.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return LINUX_EPHEMERAL_FLOOR


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, below the ephemeral range and Kubernetes' NodePorts
    (where the range leaves room), and not handed out before by this process."""
    highest = min(ephemeral_floor(), NODE_PORTS_FROM)
    with _lock:
        for _ in range(TRIES if highest - LOWEST_PORT >= 1000 else 0):
            port = _random.randrange(LOWEST_PORT, highest)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
        for _ in range(TRIES):  # no room below the ephemeral range, or none free there: the kernel's pick
            if (port := _any_free()) not in _handed_out:
                _handed_out.add(port)
                return port
        raise OSError(f"no free TCP port on 127.0.0.1 that this process has not handed out ({len(_handed_out)} so far)")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _any_free() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
