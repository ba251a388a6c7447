"""The `scalablejob scaler` command (the group in scalablejob/cli/main.py registers it).

Only click is imported here: the scaler's own imports (Celery, psutil, Prometheus) wait until the command runs.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from scalablejob.cli.options import broker_option, data_dir_option, reports_errors

if TYPE_CHECKING:
    from scalablejob.scaler.kube_pool import KubernetesOptions
from scalablejob.scaler.forkserver import PREWARM_ENV
from scalablejob.scaler.membership import HOST_STALE_AFTER_S
from scalablejob.scaler.reconcile import STALE_AFTER_S, UNBACKED_AFTER_S
from scalablejob.scaler.wakeup import DEFAULT_INTERVAL_S

FAKE_GPUS_ENV = "SCALABLEJOB_FAKE_GPUS"
_DEFAULT = click.core.ParameterSource.DEFAULT
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--app", "app_spec", metavar="MODULE", help="User code with the query handler, given to every worker.")
@broker_option
@data_dir_option
@click.option(
    "--interval", type=click.FloatRange(0.05, 1.0), default=DEFAULT_INTERVAL_S, show_default=True, metavar="SECONDS",
    help="Time between two observations of the queues and workers (at most 1 s); a worker's death wakes it early.",
)  # fmt: skip
@click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
    help="Serve Prometheus metrics on PORT (0: a free port, logged at start). Off when not given.",
)  # fmt: skip
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, help="Address the metrics server binds.")
@click.option(
    "--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Write each worker's output to DIR/<worker>.log (default: this command's own output).",
)  # fmt: skip
@click.option(
    "--fake-gpus", type=click.IntRange(0), envvar=FAKE_GPUS_ENV, default=None, metavar="N",
    help=f"Hand out N made-up GPUs instead of the ones nvidia-ml-py lists (env {FAKE_GPUS_ENV}; tests, demos).",
)  # fmt: skip
@click.option(
    "--stale-after", type=click.FloatRange(1.0), default=STALE_AFTER_S, show_default=True, metavar="SECONDS",
    help="Kill and replace a worker whose heartbeat is older than this (frozen, or cut off from Redis); its tasks go "
    "back on the queue once it is dead.",
)  # fmt: skip
@click.option(
    "--unbacked-after", type=click.FloatRange(1.0, 10.0), default=UNBACKED_AFTER_S, show_default=True,
    metavar="SECONDS",
    help="Re-send a request that has been queued or running with no message and no live worker behind it this long.",
)  # fmt: skip
@click.option(
    "--max-local", type=click.IntRange(0), default=None, metavar="N",
    help="The most workers this host may run (its share of the service's desired count never exceeds it). "
    "Default: as many as max and the GPUs allow.",
)  # fmt: skip
@click.option(
    "--host-stale-after", type=click.FloatRange(2.0, 15.0), default=HOST_STALE_AFTER_S, show_default=True,
    metavar="SECONDS",
    help="With scalers on several hosts: a host not heard from this long is declared dead; its workers' tasks go "
    "back on the queue and its share goes to the other hosts.",
)  # fmt: skip
@click.option(
    "--prewarm/--no-prewarm", default=True, envvar=PREWARM_ENV, show_default=True,
    help="Start new workers by forking a warm parent that has imported Celery, the config and --app once (about "
    "0.1 s instead of a cold start); falls back to cold starts, with a warning, when the user module starts threads "
    f"or CUDA at import (env {PREWARM_ENV}). Ignored with --kubernetes: pods start from their image.",
)  # fmt: skip
@click.option(
    "--kubernetes", is_flag=True,
    help="Run each worker as a Pod made from --worker-pod, through the Kubernetes API (list, watch, create, get, "
    "delete and patch of pods, nothing else), instead of processes of this host. Replicas of this scaler share the "
    "pods: the one holding the leader lease acts on them, the others stand by.",
)  # fmt: skip
@click.option(
    "--worker-pod", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
    help="With --kubernetes: the worker Pod manifest (YAML or JSON); its first container runs `scalablejob worker "
    "CONFIG`. The scaler fills in each pod's name, labels and the worker's name.",
)  # fmt: skip
@click.option(
    "--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
    help="With --kubernetes: the cluster configuration (default: in-cluster, then ~/.kube/config or $KUBECONFIG).",
)  # fmt: skip
@click.option(
    "--namespace", default=None, metavar="NS",
    help="With --kubernetes: the namespace of the worker pods (default: the template's, else the configuration's).",
)  # fmt: skip
@click.option("--verbose", "-v", is_flag=True, help="Log every pass, not only the decisions that change something.")
@click.pass_context
@reports_errors
def scaler(
    ctx: click.Context, config: str, app_spec: str | None, broker: str | None, data_dir: str | None,
    interval: float, metrics_port: int | None, metrics_addr: str, log_dir: Path | None, fake_gpus: int | None,
    stale_after: float, unbacked_after: float, max_local: int | None, host_stale_after: float, prewarm: bool,
    kubernetes: bool, worker_pod: str | None, kubeconfig: str | None, namespace: str | None, verbose: bool,
) -> None:  # fmt: skip
    """Run the autoscaler of the service in CONFIG: it owns the service's worker processes on this host.

    Every --interval it reads the queue depths and each worker's state, and keeps
    clamp(ceil((queued + running) / avg_waiting_length), min, max) workers (bounded by the GPUs), each pinned
    to its own GPUs with CUDA_VISIBLE_DEVICES. It grows at once, shrinks after the scaleDown window by stopping
    idle workers (warm shutdown), goes to zero after the onZero grace period, replaces workers that die and
    puts their tasks back on the queue at once. A restarted scaler adopts the workers of its previous run.

    --app is loaded once before anything starts: a module that does not load is one clear error (exit 1),
    not workers that keep dying.

    SIGTERM or Ctrl-C stops every worker warmly (running tasks finish) and exits; a second one kills them,
    and their tasks go back on the queue. With --kubernetes, it leaves the pods to the next scaler instead.
    """
    from scalablejob.local.embedded_broker import resolve_broker
    from scalablejob.local.up import check_user_code
    from scalablejob.model.config import load_config
    from scalablejob.scaler.main import ScalerOptions, run_scaler, service_gpus
    from scalablejob.store.broker import data_dir as data_folder

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    logging.getLogger("scalablejob.scaler").setLevel(logging.DEBUG if verbose else logging.INFO)
    service = load_config(config)
    pods = pod_options(ctx, kubernetes, worker_pod, kubeconfig, namespace)
    if pods is not None:  # the library and the template, before anything starts
        from scalablejob.scaler.kube_api import require_client
        from scalablejob.scaler.kube_pool import load_template

        require_client()
        load_template(service, pods.worker_pod)
    gpus = () if pods else service_gpus(service, fake_gpus)  # no driver with gpu > 0: fail before starting anything
    if app_spec and not pods:
        check_user_code(app_spec, service.name)  # in a throwaway process, as the workers will load it
    options = ScalerOptions(
        config, app_spec, interval, metrics_port, metrics_addr, log_dir, stale_after, unbacked_after, max_local,
        host_stale_after, prewarm, pods,
    )  # fmt: skip
    url, embedded = resolve_broker(broker, data_folder(data_dir))
    try:
        sys.exit(run_scaler(service, url, options, gpus))
    finally:
        if embedded is not None:
            embedded.stop()


PROCESS_ONLY = ("app_spec", "log_dir", "fake_gpus", "max_local")  # what has no meaning for pods
POD_ONLY = ("worker_pod", "kubeconfig", "namespace")


def pod_options(
    ctx: click.Context, kubernetes: bool, worker_pod: str | None, kubeconfig: str | None, namespace: str | None
) -> KubernetesOptions | None:
    """The pod pool's options, or None without --kubernetes; options of the other kind of pool are an error (the
    pod's own command line takes --app; --prewarm is left as it is: pods start from their image)."""
    from scalablejob.scaler.kube_pool import KubernetesOptions

    given = {name for name in (*PROCESS_ONLY, *POD_ONLY) if ctx.get_parameter_source(name) is not _DEFAULT}
    if not kubernetes:
        if wrong := sorted(given & set(POD_ONLY)):
            raise click.UsageError(f"{_flags(wrong)}: only with --kubernetes")
        return None
    if wrong := sorted(given & set(PROCESS_ONLY)):
        raise click.UsageError(
            f"{_flags(wrong)}: not with --kubernetes (workers are pods: --app goes on the worker pod's command line, "
            "their output is the pods' log, and the cluster's nodes bound the GPUs)"
        )
    if worker_pod is None:
        raise click.UsageError("--kubernetes needs --worker-pod FILE (the worker Pod manifest)")
    return KubernetesOptions(worker_pod, kubeconfig, namespace)


def _flags(names: list[str]) -> str:
    flags = {"app_spec": "--app", "log_dir": "--log-dir", "fake_gpus": "--fake-gpus", "max_local": "--max-local"}
    return ", ".join(flags.get(name, "--" + name.replace("_", "-")) for name in names)
