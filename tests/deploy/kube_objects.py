"""Reading deploy/kubernetes/ without a cluster: its files' objects, the pods each one makes, label selectors, and the
files a pod's ConfigMap volumes put at a path. Pure apart from reading the folder; the tests decide what must hold."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

# Kinds whose spec.template is a pod template (the pods they make carry its labels)
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job")


def load_documents(path: Path) -> list[Obj]:
    """The objects of a YAML file, empty documents left out (as kubectl does)."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


@dataclass(frozen=True)
class Manifests:
    """Every object of the folder, by kind and name."""

    objects: tuple[Obj, ...]

    @classmethod
    def read(cls, folder: Path) -> Manifests:
        return cls(tuple(doc for path in sorted(folder.glob("*.yaml")) for doc in load_documents(path)))

    def of_kind(self, kind: str) -> list[Obj]:
        return [obj for obj in self.objects if obj.get("kind") == kind]

    def get(self, kind: str, name: str) -> Obj:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
        return found[0]

    def config_data(self, name: str) -> Mapping[str, str]:
        """A ConfigMap's data."""
        return self.get("ConfigMap", name).get("data", {})

    def secret_keys(self, name: str) -> set[str]:
        secret = self.get("Secret", name)
        return set(secret.get("stringData", {})) | set(secret.get("data", {}))


@dataclass(frozen=True)
class PodSpecOf:
    """A pod spec and the labels its pods carry, named after what makes them (`Deployment/x`, `worker-pod.yaml`)."""

    source: str
    labels: Mapping[str, str]
    spec: Obj

    @property
    def first_container(self) -> Obj:
        return self.spec["containers"][0]

    def containers(self) -> Iterator[Obj]:
        yield from self.spec.get("initContainers", [])
        yield from self.spec["containers"]


def workload_pods(manifests: Manifests) -> list[PodSpecOf]:
    """The pod templates of the workloads (Deployment, StatefulSet...)."""
    return [
        PodSpecOf(f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["metadata"].get("labels", {}),
                  obj["spec"]["template"]["spec"])
        for kind in WORKLOAD_KINDS for obj in manifests.of_kind(kind)
    ]  # fmt: skip


def pod_of(source: str, pod: Obj) -> PodSpecOf:
    """A Pod object (such as the worker template) as the pods it makes."""
    return PodSpecOf(source, pod.get("metadata", {}).get("labels", {}), pod["spec"])


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels and matchExpressions) matches `labels`; an empty one matches all."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    return all(_matches(expression, labels) for expression in selector.get("matchExpressions", []))


def _matches(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
    if operator == "In":
        return labels.get(key) in values
    if operator == "NotIn":
        return labels.get(key) not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    raise AssertionError(f"unknown label selector operator {operator!r}")


def mounted_files(manifests: Manifests, pod: PodSpecOf, container: Obj) -> dict[str, str]:
    """The files a container sees from its ConfigMap volumes: path -> text (a volume's `items`, or all its keys)."""
    volumes = {volume["name"]: volume for volume in pod.spec.get("volumes", [])}
    files: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" not in volume:
            continue
        data = manifests.config_data(volume["configMap"]["name"])
        assert "subPath" not in mount, "a subPath mount is never updated when its ConfigMap changes"
        items = volume["configMap"].get("items") or [{"key": key, "path": key} for key in data]
        files.update({f"{mount['mountPath'].rstrip('/')}/{item['path']}": data[item["key"]] for item in items})
    return files


def env_refs(container: Obj) -> Iterator[tuple[str, str, str, str]]:
    """(env name, kind, object name, key) of each secretKeyRef and configMapKeyRef of a container's env."""
    for entry in container.get("env", []):
        source = entry.get("valueFrom", {})
        for field, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            if field in source:
                yield entry["name"], kind, source[field]["name"], source[field]["key"]


def pod_named(pods: list[PodSpecOf], source: str) -> PodSpecOf:
    """The pods of one workload or template, by `PodSpecOf.source`."""
    return next(pod for pod in pods if pod.source == source)


def command_of(container: Obj) -> list[str]:
    """A container's command and args: the argv it runs (before the kubelet's $(VAR) expansion)."""
    return [*container.get("command", []), *container.get("args", [])]


def env_source(container: Obj, name: str) -> tuple[str, str, str] | None:
    """(kind, object name, key) of the secret or config key a container's variable `name` comes from."""
    refs = [(kind, obj, key) for env, kind, obj, key in env_refs(container) if env == name]
    return refs[0] if refs else None
