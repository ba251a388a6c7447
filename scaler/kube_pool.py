"""`scalablejob scaler --kubernetes`: the pod pool's parts from the command line (cluster, namespace, template).

Everything is checked before the scaler starts: the client library, the cluster configuration, the template for
the service (scaler.pod_template), the namespace; each failure is one error that names what to change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scalablejob.model.config import ServiceConfig
from scalablejob.model.errors import KubernetesError, PodTemplateError
from scalablejob.scaler.kube_api import PodApi, connect_cluster, require_client
from scalablejob.scaler.pod_template import (
    PodTemplate,
    check_template,
    is_dns_label,
    parse_template,
    pod_name,
    worker_name,
)
from scalablejob.scaler.pods import PodLauncher

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KubernetesOptions:
    """The command line's choices for the pod pool."""

    worker_pod: str  # the Pod manifest file (YAML or JSON)
    kubeconfig: str | None = None  # None: in-cluster, then ~/.kube/config
    namespace: str | None = None  # None: the template's, else the cluster configuration's


@dataclass(frozen=True)
class PodPool:
    launcher: PodLauncher
    namespace: str
    template: PodTemplate


def load_template(config: ServiceConfig, path: str) -> PodTemplate:
    """The worker Pod template of `path`, checked for the service."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PodTemplateError(path, "(file)", f"cannot read it: {exc.strerror}") from exc
    return check_template(
        parse_template(text, path), path, service=config.name, gpu_per_worker=config.metadata.gpu,
        settings=config.scalable_job, cpu=config.metadata.cpu, memory_mb=config.metadata.memory,
    )  # fmt: skip


def build_pod_pool(config: ServiceConfig, options: KubernetesOptions, host: str) -> PodPool:
    """The pod launcher for the service, its namespace and template; raises before anything is created."""
    require_client()
    template = load_template(config, options.worker_pod)
    cluster = connect_cluster(options.kubeconfig)
    namespace = options.namespace or template.namespace or cluster.namespace
    if template.namespace and template.namespace != namespace:
        raise PodTemplateError(
            options.worker_pod, "metadata.namespace", f"the template names {template.namespace}, --namespace "
            f"{namespace}: expected the same namespace, or none in the template",
        )  # fmt: skip
    if not is_dns_label(namespace):
        raise KubernetesError(f"--namespace {namespace!r}: expected a DNS-1123 label (lowercase letters, digits, '-')")
    if config.scalable_job.task_timeout_s is None:
        logger.warning(
            "scalable_job.task_timeout_seconds is not set: a pod deleted by someone else than the scaler (a node "
            "drain, an eviction) kills a task still running after its %d s grace period", template.grace_s,
        )  # fmt: skip
    launcher = PodLauncher(PodApi(cluster, namespace), template, config.name, host)
    logger.info("worker pods in namespace %s (cluster configuration: %s)", namespace, cluster.source)
    return PodPool(launcher, namespace, template)


def pod_worker_names(service: str, namespace: str) -> Callable[[str], str]:
    """A new worker's name from a random token: `POD@NAMESPACE`, its pod named after the service."""

    def name(token: str) -> str:
        return worker_name(pod_name(service, token), namespace)

    return name
