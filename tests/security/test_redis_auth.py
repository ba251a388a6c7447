"""Redis requires auth: the embedded broker's password, where it is kept, who finds it; an external Redis with one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from security_support import mode, raw_reply

from conftest import REPO, launch_worker, service_config
from scalablejob import JobClient
from scalablejob.local.embedded_broker import EmbeddedBroker
from scalablejob.local.redis_server import RedisServer
from scalablejob.model.redaction import url_password, with_password
from scalablejob.store.broker import BROKER_ENV, BROKER_RECORD, DATA_DIR_ENV, existing_broker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
CLI = [sys.executable, "-m", "scalablejob"]


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    broker = EmbeddedBroker(tmp_path / "data")
    broker.start()
    yield broker
    broker.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without a broker or data folder an earlier test may have left, plus `extra`."""
    kept = {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}
    return {**kept, **extra}


def test_a_local_process_without_the_password_gets_noauth(embedded):
    port = embedded.server.port
    assert raw_reply(port).startswith(b"-NOAUTH")
    assert raw_reply(port, b"HGETALL scalablejob:demo:frontends\r\n").startswith(b"-NOAUTH")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, protocol=2).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(with_password(embedded.server.address, "not-the-password")).ping()
    assert redis.Redis.from_url(embedded.server.url).ping()


def test_the_data_folder_is_0700_and_the_password_file_and_redis_files_are_0600(embedded):
    folder = embedded.folder
    assert mode(folder) == 0o700
    assert mode(embedded.password_file) == 0o600
    assert embedded.password_file.read_text().strip() == url_password(embedded.server.url)
    assert mode(folder / BROKER_RECORD) == 0o600
    assert url_password(json.loads((folder / BROKER_RECORD).read_text())["url"]) is None  # the record has none
    redis.Redis.from_url(embedded.server.url).set("token", "kept")  # something in the append-only file
    for path in (folder / "redis").rglob("*"):
        assert mode(path) == (0o700 if path.is_dir() else 0o600), path
    assert mode(folder / "redis") == 0o700


def test_the_password_is_on_no_command_line_and_in_no_environment_of_the_server(embedded):
    password = url_password(embedded.server.url)
    assert password and embedded.server.pid
    assert password.encode() not in Path(f"/proc/{embedded.server.pid}/cmdline").read_bytes()
    assert password.encode() not in Path(f"/proc/{embedded.server.pid}/environ").read_bytes()


def test_the_password_is_made_once_and_kept_across_restarts(tmp_path):
    first = EmbeddedBroker(tmp_path)
    url = first.start()
    redis.Redis.from_url(url).set("kept", "yes")
    first.stop()
    again = EmbeddedBroker(tmp_path)
    assert again.start() == url.replace(f":{first.server.port}/", f":{again.server.port}/")
    try:
        assert first.password_created and not again.password_created
        assert redis.Redis.from_url(again.server.url).get("kept") == b"yes"
    finally:
        again.stop()


def test_a_wider_folder_and_password_file_from_before_are_tightened_and_reused(tmp_path):
    folder = tmp_path / "old"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    (folder / "redis.password").write_text("an-older-password-of-this-folder\n")
    os.chmod(folder / "redis.password", 0o644)
    broker = EmbeddedBroker(folder)
    url = broker.start()
    try:
        assert url_password(url) == "an-older-password-of-this-folder"
        assert mode(folder) == 0o700 and mode(folder / "redis.password") == 0o600
    finally:
        broker.stop()


def test_every_command_finds_the_url_and_the_password_in_the_data_folder(embedded, monkeypatch):
    monkeypatch.delenv(BROKER_ENV, raising=False)
    assert existing_broker(None, embedded.folder) == embedded.server.url
    # a URL without a password that names the folder's broker (the Procfile's .env) gets the folder's password
    assert existing_broker(embedded.server.address, embedded.folder) == embedded.server.url
    folder = ["--data-dir", str(embedded.folder)]
    submitted = subprocess.run([*CLI, "submit", "-s", "demo", "--type", "query", "hello", *folder],
                               cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    shown = subprocess.run([*CLI, "status", "-s", "demo", *folder], cwd=REPO, env=clean_env(), capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "demo.query" in shown.stdout


def test_a_wrong_password_is_a_one_line_error_that_shows_no_password(embedded):
    wrong = with_password(embedded.server.address, "a-wrong-password-123")
    shown = subprocess.run([*CLI, "status", "-s", "demo"], cwd=REPO, env=clean_env(**{BROKER_ENV: wrong}),
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 1
    assert "the broker refused our credentials" in shown.stderr and "Traceback" not in shown.stderr
    assert "a-wrong-password-123" not in shown.stderr + shown.stdout


@pytest.mark.parametrize("user", ["", "default"])
def test_an_external_redis_with_a_password_works_for_clients_and_workers(tmp_path, user):
    # given a Redis of someone else's, with a password, named as redis://:pw@... or redis://user:pw@...
    with RedisServer(tmp_path / "external", persistent=False, password="external-pass-0123") as server:
        url = server.url.replace("redis://:", f"redis://{user}:")
        config = tmp_path / "ext.json"
        config.write_text(json.dumps(service_config("ext")))
        # when a worker gets it in its environment, and a client submits through it
        worker = launch_worker(
            [*CLI, "worker", str(config), "-n", "ext@test", "--app", str(REPO / "tests/support/sj_test_handlers.py")],
            "ext@test", tmp_path / "worker.log", cwd=REPO, env=clean_env(**{BROKER_ENV: url}),
        )  # fmt: skip
        try:
            with JobClient("ext", url) as client:
                _, request_id = client.put(b"through a password", {"taskType": "query"})
                # then the work is done, and nothing logged the password
                assert client.result(request_id, timeout=60).data == b"echo:through a password"
            assert "external-pass-0123" not in worker.log()
        finally:
            worker.stop()
