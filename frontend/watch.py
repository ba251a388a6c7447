"""Watching a queue over a websocket: items streamed as `DataFrameProto` messages, at most `window` uncommitted.

The SDK's identity headers map onto Redis consumer groups, as their names say: `X-EAS-QueueService-Redis-Gid` is
the group, `X-EAS-QueueService-Redis-Uid` the consumer. Watchers in one group share the items (each goes to one of
them); each group sees every item. `_index_` is where a new group starts; an existing group goes on from where it
was. An item sent and not yet committed stays pending for its consumer and is sent again when that consumer comes
back (the SDK reconnects with the same uid), or is adopted by another watcher of the group once its consumer is no
longer connected to any front-end process (watcher_registry.py keeps who is connected where, in Redis): nothing
sent and uncommitted is lost. A commit (or delete, or truncate) removes the item from the queue, which frees a
place in the window. Only one connection per queue, group and consumer is accepted, over all processes and hosts.

With auto commit, an item is committed once it has been handed to the connection, and only then: a batch is sent
and committed in a task of its own that the end of the session does not cancel, so a client that closes right
after the last frame still finds every item it was sent committed, and every item it was not sent still there.

A watch with tag filters gets only the items whose tags all match. Its watchers form a consumer group of their
own (the SDK's gid plus the filters), so skipping an item never takes it from an unfiltered watcher of the same
gid; the filter runs in bounded steps inside Redis (tag_scan).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from scalablejob.frontend.params import WatchParams
from scalablejob.frontend.protocol import DataFrame, encode_frame
from scalablejob.frontend.queues import Queue, entries_of
from scalablejob.frontend.tag_scan import TagScan, filter_key
from scalablejob.frontend.watcher_ids import WatcherKey
from scalablejob.frontend.watcher_registry import WatcherRegistry
from scalablejob.store.lua import lua_script
from scalablejob.store.sink import SinkEntry, as_text, stream_id

READ_BLOCK_MS = 1000
COMMIT_POLL_S = 0.5  # a commit made through another process is seen within this; our own ones wake at once
ADOPT_INTERVAL_S = 1.0
# An orphan's item is taken over only once it has been idle this long. XCLAIM resets the idle time, so when two
# watchers of a group race to adopt the same orphan, the second claim finds the item fresh and fails: one sender.
ADOPT_MIN_IDLE_MS = 1000


def group_name(gid: str, filters: Mapping[str, str]) -> str:
    """The consumer group of a watch: the SDK's gid, set apart by the tag filters when there are any."""
    return f"{gid}?{filter_key(filters)}" if filters else gid


class WatcherLost(Exception):
    """This process no longer holds the watcher: its lease lapsed (its loop or Redis stalled) and another connection
    took the watcher over. Its connection here is closed, and sends nothing more."""


class WatchSession:
    """One watcher's connection: deliver, wait for room in the window, adopt orphaned items, repeat."""

    def __init__(
        self, queue: Queue, params: WatchParams, key: WatcherKey, registry: WatcherRegistry,
        send: Callable[[bytes], Awaitable[None]],
    ) -> None:  # fmt: skip
        self.queue = queue
        self.redis: aioredis.Redis = queue.redis
        self.params = params
        self.key = key
        self.stream, self.group, self.consumer = key
        self.registry = registry
        self._send = send
        self._settle = self.redis.register_script(lua_script("watch_settle.lua", "scalablejob.frontend"))
        self._forget = self.redis.register_script(lua_script("watch_forget.lua", "scalablejob.frontend"))
        self._tags = TagScan(self.redis, self.stream) if params.filters else None
        self._adopted_at = float("-inf")
        self._stopped = False
        self._deliveries: set[asyncio.Future[None]] = set()

    def stop(self) -> None:
        """End `run` at its next step: the client went away."""
        self._stopped = True

    async def settle(self, timeout_s: float) -> None:
        """Wait for deliveries still in flight (sending, then committing what was sent) to end."""
        if self._deliveries:
            await asyncio.wait(set(self._deliveries), timeout=timeout_s)

    async def run(self) -> None:
        """Stream items until stopped (the client went away) or a send fails."""
        await self._ensure_group()
        await self._deliver(await self._own_pending())
        while not self._stopped:
            await self._check_held()
            room = self.params.window - await self._outstanding()
            if room <= 0:
                await self.registry.wait_removed(self.stream, COMMIT_POLL_S)
                continue
            adopted = await self._adopt(room)
            if adopted:
                await self._deliver(adopted)
            else:
                await self._deliver(await self._read_new(room), read_new=True)

    async def _check_held(self, unsent: list[SinkEntry] | None = None, read_new: bool = False) -> None:
        """Raise WatcherLost when another connection took the watcher over, first giving back `unsent`."""
        if await self._let_go_if_lost(unsent or [], read_new):
            raise self._lost()

    async def _let_go_if_lost(self, unsent: list[SinkEntry], read_new: bool) -> bool:
        """Whether this process no longer holds the watcher; if so, `unsent` new items go back to the group."""
        if await self.registry.holds(self.key):
            return False
        await self._give_back(unsent, read_new)
        return True

    def _lost(self) -> WatcherLost:
        return WatcherLost(f"watcher {self.key} was taken over by another front end while this one's lease lapsed")

    async def _give_back(self, entries: list[SinkEntry], read_new: bool) -> None:
        """New items (`read_new`) read for a watcher this process lost, not sent: those that no other connection of
        the consumer has been sent since (still delivered once) go to a consumer connected nowhere, so the group's
        watchers adopt them. Left with the consumer, whose connection elsewhere looked for its pending items before
        they were read here, they would hold places in its window and never be sent. Items read again by that
        connection (it started after they were read) stay: it has sent them. Items this process had adopted or
        was sending again stay too (their delivery counts say nothing of who read them last)."""
        if not read_new or not entries:
            return
        ids = {stream_id(entry.index) for entry in entries}
        first, last = (stream_id(f(entry.index for entry in entries)) for f in (min, max))
        pending: Any = await self.redis.xpending_range(  # the consumer's others in that range are in its window
            self.stream, self.group, first, last, len(ids) + self.params.window, consumername=self.consumer
        )
        unsent = [item for item in pending if as_text(item["message_id"]) in ids and item["times_delivered"] == 1]
        if unsent:  # an item sent again between the two calls has been idle less long since: the claim skips it
            idle_ms = min(int(item["time_since_delivered"]) for item in unsent)
            orphan, unsent_ids = f"returned-{uuid.uuid4().hex}", [item["message_id"] for item in unsent]
            await self.redis.xclaim(self.stream, self.group, orphan, idle_ms, unsent_ids)

    async def _ensure_group(self) -> None:
        start = stream_id(self.params.index - 1) if self.params.index > 1 else "0"
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _own_pending(self) -> list[SinkEntry]:
        """Items sent to this consumer on an earlier connection and never committed: they are sent again."""
        reply: Any = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"})
        return await self._existing(reply)

    async def _read_new(self, room: int) -> list[SinkEntry]:
        if self._tags is not None:
            return await self._read_matching(room)
        reply: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: ">"}, count=room, block=READ_BLOCK_MS
        )
        return await self._existing(reply)

    async def _read_matching(self, room: int) -> list[SinkEntry]:
        """The group's next matching items; with none left, wait (up to one read block) for the stream to grow."""
        assert self._tags is not None
        entries, last = await self._tags.take(self.group, self.consumer, room, self.params.filters)
        if not entries:  # wait after the group's last item (another watcher of the group may have moved it on)
            after = last or await self._last_delivered()
            await self.redis.xread({self.stream: after}, count=1, block=READ_BLOCK_MS)
        return entries

    async def _last_delivered(self) -> str:
        """The id of the last item the group has passed to any of its watchers."""
        groups: Any = await self.redis.xinfo_groups(self.stream)
        return next(as_text(g["last-delivered-id"]) for g in groups if as_text(g["name"]) == self.group)

    async def _existing(self, reply: Any) -> list[SinkEntry]:
        """The entries of an XREADGROUP reply; ones deleted meanwhile are acknowledged and left out."""
        items = [item for _, stream_items in reply or [] for item in stream_items if item[0] is not None]
        gone = [sid for sid, fields in items if not fields]
        if gone:
            await self.redis.xack(self.stream, self.group, *gone)
        return entries_of(items)

    async def _outstanding(self) -> int:
        return int(await self._settle(keys=[self.stream], args=[self.group, self.consumer, self.params.window]))

    async def _adopt(self, room: int) -> list[SinkEntry]:
        """Take over up to `room` items pending for consumers of the group that are no longer connected, and
        forget such consumers once nothing is pending for them (each SDK client is a new consumer)."""
        if time.monotonic() - self._adopted_at < ADOPT_INTERVAL_S:
            return []
        self._adopted_at = time.monotonic()
        adopted: list[SinkEntry] = []
        consumers: Any = [c for c in await self.redis.xinfo_consumers(self.stream, self.group)
                          if as_text(c["name"]) != self.consumer]  # fmt: skip
        live = await self.registry.live([(self.stream, self.group, as_text(c["name"])) for c in consumers])
        for consumer, connected in zip(consumers, live, strict=True):
            name = as_text(consumer["name"])
            if connected:  # to this process or another one
                continue
            if consumer["pending"] and len(adopted) < room:
                adopted += await self._claim(name, room - len(adopted))
            await self._forget(keys=[self.stream], args=[self.group, name])
        return adopted

    async def _claim(self, orphan: str, count: int) -> list[SinkEntry]:
        pending: Any = await self.redis.xpending_range(self.stream, self.group, "-", "+", count, consumername=orphan)
        ids = [item["message_id"] for item in pending]
        claimed: Any = (
            await self.redis.xclaim(self.stream, self.group, self.consumer, ADOPT_MIN_IDLE_MS, ids) if ids else []
        )
        return await self._existing([(self.stream, claimed)])

    async def _deliver(self, entries: list[SinkEntry], read_new: bool = False) -> None:
        """Send `entries` (and commit them, with auto commit) in a task the session's end does not cancel;
        `read_new`: they were read as new items (not adopted, not sent before)."""
        if not entries:
            return
        if self._stopped:  # read for a client that is gone: they stay pending for this consumer (its next connection
            # sends them again; the group's watchers adopt them if it never comes back), unless this process holds
            # the watcher no more (taken over elsewhere, or released after a read that outlasted the session's end)
            await self._let_go_if_lost(entries, read_new)
            return
        delivery = asyncio.ensure_future(self._send_and_commit(entries, read_new))
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._delivered)
        await asyncio.shield(delivery)

    def _delivered(self, delivery: asyncio.Future[None]) -> None:
        self._deliveries.discard(delivery)
        if not delivery.cancelled():
            delivery.exception()  # retrieved: a failed send after the session ended is the client going away

    async def _send_and_commit(self, entries: list[SinkEntry], read_new: bool) -> None:
        """Send each entry; with auto commit, commit exactly those handed to the connection, even if a later
        send fails because the client went away."""
        sent: list[SinkEntry] = []
        try:
            for at, entry in enumerate(entries):
                await self._check_held(entries[at:], read_new)
                data = b"" if self.params.index_only else entry.data
                await self._send(encode_frame(DataFrame(index=entry.index, data=data, tags=entry.tags)))
                sent.append(entry)
        finally:
            if self.params.auto_commit and sent:
                await self.redis.xack(self.stream, self.group, *[stream_id(entry.index) for entry in sent])
                await self.queue.remove([entry.index for entry in sent])
