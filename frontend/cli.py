"""The `scalablejob frontend` command (the group in scalablejob/cli.py registers it).

Only click is imported here: the server's own imports (Starlette, uvicorn) wait until the command runs.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

import click

from scalablejob.cli_options import broker_option, data_dir_option, reports_errors
from scalablejob.config import DEFAULT_FRONTEND_HOST, DEFAULT_FRONTEND_PORT, DEFAULT_MAX_BODY_BYTES, ServiceConfig
from scalablejob.errors import BrokerError

if TYPE_CHECKING:
    from scalablejob.frontend.binding import FrontEnd


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option("--host", default=DEFAULT_FRONTEND_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_FRONTEND_PORT, show_default=True,
    help="Port to listen on; 0 picks a free one (printed at start).",
)  # fmt: skip
@click.option("--token", help="The front end's token (default: the config's, the last one used, or a new one).")
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
@broker_option
@data_dir_option
@reports_errors
def frontend(
    config: str, host: str, port: int, token: str | None, names: tuple[str, ...], max_body_bytes: int | None,
    broker: str | None, data_dir: str | None,
) -> None:  # fmt: skip
    """Serve the queue service protocol of the service in CONFIG: /api/predict/NAME and /api/predict/NAME/sink.

    Clients authenticate with the front end's token in the Authorization header; the token is printed at start.
    """
    _serve(config, host, port, token, names, max_body_bytes, broker, data_dir)


def _serve(
    config_path: str, host: str, port: int, token: str | None, names: tuple[str, ...], max_body_bytes: int | None,
    broker: str | None, data_dir: str | None,
) -> None:  # fmt: skip
    from scalablejob.broker import data_dir as data_folder
    from scalablejob.broker import resolve_broker
    from scalablejob.config import load_config
    from scalablejob.frontend.app import FrontEndService, create_app  # the server's imports wait until the command runs
    from scalablejob.frontend.server import bind_socket, make_server

    config = load_config(config_path)
    url, embedded = resolve_broker(broker, data_folder(data_dir))
    try:
        front_ends = _bind(url, config, names, token)
        sock = bind_socket(host, port)
        service = FrontEndService(
            front_ends, url, default_task_type=config.scalable_job.default_task_type,
            max_body_bytes=max_body_bytes or config.queue.max_payload_bytes,
        )
        _announce(config.name, sock, front_ends)
        # uvicorn shuts down cleanly on SIGINT or SIGTERM, then raises the signal again: exit 0 for either
        signal.signal(signal.SIGTERM, _exit_cleanly)
        with contextlib.suppress(KeyboardInterrupt):
            make_server(create_app(service)).run(sockets=[sock])
    finally:
        if embedded is not None:
            embedded.stop()


def _bind(url: str, config: ServiceConfig, names: tuple[str, ...], token: str | None) -> tuple[FrontEnd, ...]:
    import redis

    from scalablejob.frontend.binding import bind

    client = redis.Redis.from_url(url)
    try:
        return bind(client, config, names, token)
    except redis.RedisError as exc:
        raise BrokerError(f"cannot bind the front end: the broker at {url} did not answer: {exc}") from exc
    finally:
        client.close()


def _announce(service: str, sock: socket.socket, front_ends: tuple[FrontEnd, ...]) -> None:
    """Where the front end listens and each front end's token: `scalablejob up` and tests read these lines."""
    from scalablejob.frontend.server import base_url

    click.echo(f"scalablejob front end of service {service} listening on {base_url(sock)}")
    for fe in front_ends:
        click.echo(f"  /api/predict/{fe.name} and /api/predict/{fe.sink_name}  token {fe.token} ({fe.token_source})")
    sys.stdout.flush()  # a supervisor reading our output learns the address and tokens before the first request


def _exit_cleanly(_signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)
