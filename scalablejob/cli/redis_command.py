"""`scalablejob redis`: the embedded redis-server of the data folder, in the foreground."""

from __future__ import annotations

import signal

import click

from scalablejob.cli.options import appendfsync_option, data_dir_option, reports_errors
from scalablejob.local.embedded_broker import EmbeddedBroker
from scalablejob.model.redaction import masked_url
from scalablejob.store.broker import data_dir as data_folder


@click.command()
@data_dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="Port on 127.0.0.1 (default: a free one).")
@appendfsync_option
@reports_errors
def redis(data_dir: str | None, port: int | None, appendfsync: str) -> None:
    """Run the embedded redis-server of the data folder in the foreground; print its URL (password masked).

    Its password is in the data folder's redis.password (made once, readable by you only): other commands given the
    same --data-dir find it there.
    """
    broker = EmbeddedBroker(data_folder(data_dir), port=port, appendfsync=appendfsync)
    url = broker.start()
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)  # after the start: children inherit the mask
    click.echo(f"redis-server listening on {masked_url(url)} (data in {broker.folder}); Ctrl-C stops it")
    click.echo(f"  password in {broker.password_file}" + (" (made now)" if broker.password_created else ""))
    try:
        signal.sigwait(stop_signals)
    finally:
        broker.stop()
