"""Commands about requests: submit one, follow its logs, cancel it."""

from __future__ import annotations

import sys
from typing import Any

import click
import redis

from scalablejob.api.client import JobClient
from scalablejob.cli.options import broker_option, broker_url, connect_broker, data_dir_option, reports_errors
from scalablejob.model import keys
from scalablejob.model.config import load_config
from scalablejob.model.errors import RequestError
from scalablejob.store.cancel import cancel_request
from scalablejob.store.logs import request_entries
from scalablejob.store.sink import EntryType, Sink, SinkEntry
from scalablejob.store.state import RequestStatus, RequestStore

SERVICE_ENV = "SCALABLEJOB_SERVICE"

service_option = click.option(
    "--service", "-s", envvar=SERVICE_ENV, metavar="NAME",
    help=f"Service of the request (env {SERVICE_ENV}); found from the request id when not given.",
)  # fmt: skip


MIN_PREFIX_CHARS = 6  # shorter, and a prefix names many requests; `watch` shows 12


def find_request(client: redis.Redis, request_id: str, service: str | None) -> tuple[str, str]:
    """The service and whole id of the request named by `request_id`: its whole id, or the start of it as `watch`
    shows it, found by its state key; an error unless exactly one request matches."""
    if service is not None and client.exists(keys.request_state(service, request_id)):
        return service, request_id
    found: Any = client.scan_iter(match=keys.request_state_pattern(request_id, prefix=True), count=1000)
    matches = sorted(keys.request_of_state(key.decode()) for key in found)
    if service is not None:
        matches = [match for match in matches if match[0] == service]
    exact = [match for match in matches if match[1] == request_id]
    if len(exact) == 1 or (len(matches) == 1 and len(request_id) >= MIN_PREFIX_CHARS):
        return (exact or matches)[0]
    if not matches:
        where = f"is unknown to service {service}" if service else "found in no service"
        raise RequestError(f"requestId {request_id!r} {where}")
    if len(exact) > 1:
        names = ", ".join(sorted({name for name, _ in exact}))
        raise RequestError(f"requestId {request_id!r} found in several services ({names}): pass --service")
    if len(request_id) < MIN_PREFIX_CHARS:
        raise RequestError(f"requestId {request_id!r} is too short: give the whole id, or at least its first "
                           f"{MIN_PREFIX_CHARS} characters")  # fmt: skip
    shown = ", ".join(f"{ident} ({name})" for name, ident in matches[:5])
    raise RequestError(f"requestId {request_id!r} is the start of {len(matches)} requests ({shown}"
                       f"{', ...' if len(matches) > 5 else ''}): give more of it")  # fmt: skip


def _connect(broker: str | None, data_dir: str | None, service: str | None, request_id: str) -> tuple[Any, str, str]:
    client = connect_broker(broker, data_dir)
    return client, *find_request(client, request_id, service)


@click.command()
@click.argument("request_id", metavar="REQUEST_ID")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the request ends.")
@service_option
@broker_option
@data_dir_option
@reports_errors
def logs(request_id: str, follow: bool, service: str | None, broker: str | None, data_dir: str | None) -> None:
    """Print the output lines of a request (stdout here, stderr to stderr), then how it ended.

    REQUEST_ID is the whole id, or its start as `watch` shows it. Exit status once the request has ended, as for
    `submit --wait`: 0 if it succeeded; else the command's own exit code; else 1 (a failed query, a request
    cancelled before it ran). While it is still queued or running (without --follow): 0.
    """
    client, service, request_id = _connect(broker, data_dir, service, request_id)
    requests = RequestStore(client, service)
    state = requests.require(request_id)
    sink = Sink(client, service, frontend=state.frontend)  # the output queue of the front end it came through
    final = None
    for entry in request_entries(sink, requests, request_id, follow=follow):
        _print_entry(entry)
        final = entry if entry.is_final else final
    ended = requests.get(request_id)
    if ended is None or not ended.status.finished:
        return
    if final is None:  # cancelled while queued: no worker wrote a final entry
        click.echo(f"[{ended.status.value} before it ran]", err=True)
    sys.exit(wait_exit_code(final, ended.status))


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


@click.command()
@click.argument("request_id")
@service_option
@broker_option
@data_dir_option
@reports_errors
def cancel(request_id: str, service: str | None, broker: str | None, data_dir: str | None) -> None:
    """Cancel a request: a queued one leaves its queue; a running command gets SIGTERM, then SIGKILL."""
    client, service, request_id = _connect(broker, data_dir, service, request_id)
    outcome = cancel_request(client, service, request_id)
    click.echo(f"request {request_id} of {service}: {outcome.value}")


def parse_tags(pairs: tuple[str, ...]) -> dict[str, str]:
    """`KEY=VALUE` options as a tag dict; a pair without `=` is a usage error naming it."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--tag")
        tags[key] = value
    return tags


def _request_body(data: str | None, file: Any) -> bytes:
    if data is not None and file is not None:
        raise click.UsageError("give the request as DATA or --file, not both")
    if file is not None:
        return file.read()
    if data is not None:
        return data.encode()
    if not sys.stdin.isatty():
        return sys.stdin.buffer.read()
    raise click.UsageError("expected the request: DATA, --file PATH, or data on stdin")


@click.command()
@click.argument("data", required=False)
@click.option("--type", "task_type", type=click.Choice(["command", "query"]), help="taskType of the request.")
@click.option("--file", "-f", "file", type=click.File("rb"), help="Read the request body from a file (- for stdin).")
@click.option("--tag", "-t", "tag_pairs", multiple=True, metavar="KEY=VALUE", help="A tag of the request; repeatable.")
@click.option("--config", "-c", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Service config: gives the service name and its default taskType.")  # fmt: skip
@click.option("--repeat", type=click.IntRange(1, 10_000), default=1, show_default=True,
              help="Submit that many copies (a burst); one request id per line.")  # fmt: skip
@click.option(
    "--wait", is_flag=True,
    help="Wait for the result and print it as a line (how a failure ended goes to stderr). Exit status: 0 if the "
    "request succeeded; else the command's own exit code (127: not found, 128+N: killed by signal N, e.g. 143 "
    "when cancelled or timed out); else 1 (a failed query, a request cancelled before it ran, --timeout "
    "passed). With --repeat, the first non-zero one.",
)  # fmt: skip
@click.option("--timeout", type=float, default=None, metavar="SECONDS", help="How long --wait waits.")
@click.option("--service", "-s", envvar=SERVICE_ENV, metavar="NAME", help=f"Service to submit to (env {SERVICE_ENV}).")
@broker_option
@data_dir_option
@reports_errors
def submit(
    data: str | None, task_type: str | None, file: Any, tag_pairs: tuple[str, ...], config_path: str | None,
    repeat: int, wait: bool, timeout: float | None, service: str | None, broker: str | None, data_dir: str | None,
) -> None:  # fmt: skip
    """Submit DATA (a command line, or a query body) to a service; print its request id.

    The index and where to follow it go to stderr, so `id=$(scalablejob submit ...)` keeps just the id.
    """
    config = load_config(config_path) if config_path else None
    name = service or (config.name if config else None)
    if not name:
        raise click.UsageError("expected --service NAME or --config FILE")
    tags = parse_tags(tag_pairs) | ({"taskType": task_type} if task_type else {})
    default_type = config.scalable_job.default_task_type if config else None
    body = _request_body(data, file)
    with JobClient(name, broker_url(broker, data_dir), default_task_type=default_type) as client:
        submitted = [client.put(body, tags) for _ in range(repeat)]
        for index, request_id in submitted:
            click.echo(request_id)
            click.echo(f"index {index} on {name}; follow it with: scalablejob logs -f {request_id}", err=True)
        if wait:
            codes = [_print_result(client, request_id, timeout) for _, request_id in submitted]
            sys.exit(next((code for code in codes if code), 0))


EXIT_FAILED = 1


def wait_exit_code(entry: SinkEntry | None, status: RequestStatus | None) -> int:
    """`submit --wait`'s and `logs`' exit status: 0 when done, else the command's own exit code if its final
    entry has one, else 1."""
    if status is RequestStatus.DONE:
        return 0
    code = entry.tags.get("exitCode", "") if entry is not None else ""
    return int(code) if code.isdigit() and 0 < int(code) < 256 else EXIT_FAILED


def failure_summary(request_id: str, entry: SinkEntry, status: RequestStatus | None) -> str:
    """One line on how a request that did not succeed ended: its exit code, or the error entry's text."""
    how = [f"{name} {entry.tags[tag]}" for tag, name in _SUMMARY if tag in entry.tags and tag != "durationSeconds"]
    detail = ", ".join(how) if "exitCode" in entry.tags else entry.data.decode("utf-8", "replace").strip()
    return f"request {request_id} {status.value if status else 'ended'}: {detail}"


def _print_result(client: JobClient, request_id: str, timeout: float | None) -> int:
    """Print a request's result body as a line (a failure's cause to stderr); returns --wait's exit status."""
    entry = client.result(request_id, timeout=timeout)
    state = client.state(request_id)
    status = state.status if state is not None else None
    if entry.type == EntryType.RESULT.value:
        sys.stdout.buffer.write(entry.data if entry.data.endswith(b"\n") else entry.data + b"\n")
        sys.stdout.flush()
    code = wait_exit_code(entry, status)
    if code:
        click.echo(failure_summary(request_id, entry, status), err=True)
    return code
