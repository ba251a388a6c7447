"""A freed slot wakes the consumer: its pending BRPOP, on a real redis-server, ends at once."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from conftest import wait_until
from scalablejob.workers.wake import BrpopWaker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_waking_ends_a_pending_brpop_at_once_and_only_that_one(redis_url: str) -> None:
    consumer = redis.Redis.from_url(redis_url)
    client_id = int(consumer.client_id())
    waker = BrpopWaker(redis_url)
    answers: list[object] = []
    brpop = threading.Thread(target=lambda: answers.append(consumer.brpop(["some-queue"], timeout=30)), daemon=True)
    brpop.start()
    wait_until(lambda: int(redis.Redis.from_url(redis_url).info("clients")["blocked_clients"]) == 1, 10, "a BRPOP")
    waker.sent(client_id)

    began = time.monotonic()
    waker.wake()
    brpop.join(5)

    assert answers == [None]  # answered as a timeout: the consumer sends its next BRPOP, with the reopened queue
    assert time.monotonic() - began < 1.0


def test_nothing_is_woken_once_the_brpop_has_returned(redis_url: str) -> None:
    waker = BrpopWaker(redis_url)
    waker.sent(12345)
    waker.returned()

    waker.wake()  # no pending BRPOP: no command sent, no error

    assert waker._client is None
