"""The `scalablejob` command line: the one place that wires every command, the core's and the components', into
one group. It sits above every layer: no module of the package imports it but `__main__`."""

from __future__ import annotations

import click

from scalablejob.cli.config import config
from scalablejob.cli.down import down
from scalablejob.cli.frontend import frontend
from scalablejob.cli.redis_command import redis
from scalablejob.cli.requests import cancel, logs, submit
from scalablejob.cli.scaler import scaler
from scalablejob.cli.status import status
from scalablejob.cli.up import up
from scalablejob.cli.watch import watch
from scalablejob.cli.worker import worker


@click.group()
@click.version_option(package_name="scalablejob")
def main() -> None:
    """scalablejob: an elastic, idle-first job service on Celery and Redis."""


for command in (up, down, worker, scaler, frontend, redis, submit, status, watch, logs, cancel, config):
    main.add_command(command)
