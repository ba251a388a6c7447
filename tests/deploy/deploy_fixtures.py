"""The fixtures of the tests of deploy/kubernetes/: its objects, the service config its ConfigMap holds, the worker
Pod templates as the scaler reads them, and every kind of pod the manifests make."""

from __future__ import annotations

import pytest
import yaml
from deploy_facts import DEPLOY, WORKER_POD_CONFIGMAP, WORKER_TEMPLATES, scaler_labels
from kube_objects import Manifests, PodSpecOf, pod_of, workload_pods

from scalablejob.model.config import ServiceConfig, load_config


@pytest.fixture(scope="module")
def manifests() -> Manifests:
    return Manifests.read(DEPLOY)


@pytest.fixture(scope="module")
def worker_templates(manifests: Manifests) -> dict[str, dict]:
    data = manifests.config_data(WORKER_POD_CONFIGMAP)
    return {key: yaml.safe_load(data[key]) for key in WORKER_TEMPLATES}


@pytest.fixture(scope="module")
def pods(manifests: Manifests, worker_templates: dict[str, dict], config: ServiceConfig) -> list[PodSpecOf]:
    """Every kind of pod the manifests make: the workloads' and the worker pods the scaler makes from each template
    (with the labels it adds)."""
    workers = [pod_of(key, pod) for key, pod in worker_templates.items()]
    added = scaler_labels(config)
    return workload_pods(manifests) + [PodSpecOf(pod.source, {**pod.labels, **added}, pod.spec) for pod in workers]


@pytest.fixture(scope="module")
def config(manifests: Manifests, tmp_path_factory: pytest.TempPathFactory) -> ServiceConfig:
    """The service JSON of the ConfigMap, read as the pods read it: a file, through the project's loader."""
    path = tmp_path_factory.mktemp("config") / "service.json"
    path.write_text(manifests.config_data("scalablejob-config")["service.json"], encoding="utf-8")
    return load_config(path)
