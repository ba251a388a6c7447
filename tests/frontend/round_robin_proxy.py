"""A small round-robin TCP proxy on loopback, as a balancer in front of several front-end processes: each new
connection goes to the next backend in turn, and its bytes are copied both ways until either side closes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Sequence

_CHUNK = 64 * 1024


class RoundRobinProxy:
    """Listens on 127.0.0.1 (a free port) in a thread of its own; `connections` counts them per backend."""

    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self._next = itertools.cycle(backends)
        self.connections: Counter[tuple[str, int]] = Counter()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="round-robin proxy", daemon=True)
        self.port = 0

    def start(self) -> RoundRobinProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", 0), self._loop
        ).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        backend = next(self._next)
        self.connections[backend] += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(*backend)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file or an error, then close the writing side (a closed side closes the other)."""
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(OSError, RuntimeError):
        writer.close()
