"""The routes of the live dashboard: `/dashboard` (the page, or the login form), `/dashboard/login` and `/logout`,
`/dashboard/events` (server-sent events, dashboard_feed) and `/dashboard/static/<file>` (our script and style, and
uPlot, vendored: no CDN, no build step).

Who may see it is dashboard_login's: without a session or the token, the page answers 401 with the login form, and
the events 401 with a short text. The static files hold no data and need no login. Pages carry a Content Security
Policy that lets only our own files run.
"""

from __future__ import annotations

import contextlib
import html
import importlib.resources
import logging
import string
import urllib.parse
from collections.abc import AsyncGenerator, Callable
from functools import cache

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from scalablejob.frontend.dashboard_feed import feed
from scalablejob.frontend.dashboard_login import PATH, DashboardLogin
from scalablejob.store.history import HistoryReader

logger = logging.getLogger(__name__)

MAX_LOGIN_BYTES = 4096
MAX_STREAMS = 16  # dashboards connected to one front end process at once (each polls Redis twice a second)
STATIC = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "uPlot.iife.min.js": "text/javascript; charset=utf-8",
    "uPlot.min.css": "text/css; charset=utf-8",
    "uPlot.LICENSE": "text/plain; charset=utf-8",
}
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Dashboard:
    """What the routes need: the login (None: this process does not serve the service's own front end) and, once
    the front end has started, the reader of the history."""

    def __init__(self, login: DashboardLogin | None) -> None:
        self.login = login
        self.reader: HistoryReader | None = None
        self.streams = 0


@cache
def static_file(name: str) -> bytes:
    return importlib.resources.files("scalablejob.frontend").joinpath("static", name).read_bytes()


def login_page(message: str = "") -> str:
    template = string.Template(static_file("login.html").decode())
    return template.substitute(message=html.escape(message))


def _dashboard_of(request: Request) -> Dashboard:
    dashboard: Dashboard = request.app.state.dashboard
    return dashboard


def _unserved() -> Response:
    return PlainTextResponse(
        "no dashboard here: it is served by the front end of the service itself (the one named like the service)",
        status_code=404,
    )


def _allowed(request: Request, login: DashboardLogin) -> bool:
    return login.allows(request.headers, request.cookies)


async def page(request: Request) -> Response:
    login = _dashboard_of(request).login
    if login is None:
        return _unserved()
    if not _allowed(request, login):
        return Response(login_page(), 401, PAGE_HEADERS, "text/html; charset=utf-8")
    return Response(static_file("dashboard.html"), 200, PAGE_HEADERS, "text/html; charset=utf-8")


async def log_in(request: Request) -> Response:
    """The login form's POST: the token, checked in constant time; a session cookie and back to the page."""
    login = _dashboard_of(request).login
    if login is None:
        return _unserved()
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BYTES:
            return PlainTextResponse(f"login form over {MAX_LOGIN_BYTES} bytes: expected a token", 413)
    token = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
    if not login.token_matches(token):
        message = "wrong token: expected the token of this service's front end" if token else "token is required"
        return Response(login_page(message), 401, PAGE_HEADERS, "text/html; charset=utf-8")
    response = RedirectResponse(PATH, status_code=303)
    response.headers["Set-Cookie"] = login.cookie_header(login.new_session(), secure=_secure(request))
    return response


async def log_out(request: Request) -> Response:
    login = _dashboard_of(request).login
    if login is None:
        return _unserved()
    response = RedirectResponse(PATH, status_code=303)
    response.headers["Set-Cookie"] = login.cookie_header("", secure=_secure(request))
    return response


async def events(request: Request) -> Response:
    dashboard = _dashboard_of(request)
    if dashboard.login is None:
        return _unserved()
    if not _allowed(request, dashboard.login):
        return PlainTextResponse("log in at /dashboard first: expected a session cookie or the token", 401)
    if dashboard.streams >= MAX_STREAMS:
        return PlainTextResponse(f"{MAX_STREAMS} dashboards are open already: close one", 429, {"Retry-After": "5"})
    assert dashboard.reader is not None  # set when the front end starts, before any request
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(_counted(dashboard, feed(dashboard.reader)), headers=headers,
                             media_type="text/event-stream")  # fmt: skip


async def _counted(dashboard: Dashboard, stream: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
    """The stream, counted among the open ones while it runs."""
    dashboard.streams += 1
    try:
        async for chunk in stream:
            yield chunk
    finally:
        dashboard.streams -= 1
        with contextlib.suppress(Exception):
            await stream.aclose()


async def static(request: Request) -> Response:
    name = str(request.path_params["name"])
    if name not in STATIC:
        return PlainTextResponse(f"no static file {name!r}: expected one of {', '.join(STATIC)}", 404)
    return Response(static_file(name), 200, {"Cache-Control": "max-age=300", **PAGE_HEADERS}, STATIC[name])


def _secure(request: Request) -> bool:
    """Whether the browser reached us over TLS (directly, or through a proxy that says so)."""
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def routes() -> list[Route]:
    """The dashboard's routes, to come before the front end's catch-all."""
    handlers: list[tuple[str, Callable[[Request], object], list[str]]] = [
        (PATH, page, ["GET", "HEAD"]), (f"{PATH}/login", log_in, ["POST"]), (f"{PATH}/logout", log_out, ["POST"]),
        (f"{PATH}/events", events, ["GET"]), (f"{PATH}/static/{{name}}", static, ["GET", "HEAD"]),
    ]  # fmt: skip
    return [Route(path, handler, methods=methods) for path, handler, methods in handlers]
