"""The dashboard's routes on a live front end and a real redis-server: the login (no token: 401 and the form; another
service's or another front end's token: refused), the session cookie, the events stream, and a restart that loses
nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from conftest import service_config
from scalablejob.model.history import HostWorkers, Sample, ScaleEvent
from scalablejob.store.history import HistoryStore

pytestmark = pytest.mark.integration
pytest_plugins = ["frontend_fixtures"]

TIMEOUT = httpx.Timeout(10.0)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as client:
        yield client


def log_in(http: httpx.Client, url: str, token: str) -> httpx.Response:
    """The login form's POST; the client keeps no cookie from it (each test sends the one it means)."""
    response = http.post(f"{url}/dashboard/login", data={"token": token})
    http.cookies.clear()
    return response


def with_cookie(name: str, value: str) -> dict[str, str]:
    return {"Cookie": f"{name}={value}"}


def cookie_of(response: httpx.Response) -> tuple[str, str]:
    name, value = response.headers["set-cookie"].split(";", 1)[0].split("=", 1)
    return name, value


def first_events(http: httpx.Client, url: str, count: int, **request: Any) -> list[tuple[str, Any]]:
    """The first `count` events of the stream: (name, data)."""
    found: list[tuple[str, Any]] = []
    with http.stream("GET", f"{url}/dashboard/events", **request) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                found.append((name, json.loads(line.removeprefix("data: "))))
                if len(found) == count:
                    return found
    return found


def test_without_a_token_the_page_is_the_login_form_with_401_and_the_events_are_refused(serve, http):
    served = serve(service_config("dash"))
    page = http.get(f"{served.url}/dashboard")
    assert page.status_code == 401
    assert '<form method="post" action="/dashboard/login">' in page.text and "scalablejob.min" not in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    events = http.get(f"{served.url}/dashboard/events")
    assert events.status_code == 401
    assert events.text == "log in at /dashboard first: expected a session cookie or the token"


def test_the_token_logs_in_with_an_http_only_strict_cookie_that_opens_the_page_and_the_events(serve, http):
    served = serve(service_config("dash"))
    response = log_in(http, served.url, served.token())
    assert (response.status_code, response.headers["location"]) == (303, "/dashboard")
    assert response.headers["set-cookie"].endswith("; Path=/dashboard; HttpOnly; SameSite=Strict")
    name, value = cookie_of(response)
    assert name == "scalablejob-dashboard-dash" and served.token() not in value
    page = http.get(f"{served.url}/dashboard", headers=with_cookie(name, value))
    assert page.status_code == 200 and "/dashboard/static/uPlot.iife.min.js" in page.text
    [(event, history)] = first_events(http, served.url, 1, headers=with_cookie(name, value))
    assert (event, history["service"], history["windowS"], history["samples"]) == ("history", "dash", 1800, [])
    # the header works as it does for the queues, for scripts
    assert first_events(http, served.url, 1, headers={"Authorization": served.token()})[0][0] == "history"
    # and logging out ends the cookie
    assert "Max-Age=0;" in http.post(f"{served.url}/dashboard/logout").headers["set-cookie"]


def test_a_wrong_token_or_another_services_token_or_cookie_is_refused(serve, http):
    # given the front ends of two services on one Redis, each with its own token
    mine = serve(service_config("mine"), token="token-of-mine")
    other = serve(service_config("other"), token="token-of-other")
    other_cookie = cookie_of(log_in(http, other.url, "token-of-other"))[1]

    # then neither a wrong token, nor the other service's token or session opens this service's dashboard
    for token in ("guess", "token-of-other", ""):
        refused = log_in(http, mine.url, token)
        assert refused.status_code == 401 and "set-cookie" not in refused.headers
        assert "wrong token" in refused.text or "token is required" in refused.text
    assert http.get(f"{mine.url}/dashboard/events", headers={"Authorization": "token-of-other"}).status_code == 401
    for name in ("scalablejob-dashboard-mine", "scalablejob-dashboard-other"):
        assert http.get(f"{mine.url}/dashboard/events", headers=with_cookie(name, other_cookie)).status_code == 401
        assert http.get(f"{mine.url}/dashboard", headers=with_cookie(name, other_cookie)).status_code == 401


def test_another_front_end_of_the_service_may_not_see_the_dashboard(serve, http):
    # given a service served with its own front end and a second one, "web", each with its own token
    served = serve(service_config("dash"), names=("dash", "web"), token=None)
    assert log_in(http, served.url, served.token("web")).status_code == 401
    assert log_in(http, served.url, served.token("dash")).status_code == 303
    # and a process that serves "web" alone has no dashboard at all
    web_only = serve(service_config("dash"), names=("web",), token=None)
    assert http.get(f"{web_only.url}/dashboard").status_code == 404


def test_the_static_files_are_ours_and_uplots_with_its_license_and_nothing_else(serve, http):
    served = serve(service_config("dash"))
    script = http.get(f"{served.url}/dashboard/static/uPlot.iife.min.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "MIT License" in http.get(f"{served.url}/dashboard/static/uPlot.LICENSE").text
    assert http.get(f"{served.url}/dashboard/static/..%2Fapp.py").status_code == 404
    assert http.get(f"{served.url}/dashboard/static/login.html").status_code == 404


def test_a_restarted_front_end_streams_the_same_history_and_then_each_new_sample(serve, redis_url, http):
    # given a history in Redis
    client = redis.Redis.from_url(redis_url)
    store = HistoryStore(client, "dash")
    for n in range(3):
        store.append(Sample(1.0, {"command": n}, {"h": HostWorkers(n, n, 0)}, events=(ScaleEvent("up", n, "why"),)))

    # when two front ends started one after the other read it, then both send the same window
    first = serve(service_config("dash"), token="t")
    before = first_events(http, first.url, 1, headers={"Authorization": "t"})
    second = serve(service_config("dash"), token="t")
    after = first_events(http, second.url, 1, headers={"Authorization": "t"})
    assert before == after and [s["depth"]["command"] for s in after[0][1]["samples"]] == [0, 1, 2]

    # and a sample stored while a stream is open comes as one event
    with http.stream("GET", f"{second.url}/dashboard/events", headers={"Authorization": "t"}) as response:
        lines = response.iter_lines()
        next(line for line in lines if line.startswith("event: history"))
        new_id = store.append(Sample(1.0, {"command": 9}, {"h": HostWorkers(1, 1, 1)}))
        assert next(line for line in lines if line.startswith("event: ")) == "event: sample"
        sample = json.loads(next(lines).removeprefix("data: "))
        assert (sample["id"], sample["depth"]) == (new_id, {"command": 9})
    client.close()
