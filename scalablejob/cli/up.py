"""The `scalablejob up` command: the whole stack of a service, one command, Ctrl-C to stop."""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from scalablejob.cli.options import appendfsync_option, broker_option, data_dir_option, reports_errors
from scalablejob.local.flower import NO_AUTH_ENV as FLOWER_NO_AUTH_ENV
from scalablejob.local.ports import free_port
from scalablejob.model.config import DEFAULT_FRONTEND_PORT, load_config
from scalablejob.store.broker import BROKER_ENV
from scalablejob.store.broker import data_dir as data_folder

DEFAULT_FLOWER_PORT = 5555


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--app", "app_spec", metavar="MODULE", help="User code with the query handler, for every worker.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_FRONTEND_PORT, show_default=True,
              help="Port of the queue service front end.")  # fmt: skip
@click.option("--flower-port", type=click.IntRange(1, 65535), default=DEFAULT_FLOWER_PORT, show_default=True,
              help="Port of the Flower dashboard.")  # fmt: skip
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None,
              help="Port of the scaler's Prometheus metrics (default: a free one).")  # fmt: skip
@click.option("--flower-no-auth", is_flag=True, envvar=FLOWER_NO_AUTH_ENV,
              help=f"Flower without its login (env {FLOWER_NO_AUTH_ENV}): anyone who reaches its port sees "
                   "it.")  # fmt: skip
@broker_option
@data_dir_option
@appendfsync_option
@reports_errors
def up(
    config: str, app_spec: str | None, port: int, flower_port: int, metrics_port: int | None, flower_no_auth: bool,
    broker: str | None, data_dir: str | None, appendfsync: str,
) -> None:  # fmt: skip
    """Start the whole stack of the service in CONFIG and keep it up until Ctrl-C.

    Redis (embedded, with append-only persistence, unless --broker names one), the front end, the scaler
    (which starts the workers), Flower, and the config's front_end.script if it has one. It prints where each
    listens and the token. Ctrl-C stops it all: workers finish their running tasks first (a second Ctrl-C
    puts them back on the queue instead), and queued tasks are still there after the next `up`. SIGTERM, SIGHUP
    (a closed terminal) and `scalablejob down` in another terminal stop it the same way. One `up` per data folder:
    a second one names the first and exits 1.

    The embedded Redis requires a password, kept in the data folder's redis.password; Flower asks for the login in
    the data folder's flower-login. Neither is printed, nor passed on any command line.
    """
    from scalablejob.local.up import StackOptions, run_up

    if (warning := environment_broker_warning(click.get_current_context(), data_dir)) is not None:
        click.echo(warning, err=True)
    options = StackOptions(
        config_path=config, broker=broker, app_spec=app_spec, data_dir=data_folder(data_dir),
        frontend_port=port, flower_port=flower_port, metrics_port=metrics_port or free_port(),
        appendfsync=appendfsync, flower_auth=not flower_no_auth,
    )  # fmt: skip
    sys.exit(run_up(load_config(config), options))


def environment_broker_warning(context: click.Context, data_dir: str | None) -> str | None:
    """A warning when --data-dir is on the command line but the broker comes from the environment (a .env that a
    Procfile runner loaded): the folder's own Redis is then not started, which the command line does not show."""
    from_environment = context.get_parameter_source("broker") is ParameterSource.ENVIRONMENT
    if not from_environment or context.get_parameter_source("data_dir") is not ParameterSource.COMMANDLINE:
        return None
    return (f"Warning: using the broker that {BROKER_ENV} names, not a Redis of its own in {data_dir}: unset "
            f"{BROKER_ENV} (or start honcho with -e /dev/null) for one")  # fmt: skip
