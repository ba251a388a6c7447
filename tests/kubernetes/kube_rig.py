"""A Kubernetes pool without a cluster: the stand-in API server (standin.py), a redis-server, a worker Pod template
and real `scalablejob scaler --kubernetes` processes; one copy for the tests and bench/kubernetes_standin.py.

Every process started carries a marker in its environment (the scalers directly, the pods' workers through the
stand-in's base environment), and closing the rig kills whatever carries it, so a failing test leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from standin import StandIn

from scalablejob.local.redis_server import RedisServer
from scalablejob.local.scaler_process import RUN_MARKER_ENV, ScalerProcess, kill_marked
from scalablejob.model import keys
from scalablejob.scaler.main import POD_NAME_ENV

REPO = Path(__file__).resolve().parents[2]
HANDLERS = REPO / "tests" / "support" / "sj_test_handlers.py"
NAMESPACE = "jobs"
INTERVAL = ("--interval", "0.2")


def service(name: str, *, min: int, max: int, avg: float = 1, down_s: float = 1, gpu: int = 0,
            timeout_s: float = 20, **metadata: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": name, "type": "ScalableJob", "gpu": gpu, **metadata},
        "autoscaler": {"min": min, "max": max, "strategies": {"avg_waiting_length": avg},
                       "behavior": {"scaleDown": {"stabilizationWindowSeconds": down_s},
                                    "onZero": {"scaleDownGracePeriodSeconds": 2}}},
        "scalable_job": {"task_timeout_seconds": timeout_s, "cancel_grace_seconds": 2},
    }  # fmt: skip


def worker_template(config_path: Path, *, gpu: int = 0, grace_s: int = 25) -> dict[str, Any]:
    """The worker Pod manifest a user would write: `scalablejob worker CONFIG`, the broker from a Secret."""
    container: dict[str, Any] = {
        "name": "worker", "image": "scalablejob:stand-in",
        "command": [sys.executable, "-m", "scalablejob", "worker", str(config_path), "--app", str(HANDLERS)],
        "env": [{"name": "SCALABLEJOB_BROKER", "valueFrom": {"secretKeyRef": {"name": "broker", "key": "url"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
    }  # fmt: skip
    if gpu:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpu}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app.kubernetes.io/name": "sj-worker"}},
            "spec": {"terminationGracePeriodSeconds": grace_s, "containers": [container]}}  # fmt: skip


@dataclass
class KubeRig:
    standin: StandIn
    broker_url: str
    folder: Path
    config: dict[str, Any]
    marker: str
    client: redis.Redis
    scalers: list[ScalerProcess] = field(default_factory=list)

    @property
    def service(self) -> str:
        return str(self.config["metadata"]["name"])

    def start_scaler(self, name: str, *args: str) -> ScalerProcess:
        """A `scalablejob scaler --kubernetes` replica whose identity (its pod's name) is `name`."""
        scaler = ScalerProcess.start(
            self.folder / "service.json", self.broker_url, "--kubernetes", "--kubeconfig",
            str(self.folder / "kubeconfig"), "--worker-pod", str(self.folder / "worker-pod.json"), *INTERVAL, *args,
            marker=self.marker, log_path=self.folder / f"scaler-{name}-{len(self.scalers)}.log",
            env={POD_NAME_ENV: name},
        )  # fmt: skip
        self.scalers.append(scaler)
        return scaler

    def report(self, name: str) -> dict[str, str]:
        """The last pass of the scaler replica `name`, as `scalablejob status` reads it."""
        raw: Any = self.client.hgetall(keys.scaler_status(self.service, name))
        return {key.decode(): value.decode() for key, value in raw.items()}

    def workers(self, name: str) -> dict[str, str]:
        return dict(json.loads(self.report(name).get("workers", "{}")))

    def live_pods(self) -> dict[str, dict[str, Any]]:
        """The pods that exist and are not being deleted."""
        return {name: pod for name, pod in self.standin.pods().items() if not pod["metadata"].get("deletionTimestamp")}

    def logs(self) -> str:
        texts = [
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}" for path in sorted(self.folder.glob("*.log"))
        ]
        return "\n".join(texts)


@contextlib.contextmanager
def kube_rig(folder: Path, config: Mapping[str, Any], *, gpu_capacity: int | None = None,
             grace_s: int = 25) -> Iterator[KubeRig]:  # fmt: skip
    """A redis-server, the stand-in (with the broker Secret), the config, template and kubeconfig files; afterwards
    the scalers are stopped and every marked process is killed. A failing block prints the logs."""
    marker = uuid.uuid4().hex
    folder.mkdir(parents=True, exist_ok=True)
    config_path = folder / "service.json"
    config_path.write_text(json.dumps(config))
    template = worker_template(config_path, gpu=int(config["metadata"].get("gpu", 0)), grace_s=grace_s)
    (folder / "worker-pod.json").write_text(json.dumps(template))
    with RedisServer(folder / "redis", persistent=False) as server:
        base_env = {"PATH": "/usr/bin:/bin", RUN_MARKER_ENV: marker, "HOME": str(folder)}
        standin = StandIn(folder / "pods", secrets_data={"broker": {"url": server.url}}, base_env=base_env,
                          gpu_capacity=gpu_capacity, namespace=NAMESPACE)  # fmt: skip
        with standin:
            standin.kubeconfig(folder / "kubeconfig")
            rig = KubeRig(standin, server.url, folder, dict(config), marker, redis.Redis.from_url(server.url))
            try:
                yield rig
            except BaseException:
                print(rig.logs(), file=sys.stderr)
                raise
            finally:
                for scaler in rig.scalers:
                    scaler.kill()  # pods outlive their scaler by design: the stand-in's close ends them
                    scaler.close()
                rig.client.close()
        kill_marked(marker)
