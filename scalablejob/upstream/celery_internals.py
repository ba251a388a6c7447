"""Celery's internals the service's app relies on: where it builds its broker connections. Checked at import; the
worker's (its state and the consumer's task events) are in celery_worker_internals, which only a worker loads."""

from __future__ import annotations

from typing import Any

from celery import Celery

from scalablejob.upstream.check import require

require("celery", Celery, ("_connection",))


class ConnectionHookCelery(Celery):
    """A Celery app whose every broker connection (workers, producers, Flower, control) goes through
    `connection_options`, which may rewrite the URL and the keyword arguments of kombu's Connection."""

    def connection_options(self, url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return url, options

    def _connection(self, url: str, *args: Any, **kwargs: Any) -> Any:
        url, kwargs = self.connection_options(str(url), kwargs)
        return super()._connection(url, *args, **kwargs)
