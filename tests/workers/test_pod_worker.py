"""A worker in a pod: it takes the name its scaler put in its environment (the pod's command line is the user's),
and it does not watch a scaler that runs in another pod (whose process it cannot see: it would stop for nothing)."""

from __future__ import annotations

import socket

import pytest

from scalablejob.host.processes import WORKER_NAME_ENV
from scalablejob.workers.scaler_watch import install_scaler_watch
from scalablejob.workers.service import default_hostname


def test_a_worker_is_named_as_its_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_NAME_ENV, "svc-0a1b2c3d@jobs")
    assert default_hostname("svc") == "svc-0a1b2c3d@jobs"
    monkeypatch.delenv(WORKER_NAME_ENV)
    assert default_hostname("svc").endswith(f"@{socket.gethostname()}")


def test_a_pods_worker_does_not_watch_its_scalers_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKER_NAME_ENV, "svc-0a1b2c3d@jobs")  # its scaler is another pod's process
    assert install_scaler_watch("svc", "redis://127.0.0.1:1/0") is None
