"""Binding: which front ends one `scalablejob frontend` process serves, for which job service, with which token.

- `ScalableJobService` (integrated): exactly one front end, named like the service; the job service takes work
  from it alone (the Python client, straight to Redis, counts as that front end).
- `ScalableJob` (standalone): any number of front ends (`--name`, default: one named like the service), each with
  its own queues and token, all served by the one job service. A front end's name scopes every key of its own
  (input queue, output queue), and each request records its front end, so its worker writes results and logs to
  that front end's output queue: no front end can read, watch or delete another's items.

A front end's token is, first found: `--token` (or SCALABLEJOB_FRONTEND_TOKEN), the config's `front_end.token` (for
the front end named like the service), the one it was last bound with (the registry in Redis, so restarts keep
tokens), or a new one. Redis keeps only each token's keyed hash (auth.py), so a token is known here, and printed,
only when it is made; a record an older version kept in plain text is replaced by its hash at the next bind.
Which task types a front end may submit comes from the config (`security.frontends`). The choice is pure; only
`bind` touches Redis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from scalablejob.frontend.auth import KEY_FIELD, TokenCheck, is_digest, new_key, new_token, token_digest
from scalablejob.model import keys
from scalablejob.model.config import NAME_PATTERN, ServiceConfig
from scalablejob.model.errors import BindingError
from scalablejob.store.limits import record_limits

SINK_SUFFIX = "sink"
_NAME_RE = re.compile(NAME_PATTERN[1:-1])


@dataclass(frozen=True)
class FrontEnd:
    """One front end: its queues are `/api/predict/<name>` and `/api/predict/<name>/sink`; `new_token` is its token
    when it was made by this bind (shown once), else None: only its hash is known."""

    name: str
    service: str
    token: TokenCheck
    token_source: str  # "--token", "config", "registry", "registry, was plain text" or "generated"
    task_types: tuple[str, ...] = ("query",)
    new_token: str | None = None

    @property
    def sink_name(self) -> str:
        return f"{self.name}/{SINK_SUFFIX}"


def front_end_names(config: ServiceConfig, names: Sequence[str]) -> tuple[str, ...]:
    """The names to serve, checked against the service's mode."""
    chosen = tuple(names) or (config.name,)
    for name in chosen:
        if not _NAME_RE.fullmatch(name):
            raise BindingError(f"front end name {name!r}: expected a name matching {NAME_PATTERN}")
    if len(set(chosen)) != len(chosen):
        raise BindingError(f"front end names {', '.join(chosen)}: expected each name once")
    if config.is_integrated and chosen != (config.name,):
        raise BindingError(
            f"service {config.name} is a ScalableJobService: it takes work from its own front end only, named "
            f"{config.name}, not {', '.join(chosen)} (use type ScalableJob for several front ends)"
        )
    return chosen


def choose_token(
    name: str, config: ServiceConfig, explicit: str | None, registered: str | None, make: Callable[[], str], key: str
) -> tuple[TokenCheck, str, str | None]:
    """(the hash to check, where the token came from, the token if it was made now) for one front end."""
    configured = config.front_end.token if config.front_end is not None and name == config.name else None
    if explicit is not None:
        return TokenCheck(key, token_digest(key, explicit)), "--token", None
    if configured:
        return TokenCheck(key, token_digest(key, configured)), "config", None
    if registered and is_digest(registered):
        return TokenCheck(key, registered), "registry", None
    if registered:  # an older version's plain-text record: its token keeps working, stored as a hash from now on
        return TokenCheck(key, token_digest(key, registered)), "registry, was plain text", None
    token = make()
    return TokenCheck(key, token_digest(key, token)), "generated", token


def plan(
    config: ServiceConfig,
    names: Sequence[str],
    token: str | None,
    registered: Mapping[str, str],
    make: Callable[[], str] = new_token,
    key: str | None = None,
) -> tuple[FrontEnd, ...]:
    """The front ends to serve; `registered` is the registry's name -> record, `key` the service's HMAC key (the
    registry's, else a new one)."""
    chosen = front_end_names(config, names)
    if token is not None and len(chosen) > 1:
        raise BindingError(f"--token names one front end's token, but {len(chosen)} are served: give one --name")
    if token is not None and not token.strip():
        raise BindingError("--token: expected a non-empty token")
    key = key or registered.get(KEY_FIELD) or new_key()
    return tuple(_front_end(name, config, token, registered.get(name), make, key) for name in chosen)


def _front_end(
    name: str, config: ServiceConfig, explicit: str | None, registered: str | None, make: Callable[[], str], key: str
) -> FrontEnd:
    check, source, made = choose_token(name, config, explicit, registered, make, key)
    return FrontEnd(name, config.name, check, source, config.security.task_types(name, config.name), made)


def bind(client: redis.Redis, config: ServiceConfig, names: Sequence[str], token: str | None) -> tuple[FrontEnd, ...]:
    """Plan the front ends and record their tokens' hashes in the service's registry of bound front ends (made
    with the service's key, created once: HSETNX, so that front ends starting at once agree), and the service's
    queue limits."""
    registry = keys.frontend_registry(config.name)
    client.hsetnx(registry, KEY_FIELD, new_key())
    raw: Any = client.hgetall(registry)
    registered = {name.decode(): value.decode() for name, value in raw.items()}
    front_ends = plan(config, names, token, registered, key=registered[KEY_FIELD])
    client.hset(registry, mapping={fe.name: fe.token.digest for fe in front_ends})
    record_limits(client, config.name, config.queue)
    return front_ends
