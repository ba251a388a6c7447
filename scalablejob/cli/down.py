"""`scalablejob down`: stop the `scalablejob up` that runs in a data folder, or a Redis left running there.

It asks `up` to stop as Ctrl-C would (SIGTERM: workers finish their tasks), hurries it after --timeout (its second
signal: tasks go back on the queue), and kills it as a last resort (its children die with it). Then it stops an
embedded redis-server still serving the folder, through the pid that the folder recorded for it, unless that server
holds writes it could not put in its file (a full disk): those would be lost, so it says so and leaves it. Last, a
redis-server working in the folder that no record names (left by a crash between its start and its record) is
stopped too.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import click
import psutil
import redis

from scalablejob.cli.options import data_dir_option, reports_errors
from scalablejob.local.embedded_broker import REDIS_FOLDER, UNSAVED_WAIT_S
from scalablejob.local.redis_server import servers_in, unsaved_writes
from scalablejob.local.stack_record import StackRecord, forget_stale_record, running_stack
from scalablejob.model.errors import BrokerError, ScalableJobError
from scalablejob.model.redaction import masked_url
from scalablejob.store.broker import BROKER_RECORD, embedded_record, running_embedded
from scalablejob.store.broker import data_dir as data_folder
from scalablejob.store.probe import probe_client

DEFAULT_DRAIN_S = 60.0
HURRIED_STOP_S = 60.0  # after the second signal: the scaler stops its workers, then each part gets up's grace
KILLED_STOP_S = 15.0
BROKER_STOP_S = 15.0

Say = Callable[[str], None]


@click.command()
@data_dir_option
@click.option("--timeout", "drain_s", type=click.FloatRange(min=0), default=DEFAULT_DRAIN_S, show_default=True,
              help="Seconds the workers get to finish their tasks; then the tasks go back on the queue.")  # fmt: skip
@reports_errors
def down(data_dir: str | None, drain_s: float) -> None:
    """Stop the `scalablejob up` running in the data folder (as Ctrl-C would), or a Redis left running there.

    Nothing running there is not an error: it says so and exits 0.
    """
    folder = data_folder(data_dir)
    stopped_stack = stop_stack(folder, drain_s, click.echo)
    stopped_broker = stop_leftover_broker(folder, click.echo)
    stopped_unrecorded = stop_unrecorded_brokers(folder, click.echo)
    if not (stopped_stack or stopped_broker or stopped_unrecorded):
        click.echo(f"nothing runs in {folder}")


def stop_stack(folder: Path, drain_s: float, say: Say) -> bool:
    """Stop the `up` of `folder`, if one runs; True if one did. A record left by a killed `up` is removed."""
    record = running_stack(folder)
    if record is None:
        if forget_stale_record(folder):
            say(f"removed the record of an `up` that is gone from {folder}")
        return False
    if not record.pid:
        raise ScalableJobError(f"an `up` holds {folder} but its record does not say which process it is")
    say(f"stopping scalablejob up ({record.describe()}): workers finish their tasks first (up to {drain_s:g} s)")
    for signum, wait_s, then in (
        (signal.SIGTERM, drain_s, f"still stopping after {drain_s:g} s: stopping the tasks now, back on the queue"),
        (signal.SIGTERM, HURRIED_STOP_S, f"up did not stop: killing it (pid {record.pid}); its children die with it"),
        (signal.SIGKILL, KILLED_STOP_S, ""),
    ):
        _signal_up(record.pid, signum)
        if _wait(lambda: _is_gone(folder, record), wait_s):
            say(f"stopped scalablejob up (pid {record.pid})")
            return True
        if then:
            say(then)
    raise ScalableJobError(f"scalablejob up (pid {record.pid}) still holds {folder} after SIGKILL")


def stop_leftover_broker(folder: Path, say: Say) -> bool:
    """Stop the embedded redis-server that still serves `folder` (its owner is gone, or was not `up`); True if one
    did. Only the very process the folder recorded is signalled, never whatever now answers on its port."""
    url = running_embedded(folder)
    if url is None:
        return False
    recorded, answering = embedded_record(folder).get("pid"), _server_pid(url)
    if answering is None or answering != recorded:
        raise BrokerError(
            f"{masked_url(url)} answers as pid {answering}, not as the redis-server (pid {recorded}) that "
            f"{folder / BROKER_RECORD} names: not stopping it"
        )
    unsaved = unsaved_writes(url, folder / REDIS_FOLDER, UNSAVED_WAIT_S)
    if unsaved is not None:
        raise BrokerError(
            f"the redis-server of {folder} (pid {answering}) still runs: {unsaved}; stopping it now would lose them. "
            "Free space there, then run `scalablejob down` again"
        )
    _signal(answering, signal.SIGTERM)  # Redis flushes its append-only file, then exits
    if not _wait(lambda: running_embedded(folder) is None, BROKER_STOP_S):
        raise BrokerError(f"the redis-server of {folder} (pid {answering}) did not stop within {BROKER_STOP_S:g} s")
    (folder / BROKER_RECORD).unlink(missing_ok=True)
    say(f"stopped the redis-server left running in {folder} (pid {answering})")
    return True


def stop_unrecorded_brokers(folder: Path, say: Say) -> bool:
    """Stop each redis-server working in `folder`'s Redis folder that no record names (the recorded one is stopped
    above, or it runs on purpose); True if there was one. None is touched while an `up` holds the folder."""
    if running_stack(folder) is not None or running_embedded(folder) is not None:
        return False
    servers = servers_in(folder / REDIS_FOLDER)
    for server in servers:
        _signal(server.pid, signal.SIGTERM)  # Redis flushes its append-only file, then exits
        if not _wait(functools.partial(_ended, server), BROKER_STOP_S):
            raise BrokerError(f"the redis-server of {folder} that no record names (pid {server.pid}) did not stop "
                              f"within {BROKER_STOP_S:g} s")  # fmt: skip
        say(f"stopped a redis-server of {folder} that no record named (pid {server.pid})")
    return bool(servers)


def _ended(process: psutil.Process) -> bool:
    """Gone, or a zombie that only waits for its parent to collect it."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _server_pid(url: str) -> int | None:
    """The pid of the server that answers at `url` (INFO answers while it loads)."""
    client = probe_client(url)
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, KeyError, ValueError, TypeError):  # gone, or it does not tell: not one to signal
        return None
    finally:
        client.close()


def _is_gone(folder: Path, record: StackRecord) -> bool:
    """The `up` let go of the folder (its lock dies with it), or another one took it over."""
    current = running_stack(folder)
    return current is None or current.pid != record.pid


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _signal_up(pid: int, signum: int) -> None:
    """Signal `up`, only if that pid still is a scalablejob process: once `up` is gone (its keeper may hold the folder
    a little longer), the pid may be another program's."""
    with contextlib.suppress(psutil.Error):
        if any("scalablejob" in word for word in psutil.Process(pid).cmdline()):
            os.kill(pid, signum)


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
