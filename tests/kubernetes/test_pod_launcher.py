"""The pod launcher against the stand-in API server (no real cluster): its pods' containers are small Python
processes, so each test takes about a second."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from standin import StandIn

from conftest import wait_until
from scalablejob.model.errors import KubernetesError
from scalablejob.scaler.kube_api import PodApi, connect_cluster
from scalablejob.scaler.pod_template import PodTemplate
from scalablejob.scaler.pods import PodLauncher
from scalablejob.scaler.pool import Exited, WorkerSpec
from scalablejob.scaler.records import ProcessRecord

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

WARM = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(60)"
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
# Appended to a worker's code: it says it has set its SIGTERM handler. A pod is Running once its process has started,
# before Python has run a line: a SIGTERM then ends it with 143, as a real worker stopped that early would.
SAYS_READY = "; open({path!r}, 'w').close(); time.sleep(60)"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandIn]:
    with StandIn(tmp_path / "pods") as server:
        yield server


def launcher(standin: StandIn, tmp_path: Path, code: str, *, token: str | None = None) -> PodLauncher:
    kubeconfig = standin.kubeconfig(tmp_path / "kubeconfig")
    if token is not None:
        config = json.loads(kubeconfig.read_text())
        config["users"][0]["user"]["token"] = token
        kubeconfig.write_text(json.dumps(config))
    container: dict[str, Any] = {"name": "worker", "image": "x", "command": [sys.executable, "-c", code]}
    spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 5, "containers": [container]}
    template = PodTemplate({"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": spec}, 5, None)
    pods = PodLauncher(PodApi(connect_cluster(str(kubeconfig)), standin.namespace), template, "svc", "host-a")
    pods.start()
    return pods


def reaped(pods: PodLauncher, timeout: float = 20) -> list[Exited]:
    found: list[Exited] = []
    wait_until(lambda: found.extend(pods.reap()) or found, timeout, "no pod ended")
    return found


def running_pod(standin: StandIn, tmp_path: Path, code: str, pod: str) -> PodLauncher:
    """A launcher whose one pod, `pod`, runs `code` and has set its SIGTERM handler."""
    ready = tmp_path / f"{pod}.ready"
    pods = launcher(standin, tmp_path, code.removesuffix("; time.sleep(60)") + SAYS_READY.format(path=str(ready)))
    pods.spawn(WorkerSpec(f"{pod}@jobs"))
    wait_until(ready.exists, 10, "the pod's worker never set its SIGTERM handler")
    assert standin.phases().get(pod) == "Running"
    return pods


def test_stop_deletes_the_pod_with_its_grace_period_and_its_worker_exits_warm(standin, tmp_path) -> None:
    pods = running_pod(standin, tmp_path, WARM, "svc-aa")

    pods.stop("svc-aa@jobs")

    assert reaped(pods) == [Exited("svc-aa@jobs", 0)]
    assert [(item.pod, item.grace_s) for item in standin.deletions] == [("svc-aa", 5)]
    assert "PATCH pod" in standin.calls and standin.unexpected == []
    wait_until(lambda: "svc-aa" not in standin.pods(), 10, "the pod was never removed")
    pods.close()


def test_kill_deletes_with_no_grace_and_the_worker_ends_with_137(standin, tmp_path) -> None:
    pods = running_pod(standin, tmp_path, STUBBORN, "svc-bb")

    pods.kill("svc-bb@jobs")

    assert reaped(pods) == [Exited("svc-bb@jobs", 137)]
    assert [(item.pod, item.grace_s) for item in standin.deletions] == [("svc-bb", 0)]
    pods.close()


def test_a_pod_whose_worker_exits_is_reported_with_its_code_and_its_object_deleted(standin, tmp_path) -> None:
    pods = launcher(standin, tmp_path, "raise SystemExit(3)")
    pods.spawn(WorkerSpec("svc-cc@jobs"))

    assert reaped(pods) == [Exited("svc-cc@jobs", 3)]
    wait_until(lambda: "svc-cc" not in standin.pods(), 10, "the failed pod's object stayed")
    pods.close()


def test_a_restarted_scaler_lists_and_adopts_the_pods_by_label_and_only_them(standin, tmp_path) -> None:
    first = launcher(standin, tmp_path, WARM)
    first.spawn(WorkerSpec("svc-dd@jobs"))
    first.close()

    again = launcher(standin, tmp_path, WARM)
    listed = again.listed()

    assert [record.name for record in listed] == ["svc-dd@jobs"]
    assert again.adopt(listed[0])
    assert not again.adopt(ProcessRecord("svc-ee@jobs", 0, 0.0, "host-a"))
    assert again.names == ["svc-dd@jobs"]
    again.close()


def test_a_refused_create_is_one_error_naming_the_call_and_the_servers_answer(standin, tmp_path) -> None:
    pods = launcher(standin, tmp_path, WARM, token="wrong")
    with pytest.raises(KubernetesError, match=r"create pod svc-ff in namespace jobs: 401: Unauthorized"):
        pods.spawn(WorkerSpec("svc-ff@jobs"))
    pods.close()


def test_no_cluster_configuration_is_one_error_that_says_what_to_give(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    with pytest.raises(KubernetesError, match=r"no cluster configuration: .* give --kubeconfig FILE"):
        connect_cluster(None)
