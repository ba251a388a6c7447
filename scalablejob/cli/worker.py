"""The `scalablejob worker` command. Only click is imported here: the worker's own imports (Celery, user code)
wait until the command runs."""

from __future__ import annotations

import sys

import click

from scalablejob.cli.options import broker_option, data_dir_option, reports_errors
from scalablejob.local.embedded_broker import resolve_broker
from scalablejob.model.config import load_config
from scalablejob.store.broker import data_dir as data_folder

PREWARMED_MODULES = (
    "scalablejob.workers.main", "scalablejob.workers.celery_worker", "celery.apps.worker", "celery.bin.celery",
    "scalablejob.transport.connection",
)  # fmt: skip


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--app", "app_spec", metavar="MODULE", help="User code with the query handler: module[:attribute] or file.py."
)
@click.option("--hostname", "-n", metavar="NAME", help="Celery node name (default SERVICE-PID@HOST).")
@broker_option
@data_dir_option
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
@reports_errors
def worker(
    config: str, app_spec: str | None, hostname: str | None, broker: str | None, data_dir: str | None,
    celery_args: tuple[str, ...],
) -> None:  # fmt: skip
    """Run one worker of the service in CONFIG: a real Celery worker on its command and query queues.

    Without --broker, it uses the embedded redis-server of the data folder, and starts one if none runs.
    Extra arguments after the options go to `celery worker` as they are (e.g. `-- -l DEBUG`).
    """
    from scalablejob.workers.main import run_worker

    service = load_config(config)
    url, embedded = resolve_broker(broker, data_folder(data_dir))
    try:
        sys.exit(run_worker(service, url, app_spec=app_spec, hostname=hostname, celery_args=celery_args))
    finally:
        if embedded is not None:
            embedded.stop()


def prewarm(args: list[str]) -> None:
    """Import what `worker ARGS` runs (Celery, the worker, the config, the user's module) without running it: a fork
    server (scaler.forkserver) calls it once, so that the workers it forks skip those imports."""
    import importlib

    from scalablejob.api.user_code import load_job

    for module in PREWARMED_MODULES:
        importlib.import_module(module)
    params = worker.make_context("worker", list(args)).params
    service = load_config(params["config"])
    if params["app_spec"]:
        load_job(params["app_spec"], service.name)
