"""Act on Pods: the scaler's Launcher for Kubernetes, one Pod per worker.

It keeps what the API server says of the service's pods (a list, then a watch from its resourceVersion, made again
when the server ends it) in a cache that a thread fills; the loop's calls read it and never wait on a watch. A pod's
death wakes the loop (`on_change`). Spawn creates a pod from the template; stop deletes it with the template's grace
period (its worker gets SIGTERM: Celery's warm shutdown finishes the running task); kill deletes it with none. A pod
that ended (its worker exited or was killed, the pod was evicted) is reported by reap, with the container's exit code,
and its object deleted. A delete the API server refused is made again at the next pass. Only the scaler that leads
the pool calls these (scaler.loop); `let_go` forgets a pod without touching it when the lead goes to another scaler.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from scalablejob.model.errors import KubernetesError
from scalablejob.scaler.kube_api import GONE, PodApi, PodApiError
from scalablejob.scaler.pod_status import created_at, pending_remark, pod_state
from scalablejob.scaler.pod_template import (
    STOP_ANNOTATION,
    WORKER_ANNOTATION,
    PodTemplate,
    label_selector,
    pod_of,
    worker_pod,
)
from scalablejob.scaler.pool import Exited, WorkerSpec
from scalablejob.scaler.records import ProcessRecord

logger = logging.getLogger(__name__)

RETRY_S = 1.0  # after a failed list or watch


class PodLauncher:
    """The service's worker pods in one namespace (see the module's docstring)."""

    def __init__(
        self, api: PodApi, template: PodTemplate, service: str, host: str, *,
        clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self._api = api
        self._template = template
        self._service = service
        self._host = host
        self._selector = label_selector(service)
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._seen: dict[str, dict[str, Any]] = {}  # pod name -> its last JSON from the API server
        self._known_since: dict[str, float] = {}  # pod name -> when this scaler first learnt of it
        self._gone: set[str] = set()  # pods seen deleted
        self._held: dict[str, str] = {}  # worker name -> pod name: the pods this scaler acts on
        self._deleting: dict[str, tuple[int, str]] = {}  # pod -> (grace s, why): deletes still to make
        self._pending_since: dict[str, float] = {}
        self._said: dict[str, str] = {}  # pod -> the Pending reason last logged
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.on_change: Callable[[], None] = lambda: None  # the loop's wake-up (a pod changed)

    def start(self) -> None:
        """Start watching the service's pods (a daemon thread)."""
        self._thread = threading.Thread(target=self._watch_loop, name="pod-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stopped.set()

    @property
    def names(self) -> list[str]:
        with self._lock:
            return list(self._held)

    # ---- the Launcher protocol -------------------------------------------------------------------------------

    def spawn(self, spec: WorkerSpec) -> ProcessRecord:
        """Create the worker's pod; a refusal of the API server is a KubernetesError (the loop backs off)."""
        pod = pod_of(spec.name)
        manifest = worker_pod(self._template, pod_name=pod, worker_name=spec.name, service=self._service)
        manifest["metadata"]["namespace"] = self._api.namespace
        created = self._api.create(manifest)
        with self._lock:
            self._learn(created)
            self._held[spec.name] = pod
        return ProcessRecord(spec.name, 0, 0.0, self._host, (), self._wall())

    def listed(self) -> list[ProcessRecord]:
        """The service's pods the API server lists now (by label), ended ones too (reap reports those)."""
        started = self._clock()
        items, _ = self._api.list(self._selector)
        with self._lock:
            self._replace(items, started)
            return [self._record(pod) for pod in items if _worker_of(pod)]

    def adopt(self, record: ProcessRecord) -> bool:
        """Take over a pod of the service that exists and names this worker (listed() read them just before)."""
        pod = pod_of(record.name)
        with self._lock:
            found = self._seen.get(pod)
            if found is None or pod in self._gone or _worker_of(found) != record.name:
                return False
            self._held[record.name] = pod
        return True

    def stop(self, name: str) -> None:
        """Warm shutdown: delete the pod with the template's grace period; its worker gets SIGTERM."""
        self._delete(name, self._template.grace_s, "scale-down: an idle worker, stopped warm")

    def kill(self, name: str) -> None:
        self._delete(name, 0, "killed: its presence stopped changing, or the scaler was stopped twice")

    def reap(self) -> list[Exited]:
        """The held pods that ended or are gone, with their worker's exit code (None when unknown)."""
        self._flush_deletes()
        exited: list[Exited] = []
        with self._lock:
            for name, pod in list(self._held.items()):
                state = pod_state(self._seen.get(pod, {}))
                if pod not in self._gone and not state.ended:
                    continue
                del self._held[name]
                self._pending_since.pop(pod, None)
                exited.append(Exited(name, state.exit_code))
                how = "deleted" if pod in self._gone else state.phase
                why = state.reason or "no reason given"
                logger.info("pod %s %s (%s), exit code %s", pod, how, why, state.exit_code)
                if pod not in self._gone and not state.terminating:
                    self._deleting[pod] = (0, f"ended: {state.phase}")  # the object of an ended pod goes too
        if exited:
            self._flush_deletes()
        return exited

    def kill_leftovers(self, name: str) -> int:
        """Nothing to do: a pod's processes end with its containers."""
        return 0

    def let_go(self, name: str) -> None:
        """Forget the worker's pod without touching it: another scaler leads the pool now."""
        with self._lock:
            pod = self._held.pop(name, None)
            if pod is not None:
                self._deleting.pop(pod, None)

    def remark(self) -> str:
        """The held pods that wait to start, for `status` ('' when none does)."""
        with self._lock:
            states = [pod_state(self._seen.get(pod, {"metadata": {"name": pod}})) for pod in self._held.values()]
            return pending_remark(states, self._pending_since, self._clock())

    # ---- the cache -----------------------------------------------------------------------------------------

    def _record(self, pod: dict[str, Any]) -> ProcessRecord:
        return ProcessRecord(_worker_of(pod), 0, 0.0, self._host, (), created_at(pod))

    def _learn(self, pod: dict[str, Any]) -> None:
        """Keep the pod's latest JSON (under the lock): a create's answer or a list read before a watch event
        arrived must not put an older state back."""
        name = str(pod.get("metadata", {}).get("name", ""))
        if name in self._seen and _older(pod, self._seen[name]):
            return
        self._seen[name] = pod
        self._known_since.setdefault(name, self._clock())
        state = pod_state(pod)
        if state.pending:
            self._pending_since.setdefault(name, self._clock())
            if state.reason and self._said.get(name) != state.reason and name in self._held.values():
                self._said[name] = state.reason
                logger.warning("pod %s is Pending: %s", name, state.reason)
        else:
            self._pending_since.pop(name, None)

    def _replace(self, items: list[dict[str, Any]], listed_at: float) -> None:
        """A fresh list: a pod known before the list began and missing from it is gone (under the lock)."""
        present = {str(pod.get("metadata", {}).get("name", "")) for pod in items}
        for name, since in list(self._known_since.items()):
            if name not in present and since < listed_at:
                self._gone.add(name)
        for pod in items:
            self._learn(pod)

    def _watch_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                started = self._clock()
                items, version = self._api.list(self._selector)
                with self._lock:
                    self._replace(items, started)
                self.on_change()
                for kind, pod in self._api.watch(self._selector, version):
                    if self._stopped.is_set():
                        return
                    self._apply(kind, pod)
            except PodApiError as exc:
                if exc.status != GONE:  # 410: the version is too old; a new list gives a new one
                    logger.warning("watching the pods of %s: %s; again in %g s", self._service, exc, RETRY_S)
                    self._stopped.wait(RETRY_S)
            except Exception:  # a bug must not end the watch for good: the loop would never see a pod end
                logger.exception("watching the pods of %s failed; again in %g s", self._service, RETRY_S)
                self._stopped.wait(RETRY_S)

    def _apply(self, kind: str, pod: dict[str, Any]) -> None:
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return  # BOOKMARK
        with self._lock:
            self._learn(pod)
            if kind == "DELETED":
                self._gone.add(str(pod.get("metadata", {}).get("name", "")))
        self.on_change()

    # ---- deletes -------------------------------------------------------------------------------------------

    def _delete(self, name: str, grace_s: int, why: str) -> None:
        with self._lock:
            pod = self._held.get(name)
            if pod is None:
                return
            previous = self._deleting.get(pod)
            if previous is None or grace_s < previous[0]:
                self._deleting[pod] = (grace_s, why)
        self._flush_deletes()

    def _flush_deletes(self) -> None:
        """Make the deletes asked for; one the API server refuses (or does not answer) stays for the next pass."""
        with self._lock:
            todo = dict(self._deleting)
        for pod, (grace_s, why) in todo.items():
            try:
                self._api.annotate(pod, {STOP_ANNOTATION: why})
                if not self._api.delete(pod, grace_s):
                    with self._lock:
                        self._gone.add(pod)
            except KubernetesError as exc:
                logger.warning("cannot delete pod %s yet (%s): trying again next pass", pod, exc)
                continue
            with self._lock:
                if self._deleting.get(pod) == (grace_s, why):
                    del self._deleting[pod]


def _older(pod: dict[str, Any], than: dict[str, Any]) -> bool:
    """Whether `pod` is an older state than `than`, by resourceVersion; the API calls them opaque, but they are etcd
    revisions, numbers that grow: when either is not a number, the new one is taken."""
    new, old = (str(item.get("metadata", {}).get("resourceVersion", "")) for item in (pod, than))
    return new.isdigit() and old.isdigit() and int(new) < int(old)


def _worker_of(pod: dict[str, Any]) -> str:
    return str((pod.get("metadata", {}).get("annotations") or {}).get(WORKER_ANNOTATION, ""))
