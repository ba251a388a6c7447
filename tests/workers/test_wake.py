"""A freed slot wakes the consumer: its pending BRPOP, on a real redis-server, ends at once."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from conftest import wait_until
from scalablejob.local.redis_server import RedisServer
from scalablejob.workers.wake import UNBLOCK_RETRY_S, UNBLOCK_TRIES, BrpopWaker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def blocked(client: redis.Redis) -> int:
    return int(client.info("clients")["blocked_clients"])


def test_waking_ends_a_pending_brpop_at_once_and_only_that_one(redis_url: str, redis_client: redis.Redis) -> None:
    # given two clients blocked in a BRPOP, the consumer's and another one
    consumer, other = redis.Redis.from_url(redis_url), redis.Redis.from_url(redis_url)
    answers: dict[str, object] = {}
    threads = [
        threading.Thread(target=lambda: answers.update(consumer=consumer.brpop(["some-queue"], timeout=30))),
        threading.Thread(target=lambda: answers.update(other=other.brpop(["other-queue"], timeout=30))),
    ]
    client_id = int(consumer.client_id())
    for thread in threads:
        thread.start()
    wait_until(lambda: blocked(redis_client) == 2, 10, "two BRPOPs")
    waker = BrpopWaker(redis_url)
    waker.sent(client_id)

    # when a slot frees
    began = time.monotonic()
    waker.wake()
    threads[0].join(5)

    # then the consumer's BRPOP is answered as a timeout, at once: it sends its next one, with the reopened queue
    assert answers == {"consumer": None}
    assert time.monotonic() - began < 1.0
    assert blocked(redis_client) == 1
    redis_client.lpush("other-queue", "done")
    threads[1].join(5)
    assert answers["other"] == (b"other-queue", b"done")
    consumer.close()
    other.close()


def test_nothing_is_woken_once_the_brpop_has_returned(redis_url: str, redis_client: redis.Redis) -> None:
    waker = BrpopWaker(redis_url)
    waker.sent(12345)
    waker.returned()
    connections = redis_client.info("stats")["total_connections_received"]

    waker.wake()  # no pending BRPOP: no connection, no command, no error

    assert redis_client.info("stats")["total_connections_received"] == connections


def test_a_wake_up_that_finds_no_brpop_gives_up_soon(redis_url: str, redis_client: redis.Redis) -> None:
    # given a BRPOP said sent, which has not reached Redis (its client is idle)
    waker = BrpopWaker(redis_url)
    waker.sent(int(redis_client.client_id()))

    began = time.monotonic()
    waker.wake()

    # then it tried a few times, briefly (the short BRPOP timeout is the fallback), and the idle client is unharmed
    assert UNBLOCK_TRIES * UNBLOCK_RETRY_S <= time.monotonic() - began < 0.5
    assert redis_client.ping()


def test_a_wake_up_while_redis_is_away_is_harmless(redis_server: RedisServer) -> None:
    waker = BrpopWaker(redis_server.url)
    waker.sent(1)
    redis_server.stop()

    waker.wake()  # the fallback timeout reopens the queue once Redis is back
