"""A job that floods its output (`yes`) costs the service bounded memory and log, is cancellable at once, and
never pushes another request's result out of the output queue."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import service_config, wait_until
from scalablejob import RequestStatus
from scalablejob.store.sink import LOG_ENTRY_OVERHEAD_BYTES

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOG_CAP_BYTES = 256 * 1024
SINK_MAX_LENGTH = 1000  # well below what the flood would write if its log were not capped by entries too
EARLIER_QUERIES = 200
PEAK_RSS_LIMIT_KB = 200 * 1024  # a worker starts at about 70 MB; before the fix a flood took it past 600 MB


def flood_config(name: str) -> dict:
    config = service_config(name)
    config["scalable_job"] = {"log_cap_bytes": LOG_CAP_BYTES}
    config["queue"] = {"sink": {"max_length": SINK_MAX_LENGTH}}
    return config


def shell(command: str) -> str:
    return json.dumps(["sh", "-c", command])


def peak_rss_kb(pid: int) -> int:
    """The process' high-water mark of resident memory (VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def test_an_output_flood_ends_within_its_log_cap_and_evicts_no_other_result(start_worker, client_for):
    # given a worker whose output queue already holds the unread results of many queries
    worker = start_worker(flood_config("flood"))
    client = client_for("flood")
    earlier = {client.put(f"q{n}".encode(), {"taskType": "query"})[1]: f"q{n}".encode() for n in range(EARLIER_QUERIES)}
    wait_until(lambda: all(client.state(rid).status.finished for rid in earlier), 60, "the earlier queries")

    # when a job writes 4 MB of one-byte lines (2 million lines: a thousand times what its log cap admits)
    _, flood = client.put(shell("yes | head -c 4000000"), {"taskType": "command"})

    # then it ends, on time, with its exit code and the count of what the cap kept out
    entry = client.result(flood, timeout=90)
    assert entry.tags["exitCode"] == "0", entry
    assert int(entry.tags["logBytesDropped"]) > 0
    # its log in the queue, entries counted with their overhead, stays within the cap
    logs = [e for e in client.logs(flood) if e.type == "log"]
    assert logs[-1].tags.get("truncated") == "true"
    stored = sum(len(e.data) + LOG_ENTRY_OVERHEAD_BYTES for e in logs[:-1])
    assert stored <= LOG_CAP_BYTES
    # every earlier result is still there to be read
    for rid, body in earlier.items():
        assert client.result(rid, timeout=5).data == b"echo:" + body
    # and the worker's memory stayed bounded
    assert peak_rss_kb(worker.process.pid) < PEAK_RSS_LIMIT_KB


def test_a_flooding_job_is_cancelled_at_once(start_worker, client_for):
    # given a job that writes without end, past its log cap
    start_worker(flood_config("flood-cancel"))
    client = client_for("flood-cancel")
    _, flood = client.put(shell("yes"), {"taskType": "command"})
    wait_until(lambda: any(e.tags.get("truncated") for e in client.logs(flood)), 60, "the flood reaching its cap")

    # when it is cancelled
    client.cancel(flood)

    # then it ends cancelled within a few seconds, and the worker takes the next task
    wait_until(lambda: client.state(flood).status is RequestStatus.CANCELLED, 5, "the flood ending cancelled")
    _, after = client.put(b"after", {"taskType": "query"})
    assert client.result(after, timeout=30).data == b"echo:after"
