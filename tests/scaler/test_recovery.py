"""Crash recovery against a real redis-server: a process takes a message (kombu records it as unacked) and dies."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
import redis

from scalablejob import JobClient, RequestStatus
from scalablejob.celery_app import make_app
from scalablejob.queues import queue_depth
from scalablejob.scaler.recovery import ORPHAN_AGE_S, Recovery
from scalablejob.sink import Sink
from scalablejob.state import RequestStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SERVICE = "rec"
QUEUE = f"{SERVICE}.command"


def take_and_die(broker_url: str) -> str:
    """A consumer that receives one message and is killed before it acknowledges it; returns its delivery tag."""
    code = textwrap.dedent(f"""
        import os, signal
        from scalablejob.celery_app import make_app
        with make_app({SERVICE!r}, {broker_url!r}).connection_for_write() as connection:
            message = connection.default_channel.basic_get({QUEUE!r}, no_ack=False)
            print(message.delivery_tag, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.returncode == -9, done.stderr
    return done.stdout.strip()


def where_it_is(client: redis.Redis) -> tuple[int, int, int]:
    """(messages on the queue, entries in kombu's unacked hash, entries in its unacked index)."""
    return queue_depth(client, QUEUE), client.hlen("unacked"), client.zcard("unacked_index")


@pytest.fixture
def recovery(redis_url: str, redis_client: redis.Redis) -> Recovery:
    return Recovery(make_app(SERVICE, redis_url), redis_client, SERVICE)


@pytest.fixture
def client(redis_url: str) -> JobClient:
    with JobClient(SERVICE, redis_url) as client:
        yield client


def test_the_message_of_a_dead_worker_goes_back_once_with_the_retry_recorded(recovery, client, redis_client, redis_url):
    _, request_id = client.put(b"echo hi", {"taskType": "command"})
    tag = take_and_die(redis_url)
    assert where_it_is(redis_client) == (0, 1, 1)

    assert recovery.recover("w@h", {request_id: tag}, "worker w@h was killed by signal 9") == [request_id]
    assert recovery.recover("w@h", {request_id: tag}, "again") == []  # already back: not twice

    assert where_it_is(redis_client) == (1, 0, 0)
    state = client.state(request_id)
    assert (state.status, state.retries, state.message) == (
        RequestStatus.QUEUED,
        1,
        "worker w@h was killed by signal 9",
    )


def test_a_finished_request_is_not_run_again_its_stale_entry_is_dropped(recovery, client, redis_client, redis_url):
    _, request_id = client.put(b"echo hi", {"taskType": "command"})
    tag = take_and_die(redis_url)
    store = RequestStore(redis_client, SERVICE)  # its worker died after writing the result, before the ack
    store.finish(Sink(redis_client, SERVICE), request_id, RequestStatus.DONE, b"", {"requestId": request_id})

    assert recovery.recover("w@h", {request_id: tag}, "died") == []
    assert where_it_is(redis_client) == (0, 0, 0)


def test_the_sweep_puts_back_only_old_messages_no_worker_claims(recovery, client, redis_client, redis_url):
    _, claimed_id = client.put(b"echo 1", {"taskType": "command"})
    take_and_die(redis_url)
    _, orphan_id = client.put(b"echo 2", {"taskType": "command"})
    take_and_die(redis_url)
    now = time.time()

    assert recovery.sweep({claimed_id}, now) == []  # too young: its worker may not have published it yet
    assert recovery.sweep({claimed_id}, now + ORPHAN_AGE_S + 1) == [orphan_id]
    assert where_it_is(redis_client) == (1, 1, 1)
