"""`scalablejob watch`: live progress bars for a service's requests in flight."""

from __future__ import annotations

import time

import click
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from scalablejob.cli_options import broker_option, connect_broker, data_dir_option, reports_errors, service_of
from scalablejob.config import load_config
from scalablejob.inflight import in_flight
from scalablejob.state import RequestState

REFRESH_S = 0.5


def requests_table(states: list[RequestState], now: float) -> Table:
    table = Table(title=f"{len(states)} request(s) in flight", expand=True)
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


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--service", "-s", metavar="NAME", help="Service name (instead of CONFIG).")
@click.option("--once", is_flag=True, help="Print one snapshot and exit (no live display).")
@broker_option
@data_dir_option
@reports_errors
def watch(config: str | None, service: str | None, once: bool, broker: str | None, data_dir: str | None) -> None:
    """Live progress bars of the requests in flight: running ones with their worker, then queued ones."""
    name = service_of(load_config(config) if config else None, service)
    client = connect_broker(broker, data_dir)
    console = Console()
    try:
        if once:
            console.print(requests_table(in_flight(client, name), time.time()))
            return
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                live.update(Group(requests_table(in_flight(client, name), time.time()), "Ctrl-C to stop watching"))
                time.sleep(REFRESH_S)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
