"""The Flower that `up` starts: only live workers listed, loopback only."""

from __future__ import annotations

from scalablejob.up import flower_argv


def test_up_starts_flower_listing_only_live_workers_on_loopback_with_no_secret_on_its_command_line():
    argv = flower_argv(5555)
    assert "--purge_offline_workers=0" in argv  # a worker the scaler stopped leaves the list at once
    assert "--address=127.0.0.1" in argv and "--port=5555" in argv
    assert not any("redis://" in arg or "basic_auth" in arg for arg in argv)  # broker and login come in its env
