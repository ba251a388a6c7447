"""What a revoke does to the queue-service requests it names (workers/celery_calls.py)."""

from __future__ import annotations

import logging

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from scalablejob.local.ports import free_port
from scalablejob.workers.celery_calls import cancel_revoked_requests


def test_a_revoke_while_redis_is_gone_says_so_and_leaves_celerys_own_revoke_to_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given a broker that does not answer (nothing listens on its port)
    client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))

    # when a revoke names a request, then its cancel is given up with one line, and nothing is raised into the revoke
    # control command, which goes on to Celery's own revoke
    with caplog.at_level(logging.WARNING, logger="scalablejob.workers.celery_calls"):
        cancel_revoked_requests(client, "svc", ["req-1"])
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["could not cancel request req-1 on its revoke"]
