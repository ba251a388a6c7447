"""What makes a Celery worker a scalablejob worker, before it consumes: the idle-first gate, presence, the tasks
(generic and named) bound to a runtime, the task registry and queue limits in Redis, the init command, and the
model server. `ServiceWorker` runs these steps for `scalablejob worker` and `celery -A module worker` alike."""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

from celery import signals

from scalablejob.api.job import Job
from scalablejob.host.job_user import job_user
from scalablejob.host.processes import WORKER_NAME_ENV, forbid_inspection
from scalablejob.host.worker_limits import LimitsReport, apply_worker_limits
from scalablejob.model.config import ServiceConfig
from scalablejob.model.errors import HandlerError, UserCodeError
from scalablejob.model.routing import TaskType, queue_for, task_name_for
from scalablejob.store.limits import record_limits
from scalablejob.store.outage import through_outage
from scalablejob.store.redis_url import connect
from scalablejob.store.task_registry import record_tasks
from scalablejob.transport.acks import FinishAcks
from scalablejob.upstream.celery_worker_internals import stop_worker
from scalablejob.workers.activity import install_activity
from scalablejob.workers.celery_calls import install_celery_calls
from scalablejob.workers.event_batches import EventBatchStep
from scalablejob.workers.gate import SlotGate, install_gate
from scalablejob.workers.init_command import EXIT_INIT_FAILED, run_init_command
from scalablejob.workers.model_server import ModelServer
from scalablejob.workers.named_tasks import register_named_tasks
from scalablejob.workers.presence import install_presence
from scalablejob.workers.protocol_check import UnhandledMessages, quiet_put_backs
from scalablejob.workers.runtime import QueryRunner, WorkerRuntime
from scalablejob.workers.scaler_watch import install_scaler_watch
from scalablejob.workers.tasks import fail_unknown_tasks, register_tasks

logger = logging.getLogger(__name__)

EXIT_MODEL_SERVER_DIED = 3


PER_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")  # "Task ... received" and "... succeeded in"


def quiet_per_task_lines(loglevel: int | str) -> None:
    """Below DEBUG, a worker's log leaves out Celery's two INFO lines per task (received, succeeded): the request's
    state and Flower tell each task's story, and under short tasks those lines cost a tenth of the worker's CPU.
    Failures and retries (WARNING and above) are still logged."""
    level = logging.getLevelName(loglevel.upper()) if isinstance(loglevel, str) else loglevel
    if isinstance(level, int) and level > logging.DEBUG:
        for name in PER_TASK_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def default_hostname(service: str) -> str:
    """The name the scaler gave this worker in its environment (a pod's worker has no other way to learn it: the
    pod's command line is the user's template), else a node name unique per process, so that several workers on one
    host stay apart in Flower."""
    return os.environ.get(WORKER_NAME_ENV) or f"{service}-{os.getpid()}@{socket.gethostname()}"


def slot_gate(config: ServiceConfig) -> SlotGate:
    """Command tasks one at a time; query tasks `rpc.worker_threads` at a time."""
    return SlotGate(
        slots={TaskType.COMMAND: 1, TaskType.QUERY: config.metadata.worker_threads},
        queues={queue_for(config.name, task_type): task_type for task_type in TaskType},
    )


def stop_worker_on_model_server_death(exit_code: int) -> None:
    logger.error(
        "model server exited with code %s: this worker stops taking tasks and exits %s; "
        "its queries go back on the queue", exit_code, EXIT_MODEL_SERVER_DIED,
    )  # fmt: skip
    stop_worker(EXIT_MODEL_SERVER_DIED)


def query_runner(config: ServiceConfig, job: Job | None) -> tuple[QueryRunner | None, ModelServer | None]:
    """Who answers untagged queries: the model server when the config names one, else the Job's default query task
    (@job.query, or its only query task), else nobody."""
    container = config.model_server
    if container is not None:
        if queries := _query_tasks(job):
            raise UserCodeError(
                f"{job!r} has query tasks ({', '.join(queries)}), but this service's queries go to the model server "
                f"of containers[0]: expected either query tasks in user code or containers[0].command and port"
            )
        server = ModelServer(
            container.command or "", container.port or 0, env=container.env, user=job_user(config.scalable_job.run_as)
        )
        return (lambda body, _ctx: server.forward(body)), server
    default = job.default_task if job is not None else None
    if default is not None:
        return default.handler, None
    queries = _query_tasks(job)
    return (_untagged_refused(job, queries) if queries else None), None


def _query_tasks(job: Job | None) -> list[str]:
    return sorted(name for name, task in (job.tasks if job else {}).items() if task.task_type is TaskType.QUERY)


def _untagged_refused(job: Job | None, queries: list[str]) -> QueryRunner:
    """Several query tasks and none is the default: a query without a `task` tag cannot be answered (a put refuses
    it once the registry is known; this answers one sent before)."""

    def refuse(_body: bytes, _ctx: object) -> object:
        raise HandlerError(f"{job!r} has several query tasks ({', '.join(queries)}): expected a tag task=NAME")

    return refuse


def no_query_handler_warning(config: ServiceConfig) -> str:
    """Said once at start: without a handler, every query task this worker takes fails."""
    return (
        f"no query handler: this worker consumes {queue_for(config.name, TaskType.QUERY)} and fails every query "
        f"task it takes; start it with --app MODULE (a module with @job.query) or set containers[0].command and port"
    )


def warn_without_query_handler(config: ServiceConfig) -> None:
    """Log the warning once Celery's logging is set up, if the worker consumes the query queue."""

    def warn(sender: object, instance: Any, **_: object) -> None:
        queues = instance.app.amqp.queues
        if queue_for(config.name, TaskType.QUERY) in (queues.consume_from or queues):
            logger.warning(no_query_handler_warning(config))

    signals.celeryd_after_setup.connect(warn, weak=False)


@dataclass
class PreparedService:
    """What a prepared worker holds beyond Celery's own parts: its model server, stopped when the worker ends."""

    server: ModelServer | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def prepare_service(
    app: Any, config: ServiceConfig, job: Job | None, broker_url: str, hostname: str
) -> PreparedService:
    """Wire a worker of `config`'s service into `app` and run what precedes its first task. Exits the process
    with EXIT_INIT_FAILED when the init command fails."""
    forbid_inspection()  # before any user code runs: its jobs may not read this process's environment (the broker)
    report_limits(apply_worker_limits(config.metadata.cpu, config.metadata.memory))
    runner, server = query_runner(config, job)
    if runner is None:
        warn_without_query_handler(config)
    signals.after_setup_logger.connect(lambda loglevel=logging.INFO, **_: quiet_per_task_lines(loglevel), weak=False)
    gate = slot_gate(config)
    install_gate(app, gate, broker_url)
    app.steps["consumer"].add(EventBatchStep)  # Flower's events, without a PUBLISH per event
    presence = install_presence(app, config.name, broker_url)  # the scaler reads worker state and held tasks from it
    install_scaler_watch(config.name, broker_url)  # a worker whose scaler is gone leaves (warm shutdown)
    # a task's finish acknowledges the message its presence record says it came from (GateStep wires kombu's ack)
    acks = app.scalablejob_acks = FinishAcks(presence.delivery_tag_of)
    container_env = config.containers[0].env if config.containers else {}
    client = connect(broker_url)
    runtime = WorkerRuntime(
        config.name, client, query_runner=runner, settings=config.scalable_job, container_env=container_env,
        acks=acks, activity=install_activity(client, config.name),
    )  # fmt: skip
    # a message of a newer release goes back on its queue, for a worker of that release (said once, counted)
    unhandled = UnhandledMessages(presence.put_back, gate.hold_off)
    quiet_put_backs()
    register_tasks(app, runtime, lambda: _stop_if_dead(server), unhandled)
    handlers = register_named_tasks(app, runtime, job, unhandled)
    calls = install_celery_calls(app, runtime, job, unhandled, client)
    named = {**handlers, **calls}
    # the tasks that only requests run, each starting through its request's start: that start records the message as
    # unacknowledged, in the same round trip (transport.acks); a Celery task (which a Celery call runs without any
    # request start) is recorded on receipt
    generic = {task_name_for(task_type) for task_type in TaskType}
    acks.record_at_start = frozenset(generic | (set(handlers) - set(calls)))
    fail_unknown_tasks(runtime, known=sorted(named))
    # a worker started while the broker refuses writes (a full disk: MISCONF) or is away waits for it, as a running one
    # does, instead of ending with a traceback that the scaler would answer with another worker
    what = "recording the service's tasks and limits"
    through_outage(lambda: record_tasks(client, config.name, named), budget_s=math.inf, what=what)  # puts check them
    through_outage(lambda: record_limits(client, config.name, config.queue), budget_s=math.inf, what=what)
    if not run_init_command(config.scalable_job, container_env, client, config.name, hostname):
        raise SystemExit(EXIT_INIT_FAILED)
    if server is not None:
        server.start()
        server.watch(stop_worker_on_model_server_death)
    return PreparedService(server)


def report_limits(report: LimitsReport) -> None:
    """One line per limit, once Celery's logging is set up: how each is enforced, or what is done instead and why."""

    def say(**_: object) -> None:
        for how in report.enforced:
            logger.info("limit enforced: %s", how)
        for why in report.not_enforced:
            logger.warning("limit not enforced: %s", why)

    signals.celeryd_after_setup.connect(say, weak=False)


def _stop_if_dead(server: ModelServer | None) -> None:
    if server is not None and server.exit_code is not None:
        stop_worker_on_model_server_death(server.exit_code)
