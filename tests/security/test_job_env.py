"""Jobs see only what they need: a command task runs with the worker's environment minus the broker's URL, passwords
and tokens, and what is left gives it no way into Redis."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, WorkerProcess, launch_worker, service_config
from scalablejob import JobClient
from scalablejob.local.redis_server import RedisServer
from scalablejob.model.redaction import DENIED_NAMES, is_secret_name, url_password, without_secrets
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV
from scalablejob.workers.command import command_env

PASSWORD = "the-broker-password-42"
URL = f"redis://:{PASSWORD}@127.0.0.1:6390/0"


# ---- command_env's deny-list --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "SCALABLEJOB_BROKER", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL", "REDIS_PASSWORD",
        "REDISCLI_AUTH", "FLOWER_BASIC_AUTH", "FLOWER_OAUTH2_SECRET", "FLOWER_ANYTHING", "DB_PASSWORD",
        "my_api_token", "SCALABLEJOB_TOKEN", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "LDAP_PASSWD",
    ],
)  # fmt: skip
def test_a_job_does_not_inherit_credentials(name):
    env = command_env({"PATH": "/bin", name: "value"}, {}, {}, allowed=())
    assert name not in env and env["PATH"] == "/bin"


def test_a_job_does_not_inherit_any_variable_holding_the_broker_password():
    worker = {BROKER_ENV: URL, "INNOCENT": f"x{PASSWORD}y", "ALSO": f"redis://u:{PASSWORD}@h/1", "KEEP": "plain"}
    env = command_env(worker, {}, {}, allowed=())
    assert "INNOCENT" not in env and "ALSO" not in env and env["KEEP"] == "plain"
    assert not any(PASSWORD in value for value in env.values())


def test_a_password_given_as_a_query_parameter_or_in_redis_password_is_found_too():
    assert url_password("redis://127.0.0.1:6390/0?password=in-the-query") == "in-the-query"
    worker = {"REDIS_URL": "redis://h/0?password=in-the-query", "X": "in-the-query!", "REDISCLI_AUTH": "cli-secret",
              "Y": "cli-secret"}  # fmt: skip
    assert without_secrets(worker) == {}


def test_the_rest_of_the_worker_environment_is_kept():
    worker = {"PATH": "/usr/bin", "HOME": "/home/w", "LANG": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "0",
              "VIRTUAL_ENV": "/venv", "HTTPS_PROXY": "http://proxy:3128",
              "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    # all but TOKENIZERS_PARALLELISM: a name with TOKEN in it is not worth guessing about (the deny-list errs on the
    # safe side); a job that needs it gets it from the config's env
    assert without_secrets(worker) == {k: v for k, v in worker.items() if k != "TOKENIZERS_PARALLELISM"}


def test_a_short_broker_password_does_not_strip_innocent_values():
    assert without_secrets({BROKER_ENV: "redis://:bin@h/0", "PATH": "/usr/bin"}) == {"PATH": "/usr/bin"}


def test_what_the_config_and_the_allowed_tags_give_is_kept_even_if_named_like_a_secret():
    env = command_env({"HF_TOKEN": "worker's"}, {"HF_TOKEN": "the config's"}, {"env.API_TOKEN": "the request's"},
                      allowed=("API_TOKEN",))  # fmt: skip
    assert env["HF_TOKEN"] == "the config's" and env["API_TOKEN"] == "the request's"


def test_every_broker_name_the_worker_uses_is_denied():
    assert BROKER_ENV in DENIED_NAMES and all(is_secret_name(name) for name in DENIED_NAMES)


# ---- a real command task, through a real worker -------------------------------------------------------------------

DUMP_ENV = "import json, os, sys; open(sys.argv[1], 'w').write(json.dumps(dict(os.environ)))"
TRY_REDIS = """
import os, sys, redis
names = ("SCALABLEJOB_BROKER", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL")
urls = [os.environ[name] for name in names if name in os.environ] or [f"redis://127.0.0.1:{sys.argv[1]}/0"]
for url in urls:
    try:
        redis.Redis.from_url(url, protocol=2, password=os.environ.get("REDIS_PASSWORD")).hgetall("anything")
        print("CONNECTED", url)
    except redis.AuthenticationError as exc:
        print("AUTH ERROR:", exc)
"""


@pytest.fixture
def worker_on_a_password(tmp_path: Path) -> Iterator[tuple[RedisServer, WorkerProcess]]:
    """A worker of service `jobs` on a Redis with a password, given to it (and more secrets) in its environment."""
    with RedisServer(tmp_path / "redis", persistent=False, password=PASSWORD) as server:
        config = tmp_path / "jobs.json"
        config.write_text(json.dumps(service_config("jobs")))
        env = {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}
        env.update({BROKER_ENV: server.url, "REDIS_PASSWORD": PASSWORD, "MY_API_TOKEN": "t0k3n",
                    "FLOWER_BASIC_AUTH": "u:p4ss", "BACKUP": server.url, "KEEP_ME": "plain"})  # fmt: skip
        argv = [sys.executable, "-m", "scalablejob", "worker", str(config), "-n", "jobs@test"]
        worker = launch_worker(argv, "jobs@test", tmp_path / "worker.log", cwd=REPO, env=env)
        try:
            worker.wait_ready("jobs", server.url)
            yield server, worker
        finally:
            worker.stop()


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_command_task_sees_no_broker_url_password_or_token(worker_on_a_password, tmp_path):
    server, _ = worker_on_a_password
    dump = tmp_path / "job-env.json"
    with JobClient("jobs", server.url) as client:
        _, request_id = client.put(json.dumps(["python", "-c", DUMP_ENV, str(dump)]), {"taskType": "command"})
        assert client.result(request_id, timeout=60).tags["exitCode"] == "0"
    seen = json.loads(dump.read_text())
    for name in (BROKER_ENV, "REDIS_PASSWORD", "MY_API_TOKEN", "FLOWER_BASIC_AUTH", "BACKUP"):
        assert name not in seen, name
    assert not any(PASSWORD in value for value in seen.values())
    assert seen["KEEP_ME"] == "plain" and seen["PATH"] == os.environ["PATH"]  # the rest is the worker's
    assert seen["SCALABLEJOB_REQUEST_ID"] == request_id


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_a_command_task_cannot_reach_redis_with_what_its_environment_gives_it(worker_on_a_password):
    server, _ = worker_on_a_password
    with JobClient("jobs", server.url) as client:
        body = json.dumps(["python", "-c", TRY_REDIS, str(server.port)])
        _, request_id = client.put(body, {"taskType": "command"})
        output = client.result(request_id, timeout=60).data.decode()
    assert "CONNECTED" not in output
    assert "AUTH ERROR: Authentication required." in output  # Redis' NOAUTH
