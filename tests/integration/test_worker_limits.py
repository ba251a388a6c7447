"""`metadata.memory` and `metadata.cpu` are enforced on a real worker and its jobs: a job over the memory is killed,
its result says so with the limit, and the worker takes the next task; a CPU-bound job gets no more than its
cores. Where no cgroup can be made, the fallback (affinity, RLIMIT_AS) and its start-up warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, python_command, service_config, wait_until
from scalablejob import RequestStatus
from scalablejob.host.worker_limits import NAME_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MEMORY_MB = 256
GROW_UNTIL_KILLED = "chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))"  # written, so really used

# two processes that keep a CPU busy each for BURN_S of wall time, then the share of one CPU they got together
BURN_S = 1.5
TWO_BUSY_PROCESSES = f"""
import os, resource, time
start = time.monotonic()
children = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + {BURN_S}
        while time.monotonic() < end:
            pass
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
used = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"cores {{(used.ru_utime + used.ru_stime) / (time.monotonic() - start):.3f}}")
"""


def own_cgroups_of(pid: int) -> list[Path]:
    """The cgroups a worker made for itself, in every hierarchy mounted here."""
    return [path for path in Path("/sys/fs/cgroup").rglob(f"{NAME_PREFIX}{pid}") if path.is_dir()]


def enforced_or_skip(worker, what: str) -> None:
    wait_until(lambda: "limit " in worker.log(), 10, "the worker said nothing of its limits")
    if f"limit enforced: {what}" not in worker.log():
        pytest.skip(f"no cgroup for {what} here: {worker.log()}")


def test_a_job_over_the_memory_is_killed_saying_so_and_the_worker_takes_the_next_task(start_worker, client_for):
    worker = start_worker(service_config("mem", memory=MEMORY_MB))
    enforced_or_skip(worker, "memory")
    client = client_for("mem")

    _, greedy = client.put(python_command(GROW_UNTIL_KILLED), {"taskType": "command"})
    result = client.result(greedy, timeout=60)
    _, modest = client.put(python_command("print('next')"), {"taskType": "command"})
    after = client.result(modest, timeout=60)

    state = client.state(greedy)
    assert (state.status, result.tags["exitCode"]) == (RequestStatus.FAILED, "137")
    expected = f"command killed by the kernel's OOM killer (out of memory: limit {MEMORY_MB} MB; exit code 137)"
    assert state.error == expected
    assert after.tags["exitCode"] == "0" and client.state(modest).worker == worker.hostname
    assert worker.process.poll() is None  # the same worker process, alive
    assert worker.stop() == 0
    assert not own_cgroups_of(worker.process.pid)  # it removed its cgroups as it left


def test_a_cpu_bound_job_gets_no_more_than_its_cores(start_worker, client_for):
    worker = start_worker(service_config("cpu", cpu=0.5))
    enforced_or_skip(worker, "cpu")
    client = client_for("cpu")

    _, request_id = client.put(python_command(TWO_BUSY_PROCESSES), {"taskType": "command"})
    assert client.result(request_id, timeout=60).tags["exitCode"] == "0"

    line = next(e.data.decode() for e in client.logs(request_id) if e.type == "log" and e.data.startswith(b"cores"))
    cores = float(line.split()[1])
    assert 0.2 < cores <= 0.5 * 1.2, line  # two busy processes, held to half a core (the quota's period is 0.1 s)


FALLBACK = f"""
import os, resource
from pathlib import Path
import scalablejob.host.worker_limits as limits
limits.PROC_CGROUP = Path("/nonexistent")  # as where no cgroup is to be had
report = limits.apply_worker_limits(0.5, {MEMORY_MB})
from scalablejob.workers.command import run_command
outcome = run_command([{sys.executable!r}, "-c", "b'x' * (2 * {MEMORY_MB} << 20)"])
print(json.dumps({{"not_enforced": report.not_enforced, "cpus": len(os.sched_getaffinity(0)),
                  "exit": outcome.exit_code, "tail": outcome.output_tail.decode()}}))
"""


def test_without_cgroups_the_worker_pins_its_cpus_and_limits_each_jobs_address_space_and_says_so():
    run = subprocess.run([sys.executable, "-c", "import json\n" + FALLBACK], cwd=REPO, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])

    assert seen["cpus"] == 1
    assert [line.split(" (")[0] for line in seen["not_enforced"]] == [
        f"memory {MEMORY_MB} MB for the worker itself", "cpu 0.5 cores as a quota"
    ]  # fmt: skip
    assert seen["exit"] == 1 and "MemoryError" in seen["tail"]


def test_a_worker_held_to_its_limits_from_outside_makes_no_cgroup_and_says_by_what():
    code = (
        "import os\nimport scalablejob.host.worker_limits as limits\n"
        'os.environ[limits.LIMITS_BY_ENV] = "the pod\'s resources (Kubernetes)"\n'
        "report = limits.apply_worker_limits(0.5, 256)\nprint(report.enforced, report.not_enforced)\n"
        "print(open('/proc/self/cgroup').read().count(limits.NAME_PREFIX))"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "[\"cpu 0.5 cores and memory 256 MB (by the pod's resources (Kubernetes))\"] []", "0"
    ]  # fmt: skip
