"""The sink stream: monotonic indexes that survive deletes, reads by index, blocking waits, and entry tags."""

from __future__ import annotations

import fakeredis
import pytest

from scalablejob.model import keys
from scalablejob.store.sink import EntryType, Sink, SinkEntry, decode_entry, encode_tags, entry_tags

WAIT_MS = 20  # how long a wait that should find nothing blocks


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def sink(client: fakeredis.FakeRedis) -> Sink:
    return Sink(client, "svc")


def fill(sink: Sink, count: int) -> list[int]:
    """Append entries with data b"0", b"1", ... and return their indexes."""
    return [sink.append(str(n).encode(), {"n": str(n)}) for n in range(count)]


def test_append_returns_increasing_indexes_from_one(sink: Sink) -> None:
    assert fill(sink, 4) == [1, 2, 3, 4]
    assert sink.last_index() == 4
    assert sink.length() == 4


def test_an_empty_sink_has_last_index_zero_and_no_entries(sink: Sink) -> None:
    assert sink.last_index() == 0
    assert sink.length() == 0
    assert sink.read() == []
    assert sink.get(1) is None


def test_indexes_are_never_reused_after_xdel(client: fakeredis.FakeRedis, sink: Sink) -> None:
    fill(sink, 3)
    client.xdel(sink.stream, "2-0", "3-0")

    assert sink.append(b"after", {}) == 4
    assert [entry.index for entry in sink.read()] == [1, 4]


def test_indexes_are_never_reused_after_the_stream_is_deleted(client: fakeredis.FakeRedis, sink: Sink) -> None:
    fill(sink, 2)
    client.delete(sink.stream)

    assert sink.append(b"after", {}) == 3


def test_each_service_has_its_own_stream_and_indexes(client: fakeredis.FakeRedis, sink: Sink) -> None:
    other = Sink(client, "other")
    fill(sink, 3)

    assert other.append(b"x", {}) == 1
    assert other.stream == keys.sink_stream("other") == "other/sink"
    assert [entry.data for entry in other.read()] == [b"x"]


def test_append_touches_only_the_stream_its_counter_and_its_clock(client: fakeredis.FakeRedis, sink: Sink) -> None:
    sink.append(b"x", {})

    own = [sink.stream, keys.sink_index_counter("svc"), keys.frontend_sink_clock("svc", "svc")]
    assert sorted(client.keys()) == sorted(key.encode() for key in own)


def test_get_returns_the_entry_with_that_index(sink: Sink) -> None:
    fill(sink, 3)

    assert sink.get(2) == SinkEntry(index=2, data=b"1", tags={"n": "1"})


@pytest.mark.parametrize("index", [0, 4, 99])
def test_get_of_an_index_that_does_not_exist_is_none(sink: Sink, index: int) -> None:
    fill(sink, 3)

    assert sink.get(index) is None


def test_get_of_a_deleted_index_is_none(client: fakeredis.FakeRedis, sink: Sink) -> None:
    fill(sink, 3)
    client.xdel(sink.stream, "2-0")

    assert sink.get(2) is None


@pytest.mark.parametrize(
    ("start", "count", "expected"),
    [
        (1, 100, [1, 2, 3, 4, 5]),
        (1, 2, [1, 2]),
        (3, 100, [3, 4, 5]),
        (3, 1, [3]),
        (5, 10, [5]),
        (6, 10, []),
    ],
)
def test_read_returns_up_to_count_entries_from_an_index(
    sink: Sink, start: int, count: int, expected: list[int]
) -> None:
    fill(sink, 5)

    assert [entry.index for entry in sink.read(start, count)] == expected


def test_read_skips_deleted_entries_without_shifting_indexes(client: fakeredis.FakeRedis, sink: Sink) -> None:
    fill(sink, 4)
    client.xdel(sink.stream, "2-0")

    assert [(entry.index, entry.data) for entry in sink.read(1, 2)] == [(1, b"0"), (3, b"2")]


@pytest.mark.parametrize(
    ("after", "count", "expected"),
    [(0, 100, [1, 2, 3]), (1, 100, [2, 3]), (2, 100, [3]), (0, 2, [1, 2])],
)
def test_wait_returns_only_entries_after_the_index(sink: Sink, after: int, count: int, expected: list[int]) -> None:
    fill(sink, 3)

    assert [entry.index for entry in sink.wait(after, WAIT_MS, count)] == expected


@pytest.mark.parametrize("entries", [0, 3])
def test_wait_returns_nothing_after_its_block_time_when_nothing_comes(sink: Sink, entries: int) -> None:
    fill(sink, entries)

    assert sink.wait(entries, WAIT_MS) == []


@pytest.mark.parametrize("data", [b"", b"plain text", b"\xff\xfe\x00binary", "ünïcode".encode()])
def test_data_comes_back_as_the_exact_bytes_appended(sink: Sink, data: bytes) -> None:
    index = sink.append(data, {"requestId": "r1"})

    entry = sink.get(index)
    assert entry is not None
    assert entry.data == data
    assert sink.read()[0].data == data


@pytest.mark.parametrize(
    ("entry_type", "extra", "expected_extra"),
    [
        (EntryType.RESULT, {"exitCode": 3}, {"exitCode": "3"}),
        (EntryType.LOG, {"stream": "stderr"}, {"stream": "stderr"}),
        (EntryType.PROGRESS, {}, {}),
        (EntryType.ERROR, {"durationSeconds": 1.5}, {"durationSeconds": "1.5"}),
    ],
)
def test_entry_tags_always_carry_request_id_task_type_and_type(
    entry_type: EntryType, extra: dict[str, object], expected_extra: dict[str, str]
) -> None:
    tags = entry_tags("r1", "command", entry_type, **extra)

    assert tags == {"requestId": "r1", "taskType": "command", "type": entry_type.value, **expected_extra}


def test_entry_tags_survive_a_round_trip_through_the_stream(sink: Sink) -> None:
    tags = entry_tags("r1", "query", EntryType.RESULT, note="ünï")
    entry = sink.get(sink.append(b"ok", tags))

    assert entry is not None
    assert entry.tags == tags
    assert entry.request_id == "r1"
    assert entry.type == "result"


def test_an_entry_without_tags_has_no_request_id_or_type() -> None:
    entry = decode_entry(b"7-0", {b"data": b"x"})

    assert entry == SinkEntry(index=7, data=b"x", tags={})
    assert entry.request_id is None
    assert entry.type is None


@pytest.mark.parametrize("stream_id", [b"12-0", "12-0"])
def test_decode_entry_takes_the_index_from_the_stream_id(stream_id: bytes | str) -> None:
    entry = decode_entry(stream_id, {b"data": b"\xff", b"tags": encode_tags({"requestId": "r"})})

    assert entry == SinkEntry(index=12, data=b"\xff", tags={"requestId": "r"})


def test_encode_tags_is_compact_json_of_strings() -> None:
    assert encode_tags({"a": "1", "b": "x y"}) == b'{"a":"1","b":"x y"}'


# ---- Front ends: one output queue each ----------------------------------------------------------------------


def test_each_front_end_has_its_own_output_queue_and_indexes(client: fakeredis.FakeRedis) -> None:
    own, web = Sink(client, "svc", frontend="svc"), Sink(client, "svc", frontend="web")
    assert (own.stream, web.stream) == ("svc/sink", "svc/web/sink")
    assert [own.append(b"a", {}), web.append(b"b", {}), web.append(b"c", {})] == [1, 1, 2]
    assert [e.data for e in Sink(client, "svc").read()] == [b"a"] and web.last_index() == 2
