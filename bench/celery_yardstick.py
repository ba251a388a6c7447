"""Celery's own integration tests as the yardstick of our Celery face (issue 24): the same test files of the Celery
source distribution run twice on one private redis-server, against plain Celery (Celery's fixtures: its app, its
in-thread prefork worker) and against ours (tests/celery_yardstick: our service's app and a real `celery -A` worker
of it), and the share of the tests passing against plain Celery that also pass against ours.

The source distribution of the installed Celery is fetched from the package index at run time (`pip download
--no-binary :all:`) into a cache folder; only its `t/` and `pyproject.toml` (pytest's settings and markers) are
unpacked, into a scratch folder. Nothing of Celery's is kept in this repository.

    python bench/celery_yardstick.py [--files test_tasks.py test_canvas.py] [--timeout S] [--min-ratio R]
        [--run-timeout S] [--budget-factor F] [--only plain|ours] [--cache-dir DIR] [--keep DIR] [--json FILE]
        [-k EXPR]

Time is bounded three ways: each test by --timeout (45 s; Celery's own longer marks are capped, shorter ones kept);
a test that outlives it (subtests swallow pytest-timeout's exception) is killed with its pytest process 30 s later and
the file goes on from the next test in a fresh one; and each file's run against ours gets --budget-factor (1.5) times
plain Celery's time on it (at least 300 s), after which the tests not reached count as not passed.

Exit status: 0, or 1 when the ratio is under --min-ratio, or 2 when the plain run passed nothing (a broken rig).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path, PurePosixPath

import redis

REPO = Path(__file__).resolve().parents[1]
YARDSTICK = REPO / "tests" / "celery_yardstick"
sys.path.insert(0, str(YARDSTICK))  # the report and fixtures live beside the suite, one copy

from yardstick_plugin import DONE_ENV, EVENTS_ENV  # noqa: E402
from yardstick_report import (  # noqa: E402
    FileComparison,
    Outcome,
    Progress,
    TestResult,
    by_name,
    failure_lines,
    ratio,
    read_events,
    short_name,
    table,
)

from scalablejob.host.processes import dying_with_parent, kill_processes_with_env, stop_group  # noqa: E402
from scalablejob.local.redis_server import RedisServer  # noqa: E402

FILES = ("test_tasks.py", "test_canvas.py")
DEFAULT_TIMEOUT_S = 45.0  # per test: plain Celery's slowest passing test (test_retry) takes about 31 s here
DEFAULT_BUDGET_FACTOR = 1.5  # ours' time per file, over plain Celery's (which runs first)
MIN_BUDGET_S = 300.0
HUNG_GRACE_S = 30.0  # a test still running this long past its limit has swallowed pytest-timeout's exception
MAX_RESTARTS = 20  # runs resumed after a hung test, per file
POLL_S = 0.5
UNPACKED = ("t/", "pyproject.toml")  # Celery's tests and pytest's settings for them; not its `celery/` package
MARKER_ENV = "SCALABLEJOB_YARDSTICK_RUN"  # on every process a run starts: whatever is left is killed by it
SERVICE = "celery-yardstick"
SHIM = "\n\n# scalablejob's yardstick: the session app and worker are ours (bench/celery_yardstick.py)\n" \
       "from yardstick_fixtures import *  # noqa\n"  # fmt: skip


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scalablejob" / "celery-yardstick"


def fetch_sdist(celery_version: str, cache: Path) -> Path:
    """Celery's source distribution of `celery_version`, from the cache or the package index (pip's own client)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"celery-{celery_version}.tar.gz"))
    if found:
        return found[0]
    command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-q",
               "-d", str(cache), f"celery=={celery_version}"]  # fmt: skip
    subprocess.run(command, check=True, timeout=600)
    found = sorted(cache.glob(f"celery-{celery_version}.tar.gz"))
    if not found:
        raise SystemExit(f"pip download celery=={celery_version} left no celery-{celery_version}.tar.gz in {cache}")
    return found[0]


def unpack_tests(sdist: Path, dest: Path) -> Path:
    """Celery's `t/` and `pyproject.toml` from the tarball into `dest`, plain files and folders only, each name
    checked to stay inside `dest`."""
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts[1:]  # celery-X.Y.Z/...
            relative = "/".join(parts)
            if not parts or ".." in parts or not (relative.startswith(UNPACKED[0]) or relative == UNPACKED[1]):
                continue
            target = dest.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                source = tar.extractfile(member)
                assert source is not None
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(source.read())
    if not (dest / "t" / "integration" / "conftest.py").is_file():
        raise SystemExit(f"{sdist.name} has no t/integration/conftest.py: not a Celery source distribution?")
    return dest


def service_config(folder: Path) -> Path:
    """The service whose app and worker replace Celery's: defaults throughout (4 query slots, 1 command slot)."""
    path = folder / f"{SERVICE}.json"
    path.write_text(json.dumps({"metadata": {"name": SERVICE, "type": "ScalableJob", "gpu": 0}}))
    return path


@dataclass
class Run:
    flavour: str  # "plain" or "ours"
    file: str
    results: dict[str, TestResult]
    seconds: float
    log: Path
    unreached: str = ""  # why the tests it has no result for did not run (its time budget ran out)


def read_progress(events: Path, offset: int = 0) -> Progress:
    """The events of `events` from byte `offset` on (one run's, when it started there)."""
    if not events.is_file():
        return Progress()
    with events.open("rb") as file:
        file.seek(offset)
        return read_events(file.read().decode("utf-8", errors="replace").splitlines())


def watch(process: subprocess.Popen[bytes], events: Path, offset: int, limit_s: float, deadline: float) -> str | None:
    """Wait for a pytest run (whose events start at `offset`) to end. Returns None once it has; else, when the
    caller is to stop it, the node id of the test running (one that has run `limit_s`, or any at `deadline`), or ""
    at `deadline` between two tests."""
    while True:
        try:
            process.wait(POLL_S)
            return None
        except subprocess.TimeoutExpired:
            pass
        progress = read_progress(events, offset)
        if progress.running is not None and time.time() - progress.since > limit_s:
            return progress.running
        if time.monotonic() > deadline:
            return progress.running or ""


def run_file(
    flavour: str, tests: Path, file: str, url: str, work: Path, args: argparse.Namespace, budget_s: float
) -> Run:
    """One Celery test file in pytest processes of its own, on a flushed Redis, for at most `budget_s`: a run stopped
    by a hung test goes on from the next test in a fresh process (and session worker), up to MAX_RESTARTS times."""
    redis.Redis.from_url(url).flushall()
    out = work / "out" / flavour / file.removesuffix(".py")
    out.mkdir(parents=True, exist_ok=True)
    events, log_path = out / "events.jsonl", out / "pytest.log"
    port = url.rsplit(":", 1)[1].split("/")[0]
    env = {
        **os.environ, "TEST_BROKER": url, "TEST_BACKEND": url, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": port,
        "PYTHONPATH": os.pathsep.join([str(YARDSTICK), os.environ.get("PYTHONPATH", "")]), EVENTS_ENV: str(events),
        "SCALABLEJOB_BROKER": url, "SCALABLEJOB_CONFIG": str(service_config(work)), "YARDSTICK_LOG_DIR": str(out),
    }  # fmt: skip
    argv = [sys.executable, "-m", "pytest", "-p", "celery.contrib.pytest", "-p", "yardstick_plugin",
            "-p", "no:cacheprovider", "-p", "no:rerunfailures", "-p", "no:randomly", "-q", "-rfEs",
            "--timeout", str(args.timeout), f"t/integration/{file}", *(["-k", args.k] if args.k else [])]  # fmt: skip
    started = time.monotonic()
    hung: dict[str, TestResult] = {}
    unreached = ""
    for _ in range(MAX_RESTARTS + 1):
        done = read_progress(events).results
        offset = events.stat().st_size if events.is_file() else 0
        (out / "done.txt").write_text("".join(f"{nodeid}\n" for nodeid in {**done, **hung}))
        marker = uuid.uuid4().hex
        with log_path.open("ab") as log:
            process = subprocess.Popen(  # it (and its session worker) dies with this process, however that ends
                dying_with_parent(argv), cwd=tests, env={**env, MARKER_ENV: marker, DONE_ENV: str(out / "done.txt")},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            try:
                stuck = watch(process, events, offset, args.timeout + HUNG_GRACE_S, started + budget_s)
            finally:
                stop_group(process, 10.0)
                kill_processes_with_env(MARKER_ENV, marker)  # a worker the run left behind
        if stuck is None:
            break
        if time.monotonic() > started + budget_s:
            spent = f"the {flavour} run of {file} used up its time budget ({budget_s:.0f} s)"
            unreached = f"not reached: {spent}"
            if stuck:
                hung[stuck] = TestResult(short_name(stuck), Outcome.FAILED, f"killed: {spent}")
            print(f"{flavour} {file}: {spent}; the tests left count as not passed", file=sys.stderr)
            break
        why = f"still running {args.timeout + HUNG_GRACE_S:g} s after its start (past its time limit): killed"
        hung[stuck] = TestResult(short_name(stuck), Outcome.FAILED, why)
        print(f"{flavour} {file}: {short_name(stuck)} hung; going on from the next test", file=sys.stderr)
    progress = read_progress(events)
    for nodeid, result in hung.items():
        progress.add(nodeid, result.outcome, result.reason)
    seconds = time.monotonic() - started
    print(f"{flavour:5} {file}: {len(progress.results)} tests in {seconds:.0f} s (log {log_path})", file=sys.stderr)
    return Run(flavour, file, by_name(progress.results), seconds, log_path, unreached)


def prepare(flavour: str, sdist: Path, work: Path) -> Path:
    tests = unpack_tests(sdist, work / flavour)
    if flavour == "ours":
        with (tests / "t" / "integration" / "conftest.py").open("a") as conftest:
            conftest.write(SHIM)
    return tests


def budget_for(flavour: str, runs: list[Run], file: str, args: argparse.Namespace) -> float:
    """The time a run of `file` gets: --run-timeout for plain Celery's; for ours, --budget-factor times what plain
    Celery's took in this invocation (at least MIN_BUDGET_S), so that a face that answers nothing ends in time."""
    plain = next((run.seconds for run in runs if run.flavour == "plain" and run.file == file), None)
    if flavour == "plain" or plain is None:
        return float(args.run_timeout)
    return min(float(args.run_timeout), max(MIN_BUDGET_S, args.budget_factor * plain))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", nargs="+", default=list(FILES), help="test files of t/integration")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds per test, over any mark")
    parser.add_argument("--run-timeout", type=float, default=1800.0, help="seconds at most per file and side")
    parser.add_argument(
        "--budget-factor", type=float, default=DEFAULT_BUDGET_FACTOR,
        help="ours gets this many times plain Celery's time per file; the tests left count as not passed",
    )  # fmt: skip
    parser.add_argument("--min-ratio", type=float, default=None, help="exit 1 when the ratio is under this")
    parser.add_argument("--only", choices=("plain", "ours"), help="run one side (no ratio)")
    parser.add_argument("--celery-version", default=version("celery"), help="default: the installed one")
    parser.add_argument("--cache-dir", type=Path, default=default_cache())
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs, JUnit reports)")
    parser.add_argument("--json", type=Path, help="write the per-test outcomes and figures here")
    parser.add_argument("-k", help="pytest's -k, for a look at some tests")
    return parser.parse_args(argv)


def report(runs: list[Run], args: argparse.Namespace) -> list[FileComparison]:
    by_side = {(run.flavour, run.file): run for run in runs}
    empty = Run("", "", {}, 0.0, Path())
    comparisons = [
        FileComparison(f, by_side.get(("plain", f), empty).results, by_side.get(("ours", f), empty).results,
                       by_side.get(("ours", f), empty).unreached or FileComparison.missing)
        for f in args.files
    ]  # fmt: skip
    print(f"\nCelery {args.celery_version} t/integration, per-test timeout {args.timeout:g} s, no reruns")
    print(table(comparisons))
    print(f"\nratio (passing against ours / passing against plain Celery): {ratio(comparisons):.1%}")
    print(f"time: {', '.join(f'{r.flavour} {r.file} {r.seconds:.0f} s' for r in runs)}")
    lost = failure_lines(comparisons)
    print(f"\npassing against plain Celery, not against ours ({len(lost)}):")
    print("\n".join(f"  {line}" for line in lost) or "  none")
    gained = [f"{c.file}::{name}" for c in comparisons if c.plain for name in c.gained]
    if gained:
        print(f"\npassing against ours, not against plain Celery ({len(gained)}):")
        print("\n".join(f"  {name}  plain: {_plain_reason(comparisons, name)}" for name in gained))
    return comparisons


def _plain_reason(comparisons: list[FileComparison], qualified: str) -> str:
    file, _, name = qualified.partition("::")
    result = next(c.plain.get(name) for c in comparisons if c.file == file)
    return f"{result.outcome.value}: {result.reason}" if result else "not run"


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # so that every run's processes and Redis are stopped on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    sdist = fetch_sdist(args.celery_version, args.cache_dir)
    work = args.keep or Path(tempfile.mkdtemp(prefix="celery-yardstick-"))
    work.mkdir(parents=True, exist_ok=True)
    flavours = [args.only] if args.only else ["plain", "ours"]
    runs: list[Run] = []
    try:
        trees = {flavour: prepare(flavour, sdist, work) for flavour in flavours}
        with RedisServer(work / "redis", persistent=False) as server:
            for file in args.files:
                for flavour in flavours:
                    budget = budget_for(flavour, runs, file, args)
                    runs.append(run_file(flavour, trees[flavour], file, server.url, work, args, budget))
        comparisons = report(runs, args)
        if args.json:
            args.json.write_text(json.dumps(_figures(runs, comparisons, args), indent=1))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    plain_passed = sum(c.plain_passed for c in comparisons)
    if "plain" in flavours and plain_passed == 0:
        print("nothing passed against plain Celery: the rig is broken, not ours", file=sys.stderr)
        return 2
    if args.min_ratio is not None and not args.only and ratio(comparisons) < args.min_ratio:
        print(f"FAILED: ratio {ratio(comparisons):.1%} is under the gate {args.min_ratio:.1%}", file=sys.stderr)
        return 1
    return 0


def _figures(runs: list[Run], comparisons: list[FileComparison], args: argparse.Namespace) -> dict[str, object]:
    return {
        "celery": args.celery_version,
        "timeout_s": args.timeout,
        "ratio": ratio(comparisons),
        "seconds": {f"{run.flavour}/{run.file}": round(run.seconds, 1) for run in runs},
        "tests": {
            f"{run.flavour}/{run.file}": {n: [r.outcome.value, r.reason] for n, r in sorted(run.results.items())}
            for run in runs
        },
        "lost": failure_lines(comparisons),
        "outcomes": [o.value for o in Outcome],
    }


if __name__ == "__main__":
    sys.exit(main())
