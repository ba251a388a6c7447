"""The `scalablejob frontend` command (the group in scalablejob/cli/main.py registers it).

Only click is imported here: the server's own imports (Starlette, uvicorn) wait until the command runs. A token is
printed only when it is made here (Redis keeps only its hash); one given is taken from SCALABLEJOB_FRONTEND_TOKEN
rather than `--token`, which every local user can read in the process list.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import click

from scalablejob.cli.options import broker_option, data_dir_option, reports_errors
from scalablejob.model.config import DEFAULT_FRONTEND_HOST, DEFAULT_FRONTEND_PORT, DEFAULT_MAX_BODY_BYTES, ServiceConfig
from scalablejob.model.errors import BrokerError
from scalablejob.model.redaction import masked_url
from scalablejob.store.redis_url import connect

if TYPE_CHECKING:
    from scalablejob.frontend.binding import FrontEnd

TOKEN_ENV = "SCALABLEJOB_FRONTEND_TOKEN"


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default=DEFAULT_FRONTEND_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_FRONTEND_PORT, show_default=True,
    help="Port to listen on; 0 picks a free one (printed at start).",
)  # fmt: skip
@click.option(
    "--token", envvar=TOKEN_ENV, show_envvar=True,
    help="The front end's token (default: the config's, the last one used, or a new one, printed once). Prefer the "
    "environment variable: a command line is readable by every local user.",
)  # fmt: skip
@click.option(
    "--name", "names", multiple=True, metavar="NAME",
    help="A front end to serve (repeatable; default: the one named like the service). Only type ScalableJob "
    "services take front ends of other names.",
)  # fmt: skip
@click.option(
    "--max-body-bytes", type=click.IntRange(min=1), default=None,
    help="Larger request bodies are refused with 413 (default: the config's queue.max_payload_bytes, "
    f"else {DEFAULT_MAX_BODY_BYTES}).",
)  # fmt: skip
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True,
    help="Processes serving the port (one socket, forked children; a crashed one is replaced). Watchers and their "
    "caps hold across processes and hosts (kept in Redis); connection caps are per process.",
)  # fmt: skip
@broker_option
@data_dir_option
@reports_errors
def frontend(
    config: str, host: str, port: int, token: str | None, names: tuple[str, ...], max_body_bytes: int | None,
    workers: int, broker: str | None, data_dir: str | None,
) -> None:  # fmt: skip
    """Serve the queue service protocol of the service in CONFIG: /api/predict/NAME and /api/predict/NAME/sink.

    Clients authenticate with the front end's token in the Authorization header; a token made at start is printed
    once (Redis keeps only its hash). Limits and scopes: the config's `security` section.
    """
    from_env = click.get_current_context().get_parameter_source("token") is click.core.ParameterSource.ENVIRONMENT
    origin = f"env {TOKEN_ENV}" if from_env else ""
    sys.exit(_serve(config, host, port, token, names, max_body_bytes, workers, broker, data_dir, origin))


def _serve(
    config_path: str, host: str, port: int, token: str | None, names: tuple[str, ...], max_body_bytes: int | None,
    workers: int, broker: str | None, data_dir: str | None, token_origin: str,
) -> int:  # fmt: skip
    """Serve until stopped; the exit code (1: the processes of --workers kept crashing)."""
    from scalablejob.frontend.app import FrontEndService, create_app  # the server's imports wait until the command runs
    from scalablejob.frontend.processes import Supervisor
    from scalablejob.frontend.server import allow_open_files, bind_socket, make_server
    from scalablejob.local.embedded_broker import resolve_broker
    from scalablejob.model.config import load_config
    from scalablejob.store.broker import data_dir as data_folder

    config = load_config(config_path)
    url, embedded = resolve_broker(broker, data_folder(data_dir))
    try:
        front_ends = _bind(url, config, names, token)
        sock = bind_socket(host, port)
        service = FrontEndService(
            front_ends, url, default_task_type=config.scalable_job.default_task_type,
            max_body_bytes=max_body_bytes or config.queue.max_payload_bytes, limits=config.security.http,
        )  # fmt: skip
        files_warning = allow_open_files(config.security.http.max_connections)
        if files_warning:
            click.echo(files_warning, err=True)
        _announce(config.name, sock, front_ends, token_origin)

        def serve() -> None:
            make_server(create_app(service), limits=config.security.http).run(sockets=[sock])

        if workers > 1:
            return Supervisor(workers, serve).run()
        # uvicorn shuts down cleanly on SIGINT or SIGTERM, then raises the signal again: exit 0 for either
        signal.signal(signal.SIGTERM, _exit_cleanly)
        with contextlib.suppress(KeyboardInterrupt):
            serve()
        return 0
    finally:
        if embedded is not None:
            embedded.stop()


def _bind(url: str, config: ServiceConfig, names: tuple[str, ...], token: str | None) -> tuple[FrontEnd, ...]:
    import redis

    from scalablejob.frontend.binding import bind

    client = connect(url)
    try:
        return bind(client, config, names, token)
    except redis.RedisError as exc:
        raise BrokerError(f"cannot bind the front end: the broker at {masked_url(url)} did not answer: {exc}") from exc
    finally:
        client.close()


def _announce(service: str, sock: socket.socket, front_ends: tuple[FrontEnd, ...], token_origin: str) -> None:
    """Where the front end listens, each front end's task types, and a token made now (the only time it is shown):
    `scalablejob up` and tests read these lines."""
    from scalablejob.frontend.server import base_url

    click.echo(f"scalablejob front end of service {service} listening on {base_url(sock)}")
    for fe in front_ends:
        click.echo(f"  /api/predict/{fe.name} and /api/predict/{fe.sink_name}  {token_line(fe, token_origin)}")
    sys.stdout.flush()  # a supervisor reading our output learns the address and tokens before the first request


_TOKEN_ORIGINS = {"--token": "--token", "config": "the config's front_end.token",
                  "registry": "the registry (the last one used)",
                  "registry, was plain text": "the registry (the last one used, now kept as a hash)"}  # fmt: skip


def token_line(fe: FrontEnd, token_origin: str = "") -> str:
    """`token T (generated: ...)` once, when the token was made now; else `token from WHERE`, without it: whoever
    gave it (`up`, a supervisor, the config) says where it is, so no line here contradicts theirs."""
    scope = f"may submit {', '.join(fe.task_types) or 'nothing'}"
    if fe.new_token is not None:
        return f"token {fe.new_token} ({fe.token_source}: shown this once, only its hash is kept; {scope})"
    origin = token_origin if fe.token_source == "--token" and token_origin else _TOKEN_ORIGINS[fe.token_source]
    return f"token from {origin} ({scope})"


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
