"""The `scalablejob` command line: the one place that wires every command, the core's and the components', into
one group. It sits above every layer: no module of the package imports it but `__main__`."""

from __future__ import annotations

import click

from scalablejob.cli_config import config
from scalablejob.cli_down import down
from scalablejob.cli_redis import redis
from scalablejob.cli_requests import cancel, logs, submit
from scalablejob.cli_status import status
from scalablejob.cli_up import up
from scalablejob.cli_watch import watch
from scalablejob.frontend.cli import frontend
from scalablejob.scaler.cli import scaler
from scalablejob.workers.cli import worker


@click.group()
@click.version_option(package_name="scalablejob")
def main() -> None:
    """scalablejob: an elastic, idle-first job service on Celery and Redis."""


for command in (up, down, worker, scaler, frontend, redis, submit, status, watch, logs, cancel, config):
    main.add_command(command)
