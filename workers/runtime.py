"""What a worker does with one task: run it, write its result to the sink, keep its request state true."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import redis

from scalablejob.errors import HandlerError, ModelServerError, RequestError
from scalablejob.job import QueryContext
from scalablejob.routing import TaskType
from scalablejob.sink import EntryType, Sink, entry_tags
from scalablejob.state import RequestStatus, RequestStore
from workers.command import parse_argv, run_command

logger = logging.getLogger(__name__)

QueryRunner = Callable[[bytes, QueryContext], bytes]


def response_body(value: Any) -> bytes:
    """A handler's return value as the bytes of a result entry: bytes as is, text as UTF-8, data as JSON."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if value is None:
        return b""
    try:
        return json.dumps(value).encode("utf-8")
    except TypeError:
        raise HandlerError(
            f"query handler returned {type(value).__name__}: expected bytes, str, None or JSON-serializable data"
        ) from None


def _no_query_runner(service: str) -> QueryRunner:
    def refuse(_body: bytes, _ctx: QueryContext) -> bytes:
        raise HandlerError(
            f"service {service} has no query handler: start the worker with --app MODULE (a module with @job.query) "
            f"or set containers[0].command and port in the service config"
        )

    return refuse


class WorkerRuntime:
    """Runs command and query tasks for one service and reports them through Redis."""

    def __init__(
        self, service: str, client: redis.Redis, *, query_runner: QueryRunner | None = None, shell: bool = False
    ) -> None:
        self.service = service
        self.sink = Sink(client, service)
        self.requests = RequestStore(client, service)
        self.query_runner = query_runner or _no_query_runner(service)
        self.shell = shell

    def run_command(self, request_id: str, body: bytes, worker: str) -> int:
        """Run a command request to its end; returns the exit code (the result entry carries it too)."""
        self.requests.mark_running(request_id, worker)
        try:
            argv = parse_argv(body, shell=self.shell)
        except RequestError as exc:
            self._fail(request_id, TaskType.COMMAND, str(exc))
            raise
        outcome = run_command(argv)
        tags = entry_tags(
            request_id, TaskType.COMMAND.value, EntryType.RESULT,
            exitCode=outcome.exit_code, durationSeconds=f"{outcome.duration_s:.3f}",
        )  # fmt: skip
        status = RequestStatus.DONE if outcome.exit_code == 0 else RequestStatus.FAILED
        error = None if outcome.exit_code == 0 else f"command exited with code {outcome.exit_code}"
        finished = self.requests.finish_update(request_id, status, exit_code=outcome.exit_code, error=error)
        self.sink.append(outcome.output_tail, tags, then=finished)
        return outcome.exit_code

    def run_query(self, request_id: str, body: bytes, tags: dict[str, str], worker: str) -> None:
        """Answer a query request; a handler error becomes an `error` entry and HandlerError."""
        self.requests.mark_running(request_id, worker)
        context = QueryContext(request_id, tags, lambda fraction, message: self.requests.set_progress(
            request_id, fraction, message))  # fmt: skip
        try:
            data = response_body(self.query_runner(body, context))
        except HandlerError as exc:
            self._fail(request_id, TaskType.QUERY, str(exc))
            raise
        except ModelServerError:
            raise  # the server, not the request, failed: the task goes back on the queue
        except Exception as exc:
            logger.exception("query handler failed on request %s", request_id)
            self._fail(request_id, TaskType.QUERY, f"{type(exc).__name__}: {exc}")
            raise HandlerError(f"query handler raised {type(exc).__name__}: {exc}") from exc
        finished = self.requests.finish_update(request_id, RequestStatus.DONE)
        self.sink.append(data, entry_tags(request_id, TaskType.QUERY.value, EntryType.RESULT), then=finished)

    def requeued(self, request_id: str, reason: str) -> None:
        """Record that a request went back on its queue (its worker could not run it)."""
        self.requests.requeued(request_id, reason)

    def _fail(self, request_id: str, task_type: TaskType, error: str) -> None:
        finished = self.requests.finish_update(request_id, RequestStatus.FAILED, error=error)
        self.sink.append(error.encode("utf-8"), entry_tags(request_id, task_type.value, EntryType.ERROR), then=finished)
