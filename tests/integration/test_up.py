"""`scalablejob up`: every part starts, Ctrl-C stops them all, and queued work survives into the next `up`."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from conftest import REPO, UpProcess, copy_checkout, python_command, wait_until
from scalablejob import JobClient, RequestStatus
from scalablejob.local.flower import flower_login
from scalablejob.local.ports import free_port
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV, with_folder_password
from scalablejob.store.presence import read_presence

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def start_up(tmp_path):
    running: list[UpProcess] = []

    def start(config: dict, *extra: str) -> UpProcess:
        path = tmp_path / "service.json"
        path.write_text(json.dumps(config))
        running.append(UpProcess(path, tmp_path / "data", *extra, env=env_without_broker()))
        return running[-1]

    yield start
    for up in running:
        if up.process.poll() is None:
            up.kill()


def env_without_broker() -> dict[str, str]:
    """This environment without a broker or data folder that an earlier test in this process may have left."""
    return {name: value for name, value in os.environ.items() if name not in (BROKER_ENV, DATA_DIR_ENV)}


def service(name: str = "stack", **autoscaler) -> dict:
    return {"metadata": {"name": name, "type": "ScalableJob", "gpu": 0, "rpc.worker_threads": 1},
            "autoscaler": {"min": 1, "max": 1, **autoscaler}}  # fmt: skip


PARTS = {"redis-server", "frontend", "scaler", "flower", "worker"}


def running_parts(up: UpProcess) -> set[str]:
    """Which parts of the stack run among `up`'s descendants, by their command lines."""
    lines = [" ".join(process.cmdline()) for process in up.descendants()]
    return {part for part in PARTS if any(part in line for line in lines)}


def answers(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": token} if token else {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


def status_of(url: str, authorization: str | None = None) -> int:
    """The HTTP status `url` answers, errors included."""
    try:
        return answers(url, authorization)
    except urllib.error.HTTPError as exc:
        return exc.code


def flower_authorization(data_dir: Path) -> str:
    """The Authorization header of the data folder's Flower login."""
    return "Basic " + base64.b64encode(flower_login(data_dir).basic_auth.encode()).decode()


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_starts_every_part_and_ctrl_c_leaves_no_process_behind(start_up):
    # given a stack that is up
    up = start_up(service(), "--app", "tests/support/sj_test_handlers.py")
    where = up.wait_ready()
    wait_until(lambda: running_parts(up) >= PARTS, 60, f"not every part started: {running_parts(up)}")

    # then every part answers, and the front end's token line agrees with up's (it says where the token came from)
    assert any("token from env SCALABLEJOB_FRONTEND_TOKEN" in line for line in up.lines), up.lines
    assert not any("not shown" in line for line in up.lines)
    assert answers(f"{where['frontend']}?_attrs_=true", where["token"]) == 200
    assert answers(where["flower"], flower_authorization(up.data_dir)) == 200
    assert answers(where["metrics"]) == 200
    # and its lines link the dashboard, which asks for the front end's token
    dashboard = re.search(r"^  dashboard\s+(\S+)", "\n".join(up.lines), re.M)
    assert dashboard is not None and dashboard.group(1) == where["frontend"].split("/api/")[0] + "/dashboard"
    assert (status_of(dashboard.group(1)), answers(dashboard.group(1), where["token"])) == (401, 200)
    with JobClient("stack", where["broker"]) as client:
        _, request_id = client.put(b"hello stack", {"taskType": "query"})
        assert client.result(request_id, timeout=60).data == b"echo:hello stack"

    # and the CLI works against it: submit, then status shows the queues, the worker and the scaler's decisions
    cli = [sys.executable, "-m", "scalablejob"]
    submitted = subprocess.run([*cli, "submit", "-s", "stack", "--type", "query", "--wait", "--timeout", "60", "cli",
                                "--broker", where["broker"]], capture_output=True, text=True, timeout=90)  # fmt: skip
    assert submitted.stdout.splitlines()[-1] == "echo:cli"
    wide = {**os.environ, "COLUMNS": "200"}
    shown = subprocess.run([*cli, "status", "-s", "stack", "--broker", where["broker"]],
                           capture_output=True, text=True, timeout=60, env=wide)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    worker = next(iter(read_presence(redis.Redis.from_url(where["broker"]), "stack")))
    for expected in ("stack.command", "stack.query", worker, "idle", "raised to min 1"):
        assert expected in shown.stdout

    # when it is interrupted, then it exits 0 and every process it started is gone
    processes = up.descendants()
    assert up.interrupt() == 0
    assert all(wait_until(lambda p=p: gone(p), 10, f"{p} outlived up") for p in processes)


def test_ctrl_c_drains_the_workers_and_queued_work_runs_after_the_next_up(start_up, tmp_path):
    # given a stack with one worker busy on a job that waits for the test, and a second job queued behind it
    release = tmp_path / "release"
    up = start_up(service())
    where = up.wait_ready()
    with JobClient("stack", where["broker"]) as client:
        wait_for_release = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.02)\n"
        _, running_id = client.put(python_command(wait_for_release), {"taskType": "command"})
        wait_until(lambda: client.state(running_id).status is RequestStatus.RUNNING, 60, "the job never started")
        _, queued_id = client.put(python_command("print('after restart')"), {"taskType": "command"})

    # when Ctrl-C arrives while it runs, and the job then finishes
    up.process.send_signal(signal.SIGINT)
    wait_until(lambda: any("stopping" in line for line in up.lines), 30, "up did not start stopping")
    release.touch()
    assert up.process.wait(60) == 0

    # then the running job finished, and the queued one is still there and runs after the next up
    again = start_up(service())
    where = again.wait_ready()
    with JobClient("stack", where["broker"]) as client:
        assert client.state(running_id).status is RequestStatus.DONE
        assert client.result(queued_id, timeout=60).data == b"after restart\n"
    assert again.interrupt() == 0


def test_the_procfile_runs_the_same_parts_with_honcho(tmp_path):
    # given a copy of the checkout whose Procfile and .env use free ports instead of the fixed ones: the parts run
    # in the copy, so what they write there (the embedded broker's ./.scalablejob) never lands in the checkout
    checkout = copy_checkout(tmp_path / "checkout")
    ports = {"6390": str(free_port()), "8080": str(free_port()), "5555": str(free_port())}
    for name in ("Procfile", ".env"):
        text = (checkout / name).read_text()
        for fixed, free in ports.items():
            text = text.replace(fixed, free)
        (checkout / name).write_text(text.replace("examples/handlers.py", "tests/support/sj_test_handlers.py"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("SCALABLEJOB_BROKER", None)
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "-f", str(checkout / "Procfile"), "-e", str(checkout / ".env"),
         "-d", str(checkout), "start"],
        cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        # when it is up, then a query submitted to its broker is answered, and the front end and Flower answer
        given = f"redis://127.0.0.1:{ports['6390']}/0"  # as .env names it: the password is in the data folder
        broker = wait_until(lambda: running_embedded_at(with_folder_password(given, checkout / ".scalablejob")), 60,
                            "the Procfile's redis never answered")  # fmt: skip
        with JobClient("demo", broker) as client:
            _, request_id = client.put(b"via honcho", {"taskType": "query"})
            assert client.result(request_id, timeout=90).data == b"echo:via honcho"
        assert wait_until(lambda: port_open(int(ports["8080"])) and port_open(int(ports["5555"])), 60, "no HTTP")
        flower = f"http://127.0.0.1:{ports['5555']}/metrics"  # behind the login that Flower made in the data folder
        assert status_of(flower) == 401
        assert status_of(flower, flower_authorization(checkout / ".scalablejob")) == 200
        processes = psutil.Process(honcho.pid).children(recursive=True)

        # and Ctrl-C stops every process it started
        honcho.send_signal(signal.SIGINT)
        honcho.wait(60)
        assert (checkout / ".scalablejob").is_dir()  # the broker's data folder is the copy's
        assert all(wait_until(lambda p=p: gone(p), 20, f"{p} outlived honcho") for p in processes)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(honcho.pid, signal.SIGKILL)
        honcho.wait()


def running_embedded_at(url: str) -> str | None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        return url if client.ping() else None
    except redis.RedisError:
        return None
    finally:
        client.close()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_flower_shows_the_running_workers_in_a_real_browser(start_up, tmp_path):
    browser = chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium package")
        pytest.skip("chromium is not installed here (.ci/run installs it)")
    # given a stack with two workers, both known to Flower
    up = start_up(service(min=2, max=2), "--flower-no-auth")  # a browser with no login to give
    where = up.wait_ready()
    client = redis.Redis.from_url(where["broker"])
    names = wait_until(lambda: sorted(read_presence(client, "stack")) if len(read_presence(client, "stack")) == 2
                       else None, 60, "the scaler did not start two workers")  # fmt: skip

    # when headless Chromium loads Flower's workers page
    def page() -> str:
        run = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=3000", "--dump-dom",
             f"{where['flower']}/workers"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        return run.stdout

    # then it lists both running workers
    def page_listing_all() -> str | None:
        html = page()
        return html if all(name in html for name in names) else None

    dom = wait_until(page_listing_all, 60, f"Flower's workers page never listed {names}")
    assert "workers-table" in dom
    client.close()
    assert up.interrupt() == 0


def test_an_integrated_service_gets_its_own_front_end_script_kept_alive(start_up):
    # given an integrated service whose config names the user's own front-end program
    port = free_port()
    config = service("integrated")
    config["metadata"]["type"] = "ScalableJobService"
    config["front_end"] = {"port": port, "script": f"{sys.executable} {REPO / 'examples' / 'web_ui.py'}"}
    up = start_up(config)
    where = up.wait_ready()
    ui = f"http://127.0.0.1:{port}"
    first = wait_until(lambda: json_or_none(ui), 60, "the front-end script never answered")

    # when it submits a training command through the queue service, then the job runs
    assert first["service"] == "integrated" and first["endpoint"] == where["frontend"].split("/api/")[0]
    submitted = post_json(f"{ui}/train", python_command("print('from the web ui')").encode())
    with JobClient("integrated", where["broker"]) as client:
        assert client.result(submitted["requestId"], timeout=60).data == b"from the web ui\n"

    # and when the script dies, up starts it again
    psutil.Process(first["pid"]).kill()
    again = wait_until(lambda: (page := json_or_none(ui)) and page["pid"] != first["pid"] and page, 30, "no restart")
    assert again["service"] == "integrated"
    assert up.interrupt() == 0


def json_or_none(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def post_json(url: str, body: bytes) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=10) as response:
        return json.loads(response.read())


def test_up_refuses_user_code_that_serves_no_job_of_the_service_before_starting_anything(tmp_path):
    module = tmp_path / "other.py"
    module.write_text('from scalablejob import Job\njob = Job("other")\n')
    config = tmp_path / "service.json"
    config.write_text(json.dumps(service("stack")))

    run = subprocess.run(
        [sys.executable, "-m", "scalablejob", "up", str(config), "--app", str(module), "--data-dir", str(tmp_path)],
        cwd=REPO, env=env_without_broker(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip

    assert run.returncode == 1
    assert "expected exactly one scalablejob.Job for service 'stack'" in run.stderr
    assert run.stdout == ""  # nothing was started, so nothing was stopped
