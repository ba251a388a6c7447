"""Flower without its start-up noise. At start, and when a worker comes online, Flower inspects the workers; when
none answers within its timeout (a service scaled to zero, or a worker whose control queue is not bound yet a moment
after its `worker-online` event) it logs one "Inspect method X failed" warning per method, though nothing failed.

The filter drops exactly those; a real failure (with its exception) still shows. A service's app installs it (so
`celery -A module flower` is quiet), and `celery -A scalablejob.flower_logs --broker URL flower` is Flower for every
service on a broker, quiet too.
"""

from __future__ import annotations

import logging
from typing import Any

FLOWER_INSPECTOR_LOGGER = "flower.inspector"
NO_REPLY_MESSAGE = "Inspect method %s failed"  # Flower's message when no worker replied (a failure has ": %s")


class NoReplyFilter(logging.Filter):
    """Drops Flower's "no worker replied" warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != NO_REPLY_MESSAGE


def quiet_flower_inspector() -> None:
    """Install the filter on Flower's inspector logger, once per process (cheap: Flower need not be imported)."""
    logger = logging.getLogger(FLOWER_INSPECTOR_LOGGER)
    if not any(isinstance(existing, NoReplyFilter) for existing in logger.filters):
        logger.addFilter(NoReplyFilter())


def __getattr__(name: str) -> Any:
    """`app`, for `celery -A scalablejob.flower_logs`: made on first use, so importing the filter makes no app."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    global _app
    if _app is None:
        from celery import Celery

        quiet_flower_inspector()
        _app = Celery("scalablejob", set_as_current=False)
    return _app


_app: Any = None
