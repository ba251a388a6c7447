"""`scalablejob frontend` as a process: address printed at start, a token made at start printed once and kept (as a
hash) across restarts, a token given through the environment."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import service_config
from scalablejob.frontend.server import OPEN_FILES_HEADROOM

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EXIT_TIMEOUT_S = 30.0


def answers(url: str, token: str) -> int:
    return httpx.get(
        f"{url}/api/predict/cli/sink", params={"_attrs_": "true"}, headers={"Authorization": token}
    ).status_code


def test_the_front_end_prints_a_generated_token_once_and_a_restart_keeps_it_unshown(start_frontend):
    # given a front end started without a token
    first = start_frontend(service_config("cli"))
    url, tokens = first.started()
    token, source = tokens["cli"]
    assert source == "generated" and len(token) >= 32

    # when a client uses it, with the token and without
    put = httpx.post(f"{url}/api/predict/cli", params={"taskType": "query"}, headers={"Authorization": token})
    refused = httpx.post(f"{url}/api/predict/cli", params={"taskType": "query"}, headers={"Authorization": "x"})
    assert (put.status_code, put.text, refused.status_code) == (200, "1", 401)
    assert first.stop() == 0

    # then a restart without a token keeps the token, without showing it again
    again = start_frontend(service_config("cli"))
    url, tokens = again.started()
    assert tokens["cli"] == ("not shown", "the registry (the last one used)")
    assert token not in again.log() and answers(url, token) == 200
    assert again.stop() == 0

    # and a token given through the environment replaces it, and is not shown either
    given = start_frontend(service_config("cli"), env={"SCALABLEJOB_FRONTEND_TOKEN": "mine-from-env"})
    url, tokens = given.started()
    assert tokens["cli"] == ("not shown", "env SCALABLEJOB_FRONTEND_TOKEN") and "mine-from-env" not in given.log()
    assert (answers(url, "mine-from-env"), answers(url, token)) == (200, 401)


def test_a_standalone_service_serves_several_named_front_ends_each_with_its_own_token(start_frontend):
    url, tokens = start_frontend(service_config("cli"), "--name", "alpha", "--name", "beta").started()
    assert set(tokens) == {"alpha", "beta"} and tokens["alpha"][0] != tokens["beta"][0]
    alpha = httpx.get(f"{url}/api/predict/alpha/sink", headers={"Authorization": tokens["alpha"][0]})
    crossed = httpx.get(f"{url}/api/predict/alpha/sink", headers={"Authorization": tokens["beta"][0]})
    assert (alpha.status_code, crossed.status_code) == (200, 401)


def test_an_integrated_service_refuses_a_front_end_of_another_name(start_frontend):
    frontend = start_frontend(service_config("cli", type="ScalableJobService"), "--name", "other")
    assert frontend.process.wait(EXIT_TIMEOUT_S) == 1
    assert "service cli is a ScalableJobService: it takes work from its own front end only" in frontend.log()


def open_files_limit(pid: int) -> int:
    """The soft limit on open files of process `pid`, as Linux shows it."""
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines() if line.startswith("Max open"))
    return int(line.split()[3])


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads the limit from Linux' /proc")
def test_the_front_end_raises_its_open_files_limit_to_fit_its_connection_cap(start_frontend):
    # given a front end started with a soft limit of 256 open files, below its cap of 1000 connections
    frontend = start_frontend(service_config("cli"), open_files=256)
    frontend.started()
    # then it may open enough files for them all, and more (its hard limit here allows it)
    assert open_files_limit(frontend.process.pid) >= 1000 + OPEN_FILES_HEADROOM
