"""The HTTP and websocket routes of the queue service: `/api/predict/<queue>` and `/api/predict/<queue>/sink`.

The handlers only parse, authenticate, dispatch and answer: queue operations live in queues.py,
attributes and search in status.py, watching in watch.py. A client error is a 4xx with a short text
that says what was wrong (a client gone before its body was in is no error: nothing to answer, nothing logged above
debug); any Redis error (unreachable, or refusing: OOM, MISCONF, READONLY) is a 503 (the SDK
retries it); anything else is a 500. A 5xx says only that the server failed (the detail, which may hold Redis' own
text or the broker's address, goes to the log), and the process goes on. A queue not served here and a wrong token
get the same 401, so that no one learns which queue names exist; HEAD reads like GET but never deletes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote

import redis.exceptions
from redis import asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from scalablejob.api.client import JobClient
from scalablejob.frontend.auth import HEADER as AUTH_HEADER
from scalablejob.frontend.auth import NO_QUEUE, TaskTypeForbidden, check_token
from scalablejob.frontend.binding import SINK_SUFFIX, FrontEnd
from scalablejob.frontend.dashboard import Dashboard
from scalablejob.frontend.dashboard import routes as dashboard_routes
from scalablejob.frontend.dashboard_login import dashboard_login
from scalablejob.frontend.deadline import within
from scalablejob.frontend.params import (
    WatchParams,
    parse_bool,
    parse_get,
    parse_indexes,
    parse_int,
    parse_truncate,
    parse_watch,
    single_values,
    tags_of,
)
from scalablejob.frontend.protocol import CONTENT_TYPE, DataFrame, encode_frame_list
from scalablejob.frontend.put_batch import ScriptBatch
from scalablejob.frontend.queues import InputQueue, Queue, SinkQueue
from scalablejob.frontend.status import Inspector, WorkerCensus
from scalablejob.frontend.watch import READ_BLOCK_MS, WatcherLost, WatchSession, group_name
from scalablejob.frontend.watcher_ids import Claim, WatcherKey
from scalablejob.frontend.watcher_registry import WatcherRegistry
from scalablejob.model.config import DEFAULT_MAX_BODY_BYTES, HttpLimits
from scalablejob.model.errors import (
    AuthError,
    BrokerError,
    ParameterError,
    PayloadTooLarge,
    QueueFull,
    QueueNotFound,
    QueueServiceError,
    RequestError,
    TaskTypeError,
    WatcherConflict,
)
from scalablejob.store.history import HistoryReader
from scalablejob.store.redis_url import connect_async
from scalablejob.upstream.redis_internals import without_maintenance_notifications
from scalablejob.upstream.whole_request import Answer, stalled_body_text

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Eas-Queueservice-Request-Id"
INDEX_HEADER = "X-Eas-Queueservice-Index"
UID_HEADER = "X-EAS-QueueService-Redis-Uid"
GID_HEADER = "X-EAS-QueueService-Redis-Gid"
DEFAULT_GROUP = "eas"  # the SDK's default gid
MAX_IDENTITY_CHARS = 256
QUEUE_ROOT = "/api/predict/"
QUEUE_ROOT_BYTES = QUEUE_ROOT.encode("ascii")
REQUEST_ID_RAW = REQUEST_ID_HEADER.lower().encode("latin-1")
_TEXT = (b"content-type", b"text/plain; charset=utf-8")
SESSION_STOP_TIMEOUT_S = 2 * READ_BLOCK_MS / 1000  # a session notices its stop flag within one blocking read
WATCHER_LOST_CLOSE = 1008  # policy violation: one connection per watcher, and another process holds this one now


class TooManyWatchers(QueueServiceError):
    """A front end (one token) already has as many watchers connected as security.http.max_watchers_per_token."""


class BodyTimeout(QueueServiceError):
    """A request body stalled: no piece of it came within security.http.body_timeout_seconds."""


# Most specific first: the first match gives the status.
_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (AuthError, 401), (TaskTypeForbidden, 403), (QueueNotFound, 404), (BodyTimeout, 408), (PayloadTooLarge, 413),
    (WatcherConflict, 409), (QueueFull, 429), (TooManyWatchers, 429), (ParameterError, 400), (TaskTypeError, 400),
    (RequestError, 400), (QueueServiceError, 400), (BrokerError, 503), (redis.exceptions.RedisError, 503),
)  # fmt: skip
_CLOSING = (BodyTimeout, PayloadTooLarge)  # the body was not read to its end: the connection cannot be reused


def status_of(exc: Exception) -> int:
    """The HTTP status an error is answered with; 500 for anything not expected."""
    return next((status for kind, status in _STATUS if isinstance(exc, kind)), 500)


class FrontEndService:
    """What the routes work on: the queues of the front ends served, Redis, the connected watchers."""

    def __init__(
        self, front_ends: Sequence[FrontEnd], broker: str, *, default_task_type: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, limits: HttpLimits | None = None,
    ) -> None:  # fmt: skip
        self.front_ends = tuple(front_ends)
        self.broker = broker
        self.default_task_type = default_task_type
        self.max_body_bytes = max_body_bytes
        self.limits = limits or HttpLimits()
        self.watchers: WatcherRegistry | None = None  # at start: it needs Redis
        self.queues: dict[str, Queue] = {}
        self._clients: list[JobClient] = []
        self._redis: aioredis.Redis | None = None
        self._put_redis: aioredis.Redis | None = None
        self.inspector: Inspector | None = None
        self.dashboard = Dashboard(dashboard_login(self.front_ends))

    async def start(self) -> None:
        self._redis = connect_async(self.broker, **without_maintenance_notifications())
        # puts' own client: no socket timeout, for which redis-py runs each write in a task of its own (about 30 µs
        # of a put's CPU, issue 26); each put has a deadline instead (queues.PUT_TIMEOUT_S)
        self._put_redis = connect_async(self.broker, socket_timeout=None, **without_maintenance_notifications())
        service = self.front_ends[0].service
        self.watchers = WatcherRegistry(self._redis, service)
        await self.watchers.start()
        self.inspector = Inspector(self._redis, WorkerCensus(self._redis, service), self.max_body_bytes)
        self.dashboard.reader = HistoryReader(self._redis, service)
        put_batch = ScriptBatch(self._put_redis)  # the puts of every front end served
        for fe in self.front_ends:
            client = JobClient(fe.service, self.broker, default_task_type=self.default_task_type, frontend=fe.name)
            self._clients.append(client)
            self.queues[fe.name] = InputQueue(self._redis, client, fe, self.watchers.removed, put_batch)
            self.queues[fe.sink_name] = SinkQueue(self._redis, client, fe, self.watchers.removed)

    async def stop(self) -> None:
        if self.watchers is not None:
            await self.watchers.stop()
        for client in self._clients:
            client.close()
        for connection in (self._redis, self._put_redis):
            if connection is not None:
                await connection.aclose()

    def authorized(self, path: str, header: str | None) -> Queue:
        """The queue at `path`, if the request's Authorization `header` carries its front end's token. A queue not
        served here fails the same check, with the same answer and in the same time: the names served are not told."""
        queue = self.queues.get(path)
        check_token(header, NO_QUEUE if queue is None else queue.front_end.token, path)
        assert queue is not None  # NO_QUEUE matches no token
        return queue


def queue_path(path_params: Mapping[str, Any]) -> str:
    suffix = path_params.get("suffix")
    name = str(path_params["name"])
    return name if suffix is None else f"{name}/{suffix}"


# ---- HTTP ----------------------------------------------------------------------------------------------------


async def read_body(receive: Receive, declared: str | None, limit: int, timeout_s: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to be over `limit` bytes (`declared` in its
    Content-Length, or counted as it comes, chunked or not: no more than `limit` bytes and one piece are ever held),
    and with 408 when no piece comes within `timeout_s`."""
    if declared is not None and declared.isdigit():
        check_size(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        try:
            message = await within(receive(), timeout_s)
        except TimeoutError:
            raise BodyTimeout(stalled_body_text(timeout_s)) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over this front end's limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def check_size(size: int, limit: int) -> None:
    if size > limit:
        raise PayloadTooLarge(f"body of {size} bytes is over this front end's limit of {limit} bytes")


async def put(service: FrontEndService, path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """A put, on the ASGI scope and messages alone (a put whose body came with its head is answered whole, without
    ASGI: FrontEndApp.answer_whole_request)."""
    token, declared = head_fields(scope["headers"])
    queue = service.authorized(path, token)
    tags = put_tags(scope["query_string"])
    body = await read_body(receive, declared, service.max_body_bytes, service.limits.body_timeout_s)
    status, headers, text = await enqueued(queue, tags, body)
    headers = [*headers, (b"content-length", b"%d" % len(text))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": text})


def head_fields(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """A put's Authorization and Content-Length headers, from the raw head: Starlette's request and response objects
    cost tens of µs per put, cold between requests (issue 26). The first of each, as Starlette's Headers.get finds
    it."""
    token = declared = None
    for name, value in headers:
        if name == b"authorization" and token is None:
            token = value.decode("latin-1")
        elif name == b"content-length" and declared is None:
            declared = value.decode("latin-1")
    return token, declared


def put_tags(query_string: bytes) -> dict[str, str]:
    """A put's tags, from its query string as Starlette parses it."""
    return tags_of(single_values(parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)))


async def enqueued(queue: Queue, tags: dict[str, str], body: bytes) -> Answer:
    """Put the body on the queue; the answer: its index, and its request id in a header."""
    index, request_id = await queue.put(body, tags)
    return 200, [_TEXT, (REQUEST_ID_RAW, request_id.encode("latin-1"))], str(index).encode("ascii")


def answer_of(response: Response) -> Answer:
    """A Starlette response as an answer to a whole request."""
    headers = [(name, value) for name, value in response.raw_headers if name != b"content-length"]
    return response.status_code, headers, bytes(response.body)


def split_target(target: bytes) -> tuple[str | None, bytes]:
    """A request target's path, decoded as uvicorn decodes it (None if it is not ASCII), and its query."""
    path, _, rest = target.partition(b"#")[0].partition(b"?")
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        return None, rest
    return (unquote(text) if "%" in text else text), rest


async def get(service: FrontEndService, queue: Queue, query: dict[str, str], request: Request) -> Response:
    assert service.inspector is not None
    if parse_bool(query, "_attrs_"):
        return JSONResponse(await service.inspector.attributes(queue))
    if parse_bool(query, "_search_"):
        if not query.get("_index_"):
            raise ParameterError("_index_", "required with _search_=true: expected the index of the item")
        return JSONResponse(await service.inspector.search(queue, parse_int(query, "_index_", 0, low=1)))
    if parse_bool(query, "_watch_"):
        raise ParameterError("_watch_", "a watch needs a websocket connection (ws:// or wss://), not a plain GET")
    params = parse_get(query)
    if request.method == "HEAD":  # a HEAD must not change anything: no auto delete, which would withdraw requests
        params = dataclasses.replace(params, auto_delete=False)
    entries = await queue.read(params, request.is_disconnected)
    if params.raw:
        if not entries:
            return Response(status_code=204)
        first = entries[0]
        return Response(first.data, headers={INDEX_HEADER: str(first.index), REQUEST_ID_HEADER: first.request_id or ""})
    frames = [DataFrame(index=entry.index, data=entry.data, tags=entry.tags) for entry in entries]
    return Response(encode_frame_list(frames), media_type=CONTENT_TYPE)


async def commit(service: FrontEndService, queue: Queue, query: dict[str, str], request: Request) -> Response:
    await queue.remove(parse_indexes(query.get("_indexes_")))
    return PlainTextResponse("OK")


async def delete(service: FrontEndService, queue: Queue, query: dict[str, str], request: Request) -> Response:
    if parse_bool(query, "_trunc_"):
        await queue.truncate(parse_truncate(query))
    else:
        await queue.remove(parse_indexes(query.get("_indexes_")))
    return PlainTextResponse("OK")


Handler = Callable[[FrontEndService, Queue, dict[str, str], Request], Awaitable[Response]]
_HANDLERS: dict[str, Handler] = {"GET": get, "PUT": commit, "DELETE": delete}  # and POST: put
_QUEUE_METHODS = frozenset({*_HANDLERS, "HEAD", "POST"})  # HEAD reads as GET


async def queue_endpoint(service: FrontEndService, path: str, scope: Scope, receive: Receive, send: Send) -> None:
    """A plain HTTP request to queue `path`, answered by its method's handler."""
    method = scope["method"]
    try:
        if method == "POST":
            await put(service, path, scope, receive, send)
            return
        request = Request(scope, receive)
        queue = service.authorized(path, request.headers.get(AUTH_HEADER))
        query = single_values(request.query_params.multi_items())
        response = await _HANDLERS["GET" if method == "HEAD" else method](service, queue, query, request)
    except ClientDisconnect:  # hung up, or closed by the protocol (a deadline, bad body bytes), which said why
        logger.debug("%s %s: the client went away before its body was in", method, scope["path"])
        response = Response(status_code=400)  # never sent: the connection is gone
    except Exception as exc:
        response = error_response(exc, f"{method} {scope['path']}")
    await response(scope, receive, send)


def queue_path_of(path: str) -> str | None:
    """The queue a path names, `<name>` or `<name>/<suffix>` after /api/predict/ (what Starlette's routes
    /api/predict/{name} and /api/predict/{name}/{suffix} would match), else None."""
    if not path.startswith(QUEUE_ROOT):
        return None
    rest = path[len(QUEUE_ROOT) :]
    parts = rest.split("/")
    return rest if len(parts) <= 2 and all(parts) else None


def error_response(exc: Exception, what: str) -> Response:
    status = status_of(exc)
    if status >= 500:
        logger.error("%s failed: %s: %s", what, type(exc).__name__, exc, exc_info=status == 500)
        reason = "the broker is unavailable or refused the operation" if status == 503 else "an internal error"
        return PlainTextResponse(f"{what} failed on the server: {reason} (the front end's log says more); retry later",
                                 status_code=status)  # fmt: skip
    headers = {"Connection": "close"} if isinstance(exc, _CLOSING) else None
    return PlainTextResponse(str(exc), status_code=status, headers=headers)


def _unknown_path(path: str) -> Response:
    message = f"unknown path {path}: expected /api/predict/<queue>, /api/predict/<queue>/{SINK_SUFFIX} or /dashboard"
    return PlainTextResponse(message, status_code=404)


async def unknown_path(request: Request) -> Response:
    return _unknown_path(request.url.path)


async def unknown_websocket_path(websocket: WebSocket) -> None:
    await deny(websocket, _unknown_path(websocket.url.path))


# ---- Websocket -----------------------------------------------------------------------------------------------


def identity(headers: Mapping[str, str]) -> tuple[str, str]:
    """(group, consumer) from the SDK's identity headers; a client without a uid is a consumer of its own."""
    group = headers.get(GID_HEADER) or DEFAULT_GROUP
    consumer = headers.get(UID_HEADER) or f"anonymous-{uuid.uuid4().hex}"
    for header, value in ((GID_HEADER, group), (UID_HEADER, consumer)):
        if len(value) > MAX_IDENTITY_CHARS:
            raise ParameterError(header, f"expected at most {MAX_IDENTITY_CHARS} characters, got {len(value)}")
    return group, consumer


async def watch_endpoint(websocket: WebSocket) -> None:
    service: FrontEndService = websocket.app.state.service
    try:
        queue = service.authorized(queue_path(websocket.path_params), websocket.headers.get(AUTH_HEADER))
        query = single_values(websocket.query_params.multi_items())
        if not parse_bool(query, "_watch_"):
            raise ParameterError("_watch_", "expected _watch_=true on a websocket connection")
        params = parse_watch(query)
        gid, uid = identity(websocket.headers)
        key = (queue.stream, group_name(gid, params.filters), uid)
    except Exception as exc:
        await deny(websocket, error_response(exc, f"watch {websocket.url.path}"))
        return
    await _watch(websocket, service, queue, params, key)


async def _watch(
    websocket: WebSocket, service: FrontEndService, queue: Queue, params: WatchParams, key: WatcherKey
) -> None:
    """One watcher: its queue, group and consumer held by this connection alone (over all front-end processes),
    its token under its cap of watchers, its session run until it ends."""
    assert service.watchers is not None
    front_end, cap = queue.front_end.name, service.limits.max_watchers_per_token
    try:
        claim = await service.watchers.acquire(key, front_end, cap)
    except Exception as exc:
        await deny(websocket, error_response(exc, "watch"))
        return
    if claim is not Claim.HELD:
        await deny(websocket, error_response(_refusal(claim, queue, key, cap), "watch"))
        return
    try:
        await websocket.accept()
        session = WatchSession(queue, params, key, service.watchers, websocket.send_bytes)
        try:
            await until_disconnected(websocket, session)
        finally:  # what was sent is committed before the same watcher may connect again
            await session.settle(SESSION_STOP_TIMEOUT_S)
    finally:
        await service.watchers.release(key)


def _refusal(claim: Claim, queue: Queue, key: WatcherKey, cap: int) -> QueueServiceError:
    if claim is Claim.CAPPED:
        return TooManyWatchers(f"front end {queue.front_end.name} already has {cap} watchers connected, as many as "
                               "one token may (security.http.max_watchers_per_token, counted over all front-end "
                               "processes): close one, or retry later")  # fmt: skip
    return WatcherConflict(f"a watcher of queue {queue.name} with group {key[1]} and uid {key[2]} is already connected")


async def deny(websocket: WebSocket, response: Response) -> None:
    """Refuse a websocket handshake with an HTTP answer, so the client sees the status and the reason."""
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # a server without the denial extension: a plain refusal
        await websocket.close(code=1008)


async def until_disconnected(websocket: WebSocket, session: WatchSession) -> None:
    """Run the session until the client goes away (or the session ends); then stop both."""
    sender = asyncio.ensure_future(session.run())
    receiver = asyncio.ensure_future(_drain(websocket))
    try:
        await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        client_gone = receiver.done()
        session.stop()  # besides the cancel: redis.asyncio has been seen to swallow a cancellation
        for task in (sender, receiver):
            task.cancel()
        await asyncio.wait({sender, receiver}, timeout=SESSION_STOP_TIMEOUT_S)
    if receiver.done() and not receiver.cancelled():
        receiver.exception()  # retrieved, so that asyncio does not report it as lost
    failure = sender.exception() if sender.done() and not sender.cancelled() else None
    if isinstance(failure, WatcherLost) and not client_gone:
        logger.warning("watch of %s: %s; its connection here is closed", websocket.url.path, failure)
        with contextlib.suppress(Exception):  # one connection per watcher: the client's other one goes on
            await websocket.close(code=WATCHER_LOST_CLOSE, reason="this watcher is connected to another front end")
        return
    if isinstance(failure, Exception) and not isinstance(failure, WebSocketDisconnect | OSError) and not client_gone:
        logger.error("watch of %s failed: %s", websocket.url.path, failure, exc_info=failure)
        with contextlib.suppress(Exception):
            await websocket.close(code=1011)  # the client learns that the session ended, and reconnects


async def _drain(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, until it disconnects; pings are answered by the server itself."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass


# ---- The app -------------------------------------------------------------------------------------------------


class FrontEndApp:
    """The ASGI app. A plain HTTP request to a queue goes straight to its handler: a put is the front end's hot
    path, and Starlette's middleware and router cost it 80-100 µs of CPU (issue 26); websockets,
    the dashboard, unknown paths, other methods (405) and the lifespan go through Starlette. A put that comes whole
    in one read is answered without ASGI at all, when the guarded protocol asks (upstream/whole_request.py)."""

    def __init__(self, service: FrontEndService, router: Starlette) -> None:
        self.service = service
        self.router = router

    def whole_request_route(self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
        """The queue of a put (its path after /api/predict/), to answer it from its whole bytes: one with its
        queue's token and a body of a declared size within the limit. Any other is answered through ASGI, 401 or 413
        before its body is read, as a client that sent no token need not send its body."""
        if method != b"POST" or not target.startswith(QUEUE_ROOT_BYTES):
            return None
        path = split_target(target)[0]
        route = None if path is None else queue_path_of(path)
        token, declared = head_fields(headers)
        if route is None or declared is None or not declared.isdigit() or int(declared) > self.service.max_body_bytes:
            return None
        try:
            self.service.authorized(route, token)
        except AuthError:
            return None
        return route

    async def answer_whole_request(
        self, route: str, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> Answer:
        """A put that came whole (its token checked already), answered as `put` answers it through ASGI."""
        service = self.service
        try:
            check_size(len(body), service.max_body_bytes)
            return await enqueued(service.queues[route], put_tags(split_target(target)[1]), body)
        except Exception as exc:
            return answer_of(error_response(exc, f"POST {QUEUE_ROOT}{route}"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _QUEUE_METHODS:
            path = queue_path_of(scope["path"])
            if path is not None:
                await queue_endpoint(self.service, path, scope, receive, send)
                return
        await self.router(scope, receive, send)


def create_app(service: FrontEndService) -> FrontEndApp:
    """The ASGI app serving `service`'s queues; Redis connections open at startup and close at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    routes = [
        *dashboard_routes(),
        WebSocketRoute("/api/predict/{name}", watch_endpoint),
        WebSocketRoute("/api/predict/{name}/{suffix}", watch_endpoint),
        Route("/{path:path}", unknown_path, methods=list(_HANDLERS)),
        WebSocketRoute("/{path:path}", unknown_websocket_path),
    ]
    router = Starlette(routes=routes, lifespan=lifespan)
    router.state.service = service
    router.state.dashboard = service.dashboard
    return FrontEndApp(service, router)
