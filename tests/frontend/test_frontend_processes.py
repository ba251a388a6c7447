"""The watcher rules across real front-end processes on one Redis (two `scalablejob frontend` processes on two
ports, as two hosts behind a balancer would be): one watcher per queue, group and uid over all of them; the
per-token cap counted over all of them; a process killed with kill -9 releases its watchers within its lease, and
the survivor adopts what they held uncommitted, never before (also between the processes of one `--workers 2`); a
commit made through one process frees a place in the window of a watcher on another."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest
import redis
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import service_config, wait_until
from scalablejob.frontend.protocol import decode_frame
from scalablejob.frontend.watch import ADOPT_INTERVAL_S, ADOPT_MIN_IDLE_MS, COMMIT_POLL_S
from scalablejob.frontend.watcher_ids import LEASE_S, heartbeat_interval_s, watcher_id
from scalablejob.model import keys

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "spread"
SINK = f"{SERVICE}/sink"
TOKEN = "spread-token"
MAX_PROBES = 30  # new connections to a `--workers 2` port before concluding that one process never accepts any


def _config(**http: object) -> dict:
    return {**service_config(SERVICE), "security": {"http": {"max_watchers_per_token": 2, **http}}}


def _two(start_frontend: Any) -> tuple[Any, str, Any, str]:
    env = {"SCALABLEJOB_FRONTEND_TOKEN": TOKEN}
    first, second = start_frontend(_config(), env=env), start_frontend(_config(), env=env)
    return first, first.started()[0], second, second.started()[0]


def _watch(base_url: str, uid: str, **params: str) -> ClientConnection:
    query = "&".join(f"{name}={value}" for name, value in {"_watch_": "true", **params}.items())
    url = f"{base_url.replace('http://', 'ws://')}/api/predict/{SINK}?{query}"
    headers = {"Authorization": TOKEN, "X-EAS-QueueService-Redis-Uid": uid}
    return connect(url, additional_headers=headers, open_timeout=10)


def _refusal(base_url: str, uid: str) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused, _watch(base_url, uid):
        pass
    return refused.value.response.status_code, refused.value.response.body or b""


def _frames(watcher: ClientConnection, count: int, timeout: float) -> list[str]:
    """The data of the next `count` frames, or fewer if `timeout` passes first."""
    data: list[str] = []
    deadline = time.monotonic() + timeout
    while len(data) < count and (left := deadline - time.monotonic()) > 0:
        try:
            data.append(decode_frame(watcher.recv(timeout=left)).data.decode())
        except TimeoutError:
            break
    return data


def _frames_until_closed(watcher: ClientConnection, count: int, timeout: float) -> list[str]:
    """As `_frames`, ending early (without raising) if the server closes the connection."""
    data: list[str] = []
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ConnectionClosed):
        while len(data) < count and (left := deadline - time.monotonic()) > 0:
            data += _frames(watcher, 1, left)
    return data


def _put(base_url: str, count: int, first: int = 0) -> None:
    for n in range(first, first + count):
        answer = httpx.post(f"{base_url}/api/predict/{SINK}", content=f"item-{n}", headers={"Authorization": TOKEN})
        answer.raise_for_status()


def test_a_second_watcher_of_one_uid_on_another_process_is_refused_with_409(start_frontend):
    _, first_url, _, second_url = _two(start_frontend)
    with _watch(first_url, "same-client"):
        status, body = _refusal(second_url, "same-client")
    assert status == 409 and b"already connected" in body
    # once the first has gone, the same uid connects to the other process
    wait_until(lambda: _connects(second_url, "same-client"), 10, "the uid was never free again")


def _connects(base_url: str, uid: str) -> bool:
    try:
        with _watch(base_url, uid):
            pass
    except InvalidStatus:
        return False
    return True


def test_the_per_token_watcher_cap_counts_the_watchers_of_every_process(start_frontend):
    _, first_url, _, second_url = _two(start_frontend)
    with _watch(first_url, "one"), _watch(second_url, "two"):
        status, body = _refusal(second_url, "three")
        status_first, _ = _refusal(first_url, "four")
    assert (status, status_first) == (429, 429) and b"security.http.max_watchers_per_token" in body


def test_a_killed_processes_watchers_are_released_and_their_items_adopted_by_the_survivor_only_then(
    start_frontend, redis_url
):
    # given a watcher on the first process holding 3 items uncommitted (window 3, no auto commit)
    first, first_url, _, second_url = _two(start_frontend)
    _put(second_url, 3)
    stack = contextlib.ExitStack()
    with _watch(first_url, "holder", _window_="3") as held:
        assert _frames(held, 3, 10) == ["item-0", "item-1", "item-2"]
        # and another watcher of the group on the second process
        survivor = stack.enter_context(_watch(second_url, "survivor", _window_="3"))
        # while the first process lives, its watcher's items stay with it, even once they are idle long enough to
        # be adopted from a watcher that left (an observation window of two adoption rounds past that idle time)
        assert _frames(survivor, 1, ADOPT_MIN_IDLE_MS / 1000 + 2 * ADOPT_INTERVAL_S) == []
        # when the first process is killed
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait(10)
        killed_at = time.monotonic()
        # then within its lease (and an adoption round) the survivor gets exactly the items it held
        adopted = _frames(survivor, 3, LEASE_S + ADOPT_INTERVAL_S + 5)
        assert sorted(adopted) == ["item-0", "item-1", "item-2"]
        assert time.monotonic() - killed_at >= LEASE_S - 1  # not before its lease was over
        held.close_socket()  # its process is gone: no close handshake to wait for
        # and the dead process's records are swept by the survivor's heartbeat; only the survivor's watcher is left
        client = stack.enter_context(contextlib.closing(redis.Redis.from_url(redis_url)))
        wait_until(lambda: client.scard(keys.frontend_instances(SERVICE)) == 1, 10, "the dead process was never swept")
        assert list(client.hgetall(keys.frontend_watchers(SERVICE))) == [
            watcher_id((keys.frontend_sink_stream(SERVICE, SERVICE), "eas", "survivor")).encode()
        ]
        stack.close()
    # and its uid connects anew
    assert _connects(second_url, "holder")


@contextlib.contextmanager
def _frozen(process: Any) -> Iterator[None]:
    """The process stopped (SIGSTOP) inside the block, as a host whose VM paused or whose loop stalled; resumed
    after it, even if the test failed."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def _taken(base_url: str, uid: str, timeout: float, **params: str) -> ClientConnection:
    """A watcher of `uid` on `base_url`, once the process that held it has lost it (refused with 409 until then)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _watch(base_url, uid, **params)
        except InvalidStatus:
            if time.monotonic() > deadline:
                raise


def _closed_within(watcher: ClientConnection, timeout: float) -> list[str]:
    """The data of every frame the connection gets before the server closes it; fails if it is still open after
    `timeout`."""
    data: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            data.append(decode_frame(watcher.recv(timeout=left)).data.decode())
        except ConnectionClosed:
            return data
        except TimeoutError:
            break
    pytest.fail(f"the stale watcher was still open {timeout} s after its process resumed (it got {data})")


def test_a_stalled_process_whose_watcher_was_taken_over_closes_it_and_sends_it_nothing_more(start_frontend, redis_url):
    # given a watcher of uid "holder" on the first process, holding 3 items uncommitted (window 10, no auto commit)
    first, first_url, _, second_url = _two(start_frontend)
    _put(second_url, 3)
    with _watch(first_url, "holder", _window_="10") as stale:
        assert _frames(stale, 3, 10) == ["item-0", "item-1", "item-2"]
        # when the first process stalls past its lease, and the same uid connects to the second meanwhile
        with _frozen(first.process):
            holder = _taken(second_url, "holder", LEASE_S + 10, _window_="10")
        with holder:
            # (which gets the 3 items again, as any reconnecting consumer does)
            assert sorted(_frames(holder, 3, 10)) == ["item-0", "item-1", "item-2"]
            # and the first process resumes, and more items come
            _put(second_url, 4, first=3)
            # then the first process closes its stale watcher within a heartbeat or two, having sent it nothing
            assert _closed_within(stale, 3 * heartbeat_interval_s() + 2) == []
            # and the live watcher gets every new item
            assert sorted(_frames(holder, 4, 10)) == [f"item-{n}" for n in range(3, 7)]
            # and Redis knows one watcher of the uid, on the second process
            client = redis.Redis.from_url(redis_url)
            with contextlib.closing(client):
                watchers = client.hgetall(keys.frontend_watchers(SERVICE))
                holder_id = watcher_id((keys.frontend_sink_stream(SERVICE, SERVICE), "eas", "holder")).encode()
                assert list(watchers) == [holder_id]
                assert client.sismember(keys.frontend_instance_watchers(SERVICE, watchers[holder_id].decode()),
                                        holder_id)  # fmt: skip


def test_a_stalled_process_whose_watcher_nobody_took_keeps_serving_it(start_frontend, redis_url):
    # given a watcher on the first process (auto commit)
    first, first_url, _, second_url = _two(start_frontend)
    client = redis.Redis.from_url(redis_url)
    with contextlib.closing(client), contextlib.ExitStack() as stack:
        watcher = stack.enter_context(_watch(first_url, "holder", _auto_commit_="true"))
        holder_id = watcher_id((keys.frontend_sink_stream(SERVICE, SERVICE), "eas", "holder"))
        instance = client.hget(keys.frontend_watchers(SERVICE), holder_id).decode()
        # when the first process stalls until its lease is gone, and resumes, nobody having taken its watcher
        with _frozen(first.process):
            lease = keys.frontend_lease(SERVICE, instance)
            wait_until(lambda: not client.exists(lease), LEASE_S + 10, "the stalled process's lease never lapsed")
        _put(second_url, 2)
        # then it goes on getting items: on the same connection, or, if a read the stall outlasted ended it (1011),
        # on the one the client opens again, as the SDK does
        got = _frames_until_closed(watcher, 2, 10)
        if len(got) < 2 and watcher.close_code == 1011:
            watcher = stack.enter_context(_watch(first_url, "holder", _auto_commit_="true"))
            got += _frames(watcher, 2 - len(got), 10)
        assert got == ["item-0", "item-1"]
        # and it never closed it as one connected elsewhere: the first process holds it again
        assert watcher.close_code is None
        assert "its connection here is closed" not in first.log()
        assert not _connects(second_url, "holder")


def test_a_commit_through_another_process_frees_the_window_of_a_watcher_on_the_first(start_frontend):
    # given a watcher on the first process (window 1, no auto commit) that got the first of 2 items
    _, first_url, _, second_url = _two(start_frontend)
    _put(second_url, 2)
    with _watch(first_url, "reader", _window_="1") as watcher:
        got = decode_frame(watcher.recv(timeout=10))
        assert got.data == b"item-0"
        # and gets nothing more while that one is uncommitted (its window is full)
        assert _frames(watcher, 1, 2 * COMMIT_POLL_S + 1) == []
        # when the item is committed through the second process
        answer = httpx.put(f"{second_url}/api/predict/{SINK}", params={"_indexes_": str(got.index)},
                           headers={"Authorization": TOKEN})  # fmt: skip
        assert answer.status_code == 200, answer.text
        # then the watcher on the first gets the second item
        assert _frames(watcher, 1, 10) == ["item-1"]


def _sink_watcher(uid: str) -> str:
    return watcher_id((keys.frontend_sink_stream(SERVICE, SERVICE), "eas", uid))


def _live_processes(client: redis.Redis) -> dict[str, int]:
    """Instance id -> pid of each front-end process whose lease lives."""
    live = {}
    for member in client.smembers(keys.frontend_instances(SERVICE)):
        lease = client.get(keys.frontend_lease(SERVICE, member.decode()))
        if lease is not None:
            live[member.decode()] = json.loads(lease)["pid"]
    return live


def _two_live(client: redis.Redis, but: str = "") -> dict[str, int] | None:
    live = _live_processes(client)
    return live if len(live) == 2 and but not in live else None


def _children(pid: int) -> set[int]:
    return {child.pid for child in psutil.Process(pid).children() if child.status() != psutil.STATUS_ZOMBIE}


def _watcher_on_another_process(
    url: str, client: redis.Redis, instance: str, stack: contextlib.ExitStack
) -> ClientConnection:
    """A watcher of a new uid (window 3) held by a process other than `instance`: new connections are opened, each
    accepted by whichever process the kernel wakes, and those `instance` got closed, until another one gets one."""
    for probe in range(MAX_PROBES):
        watcher = stack.enter_context(_watch(url, f"probe-{probe}", _window_="3"))
        holder = client.hget(keys.frontend_watchers(SERVICE), _sink_watcher(f"probe-{probe}"))
        if holder is not None and holder.decode() != instance:
            return watcher
        watcher.close()  # (closing a closed connection again, at the stack's end, does nothing)
    pytest.fail(f"{MAX_PROBES + 1} watchers all went to process {instance}: the other process never served one")


def test_both_workers_serve_watchers_and_a_killed_ones_are_adopted_by_its_sibling_only_once_its_lease_is_over(
    start_frontend, redis_url
):
    # given `scalablejob frontend --workers 2`: two processes on one port, each with a lease of its own
    frontend = start_frontend(_config(max_watchers_per_token=64), "--workers", "2",
                              env={"SCALABLEJOB_FRONTEND_TOKEN": TOKEN})  # fmt: skip
    url, _ = frontend.started()
    client = redis.Redis.from_url(redis_url)
    with contextlib.closing(client), contextlib.ExitStack() as stack:
        live = wait_until(lambda: _two_live(client), 10, "the two processes never both took a lease")
        assert set(live.values()) == _children(frontend.process.pid)
        # and a watcher "holder" (window 3, no auto commit) holding 3 items, on whichever process accepted it
        held = stack.enter_context(_watch(url, "holder", _window_="3"))
        _put(url, 3)
        assert _frames(held, 3, 10) == ["item-0", "item-1", "item-2"]
        victim = client.hget(keys.frontend_watchers(SERVICE), _sink_watcher("holder")).decode()
        # and a watcher of the same group on the other process
        sibling = _watcher_on_another_process(url, client, victim, stack)
        # when the process that holds "holder" is killed with kill -9
        victim_pid = live[victim]
        checked_at = time.monotonic()
        lease_left = client.pttl(keys.frontend_lease(SERVICE, victim)) / 1000  # it ends no sooner than this from now
        os.kill(victim_pid, signal.SIGKILL)
        # then the sibling gets exactly the 3 items it held, not before its lease was over (renewed each
        # heartbeat_interval_s, it had at least LEASE_S less one interval left, less what a late heartbeat lost)
        adopted = _frames(sibling, 3, LEASE_S + ADOPT_INTERVAL_S + 5)
        waited = time.monotonic() - checked_at
        assert sorted(adopted) == ["item-0", "item-1", "item-2"]
        assert lease_left > 0 and waited >= lease_left, (
            f"adopted {waited:.2f} s after the kill, its lease ending at {lease_left} s"
        )
        held.close_socket()  # its process is gone: no close handshake to wait for
        # and the supervisor replaced the killed process
        replacement = re.compile(rf"process {victim_pid} was killed by SIGKILL: replaced by process (\d+)")
        replaced = wait_until(lambda: replacement.search(frontend.log()), 10, "the killed process was not replaced")
        # and "holder" connects again on the same port
        assert _connects(url, "holder")
        # and two processes live again, the sibling and the new one, and the dead one is swept
        live_again = wait_until(lambda: _two_live(client, but=victim), 10, "two processes never lived again")
        assert set(live_again.values()) == set(live.values()) - {victim_pid} | {int(replaced.group(1))}
        wait_until(lambda: client.scard(keys.frontend_instances(SERVICE)) == 2, 10, "the dead process was never swept")
