"""uvicorn's internals the front end relies on: what one connection, and one client, may hold, enforced where uvicorn
reads the bytes (its httptools protocol, subclassed).

uvicorn's httptools protocol parses HTTP in C (llhttp): a put costs the front end about half the CPU it did under
uvicorn's pure-Python h11 protocol (issue 26). uvicorn alone leaves these holes: a request head is buffered without a
time limit (slowloris: a few bytes now and then keep a connection forever, and a fresh connection that sends nothing
is never closed), and so is a body (a byte every few seconds keeps a request, or a connection answered already, open
for good); httptools has no limit on a head's size at all; a websocket upgrade is parsed a second time by the
websockets library, whose own limit (8,192 bytes a line) fails the handshake without an answer, so the socket hangs
open; a client may hold every connection the server takes; and bad bytes after an answer make it answer again, in
the middle of the stream. Here, on top of uvicorn's httptools protocol:
- the head (request line and headers) must arrive within `header_timeout_s` of the request's first byte (of the
  connection's start, for its first request), else 408 and closed;
- the whole request, body included, within `request_timeout_s` of the same instant, plus a second for every
  `min_request_rate` bytes received (so a large body that keeps that pace is never cut), else 408 (or, when the
  request was answered already, without reading its body, a plain close);
- a head over `max_header_bytes` is answered 431 and closed: an unfinished one as soon as the bytes received of it
  pass the limit, a finished one (measured by its parsed parts) before the app sees it;
- a websocket upgrade whose head the websockets library would refuse (a line too long, too many headers) is
  answered 431 here instead of hanging;
- a client (a peer address: no byte, let alone a token, has been read yet) holds at most `max_connections_per_client`
  HTTP connections, and all clients together at most `max_connections` (websockets included): a newcomer over a cap
  first reclaims the connection idle longest (of its own client, or of any), and is answered 503 with Retry-After
  and closed only when every connection in its way is serving a request (connection_book.py says why);
- an invalid request (or invalid body bytes) after an answer was sent, or while an earlier request of the same
  connection is being answered, closes the connection without a second answer.
Idle keep-alive connections are closed by uvicorn after `keep_alive_s` (re-armed here when a body comes after its
answer); body size and the wait for each piece of it are the app's (frontend/app.py). uvicorn's own
`limit_concurrency` answers 503 only once a request head is complete, which a client that holds connections never
sends, so the caps stay here.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from http import HTTPStatus
from types import SimpleNamespace
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS

from scalablejob.model.config import HttpLimits
from scalablejob.model.connection_book import ConnectionBook, Reclaim, Refuse, client_of
from scalablejob.upstream.check import require
from scalablejob.upstream.whole_request import (
    WholeRequest,
    WholeRequestApp,
    answer_bytes,
    closes,
    stalled_body_text,
)

require("uvicorn", HttpToolsProtocol,
        ("_unset_keepalive_if_required", "_should_upgrade", "_unsupported_upgrade_warning", "handle_websocket_upgrade",
         "connection_made", "connection_lost", "on_message_begin", "on_headers_complete",
         "on_body", "on_message_complete", "on_response_complete", "send_400_response", "shutdown",
         "timeout_keep_alive_handler"))  # fmt: skip


def _fields_set_by(init: Callable[..., None]) -> SimpleNamespace:
    """The attribute names a constructor's code names, to check instance fields as `require` checks methods."""
    return SimpleNamespace(**dict.fromkeys(init.__code__.co_names))


require("uvicorn", _fields_set_by(HttpToolsProtocol.__init__),
        ("parser", "cycle", "pipeline", "client", "connections", "timeout_keep_alive_task", "timeout_keep_alive",
         "headers", "scope", "logger", "server_state"))  # fmt: skip
require("uvicorn", _fields_set_by(RequestResponseCycle.__init__),
        ("disconnected", "message_event", "response_started", "response_complete"))  # fmt: skip

RETRY_AFTER_S = 1  # a refused newcomer may retry soon: connections come and go by the second
REQUEST_LINE_EXTRA = len("  HTTP/1.1\r\n")  # a request line's bytes besides its method and target
HEADER_LINE_EXTRA = len(": \r\n")  # a header line's bytes besides its name and value
ONE_WRITE_MAX_BYTES = 64 * 1024  # a body up to this size is copied after its head, to leave in one write


class Phase(enum.Enum):
    """What of a connection's current request has come in."""

    IDLE = "idle"  # nothing: between requests (the last one all in and answered)
    HEAD = "head"  # part of a head, or nothing yet on a fresh connection (whose first request starts with it)
    BODY = "body"  # the head, and maybe part of the body
    DONE = "done"  # all of it


def refusal(status: int, text: str, *, retry_after_s: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, written straight to the socket."""
    body = text.encode("utf-8")
    retry = f"retry-after: {retry_after_s}\r\n" if retry_after_s is not None else ""
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n{retry}connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


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


class OneWrite:
    """The connection as one response's cycle writes to it: the response head is held until the first piece of its
    body, or the end of the event loop's step, so that a short answer leaves in one write (one system call, one TCP
    segment) where uvicorn makes two."""

    __slots__ = ("_cycle", "_head", "_head_seen", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, cycle: RequestResponseCycle, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._cycle = cycle
        self._loop = loop
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._head = None
            if len(data) <= ONE_WRITE_MAX_BYTES:
                self._transport.write(head + data)
                return
            self._transport.write(head)
        elif not self._head_seen and self._cycle.response_started:  # what comes first once it started: its head
            self._head_seen, self._head = True, data
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        head, self._head = self._head, None
        if head is not None:
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that was refused (the answer is written already)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head and request deadlines, a head size limit answered 431, connection caps
    per client and for all, and a quiet close for bad bytes after an answer."""

    limits: ClassVar[HttpLimits] = HttpLimits()
    book: ClassVar[ConnectionBook[GuardedHttpToolsProtocol]] = ConnectionBook()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._request_timer: asyncio.TimerHandle | None = None
        self._request_started = 0.0
        self._request_bytes = 0
        self._upgraded = False
        self._phase = Phase.HEAD
        self._head_bytes = 0  # bytes received of an unfinished head, at most
        self._began = False  # a request began in the bytes being parsed
        self._feeding = 0  # the size of the bytes being parsed
        self._fed_body = 0  # body bytes in the bytes being parsed
        self._whole_app: WholeRequestApp | None = self.app if hasattr(self.app, "whole_request_route") else None
        self._whole: list[bytes] | None = None  # the body so far of a request to answer whole
        self._whole_route = ""
        self._stall_timer: asyncio.TimerHandle | None = None  # a whole request's body must keep coming
        self._own_cycle = False  # the request being read has its cycle (or whole request) already
        self._last_answer = False  # the server is stopping: the whole request being read is answered, then closed

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
        self._request_started = self.loop.time()
        self._start_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_timers()
        self._disarm_stall()
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
        if self._phase is Phase.IDLE:  # the first bytes of a next request on a kept-alive connection: its clock
            self._phase = Phase.HEAD  # starts now, its timers once it is known not to have come whole at once
            self._request_started, self._request_bytes = self.loop.time(), 0
        self._request_bytes += len(data)
        self._began, self._fed_body, self._feeding = False, 0, len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if not self.transport.is_closing():  # else refused from a callback, and answered already
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return
        if self._phase is Phase.HEAD and not self.transport.is_closing():
            self._head_bytes = len(data) - self._fed_body if self._began else self._head_bytes + len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse_large_head()
                return
        if self._whole is not None and not self.transport.is_closing():  # its body goes on in a next read
            self._disarm_stall()
            self._stall_timer = self.loop.call_later(self.limits.body_timeout_s, self._whole_stalled)
        self._after_events()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase, self._began, self._head_bytes = Phase.HEAD, True, 0
        self._whole, self._own_cycle = None, False

    def on_headers_complete(self) -> None:
        limit = self.limits.max_header_bytes
        at_most = self._feeding if self._began else self._head_bytes + self._feeding  # bytes it can have
        if at_most > limit and self._head_size() > limit:
            self._refuse_large_head()
            raise _Refused
        self._phase = Phase.BODY
        self._disarm_head()
        route = self._whole_route_of()
        if route is None:
            self._start_cycle()
        else:  # its answer waits for its body, which may all be in this read
            self._whole, self._whole_route = [], route

    def _start_cycle(self) -> None:
        """uvicorn's ASGI cycle for the request read."""
        super().on_headers_complete()
        self._own_cycle = True
        if self.cycle is not None and self.cycle.transport is self.transport:  # not an upgrade: a new cycle
            self.cycle.transport = OneWrite(self.transport, self.cycle, self.loop)  # type: ignore[assignment]

    def _whole_route_of(self) -> str | None:
        """The app's route for the request read, if it is to be answered whole: the app takes it, and it is a plain
        HTTP/1.1 keep-alive request (no upgrade, no 100-continue) with no other answer under way."""
        app, parser = self._whole_app, self.parser
        if app is None or (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            return None
        if self.expect_100_continue or parser.should_upgrade() or not parser.should_keep_alive():
            return None
        if parser.get_http_version() != "1.1":
            return None
        return app.whole_request_route(parser.get_method(), self.url, self.headers)

    def _head_size(self) -> int:
        """The size of the head just parsed, as its parts tell (but the spaces around header values)."""
        lines = sum(len(name) + len(value) + HEADER_LINE_EXTRA for name, value in self.headers)
        return len(self.parser.get_method()) + len(self.url) + REQUEST_LINE_EXTRA + lines + 2

    def on_body(self, body: bytes) -> None:
        self._fed_body += len(body)
        if self._whole is not None:
            self._whole.append(body)
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._whole is not None:
            self._phase = Phase.DONE
            self._disarm_stall()
            self._answer_whole(b"".join(self._whole))
            return
        super().on_message_complete()
        answered = self.cycle is not None and self.cycle.response_complete
        self._phase = Phase.IDLE if answered else Phase.DONE

    def _answer_whole(self, body: bytes) -> None:
        """Answer a request that came whole through the app's whole-request handler, in a task as uvicorn's cycles
        run (a graceful shutdown waits for it); it stands as the connection's cycle meanwhile."""
        self._whole, self._own_cycle = None, True
        request = WholeRequest()
        request.keep_alive = not self._last_answer
        self.cycle = request  # type: ignore[assignment]
        task = self.loop.create_task(self._run_whole(request, self._whole_route, self.url, self.headers, body))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)

    async def _run_whole(
        self, request: WholeRequest, route: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        assert self._whole_app is not None
        try:
            answer = await self._whole_app.answer_whole_request(route, target, headers, body)
            response = answer_bytes(answer, self.server_state.default_headers, close=not request.keep_alive)
        except Exception as exc:
            self.logger.error("Exception in the whole-request handler", exc_info=exc)
            answer = (500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")
            response = answer_bytes(answer, self.server_state.default_headers, close=True)
            request.keep_alive = False
        if request.disconnected or self.transport.is_closing():  # the connection is gone: nothing to answer
            return
        self.transport.write(response)
        request.response_started = request.response_complete = True
        if not request.keep_alive or closes(answer):
            self.transport.close()
        self.on_response_complete()

    def _whole_stalled(self) -> None:
        self._stall_timer = None
        if self._whole is not None and not self.transport.is_closing():
            self._refuse(408, stalled_body_text(self.limits.body_timeout_s))

    def _disarm_stall(self) -> None:
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()  # may start a pipelined request
        if self.transport.is_closing():
            return
        if self._phase is Phase.DONE and self.cycle is not None and self.cycle.response_complete:
            self._phase = Phase.IDLE
        elif self._phase in (Phase.HEAD, Phase.BODY) and self._request_timer is None:  # one that waited its turn
            self._request_started, self._request_bytes = self.loop.time(), 0
        self._after_events()

    def shutdown(self) -> None:
        """uvicorn's graceful stop of the connection; a whole request whose body is coming is answered first, as
        uvicorn answers a request under way."""
        if self._whole is not None:
            self._last_answer = True
            return
        super().shutdown()

    def handle_websocket_upgrade(self) -> None:
        if not websocket_head_fits(self.scope["method"].encode(), self.url, self.headers):
            self._refuse(431, f"websocket upgrade refused: a header line is over {MAX_LINE_LENGTH} bytes, or there "
                              f"are more than {MAX_NUM_HEADERS} headers")  # fmt: skip
            return
        self._upgraded = True  # the websocket protocol owns the connection now; the watcher cap governs it
        self._disarm_timers()
        self.book.close(self)
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes httptools cannot parse (logged in one line), unless an answer to this request
        went out already, or an earlier request of the connection is being answered: then only a close, where a
        second answer would be read as part of the first."""
        own = self._phase is Phase.BODY and self._own_cycle
        answering = self.cycle is not None and (
            self.cycle.response_started if own else not self.cycle.response_complete
        )
        self._disarm_timers()
        self._disarm_stall()
        self._end_cycle()
        self.book.close(self)
        if answering:
            self.transport.close()
        else:
            super().send_400_response(msg)

    def _after_events(self) -> None:
        """Timers and the book, once httptools has read what came: a complete head stops the head timer, a complete
        request the request timer; a request parsed while an earlier one is answered waits untimed (uvicorn reads
        no more of it meanwhile); a connection between requests waits under uvicorn's keep-alive timer (which a
        body read after its answer cancelled); a request being served is busy, all else idle."""
        if self._upgraded or self.transport.is_closing():
            return
        phase = self._phase
        if phase is not Phase.HEAD:
            self._disarm_head()
        serving = (self.cycle is not None and not self.cycle.response_complete) or self._whole is not None
        waiting = bool(self.pipeline) or (phase is Phase.HEAD and serving)  # behind a request being answered
        if phase in (Phase.HEAD, Phase.BODY) and not waiting:
            if self._request_timer is None:
                self._start_request()  # a request not all in at once, or a pipelined one whose turn came
        else:
            self._disarm_timers()
            if phase is Phase.IDLE and self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)  # fmt: skip
        if serving:
            self.book.busy(self)
        else:
            self.book.idle(self)

    # ---- deadlines ---------------------------------------------------------------------------------------------

    def _start_request(self) -> None:
        """Arm the request's timers, from the instant its clock started."""
        self._disarm_timers()
        started, limits = self._request_started, self.limits
        if self._phase is Phase.HEAD:
            self._head_timer = self.loop.call_at(started + limits.header_timeout_s, self._head_timed_out)
        self._request_timer = self.loop.call_at(started + limits.request_timeout_s, self._request_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._phase is Phase.HEAD and not self._upgraded and not self.transport.is_closing():
            self._refuse(408, f"request head not received within {self.limits.header_timeout_s:g} s "
                              "(security.http.header_timeout_seconds)")  # fmt: skip

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self._upgraded or self.transport.is_closing() or self._phase not in (Phase.HEAD, Phase.BODY):
            return
        allowed = request_allowance(self.limits, self._request_bytes)
        left = self._request_started + allowed - self.loop.time()
        if left > 0:  # bytes came meanwhile, and bought the request more time
            self._request_timer = self.loop.call_later(left, self._request_timed_out)
            return
        if self._phase is Phase.BODY and self._own_cycle and self.cycle is not None and self.cycle.response_started:
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

    def _refuse_large_head(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(431, f"request head over this front end's limit of {limit} bytes (security.http.max_header_bytes)")

    def _refuse(self, status: int, text: str, *, retry_after_s: int | None = None) -> None:
        self.transport.write(refusal(status, text, retry_after_s=retry_after_s))
        self._close(f"refused {self._peer()} with {status}: {text}")

    def _close(self, line: str) -> None:
        """Close the connection, and say why in one line (info: an attack must not flood the log)."""
        self._disarm_timers()
        self._disarm_stall()
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


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpToolsProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to `limits` and to a connection book of its
    own (one per server)."""
    book: ConnectionBook[GuardedHttpToolsProtocol] = ConnectionBook()
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": limits, "book": book})
