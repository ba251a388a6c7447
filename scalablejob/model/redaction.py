"""Keeping secrets out of sight: broker URLs with their password masked for printing, and a job's environment without
the worker's credentials. Pure functions, no I/O.

What a job (a command or training task, an init command) must not inherit is decided by a deny-list, not an
allow-list: a job is the user's own program, which legitimately needs whatever its host gives it (PATH, HOME, LANG,
CUDA_*, conda and virtualenv variables, proxies, cloud SDK settings ...), and no allow-list written here can know
those. What the worker holds that a job must not is small and known: the broker's URL and password (with them, a job
could read every front end's requests and enqueue work as anyone), Flower's login, and anything named like a
password, token or secret. Names alone miss a credential stored under an innocent name, so any variable whose value
contains the broker's password goes too. A job that needs a token of its own gets it explicitly, from the service
config's container env or a request's allowed `env.NAME` tag, which this list does not touch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

MASK = "***"
# The worker's broker, as scalablejob, Celery and Redis tools name it.
BROKER_URL_NAMES = ("SCALABLEJOB_BROKER", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL")
PASSWORD_NAMES = ("REDIS_PASSWORD", "REDISCLI_AUTH")
DENIED_NAMES = frozenset((*BROKER_URL_NAMES, *PASSWORD_NAMES))
DENIED_PREFIXES = ("FLOWER_",)  # Flower's settings, among them its login (FLOWER_BASIC_AUTH) and OAuth secrets
DENIED_WORDS = ("PASSWORD", "PASSWD", "TOKEN", "SECRET")
MIN_SECRET_LENGTH = 6  # a shorter password would match inside innocent values (PATH) and strip them for nothing
_QUERY_PASSWORD = re.compile(r"(?i)(^|&)(password=)[^&]*")


def url_password(url: str) -> str | None:
    """The password a Redis URL carries, in its user info or as a `password=` query parameter; None if none."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return None
    if password:
        return unquote(password)
    query_passwords = parse_qs(parts.query).get("password")
    return query_passwords[0] if query_passwords else None


def masked_url(url: str) -> str:
    """`url` fit to print: its password, if any, replaced by ***; the user, host, port and database stay."""
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return MASK  # not a URL we can read: showing none of it is the safe choice
    netloc = parts.netloc
    if has_password:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hostport}"
    query = _QUERY_PASSWORD.sub(rf"\1\2{MASK}", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def with_password(url: str, password: str | None) -> str:
    """`url` authenticating with `password` (as the default user, or as the user the URL names); None: unchanged."""
    if not password:
        return url
    parts = urlsplit(url)
    hostport = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{hostport}"))


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return upper in DENIED_NAMES or upper.startswith(DENIED_PREFIXES) or any(word in upper for word in DENIED_WORDS)


def secret_values(environ: Mapping[str, str]) -> set[str]:
    """The broker passwords an environment holds: those of its broker URLs and its Redis password variables."""
    found = {url_password(environ[name]) for name in BROKER_URL_NAMES if name in environ}
    found |= {environ[name] for name in PASSWORD_NAMES if name in environ}
    return {value for value in found if value and len(value) >= MIN_SECRET_LENGTH}


def without_secrets(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` minus the broker's URL and password, Flower's settings, anything named like a password, token or
    secret, and any variable whose value contains the broker's password (see the module's docstring for why)."""
    hidden = secret_values(environ)
    return {
        name: value for name, value in environ.items()
        if not is_secret_name(name) and not any(secret in value for secret in hidden)
    }  # fmt: skip
