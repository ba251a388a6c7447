"""A watch session's delivery and commit, driven directly against a real Redis, with the client's behaviour
(closing right after a frame, failing mid-batch) played by the send function at exact points."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest
import redis

from conftest import service_config
from scalablejob.frontend.app import FrontEndService
from scalablejob.frontend.binding import bind
from scalablejob.frontend.params import WatchParams
from scalablejob.frontend.protocol import decode_frame
from scalablejob.frontend.queues import Queue
from scalablejob.frontend.watch import WatcherLost, WatchSession, group_name
from scalablejob.frontend.watcher_ids import Claim, WatcherKey, count_field
from scalablejob.frontend.watcher_registry import WatcherRegistry
from scalablejob.model import keys
from scalablejob.model.config import parse_config
from scalablejob.store.sink import as_text, index_of

SERVICE = "session"
ITEMS = 10
pytestmark = pytest.mark.timeout(60)


async def _with_sink(redis_url: str, scenario: Callable[[Queue, WatcherRegistry], Awaitable[None]]) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        front_ends = bind(client, parse_config(service_config(SERVICE)), (), "token")
    finally:
        client.close()
    service = FrontEndService(front_ends, redis_url)
    await service.start()
    try:
        assert service.watchers is not None
        await scenario(service.queues[f"{SERVICE}/sink"], service.watchers)
    finally:
        await service.stop()


async def _put(queue: Queue, count: int) -> list[int]:
    return [(await queue.put(str(n).encode(), {}))[0] for n in range(count)]


async def _present(queue: Queue, indexes: list[int]) -> list[int]:
    return [index for index in indexes if await queue.get(index) is not None]


async def _held(queue: Queue, registry: WatcherRegistry, key: WatcherKey) -> WatcherKey:
    """`key` held by this process, as the watch endpoint holds it before its session runs (released first, as the
    endpoint releases it when a connection of the same watcher ended)."""
    await registry.release(key)
    assert await registry.acquire(key, queue.front_end.name, cap=64) is Claim.HELD
    return key


async def _session(
    queue: Queue, registry: WatcherRegistry, send: Callable[[bytes], Awaitable[None]], **params: object
) -> WatchSession:
    watch = WatchParams(**{"window": 5, "auto_commit": True, **params})  # type: ignore[arg-type]
    return WatchSession(queue, watch, await _held(queue, registry, (queue.stream, "eas", "client-1")), registry, send)


def test_a_session_cancelled_right_after_its_last_frame_still_commits_everything_it_sent(redis_url):
    # given 10 items, and a client that goes away as soon as it has the 10th frame (its close cancels the session)
    async def scenario(queue: Queue, registry: WatcherRegistry) -> None:
        indexes = await _put(queue, ITEMS)
        sent: list[int] = []
        runner: asyncio.Task[None] | None = None

        async def send(frame: bytes) -> None:
            sent.append(decode_frame(frame).index)
            if len(sent) == ITEMS:
                assert runner is not None
                runner.cancel()  # the close arrives while the session still has the batch's commit to make

        session = await _session(queue, registry, send)
        runner = asyncio.ensure_future(session.run())
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(runner, 10)
        await session.settle(5.0)
        # then every item it was sent is committed: none is left in the queue, none pending for the consumer
        assert sent == indexes
        assert await _present(queue, indexes) == []
        assert (await queue.redis.xpending(queue.stream, "eas"))["pending"] == 0

    asyncio.run(_with_sink(redis_url, scenario))


def test_a_send_that_fails_mid_batch_commits_what_was_sent_and_leaves_the_rest_to_the_group(redis_url):
    # given a client that drops the connection while the 3rd frame of a batch of 5 is being sent
    async def scenario(queue: Queue, registry: WatcherRegistry) -> None:
        indexes = await _put(queue, 5)
        sent: list[int] = []

        async def send(frame: bytes) -> None:
            if len(sent) == 2:
                raise ConnectionResetError("client gone")
            sent.append(decode_frame(frame).index)

        session = await _session(queue, registry, send)
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(session.run(), 10)
        await session.settle(5.0)
        # then the two it was sent are committed and the three it was not are still there, for the group
        assert await _present(queue, indexes) == indexes[2:]
        later: list[int] = []

        async def receive(frame: bytes) -> None:
            later.append(decode_frame(frame).index)
            if len(later) == 3:
                raise ConnectionResetError("done")

        with pytest.raises(ConnectionResetError):
            # the same consumer reconnecting gets them again
            await asyncio.wait_for((await _session(queue, registry, receive)).run(), 10)
        assert later == indexes[2:]

    asyncio.run(_with_sink(redis_url, scenario))


def test_a_filtered_session_sends_only_matches_within_its_window_and_passes_over_the_rest(redis_url):
    # given log, result and error items, and a watcher of results only with a window of 2 that never commits
    async def scenario(queue: Queue, registry: WatcherRegistry) -> None:
        kinds = ["log", "result", "log", "log", "result", "error", "result", "log"]
        indexes = [(await queue.put(b"x", {"type": kind}))[0] for kind in kinds]
        results = [index for index, kind in zip(indexes, kinds, strict=True) if kind == "result"]
        sent: list[int] = []
        two_sent = asyncio.Event()

        async def send(frame: bytes) -> None:
            sent.append(decode_frame(frame).index)
            if len(sent) == 2:
                two_sent.set()
            if len(sent) == 3:
                raise ConnectionResetError("done")

        group = group_name("eas", {"type": "result"})
        session = WatchSession(
            queue, WatchParams(window=2, filters={"type": "result"}),
            await _held(queue, registry, (queue.stream, group, "client-1")), registry, send,
        )  # fmt: skip
        runner = asyncio.ensure_future(session.run())
        await asyncio.wait_for(two_sent.wait(), 10)
        # then the first two results are sent and held (the window is full), nothing else is pending for the group
        pending = await queue.redis.xpending_range(queue.stream, group, "-", "+", 100)
        assert sent == results[:2] and [index_of(p["message_id"]) for p in pending] == results[:2]
        # when the client commits the first, the third result comes; no other item was sent or deleted
        await queue.remove([results[0]])
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(runner, 10)
        assert sent == results
        assert await _present(queue, indexes) == [index for index in indexes if index != results[0]]

    asyncio.run(_with_sink(redis_url, scenario))


def test_two_watchers_adopting_the_same_orphan_at_once_send_its_item_once(redis_url):
    # given an item sent to a watcher that is gone (pending for it, idle for a while)
    async def scenario(queue: Queue, registry: WatcherRegistry) -> None:
        [index] = await _put(queue, 1)
        await queue.redis.xgroup_create(queue.stream, "eas", id="0")
        await queue.redis.xreadgroup("eas", "gone", {queue.stream: ">"}, count=1)
        await queue.redis.xclaim(queue.stream, "eas", "gone", 0, [f"{index}-0"], idle=5000)
        sessions = [
            WatchSession(queue, WatchParams(window=5), (queue.stream, "eas", name), registry, _ignore)
            for name in ("a", "b")
        ]
        # when both adopt the orphan's items at the same moment
        adopted = await asyncio.gather(*(session._adopt(5) for session in sessions))  # noqa: SLF001 - the test drives the step itself
        # then exactly one of them takes the item
        assert sorted(len(entries) for entries in adopted) == [0, 1]

    asyncio.run(_with_sink(redis_url, scenario))


async def _ignore(_frame: bytes) -> None:
    return None


@pytest.mark.parametrize("sent_again_elsewhere", [False, True])
def test_items_read_for_a_watcher_taken_over_meanwhile_are_not_sent_and_go_where_they_will_be_sent(
    redis_url, sent_again_elsewhere
):
    # given a front-end process (its registry) holding watcher client-1, whose session has read 3 new items
    async def scenario(queue: Queue, other: WatcherRegistry) -> None:
        stalled = WatcherRegistry(queue.redis, SERVICE, lease_s=0.3)
        await stalled.heartbeat()  # its lease, never renewed again: the process stalls from now on
        key = await _held(queue, stalled, (queue.stream, "eas", "client-1"))
        sent: list[int] = []

        async def send(frame: bytes) -> None:
            sent.append(decode_frame(frame).index)

        session = WatchSession(queue, WatchParams(window=5), key, stalled, send)
        indexes = await _put(queue, 3)
        await session._ensure_group()  # noqa: SLF001 - the test drives the steps itself
        entries = await session._read_new(5)  # noqa: SLF001
        assert [entry.index for entry in entries] == indexes
        # when its lease lapses and another process takes the watcher over
        deadline = time.monotonic() + 5
        while await other.acquire(key, queue.front_end.name, cap=64, grace_s=0) is not Claim.HELD:
            assert time.monotonic() < deadline, "the stalled process's lease never lapsed"
            await asyncio.sleep(0.05)
        if sent_again_elsewhere:  # (its new connection started after the read: it sends the pending items again)
            await queue.redis.xreadgroup("eas", "client-1", {queue.stream: "0"})
        # then the stalled session sends none of them, and ends
        with pytest.raises(WatcherLost):
            await session._deliver(entries, read_new=True)  # noqa: SLF001
        assert sent == []
        # and they are pending for the new connection if it sent them, else for a consumer connected nowhere,
        # which the group's watchers adopt
        pending = await queue.redis.xpending_range(queue.stream, "eas", "-", "+", 10)
        owners = {as_text(item["consumer"]) for item in pending}
        assert sorted(index_of(item["message_id"]) for item in pending) == indexes
        assert len(owners) == 1
        owner = owners.pop()
        assert (owner == "client-1") is sent_again_elsewhere
        assert await other.live([(queue.stream, "eas", owner)]) == [sent_again_elsewhere]

    asyncio.run(_with_sink(redis_url, scenario))


def test_a_process_swept_while_it_stalled_counts_every_watcher_it_holds_again_against_the_token_cap(redis_url):
    # given a front-end process holding 3 watchers of one front end (token)
    async def scenario(queue: Queue, other: WatcherRegistry) -> None:
        stalled = WatcherRegistry(queue.redis, SERVICE, lease_s=0.3)
        await stalled.heartbeat()  # its lease, never renewed until the end: the process stalls
        front_end = queue.front_end.name
        for uid in ("a", "b", "c"):
            await _held(queue, stalled, (queue.stream, "eas", uid))
        counts, field = keys.frontend_watching(SERVICE), count_field(stalled.instance, front_end)
        assert int(await queue.redis.hget(counts, field)) == 3
        # when its lease lapses and another process's heartbeat sweeps its records
        deadline = time.monotonic() + 5
        while await queue.redis.sismember(keys.frontend_instances(SERVICE), stalled.instance):
            assert time.monotonic() < deadline, "the stalled process was never swept"
            await asyncio.sleep(0.05)
            await other.heartbeat()
        # and it resumes, and registers its watchers again
        await stalled.heartbeat()
        # then all 3 count against the cap again, not 1
        assert int(await queue.redis.hget(counts, field)) == 3
        assert await other.live([(queue.stream, "eas", uid) for uid in ("a", "b", "c")]) == [True, True, True]

    asyncio.run(_with_sink(redis_url, scenario))
