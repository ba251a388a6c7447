"""What every `scalablejob` command shares: the broker options, how to reach a running broker, one-line errors.

Commands live in their own modules (core and component ones alike) and import this, never the group: the group
in scalablejob/cli.py registers them, so no command module depends on the CLI that wires it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from redis import Redis
from redis.exceptions import ConnectionError as BrokerUnreachable

from scalablejob.broker import BROKER_ENV, DATA_DIR_ENV, existing_broker
from scalablejob.broker import data_dir as data_folder
from scalablejob.config import ServiceConfig
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
