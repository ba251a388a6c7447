"""The dashboard in headless Chromium, during a burst with a real scaler and real workers: the page's charts show the
queue depth rising and the workers following, and what uPlot draws is what Redis holds.

The page keeps its charts in window.scalablejobDashboard; the test reads their data arrays over the DevTools
protocol (tests/support/devtools.py) and compares them with the series computed here from the history in Redis. A
screenshot of the page is kept as the test's artifact (its path is printed: `-s` shows it), in
$SCALABLEJOB_TEST_ARTIFACTS or <tmp>/scalablejob-test-artifacts, one file overwritten by each run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from conftest import python_command, service_config, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.local.scaler_process import ScalerProcess, kill_marked
from scalablejob.model.history import Sample
from scalablejob.store.history import HistoryStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from devtools import Browser, chromium

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
pytest_plugins = ["frontend_fixtures"]

SERVICE = "dash"
ARTIFACTS = Path(
    os.environ.get("SCALABLEJOB_TEST_ARTIFACTS") or Path(tempfile.gettempdir(), "scalablejob-test-artifacts")
)
CHARTS = ("depth", "workers", "rates", "times")
DRAWN = "JSON.stringify(Object.fromEntries(Object.entries(window.scalablejobDashboard.charts).map(" \
        "([name, chart]) => [name, {labels: chart.labels, data: chart.data}])))"  # fmt: skip


def burst_config() -> dict[str, Any]:
    """1 to 3 workers, 2 queued tasks each before growing, back down after 1 s idle."""
    config = service_config(SERVICE)
    config["autoscaler"] = {"min": 1, "max": 3, "strategies": {"avg_waiting_length": 2},
                            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 1}}}  # fmt: skip
    return config


@pytest.fixture
def scaler(tmp_path: Path, redis_url: str) -> Iterator[ScalerProcess]:
    """A real `scalablejob scaler` of the burst service; it and everything it started are gone afterwards."""
    marker = uuid.uuid4().hex
    path = tmp_path / "dash.json"
    path.write_text(json.dumps(burst_config()))
    argv = ["--interval", "0.2", "--log-dir", str(tmp_path / "workers")]
    process = ScalerProcess.start(path, redis_url, *argv, marker=marker, log_path=tmp_path / "scaler.log")
    try:
        yield process
    finally:
        process.stop()
        process.close()
        kill_marked(marker)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    executable = chromium()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed here (.ci/run installs it)")
    with Browser(executable, tmp_path / "chromium") as opened:
        yield opened


def expected_series(samples: Sequence[Sample]) -> dict[str, dict[str, Any]]:
    """What each chart should draw from these samples: what dashboard.js's `series` computes, written again."""
    xs = [s.at for s in samples]
    types = sorted({t for s in samples for t in s.depth})
    hosts = sorted({h for s in samples for h in s.hosts})
    what = ("desired", "running", "busy")
    workers = [[getattr(s.hosts[h], w) if h in s.hosts else None for s in samples] for h in hosts for w in what]
    labels = [f"{w} ({h})" if len(hosts) > 1 else w for h in hosts for w in what]

    def rate(count: int, dt: float) -> float | None:
        return count / dt if dt > 0 else None

    return {
        "depth": {"labels": types, "data": [xs, *([s.depth.get(t) for s in samples] for t in types)]},
        "workers": {"labels": labels, "data": [xs, *workers]},
        "rates": {"labels": ["started/s", "finished/s"],
                  "data": [xs, [rate(s.started, s.dt) for s in samples], [rate(s.finished, s.dt) for s in samples]]},
        "times": {"labels": ["wait p50", "wait p95", "run p50", "run p95"],
                  "data": [xs, *([getattr(getattr(s, kind), q) if getattr(s, kind) else None for s in samples]
                                 for kind in ("wait", "run") for q in ("p50", "p95"))]},
    }  # fmt: skip


def log_in(browser: Browser, url: str, token: str) -> None:
    browser.open(f"{url}/dashboard")
    wait_until(lambda: browser.evaluate("document.getElementById('token') !== null"), 20, "no login form")
    browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)}; "
                     "document.querySelector('form').submit(); true")  # fmt: skip
    drew = "!!(window.scalablejobDashboard && window.scalablejobDashboard.charts.workers)"
    wait_until(lambda: browser.poll(drew), 20, "the dashboard never drew its charts")  # the submit navigates


def drawn(browser: Browser) -> dict[str, dict[str, Any]]:
    return dict(json.loads(browser.evaluate(DRAWN)))


def test_during_a_burst_the_page_draws_the_depth_rising_and_the_workers_following_as_redis_has_them(
    serve, scaler, browser, redis_url, tmp_path
):
    # given a service with its scaler (1 idle worker) and its front end, and the dashboard open in Chromium
    served = serve(burst_config())
    wait_until(lambda: scaler.count("idle") == 1, 30, lambda: f"no idle worker:\n{scaler.log()}")
    log_in(browser, served.url, served.token())

    # when a burst of 8 commands of 1.5 s and one that fails comes in
    with JobClient(SERVICE, redis_url) as client:
        ids = [client.put(python_command("import time; time.sleep(1.5)"), {"taskType": "command"})[1] for _ in range(8)]
        failing = client.put(python_command("import sys; sys.exit(3)"), {"taskType": "command"})[1]

        def finished() -> bool:
            return all(client.state(i).status.finished for i in [*ids, failing])  # type: ignore[union-attr]

        wait_until(finished, 60, lambda: f"the burst never finished:\n{scaler.log()}")
        assert client.state(failing).status is RequestStatus.FAILED  # type: ignore[union-attr]

    # then the page shows 3 workers running and the failure in its table
    def page_caught_up() -> bool:
        workers = drawn(browser)["workers"]
        running = workers["data"][1 + workers["labels"].index("running")]
        table = browser.evaluate("document.querySelector('#failures tbody').textContent")
        return 3 in running and failing in table

    wait_until(page_caught_up, 20, "the page never showed 3 running workers and the failure")
    page = drawn(browser)
    events = browser.evaluate("JSON.stringify(window.scalablejobDashboard.state.events)")
    shot = browser.screenshot(ARTIFACTS.mkdir(parents=True, exist_ok=True) or ARTIFACTS / "dashboard-burst.png")
    print(f"dashboard screenshot: {shot}")

    # and every value drawn is the history in Redis: the same samples, none missing, the same series
    client = redis.Redis.from_url(redis_url)
    xs = page["depth"]["data"][0]
    stored = [s for s in HistoryStore(client, SERVICE).samples() if xs[0] <= s.at <= xs[-1]]
    client.close()
    assert [s.at for s in stored] == xs
    expected = expected_series(stored)
    for name in CHARTS:
        assert page[name]["labels"] == expected[name]["labels"], name
        for drawn_values, stored_values in zip(page[name]["data"], expected[name]["data"], strict=True):
            assert drawn_values == pytest.approx(stored_values), name

    # and the workers followed the depth: the sample before the burst's first had nothing queued and 1 idle worker;
    # from it on, 3 or more were queued, and the scaler wanted 3, and 3 ran and were busy (1 s samples: a pre-warmed
    # worker starts within a pass, so the rise may show in the very sample where the depth first does)
    depth = [sum(s.depth.values()) for s in stored]
    running, busy, desired = ([sum(getattr(h, w) for h in s.hosts.values()) for s in stored]
                              for w in ("running", "busy", "desired"))  # fmt: skip
    start = next(i for i, (d, b) in enumerate(zip(depth, busy, strict=True)) if d > 0 or b > 0)
    assert start > 0 and (desired[start - 1], running[start - 1], busy[start - 1]) == (1, 1, 0)
    assert max(depth[start:]) >= 3
    assert max(desired[start:]) == max(running[start:]) == max(busy[start:]) == 3
    # and the scale-up is a marker with its reason, as the scaler decided it
    ups = [e for e in json.loads(events) if e["change"] == "up"]
    decided = [e.reason for s in stored for e in s.events if e.change == "up"]
    assert ups and [e["reason"] for e in ups] == decided
