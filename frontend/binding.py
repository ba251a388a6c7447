"""Binding: which front ends one `scalablejob frontend` process serves, for which job service, with which token.

- `ScalableJobService` (integrated): exactly one front end, named like the service; the job service takes work
  from it alone (the Python client, straight to Redis, counts as that front end).
- `ScalableJob` (standalone): any number of front ends (`--name`, default: one named like the service), each with
  its own queues and token, all served by the one job service. A front end's name scopes every key of its own
  (input queue, output queue), and each request records its front end, so its worker writes results and logs to
  that front end's output queue: no front end can read, watch or delete another's items.

A front end's token is, first found: `--token`, the config's `front_end.token` (for the front end named like the
service), the token it was last bound with (the registry in Redis, so restarts keep tokens), or a new one.
The choice is pure; only `bind` touches Redis.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from scalablejob import keys
from scalablejob.config import NAME_PATTERN, ServiceConfig
from scalablejob.errors import BindingError
from scalablejob.frontend.auth import new_token
from scalablejob.limits import record_limits

SINK_SUFFIX = "sink"
_NAME_RE = re.compile(NAME_PATTERN[1:-1])


@dataclass(frozen=True)
class FrontEnd:
    """One front end: its queues are `/api/predict/<name>` and `/api/predict/<name>/sink`."""

    name: str
    service: str
    token: str
    token_source: str  # "--token", "config", "registry" or "generated"

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
    name: str, config: ServiceConfig, explicit: str | None, registered: str | None, make: Callable[[], str]
) -> tuple[str, str]:
    """(token, where it came from) for one front end."""
    if explicit is not None:
        return explicit, "--token"
    configured = config.front_end.token if config.front_end is not None and name == config.name else None
    if configured:
        return configured, "config"
    if registered:
        return registered, "registry"
    return make(), "generated"


def plan(
    config: ServiceConfig,
    names: Sequence[str],
    token: str | None,
    registered: Mapping[str, str],
    make: Callable[[], str] = new_token,
) -> tuple[FrontEnd, ...]:
    """The front ends to serve; `registered` is the registry's name -> token."""
    chosen = front_end_names(config, names)
    if token is not None and len(chosen) > 1:
        raise BindingError(f"--token names one front end's token, but {len(chosen)} are served: give one --name")
    if token is not None and not token.strip():
        raise BindingError("--token: expected a non-empty token")
    return tuple(
        FrontEnd(name, config.name, *choose_token(name, config, token, registered.get(name), make)) for name in chosen
    )


def bind(client: redis.Redis, config: ServiceConfig, names: Sequence[str], token: str | None) -> tuple[FrontEnd, ...]:
    """Plan the front ends and record their tokens in the service's registry of bound front ends, and the
    service's queue limits."""
    raw: Any = client.hgetall(keys.frontend_registry(config.name))
    registered = {name.decode(): value.decode() for name, value in raw.items()}
    front_ends = plan(config, names, token, registered)
    client.hset(keys.frontend_registry(config.name), mapping={fe.name: fe.token for fe in front_ends})
    record_limits(client, config.name, config.queue)
    return front_ends
