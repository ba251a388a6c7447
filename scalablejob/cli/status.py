"""`scalablejob status`: a service at a glance, as rich tables (or JSON for scripts)."""

from __future__ import annotations

import json
import os
import sys
import time

import click
import redis
from rich.console import Console
from rich.table import Table

from scalablejob.cli.options import broker_option, connect_broker, data_dir_option, reports_errors, service_of
from scalablejob.local.broker_advice import silent_broker_advice
from scalablejob.model.config import ServiceConfig, load_config
from scalablejob.model.errors import ScalableJobError
from scalablejob.model.protocol import shown_version
from scalablejob.store.broker import BROKER_ENV
from scalablejob.store.broker import data_dir as data_folder
from scalablejob.store.status import (
    ServiceStatus,
    host_documents,
    known_services,
    read_status,
    status_document,
    worker_stale,
)

READ_TIMEOUT_S = 5.0  # a broker that takes longer (stopped with SIGSTOP, hung) is said to be silent, in one line
NON_TERMINAL_WIDTH = 10_000  # a pipe or file has no width: rich would assume 80 and cut headers to "ty…"


def output_console() -> Console:
    """A terminal gets tables that fit it; a pipe or file gets each line as long as it needs, so nothing is cut."""
    return Console() if sys.stdout.isatty() else Console(width=NON_TERMINAL_WIDTH)


def print_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def _age(then: float, now: float) -> str:
    return f"{max(0.0, now - then):.0f} s ago"


def _table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    return table


def queues_table(status: ServiceStatus) -> Table:
    return _table("queues", ("queue", "waiting"), [[queue, str(depth)] for queue, depth in status.queues.items()])


_SCALER_FIELDS = ("host", "replicas", "desired", "busy", "queued", "running", "reason")


def scaler_table(status: ServiceStatus) -> Table:
    rows = [
        [str(report.get(name, "")) for name in _SCALER_FIELDS] + [_age(float(report.get("at", 0)), status.taken_at)]
        for report in status.scalers
    ]
    return _table("scaler", (*_SCALER_FIELDS, "updated"), rows or [["(no scaler running)"] + [""] * 7])


def workers_table(status: ServiceStatus) -> Table:
    rows = []
    for worker in status.workers:
        stale = worker_stale(status, worker)
        state = f"{worker.state.value} (stale)" if stale else worker.state.value
        age = _age(worker.heartbeat, status.taken_at)
        protocol = shown_version(worker.protocol) + (f", put back {worker.put_back}" if worker.put_back else "")
        rows.append([worker.name, state, worker.gpus or "cpu", str(worker.pid), str(len(worker.held)), age, protocol])
    for name, failure in status.init_failures.items():
        rows.append([name, f"init failed (exit {failure.get('exit_code')})", "", "", "", "", ""])
    return _table("workers", ("worker", "state", "GPU", "pid", "tasks", "heartbeat", "protocol"), rows)


def hosts_table(status: ServiceStatus) -> Table:
    """One row per host with a scaler of the service (several hosts: each runs its share of one decision)."""
    rows = [
        [host["host"] + (" (leader)" if host["leader"] else ""), str(host["capacity"]), str(host["share"]),
         str(host["replicas"]), str(host["busy"]), ("" if host["alive"] else "dead, ") + _age(host["heartbeat"],
         status.taken_at), shown_version(host["protocol"])]
        for host in host_documents(status)
    ]  # fmt: skip
    return _table("hosts", ("host", "capacity", "share", "replicas", "busy", "heartbeat", "protocol"), rows)


_DECISION_FIELDS = ("queued", "running", "replicas", "desired", "reason")


def decisions_table(status: ServiceStatus) -> Table:
    rows = [
        [time.strftime("%H:%M:%S", time.localtime(float(decision.get("at", 0))))]
        + [str(decision.get(name, "")) for name in _DECISION_FIELDS]
        for decision in status.decisions
    ]
    return _table("recent scaling decisions", ("when", *_DECISION_FIELDS), rows)


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option("--service", "-s", metavar="NAME", help="Service name (instead of CONFIG).")
@click.option(
    "--json", "as_json", is_flag=True,
    help="Print the snapshot as one JSON object (service, takenAt, queues, scalers, workers, initFailures, "
    "decisions, hosts) instead of tables.",
)  # fmt: skip
@broker_option
@data_dir_option
@reports_errors
def status(
    config: str | None, service: str | None, as_json: bool, broker: str | None, data_dir: str | None
) -> None:  # fmt: skip
    """Show a service: queue depths, replicas desired and actual, each worker and its GPU, recent decisions.

    A --service that the broker knows nothing of (no request, worker, scaler or front end ever) is an error.
    """
    service_config = load_config(config) if config else None
    name = service_of(service_config, service)
    client = connect_broker(broker, data_dir, socket_timeout=READ_TIMEOUT_S, socket_connect_timeout=READ_TIMEOUT_S)
    try:
        snapshot = read_status(client, name)
        if service_config is None and not snapshot.known:
            raise ScalableJobError(unknown_service_message(name, known_services(client)))
    except redis.AuthenticationError:
        raise  # a wrong password is said as such (reports_errors)
    except (redis.ConnectionError, redis.TimeoutError) as exc:  # it answered the probe, then stopped answering
        raise ScalableJobError(silent_broker_message(broker, data_dir, exc)) from exc
    finally:
        client.close()
    if as_json:
        print_json({**status_document(snapshot), **config_document(service_config)})
        return
    console = output_console()
    console.print(heading(name, service_config))
    tables = [queues_table(snapshot), scaler_table(snapshot), workers_table(snapshot), decisions_table(snapshot)]
    if len(snapshot.hosts) > 1:
        tables.insert(2, hosts_table(snapshot))
    for table in tables:
        console.print(table)


def silent_broker_message(broker: str | None, data_dir: str | None, exc: redis.RedisError) -> str:
    """One line for a broker that stopped answering: with what a running `up` of the data folder can do about it."""
    detail = f"{type(exc).__name__}: {exc}"
    embedded = not (broker or os.environ.get(BROKER_ENV))
    return (embedded and silent_broker_advice(data_folder(data_dir), detail)) or f"the broker did not answer: {detail}"


def unknown_service_message(name: str, known: list[str]) -> str:
    where = f"known services: {', '.join(known)}" if known else "it holds no service yet"
    return f"service {name!r}: the broker knows nothing of it (no request, worker, scaler or front end); {where}"


def heading(name: str, config: ServiceConfig | None) -> str:
    image = config.containers[0].image if config and config.containers else None
    kind = f" ({config.metadata.type})" if config else ""
    return f"[bold]service {name}[/bold]{kind}" + (f", image {image} (not used locally)" if image else "")


def config_document(config: ServiceConfig | None) -> dict[str, object]:
    """What CONFIG adds to `status --json`: the service's type and its image (reported, not used locally)."""
    if config is None:
        return {}
    return {"type": config.metadata.type, "image": config.containers[0].image if config.containers else None}
