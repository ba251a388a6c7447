"""What a task written for requests knows of its call and how it reports progress: its QueryContext."""

from __future__ import annotations

from collections.abc import Callable, Mapping

ProgressReporter = Callable[[float, str], None]


class QueryContext:
    """What a task knows about its request, and how it reports progress while it runs."""

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
