"""The few core/v1 pod calls the Kubernetes pool makes, through the official client, as plain dicts.

List and watch the service's pods by label, create, get, delete with a grace period, patch metadata: nothing else
of the cluster is read or written (secrets and config maps reach the worker through the pod spec). Every failure is
one KubernetesError naming the call, the pod and what the API server said.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scalablejob.model.errors import KubernetesError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'scalablejob[kubernetes]'"
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
DEFAULT_NAMESPACE = "default"
REQUEST_TIMEOUT_S = 10.0  # one call; a watch is ended by the server after WATCH_S and made again
WATCH_S = 60
NOT_FOUND = 404
GONE = 410
# the RBAC verbs on pods that PodApi's calls need, and all that deploy/kubernetes/10-rbac.yaml grants (a test checks)
POD_VERBS = frozenset({"list", "watch", "create", "get", "delete", "patch"})


def require_client() -> Any:
    """The `kubernetes` package, or the error that says how to install it."""
    return _client()


def _client() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise KubernetesError(f"--kubernetes needs the Kubernetes client library: {INSTALL_HINT}") from exc
    return kubernetes


@dataclass(frozen=True)
class Cluster:
    """Where the pool's pods live: the API client and the namespace of the cluster configuration."""

    api: Any  # kubernetes.client.ApiClient
    namespace: str
    source: str  # "in-cluster" or the kubeconfig file, for the log


def connect_cluster(kubeconfig: str | None) -> Cluster:
    """The cluster of `kubeconfig`; without one, the pod's own service account (in-cluster), then ~/.kube/config
    (or $KUBECONFIG), as kubectl finds it."""
    kubernetes = _client()
    config = kubernetes.config
    if kubeconfig is None:
        configuration = kubernetes.client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
            namespace = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else ""
            return Cluster(kubernetes.client.ApiClient(configuration), namespace or DEFAULT_NAMESPACE, "in-cluster")
        except config.ConfigException:
            pass  # not in a pod: the kubeconfig file, as kubectl would
    path = os.path.expanduser(kubeconfig or os.environ.get("KUBECONFIG", "~/.kube/config"))
    if not os.path.exists(path):
        raise KubernetesError(
            f"no cluster configuration: not in a pod (no in-cluster service account) and no kubeconfig at {path}; "
            "give --kubeconfig FILE"
        )
    try:
        api = config.new_client_from_config(config_file=path)
        _, active = config.list_kube_config_contexts(config_file=path)
    except (config.ConfigException, OSError, ValueError, KeyError) as exc:
        raise KubernetesError(f"--kubeconfig {path}: cannot use it: {exc}") from exc
    namespace = str((active or {}).get("context", {}).get("namespace") or DEFAULT_NAMESPACE)
    return Cluster(api, namespace, path)


class PodApi:
    """core/v1 pods of one namespace, as dicts (the API's own JSON)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        kubernetes = _client()
        self._kubernetes = kubernetes
        self._core = kubernetes.client.CoreV1Api(cluster.api)
        self.namespace = namespace

    def list(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        """The pods matching `selector`, and the list's resourceVersion (a watch starts from it)."""
        found = self._call("list pods", selector, self._core.list_namespaced_pod, self.namespace,
                           label_selector=selector)  # fmt: skip
        return list(found.get("items") or []), str(found.get("metadata", {}).get("resourceVersion", ""))

    def watch(self, selector: str, resource_version: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, pod) from `resource_version` on, until the server ends the watch (after WATCH_S); a
        PodApiError with status 410 when the version is too old (list again)."""
        try:
            response = self._core.list_namespaced_pod(
                self.namespace, label_selector=selector, resource_version=resource_version, watch=True,
                timeout_seconds=WATCH_S, _preload_content=False,
                _request_timeout=(REQUEST_TIMEOUT_S, WATCH_S + REQUEST_TIMEOUT_S),
            )  # fmt: skip
        except Exception as exc:  # the client raises its ApiException or urllib3's errors
            raise self._error("watch pods", selector, exc) from exc
        try:
            for line in self._kubernetes.watch.watch.iter_resp_lines(response):
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, found = str(event.get("type")), dict(event.get("object") or {})
                if kind == "ERROR":
                    message = f"watch pods {selector}: {found.get('code')}: {found.get('message')}"
                    raise PodApiError(message, found.get("code"))
                yield kind, found
        except PodApiError:
            raise
        except Exception as exc:  # the connection broke, or a line is not JSON
            raise self._error("watch pods", selector, exc) from exc
        finally:
            response.close()
            response.release_conn()

    def create(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        name = str(pod["metadata"]["name"])
        return self._call("create pod", name, self._core.create_namespaced_pod, self.namespace, dict(pod))

    def get(self, name: str) -> dict[str, Any] | None:
        """The pod, None when there is none."""
        try:
            return self._call("get pod", name, self._core.read_namespaced_pod, name, self.namespace)
        except PodApiError as exc:
            if exc.status == NOT_FOUND:
                return None
            raise

    def delete(self, name: str, grace_s: int) -> bool:
        """Delete the pod: its containers get SIGTERM, and SIGKILL after `grace_s`; False when it was already gone."""
        try:
            self._call("delete pod", name, self._core.delete_namespaced_pod, name, self.namespace,
                       grace_period_seconds=grace_s)  # fmt: skip
        except PodApiError as exc:
            if exc.status == NOT_FOUND:
                return False
            raise
        return True

    def annotate(self, name: str, annotations: Mapping[str, str]) -> None:
        """Merge-patch the pod's annotations (a pod already gone is fine)."""
        body = {"metadata": {"annotations": dict(annotations)}}
        try:
            self._call("patch pod", name, self._core.patch_namespaced_pod, name, self.namespace, body,
                       _content_type="application/merge-patch+json")  # fmt: skip
        except PodApiError as exc:
            if exc.status != NOT_FOUND:
                raise

    def _call(self, what: str, name: str, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            response = method(*args, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S, **kwargs)
            return dict(json.loads(response.data))
        except Exception as exc:  # the client raises its ApiException or urllib3's errors
            raise self._error(what, name, exc) from exc

    def _error(self, what: str, name: str, exc: Exception) -> PodApiError:
        status = getattr(exc, "status", None)
        body = getattr(exc, "body", None)
        try:
            detail = json.loads(body)["message"] if body else str(exc)
        except (ValueError, KeyError, TypeError):
            detail = str(body or exc)
        where = f"{what} {name} in namespace {self.namespace}"
        code = status if isinstance(status, int) else None
        return PodApiError(f"{where}: {status or type(exc).__name__}: {detail}", code)


class PodApiError(KubernetesError):
    """A pod call failed; `status` is the HTTP status the API server answered (None: it did not answer)."""

    def __init__(self, message: str, status: int | None) -> None:
        super().__init__(message)
        self.status = status
