"""A stand-in for the Kubernetes API server, for tests and benchmarks: no cluster runs here.

It serves the core/v1 pod calls the scaler makes, as the official client makes them (bearer token, JSON): list
and watch by label selector (watch=true streams ADDED/MODIFIED/DELETED events from a resourceVersion), create, get,
delete with gracePeriodSeconds, and merge patches of metadata labels and annotations. Any other call is answered
404 and kept in `unexpected`. Each pod's first container runs as a local process (its command and args, its env
with values, fieldRef metadata.name/namespace and secretKeyRef from the secrets given at start), as a kubelet would:
Pending -> Running -> Succeeded (exit 0) or Failed; a process killed by a signal exits 128 + the signal, as in a
container. Delete sets the deletionTimestamp, sends SIGTERM, SIGKILL after the grace period, and removes the pod
once its process ended; every process the container started ends with it (found by a marker in their environment,
as a container's cgroup would hold them). `gpu_capacity` is one node's `nvidia.com/gpu`: a pod asking for more
than is free stays Pending (Unschedulable), and is scheduled when a pod ends.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from scalablejob.host.processes import kill_processes_with_env

POD_MARKER_ENV = "STANDIN_POD_UID"  # in every process of a pod: what its "cgroup" holds
GPU = "nvidia.com/gpu"
_PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?$")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Pod:
    obj: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    kill_at: float | None = None  # monotonic time of the SIGKILL after a delete's grace period
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass(frozen=True)
class Deletion:
    """A delete call: when (monotonic), which pod, with what grace period."""

    at: float
    pod: str
    grace_s: int


class StandIn:
    """The stand-in API server; `with StandIn(...) as api:` serves on a free loopback port until the block ends."""

    def __init__(
        self, folder: Path, *, secrets_data: Mapping[str, Mapping[str, str]] | None = None,
        base_env: Mapping[str, str] | None = None, gpu_capacity: int | None = None, namespace: str = "jobs",
    ) -> None:  # fmt: skip
        self.folder = folder
        self.secrets = {name: dict(data) for name, data in (secrets_data or {}).items()}
        self.base_env = dict(base_env or {"PATH": os.environ.get("PATH", os.defpath)})
        self.gpu_capacity = gpu_capacity
        self.namespace = namespace
        self.token = secrets.token_hex(16)
        self.unexpected: list[str] = []  # calls outside the pod API the scaler may make
        self.calls: list[str] = []  # "VERB kind" of each call
        self.deletions: list[Deletion] = []
        self.created: list[tuple[float, str]] = []
        self._pods: dict[tuple[str, str], _Pod] = {}
        self._events: list[tuple[int, str, dict[str, Any]]] = []
        self._version = 0
        self._cond = threading.Condition()
        self._closing = False
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._threads: list[threading.Thread] = []

    # ---- life ----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StandIn:
        self.folder.mkdir(parents=True, exist_ok=True)
        for target in (self._server.serve_forever, self._kubelet):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and kill every pod's processes."""
        with self._cond:
            self._closing = True
            pods = list(self._pods.values())
            self._cond.notify_all()
        for pod in pods:
            self._kill(pod)
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig that points the official client at this stand-in (its token, its namespace)."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "standin",
            "clusters": [{"name": "standin", "cluster": {"server": self.url}}],
            "users": [{"name": "standin", "user": {"token": self.token}}],
            "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "standin",
                                                          "namespace": self.namespace}}],
        }  # fmt: skip
        path.write_text(json.dumps(config))
        return path

    # ---- what tests look at and do ---------------------------------------------------------------------------

    def pods(self) -> dict[str, dict[str, Any]]:
        """Every pod (of every namespace) by name, as the API would return it."""
        with self._cond:
            return {name: copy.deepcopy(pod.obj) for (_, name), pod in self._pods.items()}

    def phases(self) -> dict[str, str]:
        return {name: pod["status"]["phase"] for name, pod in self.pods().items()}

    def pid_of(self, name: str) -> int | None:
        with self._cond:
            for (_, pod_name), pod in self._pods.items():
                if pod_name == name and pod.process is not None and pod.process.poll() is None:
                    return pod.process.pid
        return None

    def set_gpu_capacity(self, capacity: int | None) -> None:
        with self._cond:
            self.gpu_capacity = capacity
            self._cond.notify_all()

    # ---- the kubelet and the scheduler --------------------------------------------------------------------

    def _kubelet(self) -> None:
        """Schedule Pending pods, start their processes, see them end, SIGKILL past the grace, remove the deleted."""
        while True:
            with self._cond:
                if self._closing:
                    return
                self._schedule()
                for key, pod in list(self._pods.items()):
                    self._tend(key, pod)
                self._cond.wait(0.02)

    def _gpus_used(self) -> int:
        return sum(_gpus(pod.obj) for pod in self._pods.values() if pod.obj["status"]["phase"] == "Running")

    def _schedule(self) -> None:
        for pod in self._pods.values():
            status = pod.obj["status"]
            if status["phase"] != "Pending" or pod.process is not None or pod.obj["metadata"].get("deletionTimestamp"):
                continue
            wanted = _gpus(pod.obj)
            if self.gpu_capacity is not None and wanted and self._gpus_used() + wanted > self.gpu_capacity:
                condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                             "message": f"0/1 nodes are available: 1 Insufficient {GPU}."}  # fmt: skip
                if status.get("conditions") != [condition]:
                    status["conditions"] = [condition]
                    self._changed("MODIFIED", pod)
                continue
            self._run(pod)

    def _run(self, pod: _Pod) -> None:
        container = pod.obj["spec"]["containers"][0]
        argv = [str(word) for word in [*(container.get("command") or []), *(container.get("args") or [])]]
        env = {**self.base_env, **self._env(pod.obj, container), POD_MARKER_ENV: pod.uid}
        env.setdefault("HOSTNAME", pod.obj["metadata"]["name"])
        log = (self.folder / f"{pod.obj['metadata']['name']}.log").open("ab")
        try:
            pod.process = subprocess.Popen(
                argv, env=env, cwd=container.get("workingDir") or self.folder, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            pod.obj["status"] = {"phase": "Failed", "reason": "StartError", "message": str(exc),
                                 "containerStatuses": [_terminated(container["name"], 128, "StartError")]}  # fmt: skip
            self._changed("MODIFIED", pod)
            return
        finally:
            log.close()
        pod.obj["status"] = {
            "phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}], "startTime": _now_iso(),
            "containerStatuses": [{"name": container["name"], "ready": True, "restartCount": 0,
                                   "state": {"running": {"startedAt": _now_iso()}}}],
        }  # fmt: skip
        self._changed("MODIFIED", pod)

    def _env(self, obj: dict[str, Any], container: Mapping[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                env[item["name"]] = {"metadata.name": obj["metadata"]["name"],
                                     "metadata.namespace": obj["metadata"]["namespace"]}[path]  # fmt: skip
            elif "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[item["name"]] = self.secrets[ref["name"]][ref["key"]]
        return env

    def _tend(self, key: tuple[str, str], pod: _Pod) -> None:
        """One look at a pod: SIGKILL past its grace; its process ended -> Succeeded/Failed, removed if deleted."""
        metadata, status = pod.obj["metadata"], pod.obj["status"]
        if pod.process is None:
            if metadata.get("deletionTimestamp"):
                self._remove(key, pod)
            return
        if pod.kill_at is not None and time.monotonic() >= pod.kill_at:
            self._kill(pod)
        code = pod.process.poll()
        if code is None:
            return
        if status["phase"] == "Running":
            kill_processes_with_env(POD_MARKER_ENV, pod.uid)  # the container's other processes end with it
            exit_code = code if code >= 0 else 128 - code
            name = pod.obj["spec"]["containers"][0]["name"]
            status["phase"] = "Succeeded" if exit_code == 0 else "Failed"
            status["containerStatuses"] = [_terminated(name, exit_code, "Completed" if exit_code == 0 else "Error")]
            self._changed("MODIFIED", pod)
        if metadata.get("deletionTimestamp"):
            self._remove(key, pod)

    def _kill(self, pod: _Pod) -> None:
        if pod.process is not None and pod.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                pod.process.send_signal(signal.SIGKILL)
        kill_processes_with_env(POD_MARKER_ENV, pod.uid)
        if pod.process is not None:
            pod.process.wait()

    def _remove(self, key: tuple[str, str], pod: _Pod) -> None:
        del self._pods[key]
        self._changed("DELETED", pod)

    def _changed(self, kind: str, pod: _Pod) -> None:
        """A new resourceVersion and a watch event (under the lock)."""
        self._version += 1
        pod.obj["metadata"]["resourceVersion"] = str(self._version)
        self._events.append((self._version, kind, copy.deepcopy(pod.obj)))
        self._cond.notify_all()

    # ---- the API -------------------------------------------------------------------------------------------

    def create(self, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = str((body.get("metadata") or {}).get("name", ""))
        if not _DNS_LABEL.fullmatch(name) or len(name) > 63:
            return 422, _status(422, "Invalid", f"Pod {name!r} is invalid: metadata.name: a lowercase RFC 1123 label")
        with self._cond:
            if (namespace, name) in self._pods:
                return 409, _status(409, "AlreadyExists", f'pods "{name}" already exists')
            obj = copy.deepcopy(body)
            obj.setdefault("apiVersion", "v1")
            obj.setdefault("kind", "Pod")
            pod = _Pod(obj)
            obj["metadata"].update(namespace=namespace, uid=pod.uid, creationTimestamp=_now_iso())
            obj["status"] = {"phase": "Pending"}
            self._pods[(namespace, name)] = pod
            self.created.append((time.monotonic(), name))
            self._changed("ADDED", pod)
            return 201, copy.deepcopy(obj)

    def delete(self, namespace: str, name: str, grace_s: int | None) -> tuple[int, dict[str, Any]]:
        with self._cond:
            pod = self._pods.get((namespace, name))
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{name}" not found')
            grace = int(pod.obj["spec"].get("terminationGracePeriodSeconds", 30) if grace_s is None else grace_s)
            self.deletions.append(Deletion(time.monotonic(), name, grace))
            kill_at = time.monotonic() + grace
            if pod.kill_at is not None and pod.kill_at <= kill_at:
                return 200, copy.deepcopy(pod.obj)  # a second delete may shorten the grace, never lengthen it
            first = pod.kill_at is None
            pod.kill_at = kill_at
            pod.obj["metadata"]["deletionTimestamp"] = _now_iso()
            pod.obj["metadata"]["deletionGracePeriodSeconds"] = grace
            if first and pod.process is not None and pod.process.poll() is None:
                pod.process.send_signal(signal.SIGTERM)
            self._changed("MODIFIED", pod)
            return 200, copy.deepcopy(pod.obj)

    def patch(self, namespace: str, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._cond:
            pod = self._pods.get((namespace, name))
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{name}" not found')
            if set(body) - {"metadata"} or set(body.get("metadata") or {}) - {"labels", "annotations"}:
                return 422, _status(422, "Invalid", "the stand-in patches metadata.labels and annotations only")
            for part in ("labels", "annotations"):
                for key, value in ((body.get("metadata") or {}).get(part) or {}).items():
                    target = pod.obj["metadata"].setdefault(part, {})
                    if value is None:
                        target.pop(key, None)
                    else:
                        target[key] = str(value)
            self._changed("MODIFIED", pod)
            return 200, copy.deepcopy(pod.obj)

    def listing(self, namespace: str, selector: str) -> dict[str, Any]:
        with self._cond:
            items = [copy.deepcopy(pod.obj) for (ns, _), pod in self._pods.items()
                     if ns == namespace and _matches(pod.obj, selector)]  # fmt: skip
            return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self._version)},
                    "items": items}  # fmt: skip

    def events_after(self, version: int, namespace: str, selector: str, until: float) -> list[dict[str, Any]] | None:
        """The events after `version` (waiting for some until `until`); None once the stand-in closes."""
        with self._cond:
            while True:
                if self._closing:
                    return None
                found = [
                    {"type": kind, "object": obj}
                    for at, kind, obj in self._events
                    if at > version and obj["metadata"]["namespace"] == namespace and _matches(obj, selector)
                ]
                if found or time.monotonic() >= until:
                    return found
                self._cond.wait(min(0.5, max(0.0, until - time.monotonic())))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, and chunked watch streams

            def log_message(self, *_: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_DELETE(self) -> None:
                self._serve("DELETE")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def _serve(self, verb: str) -> None:
                url = urlparse(self.path)
                query = {key: values[-1] for key, values in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}") if length else {}
                if self.headers.get("Authorization") != f"Bearer {standin.token}":
                    self._reply(401, _status(401, "Unauthorized", "Unauthorized"))
                    return
                match = _PODS.match(url.path)
                if match is None or verb == "PUT":
                    standin.unexpected.append(f"{verb} {self.path}")
                    self._reply(404, _status(404, "NotFound", f"the stand-in does not serve {verb} {url.path}"))
                    return
                namespace, name = match.groups()
                if verb == "GET" and name is None and query.get("watch") in ("true", "1"):
                    standin.calls.append("WATCH pods")
                    self._watch(namespace, query)
                    return
                standin.calls.append(f"{verb} {'pod' if name else 'pods'}")
                if verb == "GET" and name is None:
                    self._reply(200, standin.listing(namespace, query.get("labelSelector", "")))
                elif verb == "POST" and name is None:
                    self._reply(*standin.create(namespace, body))
                elif verb == "GET" and name is not None:
                    self._reply(*standin.get(namespace, name))
                elif verb == "DELETE" and name is not None:
                    grace = query.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
                    self._reply(*standin.delete(namespace, name, None if grace is None else int(grace)))
                elif verb == "PATCH" and name is not None:
                    self._reply(*standin.patch(namespace, name, body))
                else:
                    standin.unexpected.append(f"{verb} {self.path}")
                    self._reply(405, _status(405, "MethodNotAllowed", f"{verb} {url.path}"))

            def _reply(self, code: int, document: dict[str, Any]) -> None:
                data = json.dumps(document).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _watch(self, namespace: str, query: Mapping[str, str]) -> None:
                """Stream events as JSON lines until timeoutSeconds; the connection closes at the end."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")  # as the API server streams: a chunk per event
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                version = int(query.get("resourceVersion") or 0)
                until = time.monotonic() + float(query.get("timeoutSeconds") or 60)
                selector = query.get("labelSelector", "")
                with contextlib.suppress(OSError):
                    while time.monotonic() < until:
                        events = standin.events_after(version, namespace, selector, until)
                        if events is None:
                            break
                        for event in events:
                            data = json.dumps(event).encode() + b"\n"
                            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                            version = int(event["object"]["metadata"]["resourceVersion"])
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")

        return Handler

    def get(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._cond:
            pod = self._pods.get((namespace, name))
            if pod is None:
                return 404, _status(404, "NotFound", f'pods "{name}" not found')
            return 200, copy.deepcopy(pod.obj)


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
            "code": code}  # fmt: skip


def _terminated(name: str, exit_code: int, reason: str) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": _now_iso()}}}  # fmt: skip


def _gpus(obj: Mapping[str, Any]) -> int:
    limits = (obj["spec"]["containers"][0].get("resources") or {}).get("limits") or {}
    return int(limits.get(GPU, 0))


def _matches(obj: Mapping[str, Any], selector: str) -> bool:
    labels = obj["metadata"].get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True
