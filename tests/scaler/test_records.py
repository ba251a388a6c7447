"""The scaler's records in Redis: process identity by pid and start time, and one scaler per service and host."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import fakeredis
import psutil
import pytest

from scalablejob import keys
from scalablejob.errors import ScalerError
from scalablejob.scaler.records import ProcessRecord, ScalerStore, is_same_process


def test_a_record_survives_the_round_trip() -> None:
    record = ProcessRecord("svc-1@h", 42, 1234.5, "h", ("GPU-a", "GPU-b"), 99.0)
    assert ProcessRecord.decode(record.encode()) == record


def test_a_process_is_the_same_only_with_the_same_start_time() -> None:
    me = psutil.Process()
    assert is_same_process(me.pid, me.create_time())
    assert not is_same_process(me.pid, me.create_time() - 1)
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not is_same_process(int(done.stdout), me.create_time())


def test_a_lease_left_by_a_dead_scaler_is_taken_over() -> None:
    client = fakeredis.FakeRedis()
    dead = {"pid": os.getpid(), "create_time": psutil.Process().create_time() - 50}  # our pid, an earlier process
    client.set(keys.scaler_lease("svc", "h"), json.dumps(dead))
    store = ScalerStore(client, "svc", "h")

    store.acquire_lease()
    with pytest.raises(ScalerError, match="expected one scaler per service and host"):
        ScalerStore(client, "svc", "h").acquire_lease()
    ScalerStore(client, "svc", "other-host").acquire_lease()  # another host has its own
    store.release()
    ScalerStore(client, "svc", "h").acquire_lease()
