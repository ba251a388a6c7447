"""uvicorn's internals the front end relies on: what one connection, and one client, may hold, enforced where uvicorn
reads the bytes (its h11 protocol, subclassed).

uvicorn alone leaves these holes: a request head is buffered without a time limit (slowloris: a few bytes now and
then keep a connection and its buffer forever, and a fresh connection that sends nothing is never closed), and so
is a body (a byte every few seconds keeps a request, or a connection answered already, open for good); its size
limit is h11's, answered 400, while httptools has none at all; a websocket upgrade is parsed a second time by the
websockets library, whose own limit (8,192 bytes a line) fails the handshake without an answer, so the socket hangs
open; a client may hold every connection the server takes; and bad bytes after an answer make it answer again,
which h11 refuses with an exception that the event loop logs with its traceback. Here, on top of uvicorn's h11
protocol:
- the head (request line and headers) must arrive within `header_timeout_s` of the request's first byte (of the
  connection's start, for its first request), else 408 and closed;
- the whole request, body included, within `request_timeout_s` of the same instant, plus a second for every
  `min_request_rate` bytes received (so a large body that keeps that pace is never cut), else 408 (or, when the
  request was answered already, without reading its body, a plain close);
- a head over `max_header_bytes` is answered 431 and closed, as soon as the buffer passes the limit;
- a websocket upgrade whose head the websockets library would refuse (a line too long, too many headers) is
  answered 431 here instead of hanging;
- a client (a peer address: no byte, let alone a token, has been read yet) holds at most `max_connections_per_client`
  HTTP connections, and all clients together at most `max_connections` (websockets included): a newcomer over a cap
  first reclaims the connection idle longest (of its own client, or of any), and is answered 503 with Retry-After
  and closed only when every connection in its way is serving a request (connection_book.py says why);
- an invalid request (or invalid body bytes) after an answer was sent closes the connection, without a second
  answer and without a traceback.
Idle keep-alive connections are closed by uvicorn after `keep_alive_s`; body size and the wait for each piece of it
are the app's (frontend/app.py). uvicorn's own `limit_concurrency` answers 503 only once a request head is complete,
which a client that holds connections never sends, so the caps stay here; its `h11_max_incomplete_event_size` is set
(frontend/server.py) but answers 400 only after buffering, so the 431 stays too.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS

from scalablejob.model.config import HttpLimits
from scalablejob.model.connection_book import ConnectionBook, Reclaim, Refuse, client_of
from scalablejob.upstream.check import require

require("uvicorn", H11Protocol, ("data_received", "_unset_keepalive_if_required", "handle_events",
                                 "handle_websocket_upgrade", "connection_made", "connection_lost",
                                 "on_response_complete", "send_400_response",
                                 "timeout_keep_alive_handler"))  # fmt: skip


def _fields_set_by(init: Callable[..., None]) -> SimpleNamespace:
    """The attribute names a constructor's code names, to check instance fields as `require` checks methods."""
    return SimpleNamespace(**dict.fromkeys(init.__code__.co_names))


require("uvicorn", _fields_set_by(H11Protocol.__init__),
        ("conn", "cycle", "client", "connections", "timeout_keep_alive_task", "timeout_keep_alive"))  # fmt: skip
require("uvicorn", _fields_set_by(RequestResponseCycle.__init__),
        ("disconnected", "message_event", "response_started", "response_complete"))  # fmt: skip

RETRY_AFTER_S = 1  # a refused newcomer may retry soon: connections come and go by the second
_BLANK_LINE = re.compile(rb"\n\r?\n")  # the end of a head, as h11 finds it
_RECEIVING = (h11.IDLE, h11.SEND_BODY)  # their states while a request is not all in


def refusal(status: int, text: str, *, retry_after_s: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, written straight to the socket."""
    body = text.encode("utf-8")
    retry = f"retry-after: {retry_after_s}\r\n" if retry_after_s is not None else ""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n{retry}connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def head_size(buffered: bytes, limit: int) -> int:
    """The size of the request head at the start of `buffered`, counted no further than `limit` + 1 bytes (a head
    not yet complete counts all that came): more than `limit` means too large."""
    if len(buffered) <= limit:
        return len(buffered)
    end = _BLANK_LINE.search(buffered, 0, limit + 2)
    return limit + 1 if end is None else end.end()


def request_allowance(limits: HttpLimits, received: int) -> float:
    """Seconds a request may take to arrive, `received` bytes of it being in: the timeout, plus a second for each
    `min_request_rate` bytes, so that a body arriving at least that fast is never cut."""
    extra = received / limits.min_request_rate if limits.min_request_rate else 0.0
    return limits.request_timeout_s + extra


def websocket_head_fits(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the websockets library will parse this upgrade's head (it reads the head again, line by line)."""
    if len(method) + len(target) + 12 > MAX_LINE_LENGTH or len(headers) > MAX_NUM_HEADERS:
        return False
    return all(len(name) + len(value) + 4 <= MAX_LINE_LENGTH for name, value in headers)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with head and request deadlines, a head size limit answered 431, connection caps per
    client and for all, and a quiet close for bad bytes after an answer."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    book: ClassVar[ConnectionBook[GuardedH11Protocol]] = ConnectionBook()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._request_timer: asyncio.TimerHandle | None = None
        self._request_started = 0.0
        self._request_bytes = 0
        self._upgraded = False

    # ---- connections -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        client = client_of(self.client[0]) if self.client else ""
        limits = self.limits
        room = self.book.make_room(client, len(self.connections) - 1, limits.connections_per_client,
                                   limits.max_connections)  # fmt: skip
        if isinstance(room, Refuse):
            self._refuse(503, _cap_text(client, limits, per_client=room.per_client), retry_after_s=RETRY_AFTER_S)
            return
        if isinstance(room, Reclaim):
            room.victim.reclaim()
        self.book.open(self, client)
        self._start_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_timers()
        self.book.close(self)
        super().connection_lost(exc)

    def reclaim(self) -> None:
        """Close this idle connection to make room for a newcomer, as keep-alive expiry would: no answer."""
        self.book.close(self)
        self._disarm_timers()
        self.logger.debug("closed the idle connection of %s to make room for a newcomer", self._peer())
        self.transport.close()

    # ---- requests ----------------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        waiting_for_head = self.conn.their_state is h11.IDLE
        if self._request_timer is None and self.conn.their_state in _RECEIVING:
            self._start_request()  # the first bytes of a next request on a kept-alive connection
        self._request_bytes += len(data)
        self._unset_keepalive_if_required()
        self.conn.receive_data(data)
        limit = self.limits.max_header_bytes
        if waiting_for_head and head_size(self.conn.trailing_data[0], limit) > limit:
            self._refuse(431, f"request head over this front end's limit of {limit} bytes "
                              "(security.http.max_header_bytes)")  # fmt: skip
            return
        self.handle_events()
        self._after_events()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        if not self.transport.is_closing():
            self._after_events()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        if not websocket_head_fits(event.method, event.target, self.headers):
            self._refuse(431, f"websocket upgrade refused: a header line is over {MAX_LINE_LENGTH} bytes, or there "
                              f"are more than {MAX_NUM_HEADERS} headers")  # fmt: skip
            return
        self._upgraded = True  # the websocket protocol owns the connection now; the watcher cap governs it
        self._disarm_timers()
        self.book.close(self)
        super().handle_websocket_upgrade(event)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes h11 cannot parse (it logged them in one line), unless an answer to this request
        went out already: then only a close, where uvicorn's second answer would raise in h11."""
        self._disarm_timers()
        self._end_cycle()
        self.book.close(self)
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            super().send_400_response(msg)
        else:
            self.transport.close()

    def _after_events(self) -> None:
        """Timers and the book, once h11 has read what came: a complete head stops the head timer, a complete
        request the request timer, and a connection with no request under way waits under uvicorn's keep-alive
        timer (which a body read after its answer cancelled); a request being served is busy, all else idle."""
        if self._upgraded or self.transport.is_closing():
            return
        state = self.conn.their_state
        if state is not h11.IDLE:
            self._disarm_head()
        if state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0]):
            if self._request_timer is None:
                self._start_request()  # a pipelined request, from bytes that came with the one before
        else:
            self._disarm_timers()
            if state is h11.IDLE and self.timeout_keep_alive_task is None:  # between requests
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)  # fmt: skip
        if self.cycle is not None and not self.cycle.response_complete:
            self.book.busy(self)
        else:
            self.book.idle(self)

    # ---- deadlines ---------------------------------------------------------------------------------------------

    def _start_request(self) -> None:
        self._disarm_timers()
        self._request_started, self._request_bytes = self.loop.time(), 0
        if self.conn.their_state is h11.IDLE:
            self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)
        self._request_timer = self.loop.call_later(self.limits.request_timeout_s, self._request_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse(408, f"request head not received within {self.limits.header_timeout_s:g} s "
                              "(security.http.header_timeout_seconds)")  # fmt: skip

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self._upgraded or self.transport.is_closing() or self.conn.their_state not in _RECEIVING:
            return
        allowed = request_allowance(self.limits, self._request_bytes)
        left = self._request_started + allowed - self.loop.time()
        if left > 0:  # bytes came meanwhile, and bought the request more time
            self._request_timer = self.loop.call_later(left, self._request_timed_out)
            return
        if self.conn.their_state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_started:
            self._close(f"closed {self._peer()}: its request was answered, but its body not received within "
                        f"{allowed:g} s (security.http.request_timeout_seconds)")  # fmt: skip
            return
        self._refuse(408, f"request not received within {allowed:g} s ({_allowance_text(self.limits)})")

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _disarm_timers(self) -> None:
        self._disarm_head()
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    # ---- ending ------------------------------------------------------------------------------------------------

    def _refuse(self, status: int, text: str, *, retry_after_s: int | None = None) -> None:
        self.transport.write(refusal(status, text, retry_after_s=retry_after_s))
        self._close(f"refused {self._peer()} with {status}: {text}")

    def _close(self, line: str) -> None:
        """Close the connection, and say why in one line (info: an attack must not flood the log)."""
        self._disarm_timers()
        self._end_cycle()
        self.book.close(self)
        self.logger.info("%s", line)
        self.transport.close()

    def _end_cycle(self) -> None:
        """Tell a request still being served that its client is gone, as uvicorn does on a lost connection, so the
        app answers nothing more on a socket closed under it."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True
            cycle.message_event.set()

    def _peer(self) -> str:
        return f"a connection from {self.client[0]}:{self.client[1]}" if self.client else "a connection"


def _allowance_text(limits: HttpLimits) -> str:
    timeout = f"security.http.request_timeout_seconds: {limits.request_timeout_s:g} s"
    if not limits.min_request_rate:
        return timeout
    return f"{timeout}, plus 1 s for each {limits.min_request_rate} bytes received (min_request_rate_bytes_per_second)"


def _cap_text(client: str, limits: HttpLimits, *, per_client: bool) -> str:
    if per_client:
        return (f"too many connections from {client}: one client may hold {limits.connections_per_client} at once "
                "(security.http.max_connections_per_client), all busy; close some, or retry later")  # fmt: skip
    return (f"too many connections: this front end serves at most {limits.max_connections} at once, from all "
            "clients (security.http.max_connections), all busy; retry later")  # fmt: skip


def guarded_protocol(limits: HttpLimits) -> type[GuardedH11Protocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits` and to a connection book of its
    own (one per server)."""
    book: ConnectionBook[GuardedH11Protocol] = ConnectionBook()
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits, "book": book})
