"""A stack that always stops: whatever happens to `up`'s output, whatever signal or kill ends it, `down` from
elsewhere; a second `up` on the same folder is refused; and `up` starts on a folder whose Redis file is big."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import select
import signal
import subprocess
import termios
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import redis

from conftest import CLI, READY_LINE, UpProcess, wait_until
from scalablejob.local.embedded_broker import EmbeddedBroker
from scalablejob.local.ports import free_port
from scalablejob.local.redis_server import RedisServer
from scalablejob.local.stack_record import STACK_RECORD
from scalablejob.store.broker import BROKER_ENV, BROKER_RECORD, DATA_DIR_ENV, running_embedded

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PARTS = ("redis-server", "frontend", "scaler", "flower", "worker")
GONE_WITHIN_S = 45.0


def clean_env() -> dict[str, str]:
    """This environment without a broker or data folder of its own: each test names its folder."""
    return {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}


def write_config(tmp_path: Path) -> Path:
    path = tmp_path / "service.json"
    path.write_text(json.dumps({"metadata": {"name": "life", "type": "ScalableJob", "gpu": 0},
                                "autoscaler": {"min": 1, "max": 1}}))  # fmt: skip
    return path


def up_argv(config: Path, data_dir: Path) -> list[str]:
    ports = ("--port", str(free_port()), "--flower-port", str(free_port()), "--metrics-port", str(free_port()))
    return [*CLI, "up", str(config), "--data-dir", str(data_dir), *ports]


def every_part_runs(up_pid: int) -> list[psutil.Process] | None:
    """`up`'s descendants, once every part of the stack (a worker included) is among them."""
    try:
        processes = psutil.Process(up_pid).children(recursive=True)
        lines = [" ".join(process.cmdline()) for process in processes]
    except psutil.NoSuchProcess:
        pytest.fail(f"up (pid {up_pid}) exited while starting")
    return processes if all(any(part in line for line in lines) for part in PARTS) else None


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def assert_all_gone(processes: list[psutil.Process], why: str) -> None:
    deadline = time.monotonic() + GONE_WITHIN_S
    while left := [process for process in processes if not gone(process)]:
        if time.monotonic() > deadline:
            pytest.fail(f"{why}, yet after {GONE_WITHIN_S} s these still run: {[describe(p) for p in left]}")
        time.sleep(0.1)


def describe(process: psutil.Process) -> str:
    with contextlib.suppress(psutil.Error):
        return f"{process.pid} (parent {process.ppid()}): {' '.join(process.cmdline())}"
    return str(process.pid)


def kill_all(processes: list[psutil.Process]) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


@contextlib.contextmanager
def cleaned_up(*popens: subprocess.Popen) -> Iterator[Callable[[], None]]:
    """Whatever the test did, nothing it started outlives it: each process and every descendant it was seen with
    (call the yielded function once they all run) is killed."""
    seen: list[psutil.Process] = []

    def remember() -> None:
        for popen in popens:
            with contextlib.suppress(psutil.NoSuchProcess):
                seen.extend(psutil.Process(popen.pid).children(recursive=True))

    try:
        yield remember
    finally:
        remember()
        kill_all([*seen, *(psutil.Process(p.pid) for p in popens if p.poll() is None)])
        for popen in popens:
            popen.wait(30)


def file_has(path: Path, text: str) -> bool:
    return path.exists() and text in path.read_text(errors="replace")


# --- whatever happens to its output, whatever stops it ---------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_up_piped_into_a_reader_that_dies_still_stops_everything(tmp_path, signum):
    # given `scalablejob up ... | tee up.log`, every part running
    log = tmp_path / "up.log"
    read_end, write_end = os.pipe()
    tee = subprocess.Popen(["tee", str(log)], stdin=read_end, stdout=subprocess.DEVNULL)
    up = subprocess.Popen(up_argv(write_config(tmp_path), tmp_path / "data"), cwd=tmp_path, env=clean_env(),
                          stdout=write_end, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          start_new_session=True)  # fmt: skip
    os.close(read_end)
    os.close(write_end)
    with cleaned_up(up, tee) as remember:
        wait_until(lambda: file_has(log, READY_LINE), 90, "up never got ready")
        processes = wait_until(lambda: every_part_runs(up.pid), 60, "not every part started")
        remember()

        # when the reader dies (Ctrl-C kills tee too), and then up gets the signal
        tee.kill()
        tee.wait(10)
        up.send_signal(signum)

        # then up stops the stack and exits 0, and nothing it started is left
        assert up.wait(GONE_WITHIN_S) == 0
        assert_all_gone(processes, f"up stopped on {signal.Signals(signum).name}")
        assert running_embedded(tmp_path / "data") is None
        assert not (tmp_path / "data" / STACK_RECORD).exists()


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)  # runs in the child, after setsid: the pty becomes its terminal


def test_closing_the_terminal_of_up_stops_everything(tmp_path):
    # given up in a terminal (a pty), every part running
    master, slave = pty.openpty()
    up = subprocess.Popen(up_argv(write_config(tmp_path), tmp_path / "data"), cwd=tmp_path, env=clean_env(),
                          stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                          preexec_fn=_controlling_terminal)  # fmt: skip
    os.close(slave)
    screen: list[bytes] = []
    closing = threading.Event()
    reader = threading.Thread(target=_read_terminal, args=(master, screen, closing), daemon=True)
    reader.start()
    with cleaned_up(up) as remember:
        wait_until(lambda: READY_LINE.encode() in b"".join(screen), 90, "up never got ready")
        processes = wait_until(lambda: every_part_runs(up.pid), 60, "not every part started")
        remember()

        # when the terminal goes away (the kernel hangs it up: SIGHUP, and writes fail); the reader lets go of it
        # first: a read() blocked on the master in another thread would keep it open, and the hang-up would wait for
        # up's next line
        closing.set()
        reader.join(10)
        os.close(master)

        # then up stops the stack, and nothing it started is left
        assert_all_gone(processes, "up stopped on a closed terminal")
        assert up.wait(GONE_WITHIN_S) == 0


def _read_terminal(master: int, screen: list[bytes], closing: threading.Event) -> None:
    with contextlib.suppress(OSError):
        while not closing.is_set():
            if select.select([master], [], [], 0.1)[0]:
                screen.append(os.read(master, 65536))


def test_kill_9_of_up_takes_redis_and_every_child_with_it(tmp_path):
    # given a stack that is up
    data = tmp_path / "data"
    up = UpProcess(write_config(tmp_path), data, cwd=tmp_path, env=clean_env())
    with cleaned_up(up.process) as remember:
        up.wait_ready()
        processes = wait_until(lambda: every_part_runs(up.process.pid), 60, "not every part started")
        remember()

        # when up is killed with no chance to stop anything
        up.process.kill()
        up.process.wait(10)

        # then every child stops (the parts on the kernel's SIGTERM, then Redis, cleanly, from up's keeper), and the
        # folder is left as a clean stop leaves it
        assert_all_gone(processes, "up was killed")
        assert "Redis is now ready to exit" in (data / "redis" / "redis.log").read_text()
        assert not (data / STACK_RECORD).exists() and not (data / BROKER_RECORD).exists()
        down = run_cli("down", "--data-dir", str(data))
        assert (down.returncode, down.stdout.strip()) == (0, f"nothing runs in {data}")


# --- down, and a second up ------------------------------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=clean_env(), capture_output=True, text=True, timeout=timeout)


def test_a_second_up_names_the_first_and_down_stops_it(tmp_path):
    # given a stack that is up
    data = tmp_path / "data"
    config = write_config(tmp_path)
    first = UpProcess(config, data, cwd=tmp_path, env=clean_env())
    with cleaned_up(first.process) as remember:
        first.wait_ready()
        processes = wait_until(lambda: every_part_runs(first.process.pid), 60, "not every part started")
        remember()

        # when a second up starts on the same folder, then it names the first and starts nothing
        second = subprocess.run(
            up_argv(config, data), cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert f"scalablejob up already runs in {data} (pid {first.process.pid}, ports frontend " in second.stderr
        assert "scalablejob down" in second.stderr
        assert second.stdout == ""

        # when `down` runs on that folder, then the first up stops cleanly and nothing it started is left
        down = run_cli("down", "--data-dir", str(data))
        assert down.returncode == 0, down.stderr
        assert f"stopped scalablejob up (pid {first.process.pid})" in down.stdout
        assert first.process.wait(10) == 0
        assert_all_gone(processes, "down stopped up")
        assert not (data / STACK_RECORD).exists() and not (data / BROKER_RECORD).exists()

        # and a second down finds nothing to stop
        again = run_cli("down", "--data-dir", str(data))
        assert (again.returncode, again.stdout.strip()) == (0, f"nothing runs in {data}")


def test_down_stops_a_redis_left_running_in_the_folder(tmp_path):
    # given the embedded Redis of a folder, running with no `up` around it
    data = tmp_path / "data"
    broker = EmbeddedBroker(data)
    broker.start()
    try:
        server = psutil.Process(broker.server.pid)
        redis.Redis.from_url(running_embedded(data)).set("kept", "yes")

        # when down runs on that folder, then it stops that Redis (which keeps its data)
        down = run_cli("down", "--data-dir", str(data))
        assert down.returncode == 0, down.stderr
        assert f"stopped the redis-server left running in {data} (pid {server.pid})" in down.stdout
        wait_until(lambda: gone(server), 15, "the leftover redis-server still runs")
        assert running_embedded(data) is None and not (data / BROKER_RECORD).exists()
    finally:
        broker.stop()
    with RedisServer(data / "redis", persistent=True) as restarted:
        assert redis.Redis.from_url(restarted.url).get("kept") == b"yes"


# --- a big Redis file ------------------------------------------------------------------------------------------------

KEYS = 3_000_000  # about 80 MB of file, a couple of seconds of LOADING on a laptop


def write_big_append_only_file(folder: Path) -> None:
    """An append-only file of millions of keys (loading time grows with keys, not bytes), written in seconds: Redis
    makes the keys itself, and a rewrite puts them in the file."""
    with RedisServer(folder, persistent=True) as server:
        client = redis.Redis.from_url(server.url)
        client.execute_command("DEBUG", "POPULATE", KEYS, "big", 16)
        client.bgrewriteaof()
        wait_until(lambda: not rewriting(client), 60, "the append-only file was never rewritten")
        client.close()
    assert (folder / "appendonly.aof").stat().st_size > 50_000_000


def rewriting(client: redis.Redis) -> bool:
    info = client.info("persistence")
    return bool(info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"])


def answers(url: str, token: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": token})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def test_up_starts_on_a_folder_whose_redis_file_takes_a_while_to_load(tmp_path):
    # given a data folder whose Redis append-only file holds millions of keys
    data = tmp_path / "data"
    write_big_append_only_file(data / "redis")

    # when up starts on it
    up = UpProcess(write_config(tmp_path), data, cwd=tmp_path, env=clean_env())
    with cleaned_up(up.process):
        where = up.wait_ready(timeout=150)

        # then every part started once Redis had loaded its data, and the front end answers
        assert answers(f"{where['frontend']}?_attrs_=true", where["token"]) == 200
        assert redis.Redis.from_url(where["broker"]).dbsize() >= KEYS
        assert up.interrupt() == 0, "\n".join(up.lines)
