"""`scalablejob worker`: one real Celery worker for a service, consuming its command and query queues."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence

import redis
from celery import signals
from celery.worker import state as worker_state

from scalablejob.celery_app import make_app, service_queues
from scalablejob.config import ServiceConfig
from scalablejob.errors import UserCodeError
from scalablejob.routing import TaskType, queue_for
from scalablejob.user_code import load_job
from scalablejob.workers.gate import SlotGate, install_gate
from scalablejob.workers.init_command import EXIT_INIT_FAILED, run_init_command
from scalablejob.workers.model_server import ModelServer
from scalablejob.workers.presence import install_presence
from scalablejob.workers.runtime import QueryRunner, WorkerRuntime, response_body
from scalablejob.workers.tasks import register_tasks

logger = logging.getLogger(__name__)

EXIT_MODEL_SERVER_DIED = 3


def default_hostname(service: str) -> str:
    """A node name unique per process, so several workers on one host stay apart in Flower."""
    return f"{service}-{os.getpid()}@{socket.gethostname()}"


def worker_argv(config: ServiceConfig, hostname: str, extra: Sequence[str] = ()) -> list[str]:
    """The `celery worker` command line: both queues, a thread per query slot plus one command slot."""
    slots = config.metadata.worker_threads + 1
    queues = ",".join(service_queues(config.name))
    # mingle and gossip only slow the start (a second) and add chatter: state lives in Redis, not in peers
    return [
        "worker", "-Q", queues, "-P", "threads", "-c", str(slots), "-n", hostname, "-l", "INFO",
        "--without-mingle", "--without-gossip", *extra,
    ]  # fmt: skip


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
    worker_state.should_stop = EXIT_MODEL_SERVER_DIED


def query_runner(config: ServiceConfig, app_spec: str | None) -> tuple[QueryRunner | None, ModelServer | None]:
    """The model server when the config names one, else the user's @job.query function, else nothing."""
    container = config.model_server
    if container is not None:
        if app_spec:
            raise UserCodeError(
                f"--app {app_spec}: this service's queries go to the model server of containers[0]; "
                f"expected either --app or containers[0].command and port, not both"
            )
        server = ModelServer(container.command or "", container.port or 0, env=container.env)
        return (lambda body, _ctx: server.forward(body)), server
    if not app_spec:
        return None, None
    handler = load_job(app_spec, config.name).query_handler
    if handler is None:
        return None, None
    return (lambda body, ctx: response_body(handler(body, ctx))), None


def run_worker(
    config: ServiceConfig, broker_url: str, *, app_spec: str | None = None,
    hostname: str | None = None, celery_args: Sequence[str] = (),
) -> int:  # fmt: skip
    """Run the worker in the foreground until it is stopped; returns its exit code."""
    runner, server = query_runner(config, app_spec)
    app = make_app(config.name, broker_url)
    install_gate(app, slot_gate(config))
    install_presence(app, config.name, broker_url)  # the scaler reads worker state and held tasks from it
    container_env = config.containers[0].env if config.containers else {}
    client = redis.Redis.from_url(broker_url)
    runtime = WorkerRuntime(
        config.name, client, query_runner=runner,
        settings=config.scalable_job, container_env=container_env,
    )  # fmt: skip
    register_tasks(app, runtime, on_model_server_error=lambda: _stop_if_dead(server))
    hostname = hostname or default_hostname(config.name)
    if not run_init_command(config.scalable_job, container_env, client, config.name, hostname):
        return EXIT_INIT_FAILED
    try:
        if server is not None:
            server.start()
            server.watch(stop_worker_on_model_server_death)
        exit_codes: list[int] = []
        signals.worker_shutdown.connect(lambda sender, **_: exit_codes.append(sender.exitcode or 0), weak=False)
        # app.start() drops the worker's exit code (click returns it instead of raising); the signal carries it
        usage_error = app.start(argv=worker_argv(config, hostname, celery_args))
        return usage_error or (exit_codes[-1] if exit_codes else 0)
    finally:
        if server is not None:
            server.stop()


def _stop_if_dead(server: ModelServer | None) -> None:
    if server is not None and server.exit_code is not None:
        stop_worker_on_model_server_death(server.exit_code)
