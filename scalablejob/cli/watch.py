"""`scalablejob watch`: live progress bars for a service's requests in flight (or one snapshot, as JSON too)."""

from __future__ import annotations

import time
from typing import Any

import click
from redis import Redis
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from scalablejob.cli.options import broker_option, connect_broker, data_dir_option, reports_errors, service_of
from scalablejob.cli.status import output_console, print_json
from scalablejob.model.config import load_config
from scalablejob.store.inflight import in_flight
from scalablejob.store.state import RequestState

REFRESH_S = 0.5


def requests_table(states: list[RequestState], now: float, *, expand: bool = True) -> Table:
    """`expand` fills a terminal's width; a pipe gets the table's own width instead (see output_console)."""
    table = Table(title=f"{len(states)} request(s) in flight", expand=expand)
    for column in ("request", "type", "state", "worker", "progress", "", "message", "for"):
        table.add_column(column, no_wrap=column in ("request", "progress"))
    for state in states:
        fraction = state.progress or 0.0
        since = state.started_at or state.queued_at
        table.add_row(
            state.request_id[:12], state.task_type, state.status.value, state.worker or "",
            ProgressBar(total=1.0, completed=fraction, width=24), f"{fraction:.0%}", state.message or "",
            f"{max(0.0, now - since):.0f} s",
        )  # fmt: skip
    return table


def request_document(state: RequestState, now: float) -> dict[str, Any]:
    """One request in flight as JSON data, with the field names of the front end's search answer."""
    return {
        "requestId": state.request_id, "index": state.index, "taskType": state.task_type,
        "state": state.status.value, "worker": state.worker, "progress": state.progress, "message": state.message,
        "queuedAt": state.queued_at, "startedAt": state.started_at,
        "seconds": round(max(0.0, now - (state.started_at or state.queued_at)), 3),
    }  # fmt: skip


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--service", "-s", metavar="NAME", help="Service name (instead of CONFIG).")
@click.option("--once", is_flag=True, help="Print one snapshot and exit (no live display).")
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print one snapshot as a JSON array (implies --once): per request requestId, index, taskType, state, "
    "worker, progress, message, queuedAt, startedAt, seconds (since it started, or was queued).",
)  # fmt: skip
@broker_option
@data_dir_option
@reports_errors
def watch(
    config: str | None, service: str | None, once: bool, as_json: bool, broker: str | None, data_dir: str | None
) -> None:  # fmt: skip
    """Live progress bars of the requests in flight: running ones with their worker, then queued ones."""
    name = service_of(load_config(config) if config else None, service)
    client = connect_broker(broker, data_dir)
    try:
        if as_json:
            now = time.time()
            print_json([request_document(state, now) for state in in_flight(client, name)])
        elif once:
            console = output_console()
            console.print(requests_table(in_flight(client, name), time.time(), expand=console.is_terminal))
        else:
            _watch_live(client, name)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


def _watch_live(client: Redis, name: str) -> None:
    with Live(console=Console(), refresh_per_second=4) as live:
        while True:
            live.update(Group(requests_table(in_flight(client, name), time.time()), "Ctrl-C to stop watching"))
            time.sleep(REFRESH_S)
