"""Flower's internals scalablejob relies on: the logger of its inspector, and its `/metrics` handler.

At start, and when a worker comes online, Flower inspects the workers; when none answers within its timeout (a
service scaled to zero, or a worker whose control queue is not bound yet a moment after its `worker-online` event)
it logs one "Inspect method X failed" warning per method, though nothing failed. A filter drops exactly those; a
real failure (with its exception) still shows. Flower's `/metrics` handler skips the login its pages ask for; it is
wrapped so that it asks too. Flower is imported only by `protect_metrics`, in Flower's own process.
"""

from __future__ import annotations

import logging

FLOWER_INSPECTOR_LOGGER = "flower.inspector"
NO_REPLY_MESSAGE = "Inspect method %s failed"  # Flower's message when no worker replied (a failure has ": %s")
_BEHIND_LOGIN = "_scalablejob_behind_login"  # marks the wrapped handler, so it is wrapped once


class NoReplyFilter(logging.Filter):
    """Drops Flower's "no worker replied" warnings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != NO_REPLY_MESSAGE


def quiet_flower_inspector() -> None:
    """Install the filter on Flower's inspector logger, once per process (cheap: Flower need not be imported)."""
    logger = logging.getLogger(FLOWER_INSPECTOR_LOGGER)
    if not any(isinstance(existing, NoReplyFilter) for existing in logger.filters):
        logger.addFilter(NoReplyFilter())


def protect_metrics() -> None:
    """Put Flower's `/metrics` behind the same login as its pages (Flower's handler skips the check); once."""
    from flower.views.monitor import Metrics  # type: ignore[import-untyped]
    from tornado.web import authenticated

    from scalablejob.upstream.check import require

    require("flower", Metrics, ("get",))
    if getattr(Metrics.get, _BEHIND_LOGIN, False):
        return
    guarded = authenticated(Metrics.get)
    setattr(guarded, _BEHIND_LOGIN, True)
    Metrics.get = guarded
