"""Who may see the dashboard: the holder of the token of the service's own front end (its operator's), by a login
form that sets a session cookie, or by the `Authorization` header as for the queues.

A browser cannot put a header on an EventSource, so the page needs a cookie. The cookie is not the token: it is
`<expires>.<mac>`, mac = HMAC-SHA256(a key made at random when this process starts and kept only in its memory,
service | expires | the token's stored hash). So it is derived from the token (a changed token ends the sessions),
proves the login without carrying the token (a leaked cookie cannot submit work, and is worth nothing after 12 h),
and neither Redis nor a dump of it can make one. It is HttpOnly (no script reads it), SameSite=Strict (no other
site's page sends it) and scoped to /dashboard, named after the service, so that the front ends of two services on
one host (cookies do not tell ports apart) keep theirs apart; another service's cookie fails the MAC here, and its
token fails the check of this service's hash. Every comparison runs in constant time. A restart of the front end
asks for the token again: that is the price of a key no one else holds.

Only the service's own front end (named like the service) opens it: the dashboard shows every front end's work
(queues, failures with their errors), which another front end's token may not read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from scalablejob.frontend.auth import HEADER, TokenCheck, presented_token
from scalablejob.frontend.binding import FrontEnd

SESSION_S = 12 * 3600
COOKIE_PREFIX = "scalablejob-dashboard-"
PATH = "/dashboard"


@dataclass(frozen=True)
class DashboardLogin:
    """The check of the dashboard's login and the sessions this process gave."""

    service: str
    token: TokenCheck
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    clock: Callable[[], float] = time.time

    @property
    def cookie_name(self) -> str:
        return COOKIE_PREFIX + self.service

    def token_matches(self, presented: str) -> bool:
        return bool(presented) and self.token.matches(presented)

    def new_session(self) -> str:
        """A session cookie's value, good for SESSION_S."""
        expires = int(self.clock()) + SESSION_S
        return f"{expires}.{self._mac(expires)}"

    def session_valid(self, value: str) -> bool:
        """Whether a cookie's value is a session of this process, for this service and token, not expired."""
        expires_text, _, mac = value.partition(".")
        if not expires_text.isdigit():
            return False
        expires = int(expires_text)
        return hmac.compare_digest(mac.encode(), self._mac(expires).encode()) and self.clock() < expires

    def allows(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> bool:
        """A request with the session cookie, or with the token in its `Authorization` header."""
        presented = presented_token(headers.get(HEADER)) or ""
        return self.session_valid(cookies.get(self.cookie_name, "")) or self.token_matches(presented)

    def cookie_header(self, value: str, *, secure: bool) -> str:
        """The Set-Cookie header of a session (an empty value and Max-Age 0 end it)."""
        max_age = SESSION_S if value else 0
        flags = "; Secure" if secure else ""
        return f"{self.cookie_name}={value}; Max-Age={max_age}; Path={PATH}; HttpOnly; SameSite=Strict{flags}"

    def _mac(self, expires: int) -> str:
        message = f"{self.service}|{expires}|{self.token.digest}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()


def dashboard_login(front_ends: Sequence[FrontEnd]) -> DashboardLogin | None:
    """The login of the service's own front end, if this process serves it (else there is no dashboard here)."""
    own = next((fe for fe in front_ends if fe.name == fe.service), None)
    return None if own is None else DashboardLogin(own.service, own.token)
