"""The demo end to end on the embedded Redis: start Redis and one worker, submit query and command tasks, print results.

Run from the repository root: `python examples/quickstart.py`. Nothing but this package needs to be installed.
Its data folder (Redis' password and files, every request, the worker's log) is removed at the end; `--keep`
keeps it, to look at with `scalablejob status --data-dir DIR` or `redis-cli`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from scalablejob import JobClient
from scalablejob.local.embedded_broker import EmbeddedBroker
from scalablejob.model.redaction import masked_url
from scalablejob.store.broker import BROKER_ENV

EXAMPLES = Path(__file__).resolve().parent
RESULT_TIMEOUT_S = 60


def start_worker(broker_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    """One `scalablejob worker` for the demo service, with examples/handlers.py as its user code."""
    argv = [
        sys.executable, "-m", "scalablejob", "worker", str(EXAMPLES / "inference.json"),
        "--app", str(EXAMPLES / "handlers.py"), "--hostname", "demo-1@quickstart",
    ]  # fmt: skip
    env = {**os.environ, BROKER_ENV: broker_url}  # in its environment: a command line is readable by any local user
    with log_path.open("wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)


def submit_and_print(client: JobClient) -> None:
    queries = ["hello scalable world", "idle workers first"]
    commands = [  # `python` is the worker's own interpreter; no shell is involved
        """python -c "import platform; print('training on', platform.node())" """,
        """python -c "import sys; print('loss went up', file=sys.stderr); sys.exit(2)" """,
    ]
    submitted = [(client.put(text, {"taskType": "query"}), text) for text in queries]
    submitted += [(client.put(command, {"taskType": "command"}), command) for command in commands]
    for (index, request_id), sent in submitted:
        entry = client.result(request_id, timeout=RESULT_TIMEOUT_S)
        state = client.state(request_id)
        print(f"[{entry.tags['taskType']} #{index}] {sent}")
        print(f"    -> {state.status.value} on {state.worker}, sink entry {entry.index} ({entry.type})", end="")
        print(f", exit code {entry.tags['exitCode']}" if "exitCode" in entry.tags else "")
        print(f"    data: {entry.data.decode('utf-8', 'replace').strip()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--keep", action="store_true", help="keep the data folder (it holds a Redis password)")
    keep = parser.parse_args().keep
    data_dir = Path(tempfile.mkdtemp(prefix="scalablejob-quickstart-"))
    try:
        run_demo(data_dir)
    finally:
        if keep:
            print(f"data kept in {data_dir} (Redis' password, every request, the worker's log): remove it when done")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
            print(f"data folder {data_dir} removed (--keep keeps it)")


def run_demo(data_dir: Path) -> None:
    broker = EmbeddedBroker(data_dir)
    url = broker.start()
    print(f"embedded redis-server on {masked_url(url)} (data in {data_dir}, removed at the end unless --keep)")
    worker = start_worker(url, data_dir / "worker.log")
    print(f"worker started (log: {data_dir / 'worker.log'})")
    try:
        with JobClient("demo", url) as client:
            submit_and_print(client)
    finally:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: finishes what it runs, then exits
        worker.wait(30)
        broker.stop()
    print("worker and redis-server stopped")


if __name__ == "__main__":
    main()
