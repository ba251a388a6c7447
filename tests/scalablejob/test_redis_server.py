"""The embedded broker: a real redis-server on loopback whose data survives a restart."""

from __future__ import annotations

import json
import os

import pytest
import redis

from scalablejob.broker import BROKER_RECORD, EmbeddedBroker, checked_broker_url, resolve_broker, running_embedded
from scalablejob.errors import BrokerError
from scalablejob.redis_server import RedisServer, redis_server_binary

pytestmark = pytest.mark.integration


def test_the_binary_is_an_executable_redis_server():
    binary = redis_server_binary()
    assert os.access(binary, os.X_OK) and binary.endswith("redis-server")


def test_a_persistent_server_keeps_its_data_across_a_restart(tmp_path):
    with RedisServer(tmp_path, persistent=True) as server:
        client = redis.Redis.from_url(server.url)
        client.set("kept", "yes")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        client.close()
    with RedisServer(tmp_path, port=server.port, persistent=True) as restarted:
        client = redis.Redis.from_url(restarted.url)
        assert client.get("kept") == b"yes"
        client.close()


def test_stop_ends_the_server_process(tmp_path):
    server = RedisServer(tmp_path, persistent=False)
    server.start()
    pid = server.pid
    server.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_server_that_cannot_start_is_a_broker_error(tmp_path):
    with RedisServer(tmp_path, persistent=False) as taken, pytest.raises(BrokerError, match=f"port {taken.port}"):
        RedisServer(tmp_path / "second", port=taken.port, persistent=False).start()


@pytest.mark.parametrize("url", ["http://localhost:6379", "amqp://guest@localhost//", "localhost:6379"])
def test_a_broker_url_that_is_not_redis_is_rejected(url):
    with pytest.raises(BrokerError, match="expected a redis:// or rediss:// URL"):
        checked_broker_url(url)


def test_an_explicit_broker_wins_and_starts_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALABLEJOB_BROKER", "redis://127.0.0.1:1/0")
    assert resolve_broker("redis://127.0.0.1:2/0", tmp_path) == ("redis://127.0.0.1:2/0", None)
    assert resolve_broker(None, tmp_path) == ("redis://127.0.0.1:1/0", None)
    assert not (tmp_path / BROKER_RECORD).exists()


def test_without_a_broker_the_embedded_one_is_started_once_and_then_shared(tmp_path, monkeypatch):
    monkeypatch.delenv("SCALABLEJOB_BROKER", raising=False)
    url, owner = resolve_broker(None, tmp_path)
    try:
        assert isinstance(owner, EmbeddedBroker)
        assert json.loads((tmp_path / BROKER_RECORD).read_text())["url"] == url
        assert resolve_broker(None, tmp_path) == (url, None)  # a second command reuses it
    finally:
        owner.stop()
    assert not (tmp_path / BROKER_RECORD).exists()
    assert running_embedded(tmp_path) is None


def test_a_stale_record_of_a_dead_broker_is_ignored(tmp_path):
    (tmp_path / BROKER_RECORD).write_text(json.dumps({"url": "redis://127.0.0.1:1/0", "pid": 1}))
    assert running_embedded(tmp_path) is None


def test_a_second_embedded_broker_on_the_same_folder_is_refused(tmp_path):
    first = EmbeddedBroker(tmp_path)
    url = first.start()
    try:
        with pytest.raises(BrokerError, match=f"already serves .* at {url}"):
            EmbeddedBroker(tmp_path).start()
    finally:
        first.stop()


def test_a_relative_data_folder_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RedisServer("relative/data", persistent=True) as server:
        assert redis.Redis.from_url(server.url).ping()
    assert (tmp_path / "relative" / "data" / "redis.log").is_file()
