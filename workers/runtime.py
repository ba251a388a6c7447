"""What a worker does with one task: run it, write its result to the sink, keep its request state true."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from scalablejob.api.job import QueryContext
from scalablejob.host.job_user import job_user
from scalablejob.model.config import ScalableJobConfig
from scalablejob.model.errors import HandlerError, ModelServerError, RequestError
from scalablejob.model.exits import exit_error, oom_tags
from scalablejob.model.history import ActivityTally
from scalablejob.model.routing import TaskType
from scalablejob.model.task_result import encode_value, encoding_tags, error_tags, error_text
from scalablejob.store.cancel import WHILE_RUNNING, end_cancelled
from scalablejob.store.outage import BrokerUnavailable, through_outage
from scalablejob.store.sink import EntryType, Sink, entry_tags
from scalablejob.store.state import RequestStatus, RequestStore
from scalablejob.transport.acks import FinishAcks
from scalablejob.workers.command import CommandOutcome, command_env, parse_argv, run_command
from scalablejob.workers.delivery import SUPERSEDED, Delivery
from scalablejob.workers.joblog import JobLog

logger = logging.getLogger(__name__)

QueryRunner = Callable[[bytes, QueryContext], Any]  # returns the answer: bytes, text, None or JSON data
QUERY_HANDLER = "query handler"  # what an error says returned a value that has no bytes


def response_body(value: Any) -> bytes:
    """A handler's return value as the bytes of a result entry: bytes as is, text as UTF-8, data as JSON."""
    return encode_value(value, QUERY_HANDLER)[0]


@dataclass(frozen=True)
class Ended:
    """How a request ended on this worker: its status, and for failures the error and exit code."""

    status: RequestStatus
    error: str | None = None
    exit_code: int | None = None
    ran: bool = True  # False: this delivery did not end the request (it had ended, or another delivery took over)


NOT_RUN = Ended(RequestStatus.CANCELLED, "another delivery of the request ended it", ran=False)


@dataclass
class _Held:
    """The delivery a task has started, if any: given back if the broker fails."""

    delivery: Delivery | None = None


@dataclass(frozen=True)
class ProgramResult:
    """What a program (a named training task) reports beyond its exit code: its return value as the result's data
    (None keeps the output tail), tags for the result entry, and its own error (an exception) if it failed."""

    data: bytes | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None


class Program(Protocol):
    """A command that is not a command line: a named training task's child process."""

    @property
    def argv(self) -> list[str]: ...

    @property
    def env(self) -> Mapping[str, str]: ...

    def result(self, outcome: CommandOutcome) -> ProgramResult: ...


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
        acks: FinishAcks | None = None,
        activity: ActivityTally | None = None,
    ) -> None:
        self.service = service
        self._redis = client
        self._acks = acks  # with it, a request's final entry acknowledges the message it came from
        self._sinks: dict[str, Sink] = {}
        self.requests = RequestStore(client, service, activity)  # with a tally, counted off the task's path
        self.query_runner = query_runner or _no_query_runner(service)
        self.settings = settings or ScalableJobConfig()
        self.container_env = dict(container_env or {})
        self.job_user = job_user(self.settings.run_as)  # checked at start: an unknown user is a ConfigError now

    def sink_for(self, request_id: str, frontend: str | None) -> Sink:
        """The output queue of the front end a request came through, as its task names it. A message sent before
        tasks carried their front end names none: then, and only then, the request's state tells."""
        if frontend is None:
            state = self.requests.get(request_id)
            frontend = state.frontend if state is not None else None
        name = frontend or self.service
        sink = self._sinks.get(name)
        if sink is None:
            sink = self._sinks[name] = Sink(self._redis, self.service, frontend=name)
        return sink

    def run_command(
        self, request_id: str, body: bytes, tags: Mapping[str, str], worker: str, frontend: str | None = None,
        program: Program | None = None,
    ) -> Ended:  # fmt: skip
        """Run a command request to its end, streaming its output to `frontend`'s sink; returns how it ended. The
        body is a command line, unless a `program` (a named training task) says what to run."""
        with self._giving_back(request_id) as hold:
            delivery = self._begin(hold, request_id, frontend, TaskType.COMMAND, worker)
            if isinstance(delivery, Ended):
                return delivery
            try:
                argv = program.argv if program is not None else parse_argv(body, shell=self.settings.shell)
                env = command_env(os.environ, self.container_env, tags, self.settings.request_env)
            except RequestError as exc:
                self._fail(delivery, str(exc))
                raise
            log = self._job_log(delivery, TaskType.COMMAND)
            outcome = run_command(
                argv, cwd=self.settings.working_dir, env={**env, **(program.env if program else {})},
                on_line=log.line, should_stop=delivery.stop_reason, timeout_s=self.settings.task_timeout_s,
                grace_s=self.settings.cancel_grace_s, user=self.job_user,
            )  # fmt: skip
            if outcome.stopped == SUPERSEDED:
                return NOT_RUN
            status, error = self._command_status(outcome)
            reported = program.result(outcome) if program is not None else ProgramResult()
            if reported.error is not None and status is not RequestStatus.CANCELLED and outcome.stopped is None:
                status, error = RequestStatus.FAILED, reported.error
            data = reported.data if reported.data is not None and status is RequestStatus.DONE else outcome.output_tail
            tags_out = entry_tags(
                request_id, TaskType.COMMAND.value, EntryType.RESULT, exitCode=outcome.exit_code,
                durationSeconds=f"{outcome.duration_s:.3f}", **oom_tags(outcome.oom),
                **({"stopped": outcome.stopped} if outcome.stopped else {}), **log.summary_tags(), **reported.tags,
            )  # fmt: skip
            if not delivery.finish(status, data, tags_out, exit_code=outcome.exit_code, error=error):
                return NOT_RUN
            return Ended(status, error, outcome.exit_code)

    def _command_status(self, outcome: CommandOutcome) -> tuple[RequestStatus, str | None]:
        if outcome.stopped == "cancelled":
            return RequestStatus.CANCELLED, WHILE_RUNNING
        if outcome.stopped == "timeout":
            return RequestStatus.FAILED, f"timed out after {self.settings.task_timeout_s:g} s"
        if outcome.exit_code != 0:
            return RequestStatus.FAILED, exit_error(outcome.exit_code, outcome.oom)
        return RequestStatus.DONE, None

    def _job_log(self, delivery: Delivery, task_type: TaskType) -> JobLog:
        return JobLog(
            delivery, to_queue=self.settings.write_log_to_queue(task_type), cap_bytes=self.settings.log_cap_bytes
        )

    def _begin(
        self, hold: _Held, request_id: str, frontend: str | None, task_type: TaskType, worker: str
    ) -> Delivery | Ended:
        """What precedes every task: a request cancelled while queued ends without running; otherwise this delivery
        starts (and is held, to be given back if the broker fails), unless the request has ended already."""
        sink = self.sink_for(request_id, frontend)
        acks = self._acks
        message = acks.message_of(request_id) if acks else None
        started, delivery = Delivery.start(
            self.requests, sink, request_id, task_type.value, worker,
            message=message, on_acknowledged=acks.acknowledged if acks else None,
        )  # fmt: skip
        if acks is not None and message is not None:
            acks.recorded(message)  # the start recorded it, if it was not yet
        if started.cancelled:
            through_outage(lambda: end_cancelled(sink, self.requests, request_id, task_type.value), what="a cancel")
            return Ended(RequestStatus.CANCELLED)
        if delivery is None:  # a duplicate message of a request that ended, or one that is gone
            logger.warning("request %s not run: it %s", request_id, started.why_not)
            return NOT_RUN
        hold.delivery = delivery
        return delivery

    @contextlib.contextmanager
    def _giving_back(self, request_id: str) -> Iterator[_Held]:
        """Around a task: a broker that stays away (or any Redis error) gives the request back instead of failing
        it (BrokerUnavailable, which the task turns into a requeue); the delivery's writer stops in every case."""
        hold = _Held()
        try:
            yield hold
        except redis.RedisError as exc:
            reason = f"the broker failed while the task ran: {exc}"
            if hold.delivery is not None:
                hold.delivery.requeue(reason)
            logger.warning("request %s goes back on its queue: %s", request_id, reason)
            raise BrokerUnavailable(reason) from exc
        finally:
            if hold.delivery is not None:
                hold.delivery.close()

    def run_query(
        self, request_id: str, body: bytes, tags: dict[str, str], worker: str, frontend: str | None = None,
        runner: QueryRunner | None = None,
    ) -> Ended:  # fmt: skip
        """Answer a query request to `frontend`'s sink with `runner` (default: the worker's query runner); a
        handler error becomes an `error` entry and HandlerError."""
        with self._giving_back(request_id) as hold:
            delivery = self._begin(hold, request_id, frontend, TaskType.QUERY, worker)
            if isinstance(delivery, Ended):
                return delivery
            log = self._job_log(delivery, TaskType.QUERY)
            context = QueryContext(request_id, tags, log.progress, is_cancelled=delivery.is_cancelled)
            try:
                data, encoding = encode_value((runner or self.query_runner)(body, context), QUERY_HANDLER)
            except HandlerError as exc:
                self._fail(delivery, str(exc), error_tags(exc))
                raise
            except ModelServerError:
                raise  # the server, not the request, failed: the task goes back on the queue
            except Exception as exc:
                logger.exception("query handler failed on request %s", request_id)
                self._fail(delivery, error_text(exc), error_tags(exc))
                raise HandlerError(f"query handler raised {type(exc).__name__}: {exc}") from exc
            tags_out = entry_tags(request_id, TaskType.QUERY.value, EntryType.RESULT, **encoding_tags(encoding))
            if delivery.finish(RequestStatus.DONE, data, tags_out, unless_cancelled=True):
                return Ended(RequestStatus.DONE)
            if not delivery.cancelled or delivery.superseded:
                return NOT_RUN
            # whatever it answered, the client no longer wants it
            cancelled = entry_tags(request_id, TaskType.QUERY.value, EntryType.ERROR, cancelled="true")
            delivery.finish(RequestStatus.CANCELLED, WHILE_RUNNING.encode(), cancelled, error=WHILE_RUNNING)
            return Ended(RequestStatus.CANCELLED)

    def fail_unknown_task(self, request_id: str, name: str, known: Sequence[str]) -> None:
        """Fail a request whose message names a task this worker does not have."""
        state = self.requests.get(request_id)
        if state is None or state.status.finished:
            return
        sink = self.sink_for(request_id, None)
        have = ", ".join(known) or "none"
        error = f"unknown task {name!r}: this worker of {self.service} has the named tasks {have}"
        tags = entry_tags(request_id, state.task_type, EntryType.ERROR)
        self.requests.finish(sink, request_id, RequestStatus.FAILED, error.encode("utf-8"), tags, error=error)

    def requeued(self, request_id: str, reason: str) -> None:
        """Record that a request went back on its queue (its worker could not run it)."""
        self.requests.requeued(request_id, reason)

    def _fail(self, delivery: Delivery, error: str, extra: Mapping[str, str] | None = None) -> None:
        tags = entry_tags(delivery.request_id, delivery.task_type, EntryType.ERROR, **(extra or {}))
        delivery.finish(RequestStatus.FAILED, error.encode("utf-8"), tags, error=error)
