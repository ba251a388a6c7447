"""Flower's "no worker replied" warnings are dropped; a real inspect failure still shows."""

from __future__ import annotations

import logging

import pytest

from scalablejob.upstream.flower_internals import FLOWER_INSPECTOR_LOGGER, quiet_flower_inspector


def test_only_the_no_reply_warning_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    quiet_flower_inspector()
    quiet_flower_inspector()  # once per process, however often asked
    logger = logging.getLogger(FLOWER_INSPECTOR_LOGGER)

    with caplog.at_level(logging.WARNING, logger=FLOWER_INSPECTOR_LOGGER):
        logger.warning("Inspect method %s failed", "stats")
        logger.warning("Inspect method %s failed: %s", "stats", "connection refused")

    assert [record.getMessage() for record in caplog.records] == ["Inspect method stats failed: connection refused"]
    assert len(logger.filters) == 1
