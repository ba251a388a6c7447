"""Free ports are picked where no outgoing connection can take them first: below the kernel's ephemeral range
(and Kubernetes' NodePorts)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from scalablejob.local.ports import LOWEST_PORT, NODE_PORTS_FROM, ephemeral_floor, free_port


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    highest = min(ephemeral_floor(), NODE_PORTS_FROM)
    ports = [free_port() for _ in range(50)]
    assert all(LOWEST_PORT <= port < highest for port in ports), (highest, ports)
    with socket.socket() as server:
        server.bind(("127.0.0.1", ports[-1]))


def test_one_process_never_hands_out_a_port_twice() -> None:
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)


def test_a_port_someone_listens_on_is_not_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        picks = [busy, busy]  # the first two picks: a port in use, then the same again

        def pick(low: int, high: int) -> int:
            return picks.pop() if picks else random.randrange(low, high)

        monkeypatch.setattr("scalablejob.local.ports._random.randrange", pick)
        monkeypatch.setattr("scalablejob.local.ports.ephemeral_floor", lambda: 65536)
        port = free_port()
        assert port != busy and LOWEST_PORT <= port < NODE_PORTS_FROM and not picks


def test_the_ephemeral_floor_is_read_from_the_kernel_setting_or_defaults(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("40000\t60999\n")
    assert ephemeral_floor(setting) == 40000
    assert ephemeral_floor(tmp_path / "absent") == 32768
