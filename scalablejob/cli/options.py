"""What every `scalablejob` command shares: the broker options, how to reach a running broker, one-line errors.

Commands live in their own modules (core and component ones alike) and import this, never the group: the group
in scalablejob/cli/main.py registers them, so no command module depends on the CLI that wires it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from redis import Redis
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as BrokerUnreachable
from redis.exceptions import TimeoutError as BrokerSilent

from scalablejob.local.broker_advice import silent_broker_advice
from scalablejob.local.redis_server import APPENDFSYNC_CHOICES, DEFAULT_APPENDFSYNC
from scalablejob.model.config import ServiceConfig
from scalablejob.model.errors import BrokerNotAnswering, BrokerNotRunning, ScalableJobError
from scalablejob.store.broker import BROKER_ENV, DATA_DIR_ENV, existing_broker
from scalablejob.store.broker import data_dir as data_folder
from scalablejob.store.redis_url import connect

F = TypeVar("F", bound=Callable[..., Any])

APPENDFSYNC_ENV = "SCALABLEJOB_APPENDFSYNC"

broker_option = click.option(
    "--broker", envvar=BROKER_ENV, metavar="URL",
    help=f"Redis URL of the broker, e.g. redis://:PASSWORD@HOST:6379/0 (env {BROKER_ENV}: better, a command line "
    "is readable by every local user). Without it, the embedded redis-server of the data folder.",
)  # fmt: skip
appendfsync_option = click.option(
    "--appendfsync", type=click.Choice(APPENDFSYNC_CHOICES), envvar=APPENDFSYNC_ENV, default=DEFAULT_APPENDFSYNC,
    show_default=True,
    help=f"When the embedded Redis syncs its append-only file to disk (env {APPENDFSYNC_ENV}): always (every write, "
    "slowest), everysec (a crash loses at most the last second) or no (when the OS decides).",
)  # fmt: skip
data_dir_option = click.option(
    "--data-dir", envvar=DATA_DIR_ENV, type=click.Path(file_okay=False), default=None,
    help=f"Folder of the embedded broker's data (env {DATA_DIR_ENV}; default ./.scalablejob).",
)  # fmt: skip


def broker_url(broker: str | None, data_dir: str | None) -> str:
    """The URL of the broker a command names, or of the embedded one that runs; never starts one. When the embedded
    one does not answer while an `up` runs in the folder, the error says so (not "start `scalablejob up`")."""
    folder = data_folder(data_dir)
    try:
        return existing_broker(broker, folder)
    except BrokerNotRunning as exc:
        advice = silent_broker_advice(folder, "nothing answers on its port")
        if advice is None:
            raise
        raise BrokerNotRunning(advice) from exc
    except BrokerNotAnswering as exc:
        advice = silent_broker_advice(folder, str(exc))  # None without an `up`: a frozen `scalablejob redis`
        raise BrokerNotAnswering(advice or f"the embedded broker of {folder} runs but {exc}") from exc


def connect_broker(broker: str | None, data_dir: str | None, **options: Any) -> Redis:
    """A client of `broker_url`'s broker (`options` as redis.Redis takes them)."""
    return connect(broker_url(broker, data_dir), **options)


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
        except AuthenticationError as exc:
            raise click.ClickException(
                f"the broker refused our credentials ({exc}): give its password in the URL, or use the data folder "
                "of the `scalablejob up` that runs it"
            ) from exc
        except BrokerUnreachable as exc:
            raise click.ClickException(f"cannot reach the broker: {exc}") from exc
        except BrokerSilent as exc:
            raise click.ClickException(f"the broker did not answer in time: {exc}") from exc

    return wrapper  # type: ignore[return-value]
