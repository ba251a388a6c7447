"""The worker Pod template of `scalablejob scaler --kubernetes --worker-pod FILE`: parsed, checked once at start, and
filled in for each worker. Pure: text in, plain dicts out (scaler.pods sends them to the API server).

The template is the user's Pod manifest; the scaler adds what makes the pod one of the service's workers: its name,
its labels (the scaler lists and watches its pods by them) and the environment that names the worker. The checks say
at start, naming the field, what would otherwise fail later: a worker that is not `scalablejob worker`, a pod that
Kubernetes would restart in place (its tasks never put back), a grace period shorter than a task, GPUs pinned by hand.
"""

from __future__ import annotations

import copy
import json
import math
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scalablejob.host.gpus import CUDA_VISIBLE_DEVICES
from scalablejob.host.processes import WORKER_NAME_ENV
from scalablejob.host.worker_limits import LIMITS_BY_ENV
from scalablejob.model.config import ScalableJobConfig
from scalablejob.model.errors import PodTemplateError
from scalablejob.store.broker import BROKER_ENV

SERVICE_LABEL = "scalablejob.io/service"
ROLE_LABEL = "scalablejob.io/role"
WORKER_ROLE = "worker"
WORKER_ANNOTATION = "scalablejob.io/worker"  # the worker's node name (a label value cannot hold its `@`)
STOP_ANNOTATION = "scalablejob.io/stopped-by-scaler"  # why the scaler deleted the pod, for `kubectl describe`
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_GRACE_S = 30  # Kubernetes' terminationGracePeriodSeconds when the manifest gives none
RESTART_NEVER = "Never"
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_NAME_SUFFIX = 9  # "-" and 8 hex digits


@dataclass(frozen=True)
class PodTemplate:
    """A checked template: the manifest as given (restartPolicy Never filled in) and its grace period."""

    manifest: Mapping[str, Any]
    grace_s: int
    namespace: str | None  # metadata.namespace of the template, if it names one


def parse_template(text: str, source: str) -> dict[str, Any]:
    """The manifest in `text`, YAML or JSON (JSON is YAML); one document, a mapping."""
    import yaml  # PyYAML comes with the kubernetes extra, the only user of templates

    try:
        documents = [document for document in yaml.safe_load_all(text) if document is not None]
    except yaml.YAMLError as exc:
        raise PodTemplateError(source, "(document)", f"not YAML or JSON: {exc}") from exc
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise PodTemplateError(source, "(document)", f"expected one Pod manifest (a mapping), got {len(documents)} "
                               "document(s)")  # fmt: skip
    return documents[0]


def check_template(
    manifest: Mapping[str, Any],
    source: str,
    *,
    service: str,
    gpu_per_worker: int,
    settings: ScalableJobConfig,
    cpu: float | None = None,
    memory_mb: int | None = None,
) -> PodTemplate:
    """The template, checked for the service: see the module's docstring for what and why. `cpu` and `memory_mb`
    (metadata.cpu and metadata.memory) become the worker container's requests and limits."""  # fmt: skip
    check_label_value(service, source, "the service name (metadata.name of CONFIG)")
    if manifest.get("kind") != "Pod" or manifest.get("apiVersion") != "v1":
        found = f"{manifest.get('apiVersion')}/{manifest.get('kind')}"
        raise PodTemplateError(source, "apiVersion/kind", f"expected v1/Pod, got {found}")
    spec = _mapping(manifest.get("spec"), source, "spec")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers or not isinstance(containers[0], dict):
        raise PodTemplateError(source, "spec.containers", "expected a list whose first item is the worker")
    first = containers[0]
    _check_command(first, source)
    _check_env(containers, source)
    _check_broker(first, source)
    _check_gpus(first, source, gpu_per_worker)
    policy = spec.get("restartPolicy", RESTART_NEVER)
    if policy != RESTART_NEVER:
        raise PodTemplateError(
            source, "spec.restartPolicy", f"expected Never (or none), got {policy}: a worker restarted in place by the "
            "kubelet keeps its name, so the scaler never sees it die and never puts its tasks back at once",
        )  # fmt: skip
    grace = _grace(spec, source, settings)
    filled = _with_strings(copy.deepcopy(dict(manifest)))
    filled["spec"]["restartPolicy"] = RESTART_NEVER
    _fill_resources(
        filled["spec"]["containers"][0], source, {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory_mb)}
    )
    metadata = _mapping(manifest.get("metadata", {}), source, "metadata")
    namespace = metadata.get("namespace")
    return PodTemplate(filled, grace, str(namespace) if namespace else None)


def worker_pod(template: PodTemplate, *, pod_name: str, worker_name: str, service: str) -> dict[str, Any]:
    """The manifest of one worker's pod: the template with its name, labels, annotation and the worker's name in
    the first container's environment (WORKER_NAME_ENV: `scalablejob worker` takes it as its node name)."""
    pod = copy.deepcopy(dict(template.manifest))
    metadata = dict(pod.get("metadata") or {})
    metadata.pop("generateName", None)
    metadata["name"] = pod_name
    metadata["labels"] = {**(metadata.get("labels") or {}), **labels(service)}
    metadata["annotations"] = {**(metadata.get("annotations") or {}), WORKER_ANNOTATION: worker_name}
    pod["metadata"] = metadata
    first = pod["spec"]["containers"][0]
    first["env"] = [{"name": WORKER_NAME_ENV, "value": worker_name}, *(first.get("env") or [])]
    return pod


def _with_strings(manifest: dict[str, Any]) -> dict[str, Any]:
    """The values YAML reads as numbers where the API wants strings (`nvidia.com/gpu: 1`, `version: 2`, an env
    `value: 8`) as strings: kubectl sends them as given, but the Python client checks its models strictly."""
    metadata = manifest.get("metadata") or {}
    for part in ("labels", "annotations"):
        if isinstance(metadata.get(part), dict):
            metadata[part] = {key: str(value) for key, value in metadata[part].items()}
    spec = manifest.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        resources = container.get("resources") or {}
        for part in ("limits", "requests"):
            if isinstance(resources.get(part), dict):
                resources[part] = {key: str(value) for key, value in resources[part].items()}
        for item in container.get("env") or []:
            if "value" in item and not isinstance(item["value"], str):
                item["value"] = str(item["value"]).lower() if isinstance(item["value"], bool) else str(item["value"])
    return manifest


def labels(service: str) -> dict[str, str]:
    """The labels of the service's worker pods."""
    return {SERVICE_LABEL: service, ROLE_LABEL: WORKER_ROLE}


def label_selector(service: str) -> str:
    """The selector that lists and watches exactly the service's worker pods."""
    return ",".join(f"{key}={value}" for key, value in labels(service).items())


def pod_name(service: str, token: str) -> str:
    """A pod name (a DNS-1123 label) from the service and a random hex `token`: the service lowercased, other
    characters as `-`, cut to fit 63 characters."""
    stem = re.sub(r"[^a-z0-9-]+", "-", service.lower()).strip("-")[: 63 - _NAME_SUFFIX].rstrip("-") or "worker"
    return f"{stem}-{token}"


def worker_name(pod: str, namespace: str) -> str:
    """A pod's worker node name: Celery's `name@host` form, the pod's name before the `@`, its namespace after."""
    return f"{pod}@{namespace}"


def pod_of(worker: str) -> str:
    """The pod of a worker node name (worker_name's inverse)."""
    return worker.rsplit("@", 1)[0]


def check_label_value(value: str, source: str, what: str) -> None:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise PodTemplateError(
            source, SERVICE_LABEL, f"{what} {value!r} is not a valid label value: expected at most 63 letters, "
            "digits, '-', '_' or '.', starting and ending with a letter or digit",
        )  # fmt: skip


def is_dns_label(name: str) -> bool:
    return len(name) <= 63 and bool(_DNS_LABEL.fullmatch(name))


def _mapping(value: Any, source: str, field: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PodTemplateError(source, field, f"expected a mapping, got {json.dumps(value)[:60]}")
    return value


def runs_worker(argv: Sequence[str]) -> bool:
    """Whether a container's command + args run `scalablejob worker` itself (its console script, or `python -m
    scalablejob`), not through a shell, which would keep SIGTERM from the worker."""
    words = [str(word) for word in argv]
    for index, word in enumerate(words):
        if posixpath.basename(word) == "scalablejob" and words[index + 1 : index + 2] == ["worker"]:
            return True
        if word == "-m" and words[index + 1 : index + 3] == ["scalablejob", "worker"]:
            return True
    return False


def _check_command(container: Mapping[str, Any], source: str) -> None:
    argv = [*(container.get("command") or []), *(container.get("args") or [])]
    if not runs_worker(argv):
        raise PodTemplateError(
            source, "spec.containers[0].command/args", f"expected the first container to run `scalablejob worker "
            f"CONFIG` (or `python -m scalablejob worker CONFIG`), not through a shell, so that the pod's SIGTERM "
            f"reaches the worker; got {json.dumps(argv)}",
        )  # fmt: skip
    if any(str(word) in ("-n", "--hostname") or str(word).startswith("--hostname=") for word in argv):
        raise PodTemplateError(source, "spec.containers[0].args", "the scaler names each worker after its pod "
                               f"(env {WORKER_NAME_ENV}): drop -n/--hostname")  # fmt: skip


def _check_env(containers: Sequence[Any], source: str) -> None:
    for index, container in enumerate(containers):
        for item in (container.get("env") or []) if isinstance(container, dict) else []:
            name = item.get("name") if isinstance(item, dict) else None
            if name == CUDA_VISIBLE_DEVICES:
                raise PodTemplateError(
                    source, f"spec.containers[{index}].env {CUDA_VISIBLE_DEVICES}", "GPUs come from the first "
                    f"container's resources.limits['{GPU_RESOURCE}'] (the device plugin gives the pod its GPUs): "
                    "drop it",
                )  # fmt: skip
            if name == WORKER_NAME_ENV:
                raise PodTemplateError(source, f"spec.containers[{index}].env {WORKER_NAME_ENV}", "the scaler sets "
                                       "the worker's name (its pod's): drop it")  # fmt: skip


def _check_broker(container: Mapping[str, Any], source: str) -> None:
    names = {item.get("name") for item in container.get("env") or [] if isinstance(item, dict)}
    argv = [str(word) for word in [*(container.get("command") or []), *(container.get("args") or [])]]
    if BROKER_ENV not in names and not any(word == "--broker" or word.startswith("--broker=") for word in argv):
        raise PodTemplateError(
            source, f"spec.containers[0].env {BROKER_ENV}", "expected the broker URL (best from a Secret: valueFrom."
            "secretKeyRef), else the worker would start a Redis of its own in its pod",
        )  # fmt: skip


def _check_gpus(container: Mapping[str, Any], source: str, gpu_per_worker: int) -> None:
    limits = (container.get("resources") or {}).get("limits") or {}
    raw = limits.get(GPU_RESOURCE, 0)
    try:
        given = int(raw)
    except (TypeError, ValueError):
        given = -1
    if given != gpu_per_worker:
        raise PodTemplateError(
            source, f"spec.containers[0].resources.limits['{GPU_RESOURCE}']", f"expected {gpu_per_worker} "
            f"(metadata.gpu of CONFIG: each worker's GPUs), got {raw if raw else 'none'}",
        )  # fmt: skip


def cpu_quantity(cores: float | None) -> str | None:
    """metadata.cpu as a Kubernetes quantity: whole cores as they are, else millicores (0.5 -> 500m)."""
    if cores is None:
        return None
    return str(int(cores)) if float(cores).is_integer() else f"{round(cores * 1000)}m"


def memory_quantity(mb: int | None) -> str | None:
    """metadata.memory (MB, as the worker's own cgroup limit counts them: MiB) as a Kubernetes quantity."""
    return None if mb is None else f"{mb}Mi"


def _fill_resources(container: dict[str, Any], source: str, wanted: Mapping[str, str | None]) -> None:
    """The config's cpu and memory as the worker container's requests and limits (the same: the pod is guaranteed
    what the worker's own cgroup would hold it to); a template that says otherwise is an error naming the field."""
    resources = container.setdefault("resources", {})
    for name, quantity in wanted.items():
        if quantity is None:
            continue
        for part in ("requests", "limits"):
            given = (resources.get(part) or {}).get(name)
            if given is not None and str(given) != quantity:
                raise PodTemplateError(
                    source, f"spec.containers[0].resources.{part}.{name}",
                    f"expected {quantity} (metadata.{name} of CONFIG) or none, got {given}",
                )  # fmt: skip
            resources.setdefault(part, {})[name] = quantity
    if any(quantity is not None for quantity in wanted.values()):
        env = container.setdefault("env", [])
        env.insert(0, {"name": LIMITS_BY_ENV, "value": "the pod's resources (Kubernetes)"})


def needed_grace_s(settings: ScalableJobConfig) -> int | None:
    """The shortest grace period that lets a deleted pod's worker finish a task: the task timeout plus the cancel
    grace (a timed-out command gets that long between SIGTERM and SIGKILL); None without a task timeout."""
    if settings.task_timeout_s is None:
        return None
    return math.ceil(settings.task_timeout_s + settings.cancel_grace_s)


def _grace(spec: Mapping[str, Any], source: str, settings: ScalableJobConfig) -> int:
    raw = spec.get("terminationGracePeriodSeconds", DEFAULT_GRACE_S)
    if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
        raise PodTemplateError(source, "spec.terminationGracePeriodSeconds", f"expected seconds (an integer >= 0), "
                               f"got {json.dumps(raw)}")  # fmt: skip
    needed = needed_grace_s(settings)
    if needed is not None and raw < needed:
        given = "none (Kubernetes' default 30)" if "terminationGracePeriodSeconds" not in spec else str(raw)
        raise PodTemplateError(
            source, "spec.terminationGracePeriodSeconds", f"expected at least {needed} = "
            f"scalable_job.task_timeout_seconds ({settings.task_timeout_s:g}) + scalable_job.cancel_grace_seconds "
            f"({settings.cancel_grace_s:g}), so that a deleted pod's worker finishes its task (warm shutdown) before "
            f"the kubelet's SIGKILL; got {given}",
        )  # fmt: skip
    return raw
