"""What a worker does with one task: run it, write its result to the sink, keep its request state true."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import redis

from scalablejob.cancel import WHILE_RUNNING, end_cancelled
from scalablejob.config import ScalableJobConfig
from scalablejob.errors import HandlerError, ModelServerError, RequestError
from scalablejob.job import QueryContext
from scalablejob.routing import TaskType
from scalablejob.sink import EntryType, Sink, entry_tags
from scalablejob.state import RequestStatus, RequestStore
from scalablejob.workers.command import CommandOutcome, command_env, parse_argv, run_command
from scalablejob.workers.joblog import JobLog

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
        self,
        service: str,
        client: redis.Redis,
        *,
        query_runner: QueryRunner | None = None,
        settings: ScalableJobConfig | None = None,
        container_env: Mapping[str, str] | None = None,
    ) -> None:
        self.service = service
        self._redis = client
        self.requests = RequestStore(client, service)
        self.query_runner = query_runner or _no_query_runner(service)
        self.settings = settings or ScalableJobConfig()
        self.container_env = dict(container_env or {})

    def sink_for(self, request_id: str, frontend: str | None) -> Sink:
        """The output queue of the front end a request came through, as its task names it. A message sent before
        tasks carried their front end names none: then, and only then, the request's state tells."""
        if frontend is None:
            state = self.requests.get(request_id)
            frontend = state.frontend if state is not None else None
        return Sink(self._redis, self.service, frontend=frontend or self.service)

    def run_command(
        self, request_id: str, body: bytes, tags: Mapping[str, str], worker: str, frontend: str | None = None
    ) -> RequestStatus:
        """Run a command request to its end, streaming its output to `frontend`'s sink; returns how it ended."""
        sink = self.sink_for(request_id, frontend)
        if self._cancelled_before_start(sink, request_id, TaskType.COMMAND):
            return RequestStatus.CANCELLED
        self.requests.mark_running(request_id, worker)
        try:
            argv = parse_argv(body, shell=self.settings.shell)
            env = command_env(os.environ, self.container_env, tags, self.settings.request_env)
        except RequestError as exc:
            self._fail(sink, request_id, TaskType.COMMAND, str(exc))
            raise
        log = self._job_log(sink, request_id, TaskType.COMMAND)
        outcome = run_command(
            argv, cwd=self.settings.working_dir, env=env, on_line=log.line,
            should_stop=lambda: "cancelled" if self.requests.cancel_requested(request_id) else None,
            timeout_s=self.settings.task_timeout_s, grace_s=self.settings.cancel_grace_s,
        )  # fmt: skip
        status, error = self._command_status(outcome)
        tags_out = entry_tags(
            request_id, TaskType.COMMAND.value, EntryType.RESULT, exitCode=outcome.exit_code,
            durationSeconds=f"{outcome.duration_s:.3f}", **({"stopped": outcome.stopped} if outcome.stopped else {}),
            **log.summary_tags(),
        )  # fmt: skip
        self.requests.finish(
            sink, request_id, status, outcome.output_tail, tags_out, exit_code=outcome.exit_code, error=error
        )
        return status

    def _command_status(self, outcome: CommandOutcome) -> tuple[RequestStatus, str | None]:
        if outcome.stopped == "cancelled":
            return RequestStatus.CANCELLED, WHILE_RUNNING
        if outcome.stopped == "timeout":
            return RequestStatus.FAILED, f"timed out after {self.settings.task_timeout_s:g} s"
        if outcome.exit_code != 0:
            return RequestStatus.FAILED, f"command exited with code {outcome.exit_code}"
        return RequestStatus.DONE, None

    def _job_log(self, sink: Sink, request_id: str, task_type: TaskType) -> JobLog:
        return JobLog(
            sink, self.requests, request_id, task_type.value,
            to_queue=self.settings.write_log_to_queue(task_type), cap_bytes=self.settings.log_cap_bytes,
        )  # fmt: skip

    def _cancelled_before_start(self, sink: Sink, request_id: str, task_type: TaskType) -> bool:
        """A request cancelled while queued never runs."""
        if not self.requests.cancel_requested(request_id):
            return False
        end_cancelled(sink, self.requests, request_id, task_type.value)
        return True

    def run_query(
        self, request_id: str, body: bytes, tags: dict[str, str], worker: str, frontend: str | None = None
    ) -> None:
        """Answer a query request to `frontend`'s sink; a handler error becomes an `error` entry and HandlerError."""
        sink = self.sink_for(request_id, frontend)
        if self._cancelled_before_start(sink, request_id, TaskType.QUERY):
            return
        self.requests.mark_running(request_id, worker)
        context = QueryContext(
            request_id, tags, self._job_log(sink, request_id, TaskType.QUERY).progress,
            is_cancelled=lambda: self.requests.cancel_requested(request_id),
        )  # fmt: skip
        try:
            data = response_body(self.query_runner(body, context))
        except HandlerError as exc:
            self._fail(sink, request_id, TaskType.QUERY, str(exc))
            raise
        except ModelServerError:
            raise  # the server, not the request, failed: the task goes back on the queue
        except Exception as exc:
            logger.exception("query handler failed on request %s", request_id)
            self._fail(sink, request_id, TaskType.QUERY, f"{type(exc).__name__}: {exc}")
            raise HandlerError(f"query handler raised {type(exc).__name__}: {exc}") from exc
        if self.requests.cancel_requested(request_id):  # whatever it answered, the client no longer wants it
            end_cancelled(sink, self.requests, request_id, TaskType.QUERY.value, WHILE_RUNNING)
            return
        tags = entry_tags(request_id, TaskType.QUERY.value, EntryType.RESULT)
        self.requests.finish(sink, request_id, RequestStatus.DONE, data, tags)

    def requeued(self, request_id: str, reason: str) -> None:
        """Record that a request went back on its queue (its worker could not run it)."""
        self.requests.requeued(request_id, reason)

    def _fail(self, sink: Sink, request_id: str, task_type: TaskType, error: str) -> None:
        tags = entry_tags(request_id, task_type.value, EntryType.ERROR)
        self.requests.finish(sink, request_id, RequestStatus.FAILED, error.encode("utf-8"), tags, error=error)
