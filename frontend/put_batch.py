"""Script calls made in the same turns of the event loop, sent to Redis together: one write and one read for all.

With several puts in flight in one front-end process (several connections), each put's script call cost a write,
a read and a wake-up of its own (issue 26). Here the first call yields GATHER_TURNS turns of the loop, with no timer
(a lone call waits for no company, only for the loop to go round), and the calls made meanwhile by the other tasks
join it; it then sends them all in one pipeline. Each caller gets its own reply or its own error. A caller's
deadline stays its own: one that gives up leaves the others waiting for theirs. A call whose caller gave up by
the time the batch is made up (after the gathering turns) is left out of it, so a put answered 503 then was not
written (a client retrying it makes no duplicate); the same holds for a call sent again after NOSCRIPT. The first
caller's giving up while it gathers fails the others' calls at once, none of them sent (their deadlines, begun
within the same turns, are as good as passed). A caller whose deadline passes once the batch is made up still gives
up, though its call may be written and run: a put answered 503 then may exist, which only a round trip to ask could
tell.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis import asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from scalablejob.model.errors import BrokerError
from scalablejob.store.state import run_alone

# A put's data read in one turn makes its call in the next: two turns gather the puts read while the first caller
# waits, as well as those read with it. With 4 clients, one turn batched a third to a half of the puts, two turns 9
# in 10 (a lone put pays one more pass of an idle loop, which did not show in its CPU).
GATHER_TURNS = 2


@dataclass(frozen=True)
class ScriptCall:
    """One call of a script waiting in a batch; `reply` is None for the caller that sends the batch."""

    script: AsyncScript
    keys: Sequence[Any]
    args: Sequence[Any]
    reply: asyncio.Future[Any] | None = None

    def command(self) -> tuple[Any, ...]:
        """The call as the EVALSHA command that the script object itself would send."""
        return ("EVALSHA", self.script.sha, len(self.keys), *self.keys, *self.args)


class ScriptBatch:
    """Sends the script calls of the same turns of the loop together, on `redis` (which must be the scripts'
    server)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._gathering: list[ScriptCall] | None = None  # the calls being gathered, the sender's first

    async def run(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """`script(keys=keys, args=args)`'s reply, the call sent with the others made in the same turns."""
        if self._gathering is not None:
            reply = asyncio.get_running_loop().create_future()
            self._gathering.append(ScriptCall(script, keys, args, reply))
            return await reply
        batch = self._gathering = [ScriptCall(script, keys, args)]
        try:
            for _ in range(GATHER_TURNS):  # the tasks ready now, and those woken by what the loop reads next
                await asyncio.sleep(0)
            self._gathering = None
            batch = [call for call in batch if waiting(call)]  # the sender's own call first, as it waits
            if len(batch) == 1:
                return await run_alone(script, keys, args)
            replies = await self._send(batch)
        except BaseException as exc:
            if self._gathering is batch:
                self._gathering = None
            fail(batch[1:], exc)
            raise
        settle(batch[1:], replies[1:])
        return reply_of(replies[0])

    async def _send(self, batch: Sequence[ScriptCall]) -> list[Any]:
        """Each call's reply or error, in one pipeline; calls the server had no script for are sent again once it
        has (they did not run), but for those whose caller gave up meanwhile."""
        replies = await self._pipelined(batch)
        again = [at for at, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if again:
            for script in {id(batch[at].script): batch[at].script for at in again}.values():
                script.sha = await self.redis.script_load(script.script)
            again = [at for at in again if waiting(batch[at])]
            for at, reply in zip(again, await self._pipelined([batch[at] for at in again]), strict=True):
                replies[at] = reply
        return replies

    async def _pipelined(self, batch: Sequence[ScriptCall]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for call in batch:
                pipe.execute_command(*call.command())
            return list(await pipe.execute(raise_on_error=False))


def waiting(call: ScriptCall) -> bool:
    """Whether the call's caller still waits for it: the sender does, one whose wait was cancelled (its deadline
    passed) does not, and its call is not to be sent."""
    return call.reply is None or not call.reply.done()


def reply_of(reply: Any) -> Any:
    """A call's reply, or its error raised."""
    if isinstance(reply, Exception):
        raise reply
    return reply


def settle(calls: Sequence[ScriptCall], replies: Sequence[Any]) -> None:
    """Hand each waiting caller its own reply or error (one that gave up already is left alone)."""
    for call, reply in zip(calls, replies, strict=True):
        if call.reply is None or call.reply.done():
            continue
        if isinstance(reply, Exception):
            call.reply.set_exception(reply)
        else:
            call.reply.set_result(reply)


def fail(calls: Sequence[ScriptCall], exc: BaseException) -> None:
    """The batch could not be sent or read: each waiting caller gets an error of its own to raise, `exc`'s copy (a
    broker error if the sender was cancelled, by its deadline or a shutdown, which is no error of theirs to raise).
    One exception object raised in several tasks would have its traceback and context rewritten by each."""
    settle(calls, [error_for_caller(exc) for _ in calls])


def error_for_caller(exc: BaseException) -> Exception:
    """An exception of `exc`'s type and message for one waiting caller, caused by `exc`; a BrokerError if `exc` is
    no Exception (a cancellation) or cannot be copied (an __init__ that does not take its own args back)."""
    if isinstance(exc, Exception):
        try:
            error = copy.copy(exc)
        except Exception:  # any failure to copy: a broker error
            error = BrokerError(f"the batch of calls this one was sent in failed: {exc!r}")
    else:
        error = BrokerError("the batch of calls this one was sent in was cancelled")
    error.__cause__ = exc
    error.__suppress_context__ = True
    return error
