"""`scalablejob scaler`: wires the loop's parts for one service (Redis, real processes, GPUs, metrics) and runs it."""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scalablejob.api.celery_app import make_app
from scalablejob.host.gpus import (
    CUDA_VISIBLE_DEVICES,
    Gpu,
    NvmlInventory,
    StaticInventory,
    check_gpus,
    fake_gpus,
    visible_gpus,
    worker_capacity,
)
from scalablejob.model.config import ServiceConfig
from scalablejob.model.routing import service_queues
from scalablejob.scaler.events import TaskSentListener
from scalablejob.scaler.exporter import Exporter
from scalablejob.scaler.history import HistoryWriter
from scalablejob.scaler.loop import Fleet, Parts, Scaler
from scalablejob.scaler.membership import HOST_STALE_AFTER_S, Membership
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.scaler.pods import PodLauncher
from scalablejob.scaler.policy import Policy
from scalablejob.scaler.pool import Launcher, ProcessLauncher
from scalablejob.scaler.reconcile import STALE_AFTER_S, UNBACKED_AFTER_S
from scalablejob.scaler.reconciler import BackgroundRecovery
from scalablejob.scaler.records import ScalerStore
from scalablejob.scaler.recovery import Recovery
from scalablejob.scaler.wakeup import DEFAULT_INTERVAL_S, Wakeup
from scalablejob.store.broker import BROKER_ENV
from scalablejob.store.history import HistoryStore
from scalablejob.store.redis_url import connect

if TYPE_CHECKING:
    from scalablejob.scaler.kube_pool import KubernetesOptions

logger = logging.getLogger(__name__)

POD_NAME_ENV = "SCALABLEJOB_POD_NAME"  # with --kubernetes: the scaler's own pod (downward API), else its hostname


@dataclass(frozen=True)
class ScalerOptions:
    """The command line's choices, beside the service config and the broker."""

    config_path: str
    app_spec: str | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    metrics_port: int | None = None  # None: no metrics server; 0: a free port
    metrics_addr: str = "127.0.0.1"
    log_dir: Path | None = None
    stale_after_s: float = STALE_AFTER_S
    unbacked_after_s: float = UNBACKED_AFTER_S
    max_local: int | None = None  # the most workers this host may run (None: as many as the policy and GPUs allow)
    host_stale_after_s: float = HOST_STALE_AFTER_S
    prewarm: bool = True  # fork new workers from a warm parent (scaler.forkserver) where that is safe
    kubernetes: KubernetesOptions | None = None  # workers as Pods (scaler.kube_pool), not processes of this host


def service_gpus(config: ServiceConfig, fake: int | None) -> tuple[Gpu, ...]:
    """The GPUs workers may be pinned to; NVML is asked only when workers need GPUs, and must then work."""
    per_worker = config.metadata.gpu
    if per_worker == 0:
        return ()
    inventory = NvmlInventory() if fake is None else StaticInventory(fake_gpus(fake))
    gpus = visible_gpus(inventory.gpus(), os.environ.get(CUDA_VISIBLE_DEVICES))
    check_gpus(gpus, per_worker)
    return gpus


def worker_argv(options: ScalerOptions) -> list[str]:
    """`scalablejob worker` for this service, on this interpreter; the launcher adds `-n NAME`. The broker URL is
    not on it (any local user can read a command line): workers inherit it in BROKER_ENV (see build_scaler)."""
    argv = [sys.executable, "-m", "scalablejob", "worker", os.path.abspath(options.config_path)]
    return argv + (["--app", options.app_spec] if options.app_spec else [])


def build_scaler(config: ServiceConfig, broker_url: str, options: ScalerOptions, gpus: tuple[Gpu, ...]) -> Scaler:
    """The loop with real parts: Redis metrics and records, worker processes (or pods), kombu recovery, Prometheus."""
    pods = options.kubernetes
    host = (pods and os.environ.get(POD_NAME_ENV)) or socket.gethostname()  # a replica's identity: its pod's name
    os.environ[BROKER_ENV] = broker_url  # what the workers inherit (pool.worker_env), never their command line
    client = connect(broker_url)
    policy = Policy.from_config(config.autoscaler, None if pods else worker_capacity(gpus, config.metadata.gpu))
    capacity = min(policy.upper, options.max_local if options.max_local is not None else policy.upper)
    initial = max(policy.lower, min(config.metadata.instance, capacity))
    exporter = Exporter(config.name) if options.metrics_port is not None else None
    launcher: Launcher
    if pods is not None:  # the cluster's GPUs, not this host's: each pod asks for its own (nvidia.com/gpu)
        from scalablejob.scaler.kube_pool import build_pod_pool, pod_worker_names

        pool = build_pod_pool(config, pods, host)
        launcher, names, gpu_per_worker = pool.launcher, pod_worker_names(config.name, pool.namespace), 0
    else:
        launcher = ProcessLauncher(worker_argv(options), host, log_dir=options.log_dir, prewarm=options.prewarm)
        names, gpu_per_worker = None, config.metadata.gpu
    parts = Parts(
        metrics=RedisMetrics(client, config.name),
        launcher=launcher,
        recovery=BackgroundRecovery(
            Recovery(make_app(config.name, broker_url), client, config.name, unbacked_after_s=options.unbacked_after_s),
            Recovery(  # its own app and client: reconciles run on a thread beside the pass (scaler.reconciler)
                make_app(config.name, broker_url),
                connect(broker_url),
                config.name,
                unbacked_after_s=options.unbacked_after_s,
            ),
        ),
        store=ScalerStore(client, config.name, host),
        exporter=exporter,
        membership=Membership(client, config.name, host, capacity, stale_after_s=options.host_stale_after_s),
        history=HistoryWriter(HistoryStore(client, config.name), config.name),
    )
    fleet = Fleet(
        config.name, host, gpus, gpu_per_worker, min(initial, capacity), stale_after_s=options.stale_after_s,
        host_stale_after_s=options.host_stale_after_s, shared=pods is not None, worker_names=names,
    )  # fmt: skip
    return Scaler(fleet, policy, parts)


def run_scaler(config: ServiceConfig, broker_url: str, options: ScalerOptions, gpus: tuple[Gpu, ...]) -> int:
    """Run the scaler in the foreground until SIGTERM or Ctrl-C (twice: at once); returns the exit code."""
    scaler = build_scaler(config, broker_url, options, gpus)
    policy = scaler.policy
    logger.info(
        "scaler of %s: min %d, max %d (GPU bound %s), avg_waiting_length %g, windows up %g s / down %g s, "
        "to-zero grace %g s, observing every %g s",
        config.name, policy.min, policy.max, policy.gpu_capacity, policy.avg_waiting_length,
        policy.scale_up_window_s, policy.scale_down_window_s, policy.to_zero_grace_s, options.interval_s,
    )  # fmt: skip
    if scaler.parts.exporter is not None and options.metrics_port is not None:
        port = scaler.parts.exporter.serve(options.metrics_port, options.metrics_addr)
        logger.info("Prometheus metrics on http://%s:%d/metrics", options.metrics_addr, port)
    with Wakeup() as wakeup:
        listener = TaskSentListener(connect(broker_url), config.name, service_queues(config.name), wakeup.poke)
        listener.start()
        launcher = scaler.parts.launcher
        if isinstance(launcher, PodLauncher):
            launcher.on_change = wakeup.poke  # a pod that changes (ends) wakes the loop, as SIGCHLD does
            launcher.start()
        try:
            scaler.run(wakeup, interval_s=options.interval_s)
        finally:
            listener.stop()
            if isinstance(launcher, PodLauncher):
                launcher.close()
            if isinstance(scaler.parts.recovery, BackgroundRecovery):
                scaler.parts.recovery.stop()
    return 0
