"""Commands about one request: follow its logs, cancel it."""

from __future__ import annotations

import sys
from typing import Any

import click
import redis

from scalablejob import keys
from scalablejob.broker import data_dir as data_folder
from scalablejob.broker import existing_broker
from scalablejob.cancel import cancel_request
from scalablejob.cli import broker_option, data_dir_option, main, reports_errors
from scalablejob.errors import RequestError
from scalablejob.logs import request_entries
from scalablejob.sink import EntryType, Sink, SinkEntry
from scalablejob.state import RequestStore

SERVICE_ENV = "SCALABLEJOB_SERVICE"

service_option = click.option(
    "--service", "-s", envvar=SERVICE_ENV, metavar="NAME",
    help=f"Service of the request (env {SERVICE_ENV}); found from the request id when not given.",
)  # fmt: skip


def find_service(client: redis.Redis, request_id: str) -> str:
    """The service that holds a request, found by its state key."""
    found: Any = client.scan_iter(match=keys.request_state_pattern(request_id), count=1000)
    services = sorted({keys.service_of_request_state(key.decode()) for key in found})
    if len(services) != 1:
        where = "no service" if not services else f"several services ({', '.join(services)}): pass --service"
        raise RequestError(f"requestId {request_id!r} found in {where}")
    return services[0]


def _connect(broker: str | None, data_dir: str | None, service: str | None, request_id: str) -> tuple[Any, str]:
    client = redis.Redis.from_url(existing_broker(broker, data_folder(data_dir)))
    return client, service or find_service(client, request_id)


@main.command()
@click.argument("request_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the request ends.")
@service_option
@broker_option
@data_dir_option
@reports_errors
def logs(request_id: str, follow: bool, service: str | None, broker: str | None, data_dir: str | None) -> None:
    """Print the output lines of a request (stdout here, stderr to stderr), then how it ended."""
    client, service = _connect(broker, data_dir, service, request_id)
    sink, requests = Sink(client, service), RequestStore(client, service)
    for entry in request_entries(sink, requests, request_id, follow=follow):
        _print_entry(entry)


def _print_entry(entry: SinkEntry) -> None:
    text = entry.data.decode("utf-8", "replace")
    if entry.type == EntryType.LOG.value:
        out = sys.stderr if entry.tags.get("stream") == "stderr" else sys.stdout
        out.write(text + ("" if entry.tags.get("ending") == "cut" else "\n"))
        out.flush()
    elif entry.type == EntryType.PROGRESS.value:
        click.echo(f"[progress {float(entry.tags.get('progress', 0)):.0%}] {text}".rstrip(), err=True)
    else:
        how = ", ".join(f"{name} {entry.tags[tag]}" for tag, name in _SUMMARY if tag in entry.tags)
        click.echo(f"[{entry.type}{': ' + how if how else ''}]" + ("" if entry.tags.get("exitCode") else f" {text}"))


_SUMMARY = (("exitCode", "exit code"), ("durationSeconds", "seconds"), ("stopped", "stopped by"))


@main.command()
@click.argument("request_id")
@service_option
@broker_option
@data_dir_option
@reports_errors
def cancel(request_id: str, service: str | None, broker: str | None, data_dir: str | None) -> None:
    """Cancel a request: a queued one leaves its queue; a running command gets SIGTERM, then SIGKILL."""
    client, service = _connect(broker, data_dir, service, request_id)
    outcome = cancel_request(client, service, request_id)
    click.echo(f"request {request_id} of {service}: {outcome.value}")
