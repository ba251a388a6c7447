"""User-facing decorators: `job = Job("svc")`, then `@job.query` on the function that answers query tasks."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from scalablejob.errors import UserCodeError

ProgressReporter = Callable[[float, str], None]


class QueryContext:
    """What a query handler knows about its request, and how it reports progress while it runs."""

    def __init__(
        self,
        request_id: str,
        tags: Mapping[str, str],
        report: ProgressReporter,
        is_cancelled: Callable[[], bool] | None = None,
    ) -> None:
        self.request_id = request_id
        self.tags = dict(tags)
        self._report = report
        self._is_cancelled = is_cancelled or (lambda: False)

    @property
    def cancelled(self) -> bool:
        """True once someone cancelled this request: a long handler checks it and returns early."""
        return self._is_cancelled()

    def progress(self, fraction: float, message: str = "") -> None:
        """Report how far this request is, from 0.0 to 1.0; visible in the request's state while it runs."""
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
            raise ValueError(f"progress fraction: expected a number from 0.0 to 1.0, got {fraction!r}")
        self._report(float(fraction), str(message))


QueryHandler = Callable[[bytes, QueryContext], Any]


class Job:
    """Registers a service's user code, Celery-style: ``@job.query`` marks the query handler."""

    def __init__(self, service: str | None = None) -> None:
        self.service = service
        self.query_handler: QueryHandler | None = None

    def query(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Register `func(body: bytes, ctx: QueryContext)` (or `func(body)`) as the query handler."""
        if self.query_handler is not None:
            raise UserCodeError(
                f"service {self.service or '(any)'} already has query handler "
                f"{getattr(self.query_handler, '__name__', repr(self.query_handler))}; "
                f"expected one @query per Job"
            )
        self.query_handler = func if _takes_context(func) else _ignoring_context(func)
        return func

    def __repr__(self) -> str:
        return f"Job(service={self.service!r})"


def _takes_context(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _ignoring_context(func: Callable[[bytes], Any]) -> QueryHandler:
    def handler(body: bytes, _ctx: QueryContext) -> Any:
        return func(body)

    handler.__name__ = getattr(func, "__name__", "handler")
    return handler
