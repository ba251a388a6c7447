"""`scalablejob scaler`: wires the loop's parts for one service (Redis, real processes, GPUs, metrics) and runs it."""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import redis

from scalablejob.celery_app import make_app, service_queues
from scalablejob.config import ServiceConfig
from scalablejob.gpus import (
    CUDA_VISIBLE_DEVICES,
    Gpu,
    NvmlInventory,
    StaticInventory,
    check_gpus,
    fake_gpus,
    visible_gpus,
    worker_capacity,
)
from scalablejob.scaler.events import TaskSentListener
from scalablejob.scaler.exporter import Exporter
from scalablejob.scaler.loop import Fleet, Parts, Scaler
from scalablejob.scaler.metrics import RedisMetrics
from scalablejob.scaler.policy import Policy
from scalablejob.scaler.pool import ProcessLauncher
from scalablejob.scaler.records import ScalerStore
from scalablejob.scaler.recovery import Recovery
from scalablejob.scaler.wakeup import DEFAULT_INTERVAL_S, Wakeup

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScalerOptions:
    """The command line's choices, beside the service config and the broker."""

    config_path: str
    app_spec: str | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    metrics_port: int | None = None  # None: no metrics server; 0: a free port
    metrics_addr: str = "127.0.0.1"
    log_dir: Path | None = None


def service_gpus(config: ServiceConfig, fake: int | None) -> tuple[Gpu, ...]:
    """The GPUs workers may be pinned to; NVML is asked only when workers need GPUs, and must then work."""
    per_worker = config.metadata.gpu
    if per_worker == 0:
        return ()
    inventory = NvmlInventory() if fake is None else StaticInventory(fake_gpus(fake))
    gpus = visible_gpus(inventory.gpus(), os.environ.get(CUDA_VISIBLE_DEVICES))
    check_gpus(gpus, per_worker)
    return gpus


def worker_argv(options: ScalerOptions, broker_url: str) -> list[str]:
    """`scalablejob worker` for this service, on this interpreter; the launcher adds `-n NAME`."""
    argv = [sys.executable, "-m", "scalablejob", "worker", os.path.abspath(options.config_path), "--broker", broker_url]
    return argv + (["--app", options.app_spec] if options.app_spec else [])


def build_scaler(config: ServiceConfig, broker_url: str, options: ScalerOptions, gpus: tuple[Gpu, ...]) -> Scaler:
    """The loop with real parts: Redis metrics and records, worker processes, kombu recovery, Prometheus."""
    host = socket.gethostname()
    client = redis.Redis.from_url(broker_url)
    policy = Policy.from_config(config.autoscaler, worker_capacity(gpus, config.metadata.gpu))
    initial = max(policy.lower, min(config.metadata.instance, policy.upper))
    exporter = Exporter(config.name) if options.metrics_port is not None else None
    parts = Parts(
        metrics=RedisMetrics(client, config.name),
        launcher=ProcessLauncher(worker_argv(options, broker_url), host, log_dir=options.log_dir),
        recovery=Recovery(make_app(config.name, broker_url), client, config.name),
        store=ScalerStore(client, config.name, host),
        exporter=exporter,
    )
    return Scaler(Fleet(config.name, host, gpus, config.metadata.gpu, initial), policy, parts)


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
        listener = TaskSentListener(redis.Redis.from_url(broker_url), service_queues(config.name), wakeup.poke)
        listener.start()
        try:
            scaler.run(wakeup, interval_s=options.interval_s)
        finally:
            listener.stop()
    return 0
