"""`scalable_job.init_command`: run once per worker, before it takes any task (e.g. fetch data, warm a cache)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping

import redis

from scalablejob.host.job_user import job_user
from scalablejob.model import keys
from scalablejob.model.config import ScalableJobConfig
from scalablejob.model.errors import RequestError
from scalablejob.workers.command import CommandOutcome, command_env, parse_argv, run_command
from scalablejob.workers.lines import Line

logger = logging.getLogger(__name__)

EXIT_INIT_FAILED = 4


def run_init_command(
    settings: ScalableJobConfig, container_env: Mapping[str, str], client: redis.Redis, service: str, worker: str
) -> bool:
    """Run the init command, if any; on failure log it, record it in Redis for `status`, and return False."""
    if not settings.init_command:
        return True
    try:
        argv = parse_argv(settings.init_command.encode(), shell=settings.shell)
    except RequestError as exc:
        outcome = CommandOutcome(EXIT_INIT_FAILED, str(exc).encode(), 0.0)
    else:
        logger.info("init command: %s", settings.init_command)
        outcome = run_command(
            argv, cwd=settings.working_dir, env=command_env(os.environ, container_env, {}, ()),
            on_line=_log_line, timeout_s=settings.task_timeout_s, grace_s=settings.cancel_grace_s,
            user=job_user(settings.run_as),
        )  # fmt: skip
    if outcome.exit_code == 0 and outcome.stopped is None:
        client.hdel(keys.init_failures(service), worker)
        return True
    logger.error(
        "init command %r failed (exit code %s%s); this worker exits %s without taking any task",
        settings.init_command, outcome.exit_code, f", {outcome.stopped}" if outcome.stopped else "", EXIT_INIT_FAILED,
    )  # fmt: skip
    failure = {"exit_code": outcome.exit_code, "output_tail": outcome.output_tail.decode("utf-8", "replace")}
    client.hset(keys.init_failures(service), worker, json.dumps({**failure, "at": time.time()}))
    return False


def _log_line(stream: str, line: Line) -> None:
    logger.info("init %s: %s", stream, line.text.decode("utf-8", "replace"))
