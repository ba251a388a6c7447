"""README's SDK example, run as written (but for the front end's address) with the real eas-prediction SDK."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import redis

from conftest import REPO, service_config
from scalablejob.model import keys

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

README_ENDPOINT = "127.0.0.1:8080"


def readme_sdk_blocks() -> tuple[str, str]:
    """The install command and the Python example that follow the SDK sentence of README's front end section."""
    text = (REPO / "README.md").read_text()
    section = text.split("give it a virtualenv of its own:", 1)[1]
    install = re.search(r"```sh\n(.*?)\n```", section, flags=re.S)
    example = re.search(r"```python\n(.*?)\n```", section, flags=re.S)
    assert install and example, "README lost its SDK install command or example"
    return install.group(1), example.group(1)


def test_the_readme_installs_the_sdk_in_a_virtualenv_of_its_own():
    install, _ = readme_sdk_blocks()
    assert re.fullmatch(r"python3 -m venv (\S+) && \1/bin/pip install -q eas-prediction", install), install


def test_the_readme_sdk_example_prints_both_answers_and_leaves_the_first_in_place(
    serve, start_worker, eas_python, redis_url
):
    # given the tour's front end (its README token) and a worker answering queries
    served = serve(service_config("tour"), token="TOKEN")
    start_worker(service_config("tour"))
    _, example = readme_sdk_blocks()
    assert README_ENDPOINT in example
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    # when the example runs
    run = subprocess.run(
        [str(eas_python), "-c", example.replace(README_ENDPOINT, served.endpoint)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip

    # then it prints the answer read by request id, then the next result from the filtered watch
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == "b'echo:hello world'"
    assert len(lines) == 2 and lines[1].endswith("b'echo:one more'"), lines
    client = redis.Redis.from_url(redis_url)
    try:  # the first answer is still there for other readers; the second was committed
        assert client.xlen(keys.frontend_sink_stream("tour", "tour")) == 1
    finally:
        client.close()
