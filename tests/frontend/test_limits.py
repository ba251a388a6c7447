"""Queue limits as the cloud's queue service has them: a full input queue refuses puts with 429 and writes
nothing, the output queue evicts its oldest entries beyond its length, and `attributes` reports both limits."""

from __future__ import annotations

import httpx
import pytest
import redis

from conftest import service_config
from scalablejob import JobClient
from scalablejob.model import keys
from scalablejob.model.errors import QueueFull
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.store.queues import priority_lists

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "limits"
INPUT_MAX = 3
SINK_MAX = 10


def limited_config() -> dict:
    sink = {"max_length": SINK_MAX, "max_age_seconds": 3600}
    queue = {"max_payload_bytes": 2000, "source": {"max_length": INPUT_MAX}, "sink": sink}
    return {**service_config(SERVICE), "queue": queue}


def _input_state(redis_url: str) -> tuple[int, int]:
    """(items in the input queue, Celery messages waiting in the service's query queue)."""
    client = redis.Redis.from_url(redis_url)
    try:
        waiting = sum(client.llen(key) for key in priority_lists(queue_for(SERVICE, TaskType.QUERY)))
        return client.xlen(keys.input_stream(SERVICE, SERVICE)), waiting
    finally:
        client.close()


def test_a_put_into_a_full_input_queue_is_429_and_enqueues_nothing(serve, redis_url):
    served = serve(limited_config())
    with httpx.Client(base_url=served.url, headers={"Authorization": served.token()}, timeout=30) as http:
        accepted = [http.post(f"/api/predict/{SERVICE}", params={"taskType": "query"}, content=b"x")
                    for _ in range(INPUT_MAX)]  # fmt: skip
        assert [answer.status_code for answer in accepted] == [200] * INPUT_MAX
        before = _input_state(redis_url)
        refused = http.post(f"/api/predict/{SERVICE}", params={"taskType": "query", "requestId": "late"}, content=b"x")
        assert refused.status_code == 429
        assert "queue limits is full" in refused.text and "queue.source.max_length" in refused.text
        assert _input_state(redis_url) == before == (INPUT_MAX, INPUT_MAX)
        # the request id was not taken: once there is room, the same put succeeds
        http.delete(f"/api/predict/{SERVICE}", params={"_indexes_": accepted[0].text})
        again = http.post(f"/api/predict/{SERVICE}", params={"taskType": "query", "requestId": "late"}, content=b"x")
        assert again.status_code == 200


def test_the_python_client_is_refused_the_same_way(serve, redis_url):
    serve(limited_config())  # records the service's limits, as a front end or a worker does at start
    with JobClient(SERVICE, redis_url) as client:
        for _ in range(INPUT_MAX):
            client.put(b"x", {"taskType": "query"})
        with pytest.raises(QueueFull, match="retry once some have finished"):
            client.put(b"x", {"taskType": "query", "requestId": "refused"})
        assert client.state("refused") is None


def test_the_output_queue_evicts_its_oldest_entries_beyond_its_length(serve, redis_url):
    served = serve(limited_config())
    with httpx.Client(base_url=served.url, headers={"Authorization": served.token()}, timeout=30) as http:
        written = 300
        indexes = [int(http.post(f"/api/predict/{SERVICE}/sink", content=str(n)).text) for n in range(written)]
        attrs = http.get(f"/api/predict/{SERVICE}/sink", params={"_attrs_": "true"}).json()
    length = int(attrs["stream.length"])
    assert length == SINK_MAX
    assert int(attrs["stream.firstEntry"]) > indexes[0] and attrs["stream.lastEntry"] == str(indexes[-1])


def test_attributes_report_the_limits_under_the_clouds_names(serve):
    served = serve(limited_config())
    with httpx.Client(base_url=served.url, headers={"Authorization": served.token()}, timeout=30) as http:
        source = http.get(f"/api/predict/{SERVICE}", params={"_attrs_": "true"}).json()
        sink = http.get(f"/api/predict/{SERVICE}/sink", params={"_attrs_": "true"}).json()
        too_big = http.post(f"/api/predict/{SERVICE}/sink", content=b"x" * 2001)
    assert (source["meta.maxPayloadBytes"], source["stream.approxMaxLength"]) == ("2000", str(INPUT_MAX))
    assert (sink["meta.maxPayloadBytes"], sink["stream.approxMaxLength"]) == ("2000", str(SINK_MAX))
    assert sink["stream.maxAgeSeconds"] == "3600" and "stream.maxAgeSeconds" not in source
    assert too_big.status_code == 413 and "limit of 2000 bytes" in too_big.text


def test_the_sdk_surfaces_a_full_queue_as_its_error(serve, run_sdk):
    served = serve(limited_config())
    seen = run_sdk(served, f"""
for _ in range({INPUT_MAX}):
    inq.put(b"x", {{"taskType": "query"}})
out(refused=error_of(lambda: inq.put(b"x", {{"taskType": "query"}})), attrs=inq.attributes())
""")  # fmt: skip
    assert seen["refused"]["type"] == "PredictException" and seen["refused"]["code"] == 429
    assert "is full" in seen["refused"]["message"]
    assert seen["attrs"]["stream.length"] == str(INPUT_MAX)
