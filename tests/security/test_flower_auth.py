"""Flower behind a login by default: `up`'s Flower and the Procfile's answer 401 without it and 200 with it, on its
pages and on `/metrics`; `--flower-no-auth` turns it off explicitly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from security_support import basic, flower_authorization, mode, status_of

from conftest import REPO, UpProcess, wait_until
from scalablejob.local.flower import LOGIN_FILE, NO_AUTH_ENV, flower_env, flower_login
from scalablejob.local.ports import free_port
from scalablejob.model.errors import ScalableJobError
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV

PROTECTED = ("/", "/workers", "/tasks", "/metrics", "/api/tasks")


def clean_env(**extra: str) -> dict[str, str]:
    kept = {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}
    return {name: value for name, value in {**kept, **extra}.items() if not name.startswith("FLOWER_")}


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator:
    running: list[UpProcess] = []

    def start(*extra: str) -> UpProcess:
        config = tmp_path / "service.json"
        config.write_text(json.dumps({"metadata": {"name": "flowered", "type": "ScalableJob", "gpu": 0},
                                      "autoscaler": {"min": 0, "max": 1}}))  # fmt: skip
        running.append(UpProcess(config, tmp_path / "data", *extra, env=clean_env()))
        return running[-1]

    yield start
    for up in running:
        if up.process.poll() is None:
            up.kill()


# ---- the login file and Flower's environment -----------------------------------------------------------------------


def test_the_login_is_made_once_in_a_0600_file_of_a_0700_folder(tmp_path):
    made = flower_login(tmp_path / "data")
    again = flower_login(tmp_path / "data")
    assert made.created and not again.created and again.basic_auth == made.basic_auth
    assert made.user == "scalablejob" and len(made.password) >= 40
    assert mode(tmp_path / "data") == 0o700 and mode(made.path) == 0o600
    assert made.password not in made.describe() and str(made.path) in made.describe()


def test_a_login_file_that_is_not_user_colon_password_is_a_clear_error(tmp_path):
    (tmp_path / LOGIN_FILE).write_text("no-colon-here\n")
    with pytest.raises(ScalableJobError, match="expected one line USER:PASSWORD"):
        flower_login(tmp_path)


def test_flower_gets_its_broker_and_login_in_its_environment_or_an_explicit_no_auth(tmp_path):
    login = flower_login(tmp_path)
    assert flower_env("redis://:pw@h:1/0", login) == {
        "CELERY_BROKER_URL": "redis://:pw@h:1/0", "FLOWER_BASIC_AUTH": login.basic_auth,
    }  # fmt: skip
    assert flower_env("redis://h:1/0", None) == {"CELERY_BROKER_URL": "redis://h:1/0", NO_AUTH_ENV: "1"}


# ---- a real Flower -------------------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_ups_flower_answers_401_without_the_login_and_200_with_it_metrics_too(start_up, tmp_path):
    # given a running stack
    up = start_up()
    where = up.wait_ready()
    data = tmp_path / "data"
    login = flower_login(data)

    # then its pages and /metrics answer 401 without the login or with a wrong one, and 200 with it
    for path in PROTECTED:
        url = where["flower"] + path
        assert status_of(url) == 401, path
        assert status_of(url, basic(login.user, "wrong-password")) == 401, path
        assert status_of(url, flower_authorization(data)) == 200, path
    assert status_of(where["flower"] + "/healthcheck") == 200  # "OK" and nothing else, for probes

    # and up said once where the login is, never what it is
    made = [line for line in up.lines if line.startswith("flower login made: user scalablejob, password in")]
    assert len(made) == 1 and all(login.password not in line for line in up.lines)
    assert mode(data / LOGIN_FILE) == 0o600
    assert up.interrupt() == 0


@pytest.mark.integration
@pytest.mark.timeout(180)
def test_up_with_flower_no_auth_opens_flower_explicitly(start_up, tmp_path):
    up = start_up("--flower-no-auth")
    where = up.wait_ready()
    assert status_of(where["flower"] + "/metrics") == 200 and status_of(where["flower"] + "/workers") == 200
    assert any("no login (--flower-no-auth)" in line for line in up.lines)
    assert not (tmp_path / "data" / LOGIN_FILE).exists()
    assert up.interrupt() == 0


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_the_procfiles_flower_uses_the_data_folders_login(tmp_path, redis_url):
    # given Flower started as the Procfile starts it: no login in its environment, the broker in SCALABLEJOB_BROKER
    port, data = free_port(), tmp_path / "data"
    argv = [sys.executable, "-m", "celery", "-A", "scalablejob.local.flower", "flower", f"--port={port}",
            "--address=127.0.0.1"]  # fmt: skip
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        flower = subprocess.Popen(argv, cwd=REPO, env=clean_env(**{BROKER_ENV: redis_url, DATA_DIR_ENV: str(data)}),
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        wait_until(lambda: flower.poll() is None and status_of_or_none(url), 60, f"no Flower: {log.read_text()}")

        # then it made the folder's login, said where it is, and asks for it on /metrics too
        assert status_of(url) == 401
        assert status_of(url, flower_authorization(data)) == 200
        assert log.read_text().count("flower login made: user scalablejob, password in") == 1
        assert flower_login(data).password not in log.read_text()
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(30)


def status_of_or_none(url: str) -> int | None:
    try:
        return status_of(url)
    except OSError:
        return None
