"""The worker Pod template: parsed (YAML or JSON), checked for the service with errors that name the field, and
filled in for one worker. Pure: no cluster."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from scalablejob.model.config import ScalableJobConfig
from scalablejob.model.errors import PodTemplateError
from scalablejob.scaler.pod_template import (
    check_template,
    label_selector,
    parse_template,
    pod_name,
    pod_of,
    runs_worker,
    worker_name,
    worker_pod,
)

SETTINGS = ScalableJobConfig(task_timeout_s=600, cancel_grace_s=10)
YAML = """
apiVersion: v1
kind: Pod
metadata:
  labels: {app: sj-worker, version: 2}
spec:
  terminationGracePeriodSeconds: 620
  containers:
    - name: worker
      image: registry.example/sj:1
      command: [scalablejob, worker, /etc/sj/service.json]
      args: [--app, /opt/app/handlers.py]
      env:
        - {name: SCALABLEJOB_BROKER, valueFrom: {secretKeyRef: {name: sj-broker, key: url}}}
        - {name: THREADS, value: 8}
      resources: {limits: {nvidia.com/gpu: 1, memory: 16Gi}}
"""


def manifest() -> dict[str, Any]:
    return parse_template(YAML, "pod.yaml")


def check(found: dict[str, Any], gpu: int = 1, settings: ScalableJobConfig = SETTINGS) -> Any:
    return check_template(found, "pod.yaml", service="svc", gpu_per_worker=gpu, settings=settings)


def test_json_is_read_as_yaml_is() -> None:
    assert parse_template(json.dumps(manifest()), "pod.json") == manifest()


def test_a_good_template_is_filled_in_with_the_pods_name_labels_and_the_workers_name() -> None:
    template = check(manifest())
    pod = worker_pod(template, pod_name="svc-0a1b2c3d", worker_name="svc-0a1b2c3d@jobs", service="svc")
    assert pod["metadata"]["name"] == "svc-0a1b2c3d"
    assert pod["metadata"]["labels"] == {"app": "sj-worker", "version": "2", "scalablejob.io/service": "svc",
                                         "scalablejob.io/role": "worker"}  # fmt: skip
    assert pod["metadata"]["annotations"]["scalablejob.io/worker"] == "svc-0a1b2c3d@jobs"
    container = pod["spec"]["containers"][0]
    assert container["env"][0] == {"name": "SCALABLEJOB_WORKER_NAME", "value": "svc-0a1b2c3d@jobs"}
    assert {"name": "THREADS", "value": "8"} in container["env"]  # the client's models want strings
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "16Gi"}
    assert pod["spec"]["restartPolicy"] == "Never"
    assert template.grace_s == 620
    assert label_selector("svc") == "scalablejob.io/service=svc,scalablejob.io/role=worker"


def test_filling_in_one_pod_leaves_the_template_as_it_was() -> None:
    template = check(manifest())
    before = copy.deepcopy(template.manifest)
    worker_pod(template, pod_name="svc-1", worker_name="svc-1@jobs", service="svc")
    assert template.manifest == before


def broken(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    found = manifest()
    target = found
    for step in path[:-1]:
        target = target[step]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return found


@pytest.mark.parametrize(
    ("change", "field", "expected"),
    [
        ((("kind",), "Deployment"), "apiVersion/kind", "expected v1/Pod"),
        ((("spec", "containers"), []), "spec.containers", "first item is the worker"),
        ((("spec", "containers", 0, "command"), ["sh", "-c", "scalablejob worker x"]),
         "spec.containers[0].command/args", "not through a shell"),
        ((("spec", "containers", 0, "command"), None), "spec.containers[0].command/args", "scalablejob worker"),
        ((("spec", "containers", 0, "args"), ["-n", "me"]), "spec.containers[0].args", "drop -n/--hostname"),
        ((("spec", "restartPolicy"), "Always"), "spec.restartPolicy", "expected Never"),
        ((("spec", "terminationGracePeriodSeconds"), 300), "spec.terminationGracePeriodSeconds",
         "expected at least 610 = scalable_job.task_timeout_seconds (600) + scalable_job.cancel_grace_seconds (10)"),
        ((("spec", "terminationGracePeriodSeconds"), None), "spec.terminationGracePeriodSeconds",
         "got none (Kubernetes' default 30)"),
        ((("spec", "terminationGracePeriodSeconds"), "forever"), "spec.terminationGracePeriodSeconds",
         "an integer >= 0"),
        ((("spec", "containers", 0, "env", 1), {"name": "CUDA_VISIBLE_DEVICES", "value": "0"}),
         "spec.containers[0].env CUDA_VISIBLE_DEVICES", "resources.limits['nvidia.com/gpu']"),
        ((("spec", "containers", 0, "env", 1), {"name": "SCALABLEJOB_WORKER_NAME", "value": "x"}),
         "spec.containers[0].env SCALABLEJOB_WORKER_NAME", "the scaler sets"),
        ((("spec", "containers", 0, "env", 0), {"name": "OTHER", "value": "x"}),
         "spec.containers[0].env SCALABLEJOB_BROKER", "expected the broker URL"),
        ((("spec", "containers", 0, "resources"), None), "spec.containers[0].resources.limits['nvidia.com/gpu']",
         "expected 1 (metadata.gpu of CONFIG: each worker's GPUs), got none"),
    ],
)  # fmt: skip
def test_a_bad_template_is_one_error_naming_the_field_and_what_was_expected(
    change: tuple[tuple[Any, ...], Any], field: str, expected: str
) -> None:
    with pytest.raises(PodTemplateError) as caught:
        check(broken(*change))
    assert caught.value.field == field
    assert expected in str(caught.value)
    assert str(caught.value).startswith(f"pod.yaml: {field}: ")


def test_without_a_task_timeout_any_grace_period_is_taken() -> None:
    found = broken(("spec", "terminationGracePeriodSeconds"), 5)
    assert check(found, settings=ScalableJobConfig(task_timeout_s=None)).grace_s == 5


def test_a_cpu_service_refuses_a_template_that_asks_for_gpus() -> None:
    with pytest.raises(PodTemplateError, match=r"expected 0 \(metadata.gpu"):
        check(manifest(), gpu=0)


def test_a_file_that_is_not_one_mapping_is_refused() -> None:
    with pytest.raises(PodTemplateError, match="expected one Pod manifest"):
        parse_template(YAML + "\n---\n" + YAML, "pod.yaml")
    with pytest.raises(PodTemplateError, match="not YAML or JSON"):
        parse_template("kind: [", "pod.yaml")


@pytest.mark.parametrize(
    ("argv", "runs"),
    [
        (["scalablejob", "worker", "c.json"], True),
        (["/venv/bin/scalablejob", "worker", "c.json", "--app", "m"], True),
        (["python", "-m", "scalablejob", "worker", "c.json"], True),
        (["scalablejob", "scaler", "c.json"], False),
        (["sh", "-c", "exec scalablejob worker c.json"], False),
        ([], False),
    ],
)
def test_which_command_lines_run_the_worker(argv: list[str], runs: bool) -> None:
    assert runs_worker(argv) is runs


@pytest.mark.parametrize(
    ("service", "expected"),
    [("svc", "svc-0a1b2c3d"), ("My_Service", "my-service-0a1b2c3d"), ("A" * 63, "a" * 54 + "-0a1b2c3d")],
)
def test_pod_names_are_dns_labels_and_name_their_worker(service: str, expected: str) -> None:
    name = pod_name(service, "0a1b2c3d")
    assert name == expected and len(name) <= 63
    assert pod_of(worker_name(name, "jobs")) == name


def test_metadata_cpu_and_memory_become_the_worker_containers_requests_and_limits() -> None:
    found = manifest()
    del found["spec"]["containers"][0]["resources"]["limits"]["memory"]
    template = check_template(found, "pod.yaml", service="svc", gpu_per_worker=1, settings=SETTINGS, cpu=0.5,
                              memory_mb=512)  # fmt: skip
    container = worker_pod(template, pod_name="svc-0a1b2c3d", worker_name="w@jobs", service="svc")["spec"][
        "containers"
    ][0]
    resources = container["resources"]
    assert resources["requests"] == {"cpu": "500m", "memory": "512Mi"}
    assert resources["limits"] == {"nvidia.com/gpu": "1", "cpu": "500m", "memory": "512Mi"}
    # the worker is told that the pod holds it to them, so it makes no cgroup of its own
    assert {"name": "SCALABLEJOB_LIMITS_ENFORCED_BY", "value": "the pod's resources (Kubernetes)"} in container["env"]


def test_a_template_whose_resources_say_otherwise_than_the_config_is_refused_naming_the_field() -> None:
    with pytest.raises(PodTemplateError, match=r"spec.containers\[0\].resources.limits.memory.*expected 512Mi "
                                               r"\(metadata.memory of CONFIG\) or none, got 16Gi"):  # fmt: skip
        check_template(manifest(), "pod.yaml", service="svc", gpu_per_worker=1, settings=SETTINGS, memory_mb=512)
    whole = check_template(manifest(), "pod.yaml", service="svc", gpu_per_worker=1, settings=SETTINGS, cpu=2)
    assert whole.manifest["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "2"}
