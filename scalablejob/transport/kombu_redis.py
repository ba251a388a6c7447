"""scalablejob's kombu Redis transport: kombu's own, subclassed, with everything the service does inside kombu.

The service's Celery app names it for every broker connection (api.celery_app), so workers, producers, `celery -A`
commands, Flower and the scaler's recovery all run the same code. On top of kombu's Redis transport it:
- gates the consumer's BRPOP (idle first): while a gate is attached (workers/gate.py), each BRPOP listens only to the
  queues the gate has room for, with a short timeout while some queue is left out, and tells a watcher (workers/
  wake.py) which connection it blocks on, so a freed slot can end the wait at once (and which holds such a BRPOP
  back for a moment first, so that a short task's slot frees before it goes out);
- builds one Redis client per channel for all its synchronous calls: kombu builds a new one (and its table of a few
  hundred response callbacks) for each message received and acknowledged, a fifth of a short task's CPU here;
- records a received message as unacknowledged with one script call (unacked_record.lua) instead of a MULTI of two
  commands: the same keys and format, so kombu's restore and ack work on it unchanged; on the worker's task channel,
  the message of a task that only runs as a request is recorded by that task's start instead, in the same round trip
  (transport.acks.FinishAcks), and until then an ack needs nothing in Redis and a requeue writes the record first;
- on the worker's task channel, keeps unacknowledged messages where they are when the connection drops (no restore
  on close: a training job that
  rides out a Redis restart would also run again elsewhere, and a restore against a broker that is away can crash
  the worker, kombu #582, #970); acks and rejects made after that go straight to Redis (transport.acks), and those a
  task's finish already made in its final script only update kombu's bookkeeping;
- puts an unacknowledged message back at the head of its queue under a new delivery tag (the scaler's recovery);
- connects with connections on which the broker's refusal for now (MISCONF on a full disk) is a lost connection
  (transport.refusals), which the worker waits out as any outage, instead of ending on it.

Every private name of kombu it overrides or calls is checked at import (upstream.check): a kombu release that
renamed one stops the process with one error naming the kombu version, rather than silently dispatching slower.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport.virtual import base as virtual
from kombu.utils.json import dumps as kombu_dumps

from scalablejob.store.lua import lua_script
from scalablejob.store.queues import PRIORITY_SEPARATOR
from scalablejob.store.state import UnackedMessage
from scalablejob.transport.acks import DirectAcks, FinishAcks
from scalablejob.transport.refusals import refusals_as_lost
from scalablejob.upstream.check import require, require_equal
from scalablejob.upstream.redis_internals import connection_client_id

logger = logging.getLogger(__name__)

GATED_BRPOP_TIMEOUT_S = 0.1  # while a queue is left out: the fallback if a wake-up is missed

require("kombu", kombu_redis.Channel, ("_brpop_start", "_brpop_read", "_create_client", "_get_message_priority",
                                       "_lookup", "_q_for_pri", "do_restore", "conn_or_acquire", "pool",
                                       "_get_publish_topic", "keyprefix_fanout", "sep", "unacked_key",
                                       "unacked_index_key", "connection_class", "connection_class_ssl"))  # fmt: skip
require("kombu", kombu_redis.QoS, ("append", "ack", "reject", "unacked_key", "unacked_index_key",
                                   "_remove_from_indices"))  # fmt: skip
require_equal("kombu", "the priority separator of its queue lists", kombu_redis.Channel.sep, PRIORITY_SEPARATOR)
require_equal("kombu", "the unacked hash", kombu_redis.Channel.unacked_key, UnackedMessage.unacked_key)
require_equal("kombu", "the fanout topic prefix", kombu_redis.Channel.keyprefix_fanout, "/{db}.")
require_equal("kombu", "the unacked index", kombu_redis.Channel.unacked_index_key, UnackedMessage.unacked_index_key)
_INSTANCE_NAMES = ("_queue_cycle", "_in_poll")  # set in kombu's Channel.__init__, checked on the first channel


class DispatchGate(Protocol):
    """What the channel asks before each BRPOP (workers/gate.py answers)."""

    def before_brpop(self) -> bool:
        """True when some queue has no free slot, and so is left out of the next BRPOP."""
        ...

    def has_room(self, queue: str) -> bool: ...


class BrpopWatcher(Protocol):
    """Told which connection a BRPOP that leaves a queue out blocks on, and when it returned (workers/wake.py)."""

    def sent(self, client_id: int) -> None: ...

    def returned(self) -> None: ...

    def hold_back(self, hidden: bool) -> bool:
        """Whether to send no BRPOP now, while some queue is `hidden`: the event loop ticks again when a slot frees."""
        ...


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, recording in one script call, and acknowledging after the channel closed."""

    finish_acks: FinishAcks | None = None
    direct_acks: DirectAcks | None = None
    _record: Callable[..., Any] | None = None

    def append(self, message: Any, delivery_tag: str) -> None:
        if self._record is None:
            require("kombu", message, ("_raw",))  # set in the message's __init__: checked on the first one
            script = lua_script("unacked_record.lua", "scalablejob.transport")
            self._record = self.channel.client_for_calls().register_script(script)
        delivery = message.delivery_info
        # kombu's JSON, as its QoS writes: the message as decoded may hold what only kombu's JSON writes (a datetime)
        stored = kombu_dumps([message._raw, delivery["exchange"], delivery["routing_key"]])
        task = (message.headers or {}).get("task")
        if self.finish_acks is not None and task in self.finish_acks.record_at_start:
            self.finish_acks.hold(delivery_tag, time.time(), stored)  # recorded by its task's start (transport.acks)
        else:
            self._write_record(delivery_tag, time.time(), stored)
        virtual.QoS.append(self, message, delivery_tag)  # the channel's bookkeeping, without kombu's MULTI

    def record_unrecorded(self, delivery_tag: str | None = None) -> None:
        """Write the unacknowledged record of a message taken whose task has not started (of all of them, if no tag
        is given), as `append` writes it."""
        waiting = self.finish_acks.unrecorded(delivery_tag) if self.finish_acks is not None else {}
        for tag, (delivered_at, stored) in waiting.items():
            self._write_record(tag, delivered_at, stored)

    def _write_record(self, delivery_tag: str, delivered_at: float, stored: str) -> None:
        """The message's unacknowledged record, in kombu's keys and format (unacked_record.lua)."""
        assert self._record is not None  # registered by the first append
        self._record(keys=[self.unacked_index_key, self.unacked_key], args=[delivery_tag, delivered_at, stored])

    def ack(self, delivery_tag: str) -> None:
        if self._acknowledged_by_finish(delivery_tag) or self._unrecorded(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)  # nothing of it in Redis
        elif self.channel.connection is not None or self.direct_acks is None:
            super().ack(delivery_tag)
        else:
            self.direct_acks.ack(delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            try:
                self.record_unrecorded(delivery_tag)  # a requeue restores the message from its record
            except redis.RedisError as exc:  # the reconciler re-sends a request that no message backs
                logger.warning("could not record message %s to put it back: %s", delivery_tag, exc)
        if self._acknowledged_by_finish(delivery_tag) or self._unrecorded(delivery_tag):
            virtual.QoS.ack(self, delivery_tag)
        elif self.channel.connection is not None or self.direct_acks is None:
            super().reject(delivery_tag, requeue=requeue)
        elif not requeue:
            self.direct_acks.ack(delivery_tag)
        else:  # the scaler puts it back once it sees the worker gone
            logger.warning("message %s stays unacknowledged: its channel closed", delivery_tag)

    def _acknowledged_by_finish(self, delivery_tag: str) -> bool:
        return self.finish_acks is not None and self.finish_acks.take(delivery_tag)

    def _unrecorded(self, delivery_tag: str) -> bool:
        """The message was never recorded in Redis (its task did not start): forgotten, nothing to remove."""
        return self.finish_acks is not None and bool(self.finish_acks.unrecorded(delivery_tag))


class _GatedCycle:
    """A view of kombu's queue cycle that hides the queues without a free slot."""

    def __init__(self, cycle: Any, gate: DispatchGate) -> None:
        self._cycle = cycle
        self._gate = gate

    def consume(self, n: int) -> list[str]:
        return [queue for queue in self._cycle.consume(n) if self._gate.has_room(queue)]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cycle, name)


class ChannelMixin:
    """What scalablejob adds to kombu's Redis channel (plain and Sentinel)."""

    QoS = QoS
    _gate: DispatchGate | None = None
    _watcher: BrpopWatcher | None = None
    _shared_client: Any = None
    _queue_cycle: Any  # kombu's, set in its __init__

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        require("kombu", self, _INSTANCE_NAMES)

    # ---- the worker attaches these on its task channel ----------------------------------------------------------

    def gate_dispatch(self, gate: DispatchGate, watcher: BrpopWatcher | None = None) -> None:
        """From now on, BRPOP only on the queues `gate` has room for; tell `watcher` about BRPOPs that leave one
        out."""
        self._gate, self._watcher = gate, watcher

    def keep_unacked(self, broker_url: str, finish_acks: FinishAcks | None = None) -> None:
        """Acks and rejects made after the connection dropped go straight to Redis; with `finish_acks`, a message
        whose task's finish acknowledged it only leaves kombu's bookkeeping."""
        self.do_restore = False  # unacknowledged messages stay in Redis when it closes (see the module's docstring)
        qos: QoS = self.qos  # type: ignore[attr-defined]
        qos.direct_acks = DirectAcks(broker_url, qos.unacked_key, qos.unacked_index_key)
        qos.finish_acks = finish_acks
        if finish_acks is not None:
            finish_acks.keys = (qos.unacked_key, qos.unacked_index_key)

    def client_for_calls(self) -> Any:
        """The channel's one synchronous client (drawing connections from its pool, so safe across threads)."""
        return self._create_client()

    def brpop_client_id(self) -> int:
        """The Redis client id of the connection this channel BRPOPs on."""
        return connection_client_id(self.client.connection)  # type: ignore[attr-defined]

    # ---- the scaler's recovery ----------------------------------------------------------------------------------

    def requeue_unacked(self, pipe: Any, delivery_tag: str) -> None:
        """Inside a WATCH on the unacked hash: take the entry out and push its message, under a new delivery tag and
        marked redelivered, at the head of its queue (kombu's restore_by_tag would keep the old tag, which a frozen
        worker could still acknowledge)."""
        raw = pipe.hget(self.unacked_key, delivery_tag)  # type: ignore[attr-defined]
        pipe.multi()
        self.qos._remove_from_indices(delivery_tag, pipe)  # type: ignore[attr-defined]
        if not raw:
            return
        payload, exchange, routing_key = json.loads(raw)
        payload["properties"]["delivery_tag"] = str(uuid.uuid4())
        with contextlib.suppress(KeyError):  # marked where kombu's restore marks it: Celery reads the delivery info
            payload["headers"]["redelivered"] = True
            payload["properties"]["delivery_info"]["redelivered"] = True
        priority = self._get_message_priority(payload, reverse=False)  # type: ignore[attr-defined]
        for queue in self._lookup(exchange, routing_key):  # type: ignore[attr-defined]
            pipe.rpush(self._q_for_pri(queue, priority), json.dumps(payload))  # type: ignore[attr-defined]

    def drop_unacked(self, delivery_tag: str) -> None:
        """Forget an unacknowledged message whose request has ended, as kombu's ack does in Redis."""
        self.qos._remove_from_indices(delivery_tag).execute()  # type: ignore[attr-defined]

    # ---- kombu's methods, overridden ----------------------------------------------------------------------------

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:  # the client that BRPOPs stays kombu's own
            return super()._create_client(asynchronous=True)  # type: ignore[misc]
        pool = self.pool  # type: ignore[attr-defined]
        if self._shared_client is None or self._shared_client.connection_pool is not pool:  # kombu made a new pool
            self._shared_client = super()._create_client()  # type: ignore[misc]
        return self._shared_client

    def _brpop_start(self, timeout: float | None = None) -> None:
        gate, watcher = self._gate, self._watcher
        if gate is None:
            return super()._brpop_start(timeout)  # type: ignore[misc,no-any-return]
        if watcher is not None:
            # pending before the gate is asked: a slot that frees from now on wakes this BRPOP, even one that frees
            # before the command reaches Redis (the waker retries its unblock briefly); set later, such a wake-up
            # would find nothing pending and the freed slot would wait for the fallback timeout
            watcher.sent(self.brpop_client_id())
        hidden = gate.before_brpop()
        if watcher is not None and watcher.hold_back(hidden):
            hidden = gate.before_brpop()  # a slot that freed before the hold began woke nothing: ask again
            if hidden:
                return None  # nothing sent: kombu asks again at the loop's next tick
            watcher.hold_back(False)  # every queue is heard after all: the next hidden period is held back again
        if hidden:
            timeout = GATED_BRPOP_TIMEOUT_S
        cycle = self._queue_cycle
        self._queue_cycle = _GatedCycle(cycle, gate)
        try:
            super()._brpop_start(timeout)  # type: ignore[misc]
        finally:
            self._queue_cycle = cycle
            if watcher is not None and not (hidden and self._in_poll):  # type: ignore[attr-defined]
                watcher.returned()  # every queue is heard, or no BRPOP went out: nothing to wake
        return None

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)  # type: ignore[misc]
        finally:
            if self._watcher is not None:
                self._watcher.returned()


class Channel(ChannelMixin, kombu_redis.Channel):
    connection_class = refusals_as_lost(kombu_redis.Channel.connection_class)
    connection_class_ssl = refusals_as_lost(kombu_redis.Channel.connection_class_ssl)


class SentinelChannel(ChannelMixin, kombu_redis.SentinelChannel):
    connection_class = refusals_as_lost(kombu_redis.SentinelChannel.connection_class)
    connection_class_ssl = refusals_as_lost(kombu_redis.SentinelChannel.connection_class_ssl)


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
