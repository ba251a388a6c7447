"""Facts of deploy/kubernetes/ that its tests share: where it is, the Kubernetes version it is checked against, the
names its objects agree on, the labels the scaler adds to worker pods, and strict validation of one object."""

from __future__ import annotations

from kubernetes_validate import utils as kubernetes_validate

from conftest import REPO
from scalablejob.model.config import ServiceConfig

DEPLOY = REPO / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"
NAMESPACE = "scalablejob"
WORKER_POD_CONFIGMAP = "scalablejob-worker-pod"
WORKER_TEMPLATES = ("worker-pod.yaml", "worker-pod-gpu.yaml")
GPU_RESOURCE = "nvidia.com/gpu"
# The labels the scaler adds to every worker pod it makes from the template (which keeps the template's own).
# The pool's own function (scalablejob.scaler.pod_template.labels) is checked against them (test_kubernetes_manifests).
SCALER_WORKER_LABELS = {"scalablejob.io/service": "{service}", "scalablejob.io/role": "worker"}


def validation_errors(obj: dict, where: str) -> list[str]:
    """Why `obj` does not validate against Kubernetes' schema (strict); a kind with no schema is an error too."""
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(step) for step in exc.path)
        return [f"{where}: {obj.get('kind')}/{obj.get('metadata', {}).get('name')} at {path or '.'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc.message}"]
    return []


def scaler_labels(config: ServiceConfig) -> dict[str, str]:
    """The labels the scaler adds to the service's worker pods."""
    return {key: value.format(service=config.name) for key, value in SCALER_WORKER_LABELS.items()}
