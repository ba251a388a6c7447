"""The real eas-prediction SDK (QueueClient) against a live front end, a real Redis and a real worker."""

from __future__ import annotations

import pytest

from conftest import python_command, service_config

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SERVICE = "sdk"


def test_put_then_get_by_index_and_by_request_id(serve, run_sdk, start_worker):
    # given a front end and no worker yet: the request waits in the input queue
    served = serve(service_config(SERVICE))
    queued = run_sdk(served, """
index, rid = inq.put(b'{"n": 1}', {"taskType": "query"})
by_index = inq.get(index=index, auto_delete=False)
by_id = inq.get(request_id=rid, auto_delete=False)
out(index=int(index), rid=rid, by_index=[frame(f) for f in by_index], by_id=[frame(f) for f in by_id])
""")  # fmt: skip
    index, rid = queued["index"], queued["rid"]
    expected = {"index": index, "data": '{"n": 1}', "tags": {"requestId": rid, "taskType": "query"}}
    assert queued["by_index"] == queued["by_id"] == [expected]

    # when a worker runs it, then its result is in the sink, by request id and by index, and the input is empty
    start_worker(service_config(SERVICE))
    done = run_sdk(served, f"""
by_id = sink.get(request_id="{rid}", timeout="30s", auto_delete=False)
by_index = sink.get(index=by_id[0].index, auto_delete=True)
out(by_id=[frame(f) for f in by_id], by_index=[frame(f) for f in by_index],
    sink_length=sink.attributes()["stream.length"], input_length=inq.attributes()["stream.length"])
""")  # fmt: skip
    result = done["by_id"][0]
    assert result["data"] == 'echo:{"n": 1}'  # exactly the handler's response body
    assert result["tags"] == {"requestId": rid, "taskType": "query", "type": "result"}
    assert done["by_index"] == [result]
    assert (done["sink_length"], done["input_length"]) == ("0", "0")  # auto_delete took it; finished left the input


def test_watch_with_auto_commit_reads_in_order_and_empties_the_queue(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, """
indexes = [int(sink.put(str(n))[0]) for n in range(10)]
frames = collect(sink, 10, window=5, auto_commit=True)
emptied = wait_for(lambda: sink.attributes()["stream.length"] == "0")
out(indexes=indexes, frames=frames, emptied=emptied)
""")  # fmt: skip
    assert [f["data"] for f in seen["frames"]] == [str(n) for n in range(10)]
    assert [f["index"] for f in seen["frames"]] == seen["indexes"]
    assert all(f["tags"]["requestId"] for f in seen["frames"])
    assert seen["emptied"]


def test_watch_with_manual_commit_holds_at_most_a_window_uncommitted(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, """
indexes = [int(sink.put(str(n))[0]) for n in range(10)]
held = collect(sink, 3, window=3, auto_commit=False)  # nothing committed: the window is full
states = [sink.search(index)["state"] for index in indexes[:5]]
frames = collect(client(f"{QUEUE}/sink"), 10, window=3, auto_commit=False, commit=True)
out(held=held, states=states, frames=frames, length=sink.attributes()["stream.length"])
""")  # fmt: skip
    assert [f["data"] for f in seen["held"]] == ["0", "1", "2"]
    assert seen["states"] == ["delivered"] * 3 + ["waiting"] * 2  # the fourth was never sent
    # the three that the vanished watcher left uncommitted are not lost: the next watcher of the group gets them
    assert sorted(int(f["data"]) for f in seen["frames"]) == list(range(10))
    assert seen["length"] == "0"


def test_a_watcher_kept_alive_by_the_sdks_pings_still_gets_what_comes_later(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, """
import logging, websocket
pings, problems = [], []
real_ping = websocket.WebSocket.ping
websocket.WebSocket.ping = lambda self, payload="": pings.append(payload) or real_ping(self, payload)
logging.getLogger("eas_prediction.queue_client").addHandler(
    type("Keep", (logging.Handler,), {"emit": lambda self, record: problems.append(record.getMessage())})())
frames = []
threading.Thread(target=lambda: collect(sink, 2, timeout=60, shared=frames), daemon=True).start()  # never ends
pinged = wait_for(lambda: len(pings) >= 2, timeout=30)  # the SDK pings every 2 s
sink.put("late")
wait_for(lambda: frames, timeout=30)
out(pinged=pinged, frames=[f["data"] for f in frames], problems=problems)
""")  # fmt: skip
    assert seen["pinged"] and seen["frames"] == ["late"]
    assert not [p for p in seen["problems"] if "ping" in p or "closed" in p], seen["problems"]


def test_truncate_deletes_everything_below_an_index(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, """
indexes = [int(sink.put("x")[0]) for _ in range(10)]
sink.truncate(indexes[4])
left = sink.attributes()
sink.truncate(int(left["stream.lastEntry"]) + 1)
after = sink.attributes()["stream.length"]
out(indexes=indexes, left=left, after=after, first=[frame(f) for f in sink.get(timeout="0s")])
""")  # fmt: skip
    assert seen["left"]["stream.length"] == "6"
    assert seen["left"]["stream.firstEntry"] == str(seen["indexes"][4])
    assert seen["after"] == "0" and seen["first"] == []


def test_attributes_and_search_show_waiting_running_and_done_requests(serve, run_sdk, start_worker, tmp_path):
    # given three waiting commands, the last one urgent, the first one running until the test releases it
    release = tmp_path / "release"
    blocking = python_command(
        f"import pathlib, time\nprint('::progress 0.5 halfway', flush=True)\n"
        f"while not pathlib.Path({str(release)!r}).exists(): time.sleep(0.02)"
    )
    served = serve(service_config(SERVICE))
    waiting = run_sdk(served, f"""
normal = [int(inq.put(body, {{"taskType": "command"}})[0]) for body in ({blocking!r}, {python_command("pass")!r})]
urgent = int(inq.put({python_command("pass")!r}, {{"taskType": "command", "_priority_": "1"}})[0])
out(normal=normal, urgent=urgent, attrs=inq.attributes(), search={{i: inq.search(i) for i in [*normal, urgent]}})
""")  # fmt: skip
    attrs, search = waiting["attrs"], waiting["search"]
    assert attrs["stream.length"] == "3" and attrs["stream.lastEntry"] == str(waiting["urgent"])
    assert (attrs["queue.depth"], attrs["queue.depth.command"], attrs["workers"]) == ("3", "3", "0")
    first, second = (search[str(i)] for i in waiting["normal"])
    assert search[str(waiting["urgent"])]["position"] == 0  # urgent goes ahead of the normal ones
    assert (first["state"], first["position"], second["position"]) == ("queued", 1, 2)

    # when a worker takes them, then search shows the first running with its progress, and once released, done
    start_worker(service_config(SERVICE))
    first_index, second_index = waiting["normal"]
    running = run_sdk(served, f"""
out(running=wait_for(lambda: (found := inq.search({first_index}))["progress"] == 0.5 and found, timeout=60))
""")["running"]  # fmt: skip
    assert (running["state"], running["worker"], running["message"]) == ("running", "sdk-w0@test", "halfway")
    release.touch()
    seen = run_sdk(served, f"""
done = wait_for(lambda: (found := inq.search({second_index}))["state"] == "done" and found, timeout=60)
out(done=done, attrs=inq.attributes(), workers=wait_for(lambda: inq.attributes()["workers"] == "1"))
""")  # fmt: skip
    assert seen["done"]["inQueue"] is False and seen["done"]["resultIndex"] is not None
    assert seen["attrs"]["stream.length"] == "0" and seen["workers"]


def test_two_watchers_of_one_client_are_refused_and_of_two_clients_share_the_items(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, """
first = client(f"{QUEUE}/sink", uid="same-client")
watcher = first.watch(0, 5, auto_commit=True)
first_frames = watcher.run()
sink.put("x")
next(first_frames)  # the first watcher is connected
second = client(f"{QUEUE}/sink", uid="same-client")
refused = error_of(lambda: next(second.watch(0, 5).run()))
same_object = error_of(lambda: next(watcher.run()))
watcher.close()
for n in range(20):
    sink.put(str(n))
a, b, both = [], [], []
threads = [threading.Thread(target=lambda got=got: got.extend(collect(client(f"{QUEUE}/sink"), 20, shared=both)))
           for got in (a, b)]
for thread in threads: thread.start()
for thread in threads: thread.join()
out(refused=refused, same_object=same_object, a=[f["data"] for f in a], b=[f["data"] for f in b])
""")  # fmt: skip
    assert seen["refused"]["code"] == 409 and "already connected" in seen["refused"]["message"]
    assert seen["same_object"]["type"] == "PredictException"  # the SDK's own check, before asking the server
    delivered = seen["a"] + seen["b"]
    assert sorted(delivered, key=int) == [str(n) for n in range(20)]  # each item to one watcher of the group


def test_500_puts_from_one_thread_are_all_seen_by_a_watcher_of_the_sink_in_another(serve, run_sdk, start_worker):
    served = serve(service_config(SERVICE))
    start_worker(service_config(SERVICE))
    seen = run_sdk(served, """
sent = []
def put_all():
    for _ in range(500):
        sent.append(inq.put(b"{}", {"taskType": "query"})[1])
putter = threading.Thread(target=put_all)
putter.start()
frames = collect(sink, 500, window=50, timeout=90)
putter.join()
out(sent=sent, seen=[f["tags"]["requestId"] for f in frames], data={f["data"] for f in frames} == {"echo:{}"})
""")  # fmt: skip
    assert len(seen["sent"]) == 500
    assert sorted(seen["seen"]) == sorted(seen["sent"])
    assert seen["data"]


def test_two_front_ends_of_one_job_service_never_see_each_others_items(serve, run_sdk, start_worker):
    # given two front ends bound to one standalone job service, each with its own (generated) token
    config = service_config(SERVICE)
    served = serve(config, names=["alpha", "beta"], token=None)
    assert served.token("alpha") != served.token("beta")
    start_worker(config)
    put = run_sdk(served, """
index, rid = inq.put(b"{}", {"taskType": "query"})
result = sink.get(request_id=rid, timeout="30s", auto_delete=False)
out(index=int(index), rid=rid, result=[frame(f) for f in result])
""", name="alpha")  # fmt: skip
    assert put["result"][0]["data"] == "echo:{}"

    # when beta looks, deletes and truncates with its own token, and tries alpha's queues with it
    looked = run_sdk(served, f"""
sink.put(b"beta's own")
out(input=inq.attributes()["stream.lastEntry"], sink=[frame(f) for f in sink.get(auto_delete=False)],
    by_id=[frame(f) for f in sink.get(request_id="{put["rid"]}", timeout="1s")],
    search=inq.search({put["index"]}))
inq.delete({put["index"]}); sink.delete({put["result"][0]["index"]}); sink.truncate(1000); inq.truncate(1000)
out(alpha_input=error_of(lambda: client("alpha").attributes()),
    alpha_sink=error_of(lambda: client("alpha/sink").get(request_id="{put["rid"]}")))
""", name="beta")  # fmt: skip
    assert looked["sink"] == [{"index": 1, "data": "beta's own", "tags": looked["sink"][0]["tags"]}]
    assert (looked["by_id"], looked["search"], looked["input"]) == ([], {}, "0")
    assert looked["alpha_input"]["code"] == 401 and looked["alpha_sink"]["code"] == 401

    # then alpha's result is untouched
    after = run_sdk(served, f"""out(result=[frame(f) for f in sink.get(request_id="{put["rid"]}")])""", name="alpha")
    assert after["result"] == put["result"]


def test_a_wrong_or_missing_token_is_refused_with_401(serve, run_sdk):
    served = serve(service_config(SERVICE))
    seen = run_sdk(served, """
wrong, missing = client(token="not-the-token"), client(token="")
wrong_sink = client(f"{QUEUE}/sink", token="not-the-token")
out(put=error_of(lambda: wrong.put(b"{}", {"taskType": "query"})), missing=error_of(lambda: missing.attributes()),
    watch=error_of(lambda: next(wrong_sink.watch(0, 5).run())),
    right=inq.attributes()["stream.length"])
""")  # fmt: skip
    assert seen["put"]["code"] == seen["missing"]["code"] == seen["watch"]["code"] == 401
    assert "wrong token" in seen["put"]["message"] and "missing Authorization" in seen["missing"]["message"]
    assert seen["right"] == "0"
