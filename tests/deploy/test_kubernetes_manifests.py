"""deploy/kubernetes/ without a cluster: every object validates against the Kubernetes 1.33 schemas
(kubernetes-validate, strict: an unknown field is an error), and the objects say what the project needs: the RBAC
verbs are the scaler's, the service JSON and user code load with the project's loaders, the worker pod's grace period
covers a task's timeout and cancel grace, GPUs, resources, secrets and Redis' persistence."""

from __future__ import annotations

import json
import sys

import pytest
from deploy_facts import (
    DEPLOY,
    GPU_RESOURCE,
    KUBERNETES_VERSION,
    NAMESPACE,
    WORKER_TEMPLATES,
    scaler_labels,
    validation_errors,
)
from kube_objects import load_documents
from kubernetes_validate import utils as kubernetes_validate

from conftest import REPO
from scalablejob.api.user_code import load_job
from scalablejob.scaler import pod_template
from scalablejob.scaler.kube_api import POD_VERBS

pytest_plugins = ["deploy_fixtures"]

# What the scaler's Kubernetes pool calls on the core/v1 pod API (issue 25): the Role must grant exactly these.
SCALER_POD_VERBS = set(POD_VERBS)  # the pool's own, so that the Role and the calls cannot drift apart
EXAMPLE_LABEL = "scalablejob.io/example"  # on the objects with placeholder values
# What the GPU template may set beyond the CPU one: the GPU itself and how it lands on a GPU node
GPU_ONLY_FIELDS = ("nodeSelector", "tolerations", "affinity")


def test_the_installed_validator_knows_the_kubernetes_version():
    """kubernetes-validate falls back to an older schema silently: the version we claim must be one it ships."""
    assert f"{KUBERNETES_VERSION}.0" in kubernetes_validate.all_versions()


def test_every_file_has_objects_and_every_object_validates_strictly(manifests, worker_templates):
    files = sorted(DEPLOY.glob("*.yaml"))
    assert files, f"no manifests in {DEPLOY}"
    empty = [path.name for path in files if not load_documents(path)]
    errors = [err for path in files for doc in load_documents(path) for err in validation_errors(doc, path.name)]
    errors += [err for key, pod in worker_templates.items() for err in validation_errors(pod, key)]

    assert not empty, f"files with no object: {empty}"
    assert not errors, "\n".join(errors)


def test_every_object_is_in_the_namespace(manifests):
    namespaces = [obj["metadata"]["name"] for obj in manifests.of_kind("Namespace")]
    outside = [
        f"{obj['kind']}/{obj['metadata']['name']}" for obj in manifests.objects
        if obj["kind"] != "Namespace" and obj["metadata"].get("namespace") != NAMESPACE
    ]  # fmt: skip

    assert namespaces == [NAMESPACE]
    assert not outside, f"objects not in namespace {NAMESPACE}: {outside}"


def test_the_role_grants_exactly_the_pod_verbs_the_scaler_uses_to_the_scalers_account(manifests):
    role = manifests.get("Role", "scalablejob-scaler")
    binding = manifests.get("RoleBinding", "scalablejob-scaler")
    scaler = manifests.get("Deployment", "scalablejob-scaler")["spec"]["template"]["spec"]

    assert [(rule["apiGroups"], rule["resources"], set(rule["verbs"])) for rule in role["rules"]] == [
        ([""], ["pods"], SCALER_POD_VERBS)
    ]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "scalablejob-scaler"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": scaler["serviceAccountName"]}]
    manifests.get("ServiceAccount", scaler["serviceAccountName"])
    assert not manifests.of_kind("ClusterRole") and not manifests.of_kind("ClusterRoleBinding")


def test_only_the_scaler_gets_an_api_token(manifests, pods):
    with_token = [pod.source for pod in pods if pod.spec.get("automountServiceAccountToken", True)]

    assert with_token == ["Deployment/scalablejob-scaler"]


def test_the_service_json_and_user_code_load_with_the_projects_loaders(manifests, config, tmp_path, monkeypatch):
    handlers = tmp_path / "handlers.py"
    handlers.write_text(manifests.config_data("scalablejob-config")["handlers.py"], encoding="utf-8")
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    monkeypatch.chdir(tmp_path)

    job = load_job(str(handlers), config.name)

    assert job.service in (None, config.name)


def test_the_user_code_is_the_example_handlers_module(manifests):
    """One copy to keep: examples/handlers.py, which the quickstart and the README tour run."""
    code = manifests.config_data("scalablejob-config")["handlers.py"]

    assert code == (REPO / "examples" / "handlers.py").read_text(encoding="utf-8")


@pytest.mark.parametrize("key", WORKER_TEMPLATES)
def test_the_worker_pods_grace_period_covers_the_task_timeout_and_cancel_grace(worker_templates, config, key):
    timeout = config.scalable_job.task_timeout_s
    assert timeout is not None, "the example sets scalable_job.task_timeout_seconds: a worker's grace must cover it"

    grace = worker_templates[key]["spec"]["terminationGracePeriodSeconds"]

    assert grace >= timeout + config.scalable_job.cancel_grace_s


def test_the_worker_templates_pass_the_scalers_own_check_and_make_valid_pods(worker_templates, config):
    """What the scaler checks at start and sends for each worker: no error, and a pod that validates strictly too."""
    for key, pod in worker_templates.items():
        gpus = int(pod["spec"]["containers"][0]["resources"]["limits"].get(GPU_RESOURCE, 0))  # its metadata.gpu
        template = pod_template.check_template(
            pod, key, service=config.name, gpu_per_worker=gpus, settings=config.scalable_job,
            cpu=config.metadata.cpu, memory_mb=config.metadata.memory,
        )  # fmt: skip
        worker = pod_template.worker_pod(template, pod_name="inference-0123abcd", worker_name="w", service=config.name)

        assert not validation_errors(worker, key)
    assert pod_template.labels(config.name) == scaler_labels(config)


def test_the_cpu_worker_asks_for_the_configs_gpus_and_the_gpu_one_differs_only_in_gpus(worker_templates, config):
    cpu, gpu = (worker_templates[key] for key in WORKER_TEMPLATES)
    cpu_limits = cpu["spec"]["containers"][0]["resources"]["limits"]
    gpu_limits = gpu["spec"]["containers"][0]["resources"]["limits"]

    assert int(cpu_limits.get(GPU_RESOURCE, 0)) == config.metadata.gpu == 0
    assert int(gpu_limits[GPU_RESOURCE]) >= 1
    assert _without_gpus(cpu) == _without_gpus(gpu)


def _without_gpus(pod: dict) -> dict:
    pod = json.loads(json.dumps(pod))
    for field in GPU_ONLY_FIELDS:
        pod["spec"].pop(field, None)
    for limits in (pod["spec"]["containers"][0]["resources"][part] for part in ("limits", "requests")):
        limits.pop(GPU_RESOURCE, None)
    return pod


def test_every_container_sets_cpu_and_memory_requests_and_limits(manifests, pods):
    missing = [
        f"{pod.source}/{container['name']}: {part}.{resource}"
        for pod in pods for container in pod.containers() for part in ("requests", "limits")
        for resource in ("cpu", "memory") if resource not in container.get("resources", {}).get(part, {})
    ]  # fmt: skip

    assert not missing


def test_the_placeholder_secrets_and_only_they_carry_the_label_that_a_real_deployment_leaves_out(manifests):
    """README: `kubectl apply -f deploy/kubernetes/ -l 'scalablejob.io/example!=true'` after creating the secrets."""
    placeholders = {
        obj["metadata"]["name"] for obj in manifests.of_kind("Secret")
        if any("CHANGE-ME" in value for value in obj["stringData"].values())
    }  # fmt: skip
    marked = {
        obj["metadata"]["name"] for obj in manifests.objects if EXAMPLE_LABEL in obj["metadata"].get("labels", {})
    }

    assert placeholders == marked == {"scalablejob-broker", "scalablejob-frontend"}


def test_the_example_broker_url_carries_the_redis_password(manifests):
    secret = manifests.get("Secret", "scalablejob-broker")["stringData"]

    assert f":{secret['redis-password']}@scalablejob-redis:6379/" in secret["broker-url"]


def test_redis_keeps_its_append_only_file_on_a_claimed_volume(manifests):
    redis = manifests.get("StatefulSet", "scalablejob-redis")
    conf = manifests.config_data("scalablejob-redis")["redis.conf"].splitlines()
    claims = [claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]]
    mounts = {
        mount["name"]: mount["mountPath"]
        for mount in redis["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    }

    assert "appendonly yes" in conf
    assert f"dir {mounts[claims[0]]}" in conf
    assert redis["spec"]["replicas"] == 1
