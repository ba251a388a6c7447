"""The `scalablejob` command line."""

from __future__ import annotations

import functools
import importlib
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from redis import Redis
from redis.exceptions import ConnectionError as BrokerUnreachable

from scalablejob.broker import BROKER_ENV, DATA_DIR_ENV, EmbeddedBroker, existing_broker, resolve_broker
from scalablejob.broker import data_dir as data_folder
from scalablejob.config import ServiceConfig, load_config
from scalablejob.errors import ScalableJobError

F = TypeVar("F", bound=Callable[..., Any])

broker_option = click.option(
    "--broker", envvar=BROKER_ENV, metavar="URL",
    help=f"Redis URL of the broker (env {BROKER_ENV}). Without it, the embedded redis-server of the data folder.",
)  # fmt: skip
data_dir_option = click.option(
    "--data-dir", envvar=DATA_DIR_ENV, type=click.Path(file_okay=False), default=None,
    help=f"Folder of the embedded broker's data (env {DATA_DIR_ENV}; default ./.scalablejob).",
)  # fmt: skip


def connect_broker(broker: str | None, data_dir: str | None) -> Redis:
    """A client of the broker a command names, or of the embedded one that runs; never starts one."""
    return Redis.from_url(existing_broker(broker, data_folder(data_dir)))


def service_of(config: ServiceConfig | None, service: str | None) -> str:
    """The service a command is about: --service, else the CONFIG argument's name."""
    name = service or (config.name if config else None)
    if not name:
        raise click.UsageError("expected CONFIG or --service NAME")
    return name


def reports_errors(command: F) -> F:
    """Turn our errors into a one-line message and exit status 1 instead of a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ScalableJobError as exc:
            raise click.ClickException(str(exc)) from exc
        except BrokerUnreachable as exc:
            raise click.ClickException(f"cannot reach the broker: {exc}") from exc

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="scalablejob")
def main() -> None:
    """scalablejob: an elastic, idle-first job service on Celery and Redis."""


@main.command(context_settings={"ignore_unknown_options": True})
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
    from workers.main import run_worker  # the worker's imports are not needed by the other commands

    service = load_config(config)
    url, embedded = resolve_broker(broker, data_folder(data_dir))
    try:
        sys.exit(run_worker(service, url, app_spec=app_spec, hostname=hostname, celery_args=celery_args))
    finally:
        if embedded is not None:
            embedded.stop()


@main.command()
@data_dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="Port on 127.0.0.1 (default: a free one).")
@reports_errors
def redis(data_dir: str | None, port: int | None) -> None:
    """Run the embedded redis-server of the data folder in the foreground; print its URL."""
    broker = EmbeddedBroker(data_folder(data_dir), port=port)
    url = broker.start()
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after the start: children inherit the mask
    click.echo(f"redis-server listening on {url} (data in {broker.folder}); Ctrl-C stops it")
    try:
        signal.sigwait(stop_signals)
    finally:
        broker.stop()


# Commands defined in their own modules register themselves on `main` when imported (they import `main`).
COMMAND_MODULES = (
    "scalablejob.cli_requests",
    "scalablejob.cli_status",
    "scalablejob.cli_watch",
    "scalablejob.cli_up",
    "scalablejob.cli_config",
    "frontend.cli",
    "scaler.cli",
)
for _module in COMMAND_MODULES:
    importlib.import_module(_module)
