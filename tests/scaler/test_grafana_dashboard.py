"""deploy/grafana/scalablejob.json against a live scaler: every metric named in every panel's query is on the
scaler's /metrics (a real `scalablejob scaler` with its metrics on, a real redis-server, one real worker). The front
end exports no metrics, so the dashboard reads the scaler's alone."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from test_scaler_processes import scaled_config, start_scaler  # noqa: F401 (a fixture)

from conftest import REPO, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

DASHBOARD = REPO / "deploy" / "grafana" / "scalablejob.json"
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_LABELS = re.compile(r"\{[^}]*\}|\[[^]]*\]|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL query, simply: without strings, label matchers, ranges and groupings, every name
    that is not a function (followed by `(`), a keyword or a number's part."""
    bare = _LABELS.sub(" ", _STRINGS.sub(" ", expr))
    names = set()
    for found in _NAME.finditer(bare):
        after = bare[found.end() :].lstrip()
        if (
            not after.startswith("(")
            and found.group() not in _KEYWORDS
            and not bare[found.start() - 1 : found.start()].isdigit()
        ):
            names.add(found.group())
    return names


@pytest.mark.parametrize(
    ("expr", "names"),
    [('sum by (queue) (scalablejob_queue_depth{service=~"$service"})', {"scalablejob_queue_depth"}),
     ("rate(a_total{x=\"y{z}\"}[$__rate_interval]) / on (i) group_left b", {"a_total", "b"}),
     ("max(up) without (job) > 0.5", {"up"})],
)  # fmt: skip
def test_metric_names_are_read_from_a_query(expr, names):
    assert metric_names(expr) == names


def exported(text: str) -> set[str]:
    """The metric names an exposition declares (# TYPE) or has samples of."""
    declared = re.findall(r"^# TYPE (\S+) ", text, re.M)
    sampled = re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M)
    return set(declared) | set(sampled)


def test_every_panel_of_the_grafana_dashboard_queries_metrics_the_live_scaler_exports(start_scaler):  # noqa: F811
    # given a scaler of one worker, with its metrics on a free port
    scaler = start_scaler(scaled_config("graf", min=1, max=1), "--metrics-port", "0")
    port = wait_until(lambda: re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", scaler.log()), 30,
                      "the scaler never served its metrics")  # fmt: skip
    wait_until(lambda: scaler.count("idle") == 1, 30, lambda: f"no idle worker:\n{scaler.log()}")

    # when its /metrics is read
    live = exported(urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=5).read().decode())

    # then every panel queries something, and every metric it names is there
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len(panels) == 6
    for panel in panels:
        names = set().union(*(metric_names(target["expr"]) for target in panel["targets"]))
        assert names, f"panel {panel['title']!r} names no metric"
        assert names <= live, f"panel {panel['title']!r}: {sorted(names - live)} not on the scaler's /metrics"
