"""Puts in flight together in one front-end process go to Redis together (frontend/put_batch.py): fewer round trips
than puts, each put with its own answer, its own error and its own deadline. Puts are made to arrive in one turn of
the front end's event loop by holding the loop (a callback that blocks it) while they are sent."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import pytest
import redis
from redis import asyncio as aioredis

from conftest import service_config
from scalablejob.frontend import queues
from scalablejob.frontend.deadline import within
from scalablejob.frontend.put_batch import GATHER_TURNS, ScriptBatch, ScriptCall, fail, reply_of, settle
from scalablejob.model import keys
from scalablejob.model.errors import BrokerError

pytest_plugins = ["frontend_fixtures"]

SERVICE = "batched"
PUTS = 6
HOLD_TIMEOUT_S = 10.0


@pytest.fixture
def served(serve):
    return serve(service_config(SERVICE))


@contextlib.contextmanager
def loop_held(served) -> Iterator[None]:
    """The front end's event loop blocked in a callback while the block runs: what is sent meanwhile is read in
    one turn once it ends."""
    loop = served.thread.server.servers[0].get_loop()
    entered, release = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        release.wait(HOLD_TIMEOUT_S)

    loop.call_soon_threadsafe(hold)
    assert entered.wait(HOLD_TIMEOUT_S), "the front end's loop never ran the holding callback"
    try:
        yield
    finally:
        release.set()


def connections(served, count: int) -> list[http.client.HTTPConnection]:
    """`count` keep-alive connections, each opened by a first put (so the burst needs no accept)."""
    parts = urlsplit(served.url)
    opened = [http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30) for _ in range(count)]
    for connection in opened:
        assert answer(connection, served, "warm")[0] == 200
    return opened


def send_put(connection: http.client.HTTPConnection, served, body: str, **tags: str) -> None:
    path = f"/api/predict/{SERVICE}?" + urlencode({"taskType": "query", **tags})
    connection.request("POST", path, body=body.encode(), headers={"Authorization": served.token()})


def read_answer(connection: http.client.HTTPConnection) -> tuple[int, str, str | None]:
    response = connection.getresponse()
    return response.status, response.read().decode(), response.getheader("X-Eas-Queueservice-Request-Id")


def answer(connection: http.client.HTTPConnection, served, body: str, **tags: str) -> tuple[int, str, str | None]:
    send_put(connection, served, body, **tags)
    return read_answer(connection)


def burst(
    served, opened: list[http.client.HTTPConnection], tags: list[dict[str, str]]
) -> list[tuple[int, str, str | None]]:
    """One put on each connection, all read by the front end in one turn of its loop; their answers."""
    with loop_held(served):
        for number, (connection, extra) in enumerate(zip(opened, tags, strict=True)):
            send_put(connection, served, f"put {number}", **extra)
    return [read_answer(connection) for connection in opened]


def redis_stats(redis_client) -> tuple[int, int]:
    """(read events Redis has processed, EVALSHA calls it has run)."""
    stats = redis_client.info("stats")["total_reads_processed"]
    return stats, redis_client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_puts_read_in_one_turn_go_to_redis_in_fewer_round_trips_each_with_its_own_answer(served, redis_client):
    # given PUTS keep-alive connections, one of whose puts reuses a request id already in use
    opened = connections(served, PUTS)
    taken = answer(opened[0], served, "first", requestId="taken-id")
    assert taken[0] == 200, taken
    reads_before, scripts_before = redis_stats(redis_client)
    # when one put comes on each connection in the same turn of the front end's loop
    tags = [{"requestId": "taken-id"} if number == 2 else {} for number in range(PUTS)]
    answers = burst(served, opened, tags)
    reads_after, scripts_after = redis_stats(redis_client)
    # then each put ran its own script, all of them sent in fewer round trips than puts (the two INFO calls
    # between the counts are reads too)
    assert scripts_after - scripts_before == PUTS
    assert reads_after - reads_before - 2 < PUTS / 2, (reads_before, reads_after)
    # and each put got its own answer: the one whose id was in use its own 400, the others an index and an id each
    status, text, _ = answers[2]
    assert status == 400 and "taken-id" in text and "already in use" in text, answers[2]
    accepted = [item for number, item in enumerate(answers) if number != 2]
    assert all(status == 200 for status, _, _ in accepted), answers
    assert len({int(text) for _, text, _ in accepted}) == PUTS - 1
    assert len({request_id for _, _, request_id in accepted}) == PUTS - 1
    for connection in opened:
        connection.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_batch_the_broker_does_not_answer_gets_503_for_each_put_at_its_deadline(served, redis_client, monkeypatch):
    # given a put deadline of half a second, and a broker that holds every write for longer (CLIENT PAUSE)
    monkeypatch.setattr(queues, "PUT_TIMEOUT_S", 0.5)
    opened = connections(served, PUTS)
    redis_client.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    try:
        started = time.monotonic()
        # when PUTS puts come in the same turn of the front end's loop
        answers = burst(served, opened, [{} for _ in range(PUTS)])
        took = time.monotonic() - started
    finally:
        redis_client.execute_command("CLIENT", "UNPAUSE")
    # then each is answered 503 at its deadline, as the SDK retries, instead of waiting on the broker
    assert all(status == 503 and "broker is unavailable" in text for status, text, _ in answers), answers
    assert 0.4 <= took < 2.5
    # and the front end puts again once the broker answers
    assert answer(opened[0], served, "after")[0] == 200
    for connection in opened:
        connection.close()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_batch_sent_to_a_server_that_lost_its_scripts_loads_them_and_puts_each_once(served, redis_client):
    # given connections opened, and then a server that forgot every script (a restart, SCRIPT FLUSH)
    opened = connections(served, PUTS)
    redis_client.script_flush()
    length = redis_client.xlen(keys.input_stream(SERVICE, SERVICE))
    # when PUTS puts come in the same turn of the front end's loop
    answers = burst(served, opened, [{} for _ in range(PUTS)])
    # then each is put once: NOSCRIPT is answered by loading the script and sending the calls again
    assert all(status == 200 for status, _, _ in answers), answers
    assert len({int(text) for _, text, _ in answers}) == PUTS
    assert redis_client.xlen(keys.input_stream(SERVICE, SERVICE)) == length + PUTS
    for connection in opened:
        connection.close()


# ---- Callers that gave up before their call was sent (a ScriptBatch on a real Redis) -----------------------------

SET_KEY = "redis.call('SET', KEYS[1], ARGV[1]) return 1"  # a put's stand-in: what it writes shows it ran


async def _in_one_batch(url: str, calls: list[str], on_script_load=None) -> tuple[list[object], list[int]]:
    """Each of `calls` ("key" or "give up:key") made in one batch, the first the sender: each one's outcome, and
    which keys exist after. A "give up" call has a deadline that passes in the loop's next turn (`within`, as a put's
    deadline), or, with `on_script_load`, is cancelled by it when the batch loads the script after NOSCRIPT."""
    client = aioredis.Redis.from_url(url)
    try:
        batch = ScriptBatch(client)
        script = client.register_script(SET_KEY)
        if on_script_load is None:
            await client.script_load(SET_KEY)
        tasks = []
        for call in calls:
            key = call.removeprefix("give up:")
            made = batch.run(script, [key], ["1"])
            gives_up = call != key and on_script_load is None
            tasks.append(asyncio.ensure_future(within(made, 0) if gives_up else made))
        if on_script_load is not None:
            load = client.script_load
            givers_up = [task for task, call in zip(tasks, calls, strict=True) if call.startswith("give up:")]

            async def cancelling_load(text: str) -> str:
                for task in givers_up:
                    task.cancel()
                return await load(text)

            on_script_load(client, cancelling_load)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        written = [await client.exists(call.removeprefix("give up:")) for call in calls]
        return outcomes, written
    finally:
        await client.aclose()


@pytest.mark.integration
@pytest.mark.parametrize(
    "calls",
    [["sender", "give up:late"], ["sender", "give up:late", "other"]],
    ids=["sent-alone-after", "sent-with-another"],
)
def test_a_call_whose_deadline_passed_while_its_batch_gathered_is_not_sent(redis_url, calls):
    # given a batch whose sender gathers for GATHER_TURNS turns, one of whose calls has a deadline that passes in the
    # loop's next turn (a put that would be answered 503 "could not enqueue")
    assert GATHER_TURNS >= 2, "the deadline must pass while the batch still gathers"
    # when the batch is sent
    outcomes, written = asyncio.run(_in_one_batch(redis_url, calls))
    # then the caller that gave up got its timeout, and its call was not written (a retry makes no duplicate)
    late = calls.index("give up:late")
    assert isinstance(outcomes[late], TimeoutError), outcomes
    assert written[late] == 0, (calls, written)
    # and the others' calls ran and got their replies
    assert [outcome for at, outcome in enumerate(outcomes) if at != late] == [1] * (len(calls) - 1), outcomes
    assert [count for at, count in enumerate(written) if at != late] == [1] * (len(calls) - 1), written


@pytest.mark.integration
def test_a_call_whose_caller_gave_up_while_the_script_was_loaded_is_not_sent_again(redis_url):
    # given a server without the script, and a batch of three calls, one of whose callers gives up while the batch
    # loads the script after the server answered NOSCRIPT to each (none of them ran)
    def patch(client, cancelling_load) -> None:
        client.script_load = cancelling_load

    calls = ["sender", "give up:late", "other"]
    # when the batch sends the calls again
    outcomes, written = asyncio.run(_in_one_batch(redis_url, calls, on_script_load=patch))
    # then the caller that gave up was left out: its call never ran; the others ran once each
    assert isinstance(outcomes[1], asyncio.CancelledError), outcomes
    assert written == [1, 0, 1], written
    assert outcomes[0] == 1 and outcomes[2] == 1, outcomes


# ---- Handing out replies (no Redis) ------------------------------------------------------------------------------


def _calls(loop: asyncio.AbstractEventLoop, count: int) -> list[ScriptCall]:
    return [ScriptCall(None, (), (), loop.create_future()) for _ in range(count)]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ([1, 2, 3], [1, 2, 3]),
        ([1, ValueError("bad field"), 3], [1, ValueError, 3]),
        ([0, -1, 7], [0, -1, 7]),  # an id in use and a full queue are replies: the caller reads them
    ],
)
def test_settle_hands_each_caller_its_own_reply_or_error(replies, expected):
    loop = asyncio.new_event_loop()
    try:
        calls = _calls(loop, len(replies))
        settle(calls, replies)
        for call, want in zip(calls, expected, strict=True):
            assert call.reply is not None
            if isinstance(want, type):
                assert isinstance(call.reply.exception(), want)
            else:
                assert call.reply.result() == want
    finally:
        loop.close()


def test_settle_leaves_a_caller_that_gave_up_alone():
    loop = asyncio.new_event_loop()
    try:
        calls = _calls(loop, 2)
        assert calls[0].reply is not None and calls[1].reply is not None
        calls[0].reply.cancel()
        settle(calls, [1, 2])
        assert calls[0].reply.cancelled() and calls[1].reply.result() == 2
    finally:
        loop.close()


class TwoPartError(Exception):
    """An error whose __init__ does not take its own args back: it cannot be copied."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(f"{host}:{port} gone")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionError("gone"), ConnectionError),
        (redis.exceptions.ConnectionError("gone"), redis.exceptions.ConnectionError),
        (redis.exceptions.TimeoutError("slow"), redis.exceptions.TimeoutError),
        (asyncio.CancelledError(), BrokerError),
        (TwoPartError("host", 6379), BrokerError),
    ],
)
def test_fail_gives_each_waiting_caller_an_error_of_its_own_to_raise(error, expected):
    loop = asyncio.new_event_loop()
    try:
        calls = _calls(loop, 3)
        fail(calls, error)
        errors = [call.reply.exception() for call in calls if call.reply is not None]
        # each caller its own object (raising one object in several tasks rewrites its traceback and context), of
        # the type it got before (its HTTP status), its message kept, caused by the batch's error
        assert len({id(each) for each in errors}) == len(calls), errors
        assert all(type(each) is expected and each.__cause__ is error for each in errors), errors
        if expected is not BrokerError:
            assert all(each.args == error.args for each in errors), errors
    finally:
        loop.close()


def test_reply_of_raises_an_error_reply_and_returns_any_other():
    assert reply_of(5) == 5
    with pytest.raises(ValueError, match="bad"):
        reply_of(ValueError("bad"))
