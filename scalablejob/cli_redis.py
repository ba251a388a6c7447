"""`scalablejob redis`: the embedded redis-server of the data folder, in the foreground."""

from __future__ import annotations

import signal

import click

from scalablejob.broker import EmbeddedBroker
from scalablejob.broker import data_dir as data_folder
from scalablejob.cli_options import data_dir_option, reports_errors


@click.command()
@data_dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="Port on 127.0.0.1 (default: a free one).")
@reports_errors
def redis(data_dir: str | None, port: int | None) -> None:
    """Run the embedded redis-server of the data folder in the foreground; print its URL."""
    broker = EmbeddedBroker(data_folder(data_dir), port=port)
    url = broker.start()
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after the start: children inherit the mask
    click.echo(f"redis-server listening on {url} (data in {broker.folder}); Ctrl-C stops it")
    try:
        signal.sigwait(stop_signals)
    finally:
        broker.stop()
