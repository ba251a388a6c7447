"""The embedded broker: a real redis-server on loopback whose data survives a restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from conftest import wait_until
from scalablejob.local.embedded_broker import EmbeddedBroker, resolve_broker
from scalablejob.local.redis_server import RedisServer, redis_server_binary
from scalablejob.model.errors import BrokerError
from scalablejob.model.redaction import masked_url, url_password
from scalablejob.store.broker import BROKER_RECORD, checked_broker_url, existing_broker, running_embedded
from scalablejob.store.probe import loading_notice, probe_client

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


def test_a_start_interrupted_right_after_the_config_was_sent_stops_the_server(tmp_path, monkeypatch):
    # given a stop signal (here KeyboardInterrupt) that lands just after the config was sent: the server has not
    # read it yet, so it does not work in its data folder, where `up`'s search for strays looks
    server = RedisServer(tmp_path, persistent=False)

    def interrupted(url: str) -> redis.Redis:
        raise KeyboardInterrupt

    monkeypatch.setattr("scalablejob.local.redis_server.probe_client", interrupted)

    try:
        with pytest.raises(KeyboardInterrupt):
            server.start()

        # then the server it spawned is stopped, not left to start on its own
        assert server.pid is not None and server.exit_status is not None
    finally:
        server.stop()


def test_a_stop_signal_that_lands_inside_the_spawn_stops_the_server_it_spawned(tmp_path, monkeypatch):
    # given Ctrl-C (SIGINT: KeyboardInterrupt) arriving while Popen runs, after the server's exec: raised there, it
    # would lose the new server's pid, and the server would start on its own (without its password on stdin)
    spawned: list[subprocess.Popen[bytes]] = []
    popen = subprocess.Popen

    def interrupted_popen(*args: Any, **kwargs: Any) -> subprocess.Popen[bytes]:
        spawned.append(popen(*args, **kwargs))
        # to this thread, at once: os.kill lets the kernel pick any thread of the process (the test runner's have
        # their own), whose handler may run only after the spawn's block has ended
        signal.raise_signal(signal.SIGINT)
        return spawned[-1]

    monkeypatch.setattr(subprocess, "Popen", interrupted_popen)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C's own, whatever the runner set
    server = RedisServer(tmp_path, persistent=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            server.start()

        # then the interrupt still ends the start, and the server it spawned is stopped
        [child] = spawned
        assert child.poll() is not None
    finally:
        signal.signal(signal.SIGINT, previous)
        for child in spawned:
            child.kill()
            child.wait()


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
        recorded = json.loads((tmp_path / BROKER_RECORD).read_text())["url"]
        assert recorded == masked_url(url).replace(":***@", "")  # the record holds no password; the folder does
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
        with pytest.raises(BrokerError, match=f"already serves .* at {re.escape(masked_url(url))}") as refused:
            EmbeddedBroker(tmp_path).start()
        assert url_password(url) not in str(refused.value)
    finally:
        first.stop()


def test_a_relative_data_folder_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with RedisServer("relative/data", persistent=True) as server:
        assert redis.Redis.from_url(server.url).ping()
    assert (tmp_path / "relative" / "data" / "redis.log").is_file()


def test_the_embedded_server_compacts_its_append_only_file_by_itself(tmp_path):
    with RedisServer(tmp_path, persistent=True) as server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("auto-aof-rewrite-percentage") == {"auto-aof-rewrite-percentage": "100"}
        assert client.config_get("auto-aof-rewrite-min-size") == {"auto-aof-rewrite-min-size": str(32 * 1024 * 1024)}
        client.close()


def test_the_server_dies_with_the_process_that_started_it_even_on_kill_9(tmp_path):
    # given a process that started a server and holds it
    code = (
        "import sys, time; from scalablejob.local.redis_server import RedisServer\n"
        f"server = RedisServer({str(tmp_path)!r}, persistent=False); server.start(); print(server.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        server = psutil.Process(int(owner.stdout.readline()))
        assert "redis-server" in server.name()

        # when that process is killed, then the server goes too
        owner.kill()
        owner.wait(10)
        wait_until(lambda: not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, 10, "redis outlived it")
    finally:
        os.killpg(owner.pid, signal.SIGKILL) if owner.poll() is None else None
        owner.wait()


class SlowLoadingServer(RedisServer):
    """A server that takes about 4 s to load the file that `write_big_file` leaves (Redis' own test knob slows each
    key down), answering LOADING meanwhile."""

    def command(self) -> list[str]:
        return [*super().command(), "--key-load-delay", "100000"]


BIG_VALUES, BIG_VALUE_BYTES = 40, 1 << 20


def write_big_file(folder) -> None:
    """An append-only file of 40 MB (random, so it does not compress), rewritten so that it loads as a snapshot."""
    with RedisServer(folder, persistent=True) as server:
        client = redis.Redis.from_url(server.url)
        for index in range(BIG_VALUES):
            client.set(f"big:{index}", os.urandom(BIG_VALUE_BYTES))
        wait_until(lambda: not rewriting(client), 30, "Redis' own rewrite never ended")  # past 32 MB it starts one
        try:
            client.bgrewriteaof()
        except redis.ResponseError as exc:  # its own began again meanwhile: all is written, that one will do
            assert "already in progress" in str(exc), exc
        wait_until(lambda: not rewriting(client), 30, "the append-only file was never rewritten")
        client.close()


def rewriting(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])


def test_loading_notice_says_how_much_is_loaded():
    assert loading_notice(41_943_528) == "redis is loading its data (42 MB)..."
    assert loading_notice(0) == "redis is loading its data..."


def test_start_returns_once_the_server_has_loaded_its_data_and_says_it_waits(tmp_path, capsys):
    write_big_file(tmp_path)
    with SlowLoadingServer(tmp_path, persistent=True) as server:
        client = redis.Redis.from_url(server.url)
        assert client.info("persistence")["loading"] == 0
        assert client.dbsize() == BIG_VALUES
        client.close()
    assert "redis is loading its data (42 MB)..." in capsys.readouterr().err


@pytest.fixture
def loading_broker(tmp_path, monkeypatch):
    """The embedded broker of a data folder, started by someone else and still loading its 40 MB."""
    monkeypatch.delenv("SCALABLEJOB_BROKER", raising=False)
    write_big_file(tmp_path / "redis")
    server = SlowLoadingServer(tmp_path / "redis", persistent=True)
    process = subprocess.Popen(server.command(), stdin=subprocess.DEVNULL, start_new_session=True)
    (tmp_path / BROKER_RECORD).write_text(json.dumps({"url": server.url, "pid": process.pid}))
    client = probe_client(server.url)
    try:
        wait_until(lambda: answers_loading(client), 10, "the server never answered LOADING")
        yield server.url, client
    finally:
        client.close()
        process.kill()
        process.wait()


def answers_loading(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.BusyLoadingError:
        return True
    except redis.ConnectionError:
        return False
    pytest.fail("the server loaded its file before the test could see it loading")


def test_commands_wait_while_the_broker_loads_its_data(tmp_path, loading_broker, capsys):
    url, client = loading_broker
    # a broker that is loading is running: nobody starts a second server on its folder
    assert running_embedded(tmp_path) == url
    # the commands that use the running broker wait until it has loaded its data, and say so once
    assert existing_broker(None, tmp_path) == url
    assert client.info("persistence")["loading"] == 0 and client.dbsize() == BIG_VALUES
    assert capsys.readouterr().err.count("redis is loading its data") == 1


def test_a_server_still_loading_after_the_bound_is_a_one_line_error_and_is_stopped(tmp_path):
    write_big_file(tmp_path)
    server = SlowLoadingServer(tmp_path, persistent=True)
    with pytest.raises(
        BrokerError, match=r"redis-server on port \d+ \(see .*redis.log\) was still loading its data after 0.5 s"
    ):
        server.start(loading_timeout_s=0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(server.pid, 0)


def test_a_given_broker_that_loads_is_waited_for_too(loading_broker):
    url, client = loading_broker
    assert resolve_broker(url, Path("unused")) == (url, None)
    assert client.info("persistence")["loading"] == 0


def test_no_broker_tells_how_to_start_one(tmp_path, monkeypatch):
    monkeypatch.delenv("SCALABLEJOB_BROKER", raising=False)
    with pytest.raises(BrokerError, match="start the service with `scalablejob up CONFIG`"):
        existing_broker(None, tmp_path)


# ---- appendfsync: how often the embedded Redis syncs its append-only file ------------------------------------------


@pytest.mark.parametrize("choice", ["always", "everysec", "no"])
def test_the_embedded_broker_syncs_its_file_as_asked(tmp_path, choice):
    broker = EmbeddedBroker(tmp_path, appendfsync=choice)
    url = broker.start()
    try:
        assert redis.Redis.from_url(url).config_get("appendfsync") == {"appendfsync": choice}
    finally:
        broker.stop()


def test_everysec_is_the_default(tmp_path):
    with RedisServer(tmp_path, persistent=True) as server:
        assert redis.Redis.from_url(server.url).config_get("appendfsync") == {"appendfsync": "everysec"}


def test_an_unknown_appendfsync_is_a_broker_error_naming_the_choices(tmp_path):
    with pytest.raises(BrokerError, match="appendfsync 'sometimes': expected one of always, everysec, no"):
        RedisServer(tmp_path, appendfsync="sometimes")


@pytest.mark.parametrize("command", ["up", "redis"])
@pytest.mark.parametrize("how", ["option", "env"])
def test_the_cli_refuses_an_unknown_appendfsync_with_a_clear_error(tmp_path, command, how):
    config = tmp_path / "service.json"
    config.write_text(json.dumps({"metadata": {"name": "fsync", "type": "ScalableJob", "gpu": 0}}))
    argv = [sys.executable, "-m", "scalablejob", command, *([str(config)] if command == "up" else [])]
    argv += ["--data-dir", str(tmp_path / "data")] + (["--appendfsync", "sometimes"] if how == "option" else [])
    env = {**os.environ, **({"SCALABLEJOB_APPENDFSYNC": "sometimes"} if how == "env" else {})}
    run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "Invalid value for '--appendfsync': 'sometimes' is not one of 'always', 'everysec', 'no'" in run.stderr
    assert not (tmp_path / "data").exists()  # refused before anything started


def test_scalablejob_redis_takes_appendfsync_from_the_environment_and_prints_no_password(tmp_path):
    env = {**os.environ, "SCALABLEJOB_APPENDFSYNC": "always"}
    process = subprocess.Popen([sys.executable, "-m", "scalablejob", "redis", "--data-dir", str(tmp_path)], env=env,
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        first, second = process.stdout.readline(), process.stdout.readline()
        url = running_embedded(tmp_path)
        assert url is not None and url_password(url) and url_password(url) not in first + second
        assert first.startswith(f"redis-server listening on {masked_url(url)} ")
        assert f"password in {tmp_path / 'redis.password'} (made now)" in second
        assert redis.Redis.from_url(url).config_get("appendfsync") == {"appendfsync": "always"}
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
    finally:
        process.kill()
        process.wait()
