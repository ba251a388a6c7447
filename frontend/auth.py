"""Token auth of a front end: the `Authorization` header must carry a token whose keyed hash is the stored one.

Redis keeps no token, only `hmac-sha256:<hex>` = HMAC-SHA256(the service's key, token), so whoever reads Redis (a
dump, a backup, a job that got the password) finds nothing to present: a generated token is 192 random bits, and
the hash cannot be turned back into it. The key is random (32 bytes), made once per service and kept in Redis
beside the hashes (in the registry hash, under a field no front end name can take), because every host that serves
the service's front ends must check the same tokens and Redis is all they share. It is not secret from whoever
can read all of Redis (Redis' password guards that); it makes a leaked hash useless without the key, so a short
token chosen by hand (`--token`, `front_end.token`) cannot be guessed offline from the hash alone, and one token
used by two services is stored as two unrelated hashes. Every comparison runs in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Collection
from dataclasses import dataclass

from scalablejob.model.errors import AuthError, QueueServiceError

TOKEN_BYTES = 24  # 32 URL-safe characters
KEY_BYTES = 32
HEADER = "Authorization"
DIGEST_PREFIX = "hmac-sha256:"
KEY_FIELD = "*hmac-key"  # the registry field of the key: front end names start with a letter
_ANY_QUEUE_KEY = secrets.token_bytes(KEY_BYTES)  # a queue not served is checked against this, to take as long


class TaskTypeForbidden(QueueServiceError):
    """A put of a task type the front end's token may not submit (answered 403; nothing is enqueued)."""


def check_scope(task_type: str, allowed: Collection[str], frontend: str) -> None:
    """Raise TaskTypeForbidden unless front end `frontend` may submit `task_type`; the text names the setting."""
    if task_type not in allowed:
        may = ", ".join(sorted(allowed)) or "no task type"
        raise TaskTypeForbidden(
            f"taskType {task_type} is not allowed for front end {frontend} (it may submit {may}): allow it with "
            f'"security": {{"frontends": {{"{frontend}": {{"task_types": [...]}}}}}} in the service config'
        )


def new_token() -> str:
    """A fresh random token, for a front end started without one."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_key() -> str:
    """A fresh HMAC key of a service (hex, as kept in Redis)."""
    return secrets.token_hex(KEY_BYTES)


def token_digest(key: str, token: str) -> str:
    """What Redis keeps of a token: its HMAC-SHA256 under the service's key (hex)."""
    mac = hmac.new(bytes.fromhex(key), token.encode("utf-8"), hashlib.sha256).hexdigest()
    return DIGEST_PREFIX + mac


def is_digest(record: str) -> bool:
    """Whether a registry record is a hash; an older version kept the token itself."""
    return record.startswith(DIGEST_PREFIX)


@dataclass(frozen=True)
class TokenCheck:
    """What a front end needs to check a presented token: the service's key and the token's hash; never the token."""

    key: str
    digest: str

    def matches(self, presented: str) -> bool:
        """Constant time in the presented value, so response times do not leak how much of a guess was right."""
        return hmac.compare_digest(token_digest(self.key, presented).encode(), self.digest.encode())


NO_QUEUE = TokenCheck(_ANY_QUEUE_KEY.hex(), DIGEST_PREFIX)  # matches nothing


BEARER_SCHEME = "bearer"


def presented_token(header: str | None) -> str | None:
    """The token in an `Authorization` header: the bare token, as the eas-prediction SDK sends it, or after the
    `Bearer` scheme (any case, RFC 6750), as curl users and HTTP libraries write it."""
    if header is None:
        return None
    scheme, sep, rest = header.partition(" ")
    return rest.strip() if sep and scheme.lower() == BEARER_SCHEME else header


def check_token(header: str | None, check: TokenCheck, queue: str) -> None:
    """Raise AuthError (answered 401) unless the header carries the token (bare or after `Bearer`); the message
    never echoes it, and is the same for a wrong token and a queue not served here (NO_QUEUE), so that no one learns
    which queues exist."""
    presented = presented_token(header)
    if presented is None or presented == "":
        raise AuthError(f"missing {HEADER} header: expected the token of queue {queue}")
    if not check.matches(presented):
        raise AuthError(f"wrong token in the {HEADER} header for queue {queue}, or no such queue here")
