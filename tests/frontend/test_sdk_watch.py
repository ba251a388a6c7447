"""The SDK's watch and commit scenarios, run many times in a row so that a race shows up as a failure, not as luck.

Each scenario runs its rounds inside one SDK process against one live front end and reports per round, so a
failure names the round it happened in.
"""

from __future__ import annotations

import pytest

from conftest import service_config

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SERVICE = "sdkwatch"
ROUNDS = 50  # the put-10 / watch / close / attributes sequence
REPEATS = 20  # the other scenarios


def test_auto_commit_holds_when_the_watcher_closes_right_after_the_last_frame(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, f"""
lengths = []
for round in range({ROUNDS}):
    for n in range(10):
        sink.put(f"{{round}}-{{n}}")
    frames = collect(sink, 10, window=5, auto_commit=True)  # closes (aborts the socket) at the 10th frame
    assert [f["data"] for f in frames] == [f"{{round}}-{{n}}" for n in range(10)], (round, frames)
    wait_for(lambda: sink.attributes()["stream.length"] == "0", timeout=5)
    lengths.append(sink.attributes()["stream.length"])
out(lengths=lengths)
""")  # fmt: skip
    assert seen["lengths"] == ["0"] * ROUNDS


def test_a_dropped_connection_leaves_each_item_committed_if_sent_and_there_if_not(serve, run_sdk):
    # given 10 items and a raw websocket watcher (auto commit, window 10) that reads k of them and then resets its
    # TCP connection, as a crashed client leaves it
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, f"""
import socket, struct, websocket
rounds = []
for round in range({REPEATS}):
    indexes = [int(sink.put(f"{{round}}-{{n}}")[0]) for n in range(10)]
    url = sink._build_url({{"_watch_": "true", "_index_": 0, "_window_": 10, "_auto_commit_": "true"}}, websocket=True)
    raw = websocket.create_connection(url, header=sink._with_identity())
    received = [int(DataFrameCodec.decode(raw.recv()).index) for _ in range(round % 10)]
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.sock.close()
    # when the next watcher of the group reads until the queue is empty
    emptied = lambda: sink.attributes()["stream.length"] == "0"
    again = collect(client(f"{{QUEUE}}/sink"), 0, window=10, auto_commit=True, timeout=15, until=emptied)
    rounds.append(dict(indexes=indexes, received=received, again=[f["index"] for f in again], emptied=emptied()))
out(rounds=rounds)
""")  # fmt: skip
    # then what the dropped client read was committed (never sent again), and nothing is stuck uncommitted
    for number, one in enumerate(seen["rounds"]):
        assert not set(one["received"]) & set(one["again"]), f"round {number}: a read item was not committed: {one}"
        assert len(one["again"]) == len(set(one["again"])), f"round {number}: an item came twice: {one}"
        assert set(one["again"]) <= set(one["indexes"]) and one["emptied"], f"round {number}: {one}"


def test_manual_commit_rounds_never_hold_more_than_the_window_and_lose_nothing(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, f"""
rounds = []
for round in range({REPEATS}):
    indexes = [int(sink.put(f"{{round}}-{{n}}")[0]) for n in range(6)]
    held = collect(client(f"{{QUEUE}}/sink"), 3, window=3, auto_commit=False)  # never commits: the window fills
    states = [sink.search(index)["state"] for index in indexes]
    frames = collect(client(f"{{QUEUE}}/sink"), 6, window=3, auto_commit=False, commit=True)
    emptied = wait_for(lambda: sink.attributes()["stream.length"] == "0", timeout=5)
    rounds.append(dict(held=[f["index"] for f in held], states=states, frames=sorted(f["index"] for f in frames),
                       indexes=indexes, emptied=emptied))
out(rounds=rounds)
""")  # fmt: skip
    for number, one in enumerate(seen["rounds"]):
        assert one["held"] == one["indexes"][:3], f"round {number}"
        assert one["states"] == ["delivered"] * 3 + ["waiting"] * 3, f"round {number}"
        assert one["frames"] == one["indexes"] and one["emptied"], f"round {number}"


def test_a_filtered_watch_gets_only_matching_items_and_commits_only_those(serve, run_sdk):
    # given log and result items interleaved on the output queue, repeated rounds
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, f"""
rounds = []
for round in range({REPEATS}):
    before = int(sink.attributes()["stream.length"])
    kinds = ["log", "log", "result", "log", "result", "progress", "result", "log"]
    indexes = [int(sink.put(f"{{round}}-{{n}}", {{"type": kind}})[0]) for n, kind in enumerate(kinds)]
    results = [i for i, kind in zip(indexes, kinds) if kind == "result"]
    watcher = client(f"{{QUEUE}}/sink")
    got = collect(watcher, 3, index=indexes[0], window=2, auto_commit=True, tags=dict(type="result"))
    left = wait_for(lambda: int(sink.attributes()["stream.length"]) == before + 5, timeout=5)
    rounds.append(dict(got=[f["index"] for f in got], types={{f["tags"]["type"] for f in got}}, results=results,
                       left=left, length=sink.attributes()["stream.length"], before=before))
    sink.truncate(indexes[-1] + 1)
out(rounds=[dict(r, types=sorted(r["types"])) for r in rounds])
""")  # fmt: skip
    for number, one in enumerate(seen["rounds"]):
        assert one["got"] == one["results"] and one["types"] == ["result"], f"round {number}: {one}"
        assert one["left"], f"round {number}: the five other items must stay, got length {one['length']}"
