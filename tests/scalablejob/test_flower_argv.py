"""The Flower that `up` starts: loopback only, and workers the scaler stopped kept (with their counts)."""

from __future__ import annotations

from scalablejob.local.up import flower_argv


def test_up_starts_flower_keeping_stopped_workers_on_loopback_with_no_secret_on_its_command_line():
    argv = flower_argv(5555)
    assert not any("purge_offline_workers" in arg for arg in argv)  # a purged worker takes its counts with it
    assert "--address=127.0.0.1" in argv and "--port=5555" in argv
    assert not any("redis://" in arg or "basic_auth" in arg for arg in argv)  # broker and login come in its env
