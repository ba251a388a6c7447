"""Token auth of a front end: the `Authorization` header must carry its token, compared in constant time."""

from __future__ import annotations

import hmac
import secrets

from scalablejob.errors import AuthError

TOKEN_BYTES = 24  # 32 URL-safe characters
HEADER = "Authorization"


def new_token() -> str:
    """A fresh random token, for a front end started without one."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_matches(presented: str, token: str) -> bool:
    """Constant time in the presented value, so response times do not leak how much of a guess was right."""
    return hmac.compare_digest(presented.encode("utf-8"), token.encode("utf-8"))


def check_token(presented: str | None, token: str, queue: str) -> None:
    """Raise AuthError (answered 401) unless the header carries `token`; the message never echoes either."""
    if presented is None or presented == "":
        raise AuthError(f"missing {HEADER} header: expected the token of queue {queue}")
    if not token_matches(presented, token):
        raise AuthError(f"wrong token in the {HEADER} header for queue {queue}")
