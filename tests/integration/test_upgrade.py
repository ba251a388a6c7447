"""Upgrades that fail nothing: workers of the last release and of this checkout on one Redis run each other's
producers' messages, workers are replaced one by one during a burst with nothing failed or lost, and a message of a
newer protocol version goes back on its queue instead of failing on a worker that cannot run it."""

from __future__ import annotations

import collections
import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import TEST_HANDLERS, WorkerProcess, launch_worker, service_config, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.api.celery_app import make_app
from scalablejob.model.protocol import PROTOCOL_VERSION
from scalablejob.model.routing import TaskType, queue_for
from scalablejob.store.presence import read_presence
from scalablejob.store.queues import NORMAL_PRIORITY, priority_lists
from scalablejob.store.sink import Sink
from scalablejob.store.state import RequestStore
from scalablejob.transport.message import task_message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
pytest_plugins = ["old_release"]

SERVICE = "upg"
QUERY = json.dumps({"sleep": 0.02})
OLD_PUT = """
import sys
from scalablejob import JobClient
with JobClient(sys.argv[1], sys.argv[2]) as client:
    for _ in range(int(sys.argv[3])):
        print(client.put(sys.argv[4], {"taskType": "query"})[1], flush=True)
"""


class Fleet:
    """Workers of either release on one Redis, each in a session of its own, all stopped at the end."""

    def __init__(self, folder: Path, broker: str, old_python: Path) -> None:
        self.folder, self.broker, self.old_python = folder, broker, old_python
        self.config = folder / f"{SERVICE}.json"
        self.config.write_text(json.dumps(service_config(SERVICE, **{"rpc.worker_threads": 2})))
        self.workers: list[WorkerProcess] = []

    def start(self, release: str) -> WorkerProcess:
        """A worker of `release` ('old' or 'new'); the old one runs outside the checkout, so it imports its own."""
        python = str(self.old_python) if release == "old" else _this_python()
        hostname = f"{SERVICE}-{release}{len(self.workers)}@test"
        argv = [python, "-m", "scalablejob", "worker", str(self.config), "--broker", self.broker, "-n", hostname,
                "--app", str(TEST_HANDLERS)]  # fmt: skip
        worker = launch_worker(argv, hostname, self.folder / f"{hostname}.log", cwd=self.folder, env=_clean_env())
        self.workers.append(worker)
        worker.wait_ready(SERVICE, self.broker)
        return worker

    def old_put(self, count: int) -> list[str]:
        """`count` queries put by the last release's JobClient (its own message format); their request ids."""
        done = subprocess.run(
            [str(self.old_python), "-c", OLD_PUT, SERVICE, self.broker, str(count), QUERY], cwd=self.folder,
            capture_output=True, text=True, timeout=60, env=_clean_env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    def old_status(self) -> dict[str, Any]:
        """`scalablejob status --json` of the last release: it reads this checkout's records too."""
        done = subprocess.run(
            [str(self.old_python), "-m", "scalablejob", "status", "-s", SERVICE, "--broker", self.broker, "--json"],
            cwd=self.folder, capture_output=True, text=True, timeout=60, env=_clean_env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        document: dict[str, Any] = json.loads(done.stdout)
        return document

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.stop()


def _this_python() -> str:
    import sys

    return sys.executable


def _clean_env() -> dict[str, str]:
    from old_release import old_release_env

    return old_release_env()


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str, old_release_python: Path) -> Iterator[Fleet]:
    fleet = Fleet(tmp_path, redis_url, old_release_python)
    yield fleet
    fleet.stop_all()


class Burst:
    """This checkout's JobClient putting queries on a thread until stopped; what it put."""

    def __init__(self, client: JobClient) -> None:
        self.ids: list[str] = []
        self._client = client
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Burst:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.ids.append(self._client.put(QUERY, {"taskType": "query"})[1])


def final_entries(client: redis.Redis) -> collections.Counter[str]:
    """How many final entries (result or error) each request has in the service's output queue."""
    sink, counts, start = Sink(client, SERVICE), collections.Counter[str](), 1
    while entries := sink.read(start, 500):
        counts.update(entry.request_id for entry in entries if entry.is_final and entry.request_id)
        start = entries[-1].index + 1
    return counts


def test_workers_upgraded_one_by_one_during_a_burst_fail_and_lose_nothing(
    fleet: Fleet, client_for: Callable[[str], JobClient], redis_client: redis.Redis
) -> None:
    # given two workers of the last release, running queries put by this release's client and by the last one's
    client = client_for(SERVICE)
    old_workers = [fleet.start("old"), fleet.start("old")]
    new_on_old = [client.put(QUERY, {"taskType": "query"})[1] for _ in range(10)]
    old_on_old = fleet.old_put(10)

    # when each is stopped (SIGTERM: a warm shutdown) and replaced by one of this release during a burst of puts
    with Burst(client) as burst:
        wait_until(lambda: len(burst.ids) >= 10, 20, "the burst never started")
        new_workers = []
        for old in old_workers:
            assert old.stop() == 0, old.log()
            new_workers.append(fleet.start("new"))
        mixed_status = fleet.old_status()
    old_on_new = fleet.old_put(10)
    requests = [*new_on_old, *old_on_old, *burst.ids, *old_on_new]

    # then every request ended done, with exactly one final entry: none failed, none lost
    store = RequestStore(redis_client, SERVICE)

    def all_ended() -> bool:
        return all(store.require(request_id).status.finished for request_id in requests)

    wait_until(all_ended, 60, "some requests never ended")
    statuses = collections.Counter(store.require(request_id).status for request_id in requests)
    assert statuses == {RequestStatus.DONE: len(requests)}
    assert final_entries(redis_client) == dict.fromkeys(requests, 1)
    # each release ran the other's messages: this client's on old workers, the last release's on new ones
    old_names = {worker.hostname for worker in old_workers}
    new_names = {worker.hostname for worker in new_workers}
    assert {store.require(request_id).worker for request_id in new_on_old} <= old_names
    assert {store.require(request_id).worker for request_id in old_on_new} <= new_names
    # the last release's `status` reads this release's records; this release's shows the protocol each worker runs
    assert {worker["name"] for worker in mixed_status["workers"]} >= new_names
    workers = read_presence(redis_client, SERVICE)
    assert {name: (presence.protocol, presence.put_back) for name, presence in workers.items()} == {
        name: (PROTOCOL_VERSION, 0) for name in new_names
    }
    for worker in fleet.workers:
        assert "TypeError" not in worker.log() and "put back" not in worker.log(), worker.log()


def test_a_message_of_a_newer_version_is_put_back_not_failed(
    start_worker: Callable[..., WorkerProcess], client_for: Callable[[str], JobClient], redis_url: str,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    # given a worker of this release, and a query message of the next protocol version with an argument it lacks
    worker = start_worker(service_config(SERVICE))
    client = client_for(SERVICE)
    app = make_app(SERVICE, redis_url)
    try:
        message = task_message(
            app, "scalablejob.query", "from-the-future", (b"{}", {"taskType": "query", "requestId": "from-the-future"}),
            {"frontend": SERVICE, "deadline": 30}, queue_for(SERVICE, TaskType.QUERY), NORMAL_PRIORITY,
            protocol=PROTOCOL_VERSION + 1,
        )  # fmt: skip
    finally:
        app.close()
    store = RequestStore(redis_client, SERVICE)
    store.create("from-the-future", TaskType.QUERY.value, message=message)

    # when it takes that message again and again, and a request of this release comes after it
    def put_back(times: int) -> bool:
        presence = read_presence(redis_client, SERVICE).get(worker.hostname)
        return presence is not None and presence.put_back >= times

    wait_until(lambda: put_back(1), 20, lambda: f"the newer message was never put back:\n{worker.log()}")
    _, request_id = client.put(QUERY, {"taskType": "query"})
    assert client.result(request_id, timeout=20).data.startswith(b"echo:")
    wait_until(lambda: put_back(2), 20, lambda: f"the newer message was not put back twice:\n{worker.log()}")

    # then it never ran or failed: still queued, no entry; its message is on its queue once the worker is gone
    assert worker.stop() == 0
    state = store.require("from-the-future")
    assert (state.status, state.attempt) == (RequestStatus.QUEUED, 0)
    assert final_entries(redis_client)["from-the-future"] == 0
    queued = [
        raw for key in priority_lists(queue_for(SERVICE, TaskType.QUERY)) for raw in redis_client.lrange(key, 0, -1)
    ]
    assert [json.loads(raw)["headers"]["id"] for raw in queued] == ["from-the-future"]
    # said once in its log (not once per take), and no traceback of Celery's for it
    log = worker.log()
    assert log.count("put back on its queue") == 1, log
    assert f"protocol version {PROTOCOL_VERSION + 1}" in log and "Traceback" not in log, log
