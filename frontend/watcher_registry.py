"""The watchers connected to any front-end process of a service, kept in Redis so that the watcher rules hold across
processes and hosts: one connection per queue, group and consumer; at most max_watchers_per_token per token; an
orphan's items adopted only once its consumer is connected nowhere.

Each process has an id and a lease (a key with an expiry) that a heartbeat renews; a watcher is connected while
the process that holds it has its lease. A process that dies (kill -9, a lost host) stops renewing, so within
LEASE_S its watchers count as gone: their uids may connect again elsewhere, their uncommitted items are adopted,
and they no longer count against the cap; the next heartbeat of any live process sweeps its records. A process
that stalled past its lease (and may have been swept) registers its watchers again on its next heartbeat; those
another process took meanwhile are no longer held here, and a watcher sends only while `holds` says it still holds
it, which past the lease's end (by this process's clock) waits for that heartbeat. The scripts
(watcher_*.lua, beside this module) make every check-and-set atomic. The pure side is watcher_ids.py.

What stays in this process: the wake-ups of its own watchers waiting for room in their window (a commit made
through another process is seen by polling, within watch.COMMIT_POLL_S), and its connection caps (per process by
nature: each process accepts its own connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.exceptions
from redis import asyncio as aioredis

from scalablejob.frontend.watcher_ids import LEASE_S, Claim, WatcherKey, count_field, heartbeat_interval_s, watcher_id
from scalablejob.model import keys
from scalablejob.store.lua import lua_script

logger = logging.getLogger(__name__)

RECONNECT_GRACE_S = 1.0  # a client that reconnects may arrive before its old connection is seen closed
_GRACE_POLL_S = 0.05


def _script(redis: aioredis.Redis, name: str) -> Any:
    return redis.register_script(lua_script(name, "scalablejob.frontend"))


class WatcherRegistry:
    """This process's view of the service's shared watcher registry, and the wake-ups of its own watchers."""

    def __init__(self, redis: aioredis.Redis, service: str, *, lease_s: float = LEASE_S) -> None:
        self.redis = redis
        self.service = service
        self.lease_s = lease_s
        self.instance = uuid.uuid4().hex
        self._held: dict[WatcherKey, str] = {}  # watcher -> its front end, as registered by this process
        self._lease_until = float("-inf")  # by this process's clock, its lease surely lives until then
        self._renewing = asyncio.Lock()  # one heartbeat at a time: the beat's own, or one a watcher asks for
        self._register_pending = False  # a registration again that failed halfway (Redis): the next beat retries it
        self._unreleased: dict[WatcherKey, str] = {}  # released while Redis failed: retried at each heartbeat
        self._removals: dict[str, asyncio.Event] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._acquire = _script(redis, "watcher_acquire.lua")
        self._release = _script(redis, "watcher_release.lua")
        self._reregister = _script(redis, "watcher_register_again.lua")
        self._renew = _script(redis, "watcher_heartbeat.lua")
        self._live = _script(redis, "watcher_live.lua")
        self._lease_prefix = keys.frontend_lease_prefix(service)
        self._held_key = keys.frontend_instance_watchers(service, self.instance)
        self._claim_keys = [keys.frontend_watchers(service), keys.frontend_watching(service), self._held_key]

    async def start(self) -> None:
        """Take the lease (a Redis error here fails the start, as any other) and keep renewing it."""
        await self.heartbeat()
        self._heartbeat = asyncio.ensure_future(self._keep_alive())

    async def stop(self) -> None:
        """Stop renewing, and give the lease up: whatever this process still holds is free at once."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        with contextlib.suppress(redis.exceptions.RedisError):
            await self.redis.delete(keys.frontend_lease(self.service, self.instance), self._held_key)
            await self.redis.srem(keys.frontend_instances(self.service), self.instance)

    async def heartbeat(self) -> None:
        """Renew the lease and sweep dead processes' records; if the lease had lapsed (this process may have been
        swept meanwhile), register its watchers again: those another process took over meanwhile are no longer
        held here (`holds`)."""
        async with self._renewing:
            await self._renew_lease()

    async def _renew_lease(self) -> None:
        info = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
        args = [self.instance, self._lease_prefix, int(self.lease_s * 1000), keys.frontend_instance_watchers_prefix(
            self.service), info]  # fmt: skip
        for key, front_end in list(self._unreleased.items()):
            await self._release_in_redis(key, front_end)
            del self._unreleased[key]
        sent = time.monotonic()  # the lease set now lives lease_s from a moment after this one
        kept = await self._renew(keys=[keys.frontend_instances(self.service), *self._claim_keys[:2]], args=args)
        if not int(kept) and self._held:
            logger.warning("this front end's watcher lease had lapsed (its event loop or Redis stalled for %g s): "
                           "registering its %d watchers again", self.lease_s, len(self._held))  # fmt: skip
            self._register_pending = True
        if self._register_pending:
            await self._register_again()
            self._register_pending = False
        self._lease_until = sent + self.lease_s

    async def holds(self, key: WatcherKey) -> bool:
        """Whether this process still holds watcher `key`, so may send to it. Known here while the lease surely
        lives (renewed less than a lease ago, by this process's clock); past that, its loop or Redis stalled and
        another process may have taken the watcher over, so a heartbeat settles it first."""
        if key not in self._held:
            return False
        if time.monotonic() < self._lease_until:
            return True
        async with self._renewing:
            if time.monotonic() >= self._lease_until:  # not renewed by another while this one waited
                await self._renew_lease()
        return key in self._held  # as the renewal just left it, however long it took

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(heartbeat_interval_s(self.lease_s))
            try:
                await self.heartbeat()
            except Exception as exc:  # the beat must go on: a watcher's lease rests on it
                unexpected = not isinstance(exc, redis.exceptions.RedisError)  # a bug: its traceback says where
                logger.warning("could not renew this front end's watcher lease: %s (retrying)", exc,
                               exc_info=unexpected)  # fmt: skip

    async def _register_again(self) -> None:
        """Hold again, in one step (watcher_register_again.lua), what this process held before its lease lapsed (it
        may have been swept meanwhile). A watcher another process took is no longer held here; one whose connection
        ended while this ran is let go again."""
        held = list(self._held.items())
        pairs = [part for key, front_end in held for part in (watcher_id(key), self._count_field(front_end))]
        args = [self.instance, self._lease_prefix, *pairs]
        reply: Any = await self._reregister(keys=self._claim_keys, args=args)
        for (key, front_end), kept in zip(held, reply, strict=True):
            if key not in self._held:  # released meanwhile: its connection ended
                if int(kept):
                    await self._release_in_redis(key, front_end)
            elif not int(kept):
                del self._held[key]  # its connection here ends (watch.WatcherLost) and sends it nothing more
                logger.warning("watcher %s was taken over by another front end while this one's lease lapsed", key)

    async def acquire(self, key: WatcherKey, front_end: str, cap: int, grace_s: float = RECONNECT_GRACE_S) -> Claim:
        """Hold `key` for one connection of front end `front_end` (its token's watchers capped at `cap` over all
        processes). BUSY if another connection still holds it after `grace_s`; CAPPED at once if the cap is
        reached."""
        deadline = time.monotonic() + grace_s
        while True:
            claim = Claim(int(await self._claim(key, front_end, cap)))
            if claim is Claim.HELD:
                self._held[key] = front_end
            if claim is not Claim.BUSY or time.monotonic() >= deadline:
                return claim
            await asyncio.sleep(_GRACE_POLL_S)

    async def _claim(self, key: WatcherKey, front_end: str, cap: int) -> Any:
        args = [watcher_id(key), self.instance, self._lease_prefix, front_end, cap]
        return await self._acquire(keys=self._claim_keys, args=args)

    async def release(self, key: WatcherKey) -> None:
        """Free `key`; if Redis fails now, the heartbeat frees it later (until then its uid waits or is refused)."""
        front_end = self._held.pop(key, None)
        if front_end is None:
            return
        try:
            await self._release_in_redis(key, front_end)
        except redis.exceptions.RedisError as exc:
            logger.warning("could not release watcher %s: %s (retried at the next heartbeat)", key, exc)
            self._unreleased[key] = front_end

    async def _release_in_redis(self, key: WatcherKey, front_end: str) -> None:
        await self._release(keys=self._claim_keys, args=[watcher_id(key), self.instance, self._count_field(front_end)])

    def _count_field(self, front_end: str) -> str:
        return count_field(self.instance, front_end)

    async def live(self, watchers: Sequence[WatcherKey]) -> list[bool]:
        """Whether each watcher is connected to a live front-end process (this one or any other)."""
        if not watchers:
            return []
        reply: Any = await self._live(keys=self._claim_keys[:1], args=[self._lease_prefix, *map(watcher_id, watchers)])
        return [bool(int(flag)) for flag in reply]

    def removed(self, stream: str) -> None:
        """Items left `stream` through this process: wake its watchers waiting for room in their window."""
        event = self._removals.pop(stream, None)
        if event is not None:
            event.set()

    async def wait_removed(self, stream: str, timeout_s: float) -> None:
        event = self._removals.setdefault(stream, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
