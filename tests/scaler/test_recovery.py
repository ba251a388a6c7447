"""Crash recovery against a real redis-server: a process takes a message (kombu records it as unacked) and dies."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import textwrap
import time

import pytest
import redis

from scalablejob import JobClient, RequestStatus
from scalablejob.api.celery_app import make_app
from scalablejob.model import keys
from scalablejob.model.protocol import PROTOCOL_VERSION
from scalablejob.scaler import paging
from scalablejob.scaler.recovery import Recovery
from scalablejob.store.queues import priority_lists, queue_depth
from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestStore

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SERVICE = "rec"
QUEUE = f"{SERVICE}.command"


def take_and_die(broker_url: str) -> str:
    """A consumer that receives one message and is killed before it acknowledges it; returns its delivery tag."""
    code = textwrap.dedent(f"""
        import os, signal
        from scalablejob.api.celery_app import make_app
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


def queued_messages(client: redis.Redis) -> list[dict]:
    return [json.loads(raw) for key in priority_lists(QUEUE) for raw in client.lrange(key, 0, -1)]


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


def test_a_message_goes_back_under_a_new_tag_so_a_late_ack_of_the_old_one_cannot_remove_it(
    recovery, client, redis_client, redis_url
):
    # given a message put back after its worker was declared dead, and taken by a new worker
    _, request_id = client.put(b"echo hi", {"taskType": "command"})
    old_tag = take_and_die(redis_url)
    recovery.recover("w@h", {request_id: old_tag}, "worker w@h stopped answering")
    (message,) = queued_messages(redis_client)
    assert message["properties"]["delivery_tag"] != old_tag
    new_tag = take_and_die(redis_url)

    # when the old worker, only frozen, resumes and acknowledges its old tag
    with make_app(SERVICE, redis_url).connection_for_write() as connection:
        connection.default_channel.qos.ack(old_tag)

    # then the new delivery's entry is still there
    assert redis_client.hexists("unacked", new_tag)


def test_a_finished_request_is_not_run_again_its_stale_entry_is_dropped(recovery, client, redis_client, redis_url):
    _, request_id = client.put(b"echo hi", {"taskType": "command"})
    tag = take_and_die(redis_url)
    store = RequestStore(redis_client, SERVICE)  # its worker died after writing the result, before the ack
    store.finish(Sink(redis_client, SERVICE), request_id, RequestStatus.DONE, b"", {"requestId": request_id})

    assert recovery.recover("w@h", {request_id: tag}, "died") == []
    assert where_it_is(redis_client) == (0, 0, 0)


def test_reconcile_puts_back_only_messages_no_live_worker_holds_once_the_bound_has_passed(
    recovery, client, redis_client, redis_url
):
    _, claimed_id = client.put(b"echo 1", {"taskType": "command"})
    take_and_die(redis_url)
    _, orphan_id = client.put(b"echo 2", {"taskType": "command"})
    take_and_die(redis_url)
    now = time.time()
    bound = recovery.unbacked_after_s

    assert recovery.reconcile({claimed_id}, now) == []  # delivered just now: its worker may not have said so yet
    assert recovery.reconcile({claimed_id}, now + bound + 1) == []  # unbacked from now on: the clock starts
    assert recovery.reconcile({claimed_id}, now + 2 * bound + 2) == [orphan_id]
    assert where_it_is(redis_client) == (1, 1, 1)
    assert client.state(orphan_id).attempt == 1  # bumped: its lost delivery, should it ever write, is fenced


def test_a_request_whose_message_was_lost_is_sent_again_from_its_kept_body(recovery, client, redis_client):
    # given a request whose message vanished between the pop and the unacked record (a crash in kombu's two steps)
    _, request_id = client.put(b"echo lost", {"taskType": "command", "color": "red"})
    assert [redis_client.rpop(key) for key in priority_lists(QUEUE)].count(None) == 1
    now = time.time()

    # when the reconciler has seen it backed by nothing for the bound
    assert recovery.reconcile(set(), now) == []
    assert recovery.reconcile(set(), now + recovery.unbacked_after_s) == [request_id]

    # then the same request (id, body, tags, task) is on its queue once more, and counted as a retry
    (message,) = queued_messages(redis_client)
    assert message["headers"]["id"] == request_id and message["headers"]["task"] == "scalablejob.command"
    body, tags = json.loads(base64.b64decode(message["body"]))[0][:2]
    assert "echo lost" in json.dumps(body) and tags["color"] == "red"
    state = client.state(request_id)
    assert (state.status, state.retries) == (RequestStatus.QUEUED, 1)
    assert state.message == "backed by no message and no live worker for over 10 s"
    assert recovery.reconcile(set(), now + 3 * recovery.unbacked_after_s) == []  # backed again: not twice


def test_a_lost_request_of_a_newer_protocol_is_left_to_a_scaler_of_its_release(recovery, client, redis_client, caplog):
    # given a lost request that a newer release put (its state says its protocol version)
    _, request_id = client.put(b"echo lost", {"taskType": "command"})
    assert [redis_client.rpop(key) for key in priority_lists(QUEUE)].count(None) == 1
    redis_client.hset(keys.request_state(SERVICE, request_id), "protocol", PROTOCOL_VERSION + 1)
    now = time.time()

    # when the reconciler has seen it backed by nothing for the bound, twice
    assert recovery.reconcile(set(), now) == []
    with caplog.at_level(logging.WARNING, logger="scalablejob.scaler.recovery"):
        assert recovery.reconcile(set(), now + recovery.unbacked_after_s) == []
        assert recovery.reconcile(set(), now + 2 * recovery.unbacked_after_s) == []

    # then this scaler did not re-send it in its own, older format, and said why once
    assert queued_messages(redis_client) == []
    assert client.state(request_id).status is RequestStatus.QUEUED
    [said] = [record.getMessage() for record in caplog.records if record.name == "scalablejob.scaler.recovery"]
    assert f"put at protocol version {PROTOCOL_VERSION + 1}" in said


def test_an_orphaned_request_is_sent_again_at_once_saying_why_it_was_orphaned(
    recovery, client, redis_client, redis_url
):
    # given a request taken by a worker on a host that was declared dead
    _, request_id = client.put(b"echo 1", {"taskType": "command"})
    take_and_die(redis_url)

    # when the reconciler is told so
    assert recovery.reconcile(set(), time.time(), {request_id: "its host h2 was declared dead"}) == [request_id]

    # then it is back on its queue at once, and its state says why
    assert where_it_is(redis_client) == (1, 0, 0)
    assert client.state(request_id).message == "its host h2 was declared dead"


def test_an_orphan_is_sent_again_once_though_its_lost_worker_still_lists_it(recovery, client, redis_client, redis_url):
    # given an orphan sent again, and taken by a new worker that has not said so yet
    _, request_id = client.put(b"echo 1", {"taskType": "command"})
    take_and_die(redis_url)
    orphaned = {request_id: "its host h2 was declared dead"}
    now = time.time()
    assert recovery.reconcile(set(), now, orphaned) == [request_id]
    take_and_die(redis_url)

    # when the dead host's record still lists it on the next passes
    assert recovery.reconcile(set(), now + 3, orphaned) == []
    assert recovery.reconcile(set(), now + 6, orphaned) == []

    # then its new delivery is left to its new worker: one retry, not one per pass
    assert where_it_is(redis_client) == (0, 1, 1)
    assert client.state(request_id).retries == 1


def test_an_orphan_is_back_on_its_queue_before_the_queues_are_read(
    recovery, client, redis_client, redis_url, monkeypatch
):
    # given a request taken by a worker that was lost, and a reconcile that notes where it is when it reads the queues
    _, request_id = client.put(b"echo 1", {"taskType": "command"})
    take_and_die(redis_url)
    seen_then: list[tuple[int, int, int]] = []
    read_queues = paging.queued_ids

    def noting(*args, **kwargs):
        seen_then.append(where_it_is(redis_client))
        return read_queues(*args, **kwargs)

    monkeypatch.setattr(paging, "queued_ids", noting)

    # when the reconciler is told it is orphaned
    assert recovery.reconcile(set(), time.time(), {request_id: "its worker w@h2 fell silent for 10 s"}) == [request_id]

    # then it was back on its queue before the (at depth, long) read of the queues began, and sent once
    assert seen_then == [(1, 0, 0)]
    assert client.state(request_id).retries == 1
