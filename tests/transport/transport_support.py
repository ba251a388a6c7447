"""What the transport tests share: a consumer on two queues, a gate and a watcher the test steers, and a MONITOR
log of the commands Redis receives. The fixtures that build them are in transport_fixtures."""

from __future__ import annotations

import codecs
import contextlib
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from scalablejob.workers.wake import BrpopWaker

QUEUES = ("a", "b")
SEP = kombu_redis.Channel.sep  # between a queue's name and its priority in the names of its lists
DRAIN_TIMEOUT_S = 2.0


def declared(name: str) -> Queue:
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def unblock_all(client: redis.Redis) -> None:
    """End every pending blocking command: a kombu channel closed with a BRPOP pending waits for its answer. Nothing
    to do if the test stopped the server."""
    try:
        entries = client.client_list()
    except redis.ConnectionError:
        return
    for entry in entries:
        if "b" in entry["flags"]:
            client.client_unblock(int(entry["id"]))


def brpop_client_ids(client: redis.Redis) -> list[int]:
    """The ids of the connections blocked in a BRPOP now, as CLIENT LIST tells them."""
    return [int(entry["id"]) for entry in client.client_list() if entry["cmd"] == "brpop"]


class Gate:
    """A dispatch gate (transport.kombu_redis.DispatchGate) whose closed queues the test sets."""

    def __init__(self, closed: Iterable[str] = ()) -> None:
        self.closed = set(closed)
        self.asked = 0

    def before_brpop(self) -> bool:
        self.asked += 1
        return bool(self.closed)

    def has_room(self, queue: str) -> bool:
        return queue not in self.closed


class RecordingWaker(BrpopWaker):
    """The worker's own waker, also noting what the channel told it."""

    def __init__(self, broker_url: str) -> None:
        super().__init__(broker_url)
        self.sent_ids: list[int] = []
        self.returns = 0

    def sent(self, client_id: int) -> None:
        self.sent_ids.append(client_id)
        super().sent(client_id)

    def returned(self) -> None:
        self.returns += 1
        super().returned()


class Consuming:
    """A kombu channel consuming queues a and b (without acknowledging), and what it received."""

    def __init__(self, connection: Connection, names: Iterable[str] = QUEUES) -> None:
        self.connection = connection
        self.channel: Any = connection.channel()
        self.queues = {name: declared(name) for name in names}
        self.received: list[Any] = []
        self.consumer = Consumer(self.channel, list(self.queues.values()), callbacks=[self._received], accept=["json"])
        self.consumer.consume()

    def _received(self, body: Any, message: Any) -> None:
        self.received.append(message)

    def publish(self, queue: str, body: Any, **options: Any) -> None:
        Producer(self.channel).publish(
            body, exchange=self.queues[queue].exchange, routing_key=queue, serializer="json", **options
        )

    def next_message(self, timeout: float = DRAIN_TIMEOUT_S) -> Any:
        """The next message the consumer takes; fails the test after `timeout` s."""
        count = len(self.received)
        deadline = time.monotonic() + timeout
        while len(self.received) == count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no message taken within {timeout} s")
            with contextlib.suppress(TimeoutError):
                self.connection.drain_events(timeout=remaining)
        return self.received[count]

    def takes_nothing_for(self, seconds: float) -> bool:
        """True when the consumer takes no message for `seconds` (each BRPOP sent meanwhile stays pending)."""
        count = len(self.received)
        with contextlib.suppress(TimeoutError):
            self.connection.drain_events(timeout=seconds)
        return len(self.received) == count


@dataclass(frozen=True)
class Brpop:
    """One BRPOP as Redis received it: the queues it listens to (every priority list of each) and its timeout."""

    queues: tuple[str, ...]
    timeout: float


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


class CommandLog:
    """Every command the redis-server receives, read from MONITOR on a connection of its own."""

    def __init__(self, url: str) -> None:
        self._connection = redis.ConnectionPool.from_url(url, protocol=2).make_connection()
        self._connection.send_command("MONITOR")
        if self._connection.read_response() not in (b"OK", "OK"):
            raise RuntimeError("Redis refused MONITOR")
        self.commands: list[list[str]] = []

    def read_until(self, done: Callable[[list[list[str]]], bool], timeout: float = DRAIN_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.commands):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._connection.can_read(timeout=remaining):
                pytest.fail(f"Redis did not receive the command awaited within {timeout} s; it had {self.commands}")
            line = self._connection.read_response()
            text = line.decode() if isinstance(line, bytes) else str(line)
            args = [codecs.decode(arg.encode("latin-1"), "unicode_escape") for arg in _QUOTED.findall(text)]
            self.commands.append([args[0].upper(), *args[1:]] if args else [])

    def settled(self, client: redis.Redis) -> list[list[str]]:
        """Every command received before now (a marker sent through `client` comes after them)."""
        marker = uuid.uuid4().hex
        client.echo(marker)
        self.read_until(lambda commands: ["ECHO", marker] in commands)
        return self.commands[: self.commands.index(["ECHO", marker])]

    def mark(self, client: redis.Redis) -> int:
        """A position in the log: `settled(client)[mark:]` is what Redis received after it."""
        return len(self.settled(client)) + 1

    def brpops(self, count: int) -> list[Brpop]:
        """The first `count` BRPOPs received (waiting for them)."""
        self.read_until(lambda commands: len(_brpops(commands)) >= count)
        return _brpops(self.commands)[:count]

    def close(self) -> None:
        self._connection.disconnect()


def _brpops(commands: list[list[str]]) -> list[Brpop]:
    found = []
    for command in commands:
        if command and command[0] == "BRPOP":
            queues = dict.fromkeys(key.split(SEP)[0] for key in command[1:-1])
            found.append(Brpop(tuple(queues), float(command[-1])))
    return found


def held(client: redis.Redis, tag: str) -> bool:
    """True while a message is recorded as unacknowledged: in the `unacked` hash and its index."""
    return bool(client.hexists("unacked", tag)) and client.zscore("unacked_index", tag) is not None


def taken(channel: Any, queue: str = "a") -> Any:
    """The next message of `queue`, taken (basic_get) and not acknowledged, as a worker takes a task."""
    message = channel.basic_get(queue, no_ack=False)
    if message is None:
        pytest.fail(f"queue {queue} is empty")
    return message


def put(channel: Any, queue: str, body: Any, **options: Any) -> None:
    """Publish `body` to `queue` (declared first) through `channel`."""
    declared(queue)(channel).declare()
    Producer(channel).publish(body, exchange=queue, routing_key=queue, serializer="json", **options)
