"""A Celery call of a command task runs in a process of its own (`python -m scalablejob.workers.call_child`), so that
revoke(terminate=True) and time limits stop it, as Celery's prefork pool would, whatever it started goes with it (its
process group, its cgroup, its token: workers/job_processes.py), and it dies with its worker. Its environment is a
job's (no broker secrets): the child sends its progress and a retry back as records, and this process does what needs
the broker (update_state, retry), so autoretry_for, retry_backoff and max_retries work as Celery's. Its lines go to
the worker's log.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from celery.exceptions import Ignore, TimeLimitExceeded

from scalablejob.api.celery_task import call_time_limits, task_function
from scalablejob.api.user_code import module_spec, spec_of_module
from scalablejob.host.processes import dying_with_parent
from scalablejob.model.exits import OomKills, exit_error, shell_exit_code
from scalablejob.model.redaction import without_secrets
from scalablejob.model.task_result import rebuild_exception
from scalablejob.transport.message import from_message_json as loads
from scalablejob.transport.message import message_json as dumps
from scalablejob.workers.call_child import PROGRESS_PREFIX, STARTED_LINE
from scalablejob.workers.job_processes import JobProcesses

logger = logging.getLogger(__name__)

CHILD_MODULE = "scalablejob.workers.call_child"
_FRAMEWORKS = {"celery", "kombu", "billiard", "scalablejob", "flower"}  # their modules may hold the app too
_START_POLL_S = 0.05  # how often the wait for the task's start looks whether its process ended
TERM_GRACE_S = 10.0  # after a terminate's signal, SIGKILL


class ChildTraceback(Exception):
    """The traceback of an exception raised in a task's child process, chained to it so that Flower shows both."""


class CallProcesses:
    """The child processes of the running calls of one worker, by task id; safe from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._stopped: dict[str, int] = {}  # task id: the signal its terminate asked for

    def stop(self, task_id: str, signum: int = signal.SIGTERM) -> None:
        """Terminate a call: `signum` (the revoke's, as Celery's pool sends it) to its process group, then SIGKILL
        after the grace. A call whose process has not started yet (its task has, as Celery sees it) is stopped as it
        starts: a terminate in that instant is not lost."""
        with self._lock:
            self._stopped[task_id] = signum
            process = self._running.get(task_id)
        if process is not None:
            _terminate(process, signum)

    def run(self, task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run one call of `task` in a child; its value, or its exception raised here (Celery's retry included)."""
        request = task.request
        soft, hard = call_time_limits(task, request)
        with self._lock:
            if self._stopped.pop(request.id, None) is not None:
                raise Ignore()  # terminated before its process started: the terminate has said REVOKED
        with tempfile.TemporaryDirectory(prefix="scalablejob-call-") as folder:
            call_path, result_path = Path(folder, "call.json"), Path(folder, "result.json")
            call_path.write_text(dumps(_call(task, args, kwargs)))
            job = JobProcesses()
            try:
                process = self._start(request.id, job, call_path, result_path)
                started = threading.Event()
                reader = threading.Thread(
                    target=_forward, args=(task, request.id, process.stdout, started), daemon=True
                )  # fmt: skip
                reader.start()
                timed_out = _wait(process, soft, hard, started)
            finally:
                job.kill()  # what the task left behind too, which may hold its output open
                oom = job.close()
                with self._lock:
                    self._running.pop(request.id, None)
                    stopped = self._stopped.pop(request.id, None) is not None
            reader.join(5)  # its last lines: nothing of the task holds its output any more
            if stopped:
                raise Ignore()  # revoked and terminated: the revoke has said REVOKED
            if timed_out:
                raise TimeLimitExceeded(hard)
            return _outcome(task, _read(result_path), shell_exit_code(process.wait()), oom)

    def _start(self, task_id: str, job: JobProcesses, call_path: Path, result_path: Path) -> subprocess.Popen[bytes]:
        """The call's process, in `job`'s keeping and known by its task id; a terminate that came first stops it."""
        env = {"PYTHONUNBUFFERED": "1", **without_secrets(os.environ), **job.env}
        argv = dying_with_parent([sys.executable, "-m", CHILD_MODULE, str(call_path), str(result_path)], env)
        process = subprocess.Popen(
            argv, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        with self._lock:
            self._running[task_id] = process
            signum = self._stopped.get(task_id)
        if signum is not None:  # terminated while its process started
            _terminate(process, signum)
        job.started(process.pid)
        return process


def _call(task: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """What the child needs: where the task is, its arguments, and the request fields `self.request` shows."""
    request = task.request
    return {
        "module": module_spec(task_function(task)), "app_module": app_module(task.app), "name": task.name,
        "args": list(args), "kwargs": kwargs,
        "sys_path": [os.path.abspath(p or os.curdir) for p in sys.path],
        "request": {
            "id": request.id, "retries": request.retries or 0, "hostname": request.hostname,
            "root_id": request.root_id, "parent_id": request.parent_id, "group": request.group,
            "eta": request.eta, "expires": request.expires, "delivery_info": request.delivery_info or {},
        },
    }  # fmt: skip


@functools.cache
def app_module(app: Any) -> str | None:
    """The module that holds the task's app at its top level (the one `celery -A` loaded, not a framework's), for
    the call's process to import first: a @shared_task's module may hold no app, and its task is made on the app."""
    for name, module in list(sys.modules.items()):
        if name.partition(".")[0] in _FRAMEWORKS:
            continue
        with contextlib.suppress(TypeError):
            if any(value is app for value in list(vars(module).values())):
                return spec_of_module(name)
    return None


def _wait(process: subprocess.Popen[bytes], soft: float | None, hard: float | None, started: threading.Event) -> bool:
    """Wait for the child. Its limits count from its task's start, not from its imports (Celery's pool processes
    have the modules loaded already); the hard one also bounds the time until then. At the soft limit the child
    alone gets SIGUSR1 (SoftTimeLimitExceeded in the task: the processes it started would die of SIGUSR1, as Celery's
    pool spares them), at the hard one its group gets SIGKILL. True when the hard limit killed it."""
    spawned = time.monotonic()
    while not started.wait(_START_POLL_S):
        if process.poll() is not None:
            return False
        if hard is not None and time.monotonic() - spawned >= hard:
            return _kill(process)
    began = time.monotonic()
    if soft is not None and (hard is None or soft < hard):
        try:
            process.wait(soft)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGUSR1)  # Popen's: never to a pid already reaped
    try:
        process.wait(None if hard is None else max(0.0, began + hard - time.monotonic()))
    except subprocess.TimeoutExpired:
        return _kill(process)
    return False


def _kill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the call's process group at its hard limit, and reap its leader."""
    _signal_group(process, signal.SIGKILL)
    process.wait()
    return True


def _forward(task: Any, task_id: str, stream: IO[bytes] | None, started: threading.Event) -> None:
    """The child's lines to the worker's log; its progress records to the task's state (PROGRESS); its start line
    sets `started`."""
    if stream is None:
        return
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip("\n")
        if line == STARTED_LINE:
            started.set()
        elif line.startswith(PROGRESS_PREFIX):
            try:
                record = loads(line[len(PROGRESS_PREFIX) :])
                task.update_state(task_id, state=record["state"], meta=record["meta"])
            except Exception as exc:  # progress is for watchers only: the task goes on
                logger.warning("task %s: could not record its progress: %s", task_id, exc)
        else:
            logger.info("%s[%s]: %s", task.name, task_id, line)


def _read(path: Path) -> dict[str, Any] | None:
    """The child's result record; None when it left none (killed, or dead before it could write one)."""
    try:
        record = loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _outcome(task: Any, record: dict[str, Any] | None, exit_code: int, oom: OomKills | None) -> Any:
    """The child's return value, or its exception (a retry it asked for, a soft time limit) raised here; a child
    that left no record ends as a command does (its exit code, the OOM killer where it was at work)."""
    if record is None:
        raise RuntimeError(f"task {task.name}'s process ended without reporting a result: {exit_error(exit_code, oom)}")
    for options in record.get("sent_retries", []):  # retry(throw=False): sent, and the task went on
        task.retry(throw=False, **options)
    if "value" in record:
        return record["value"]
    error = record.get("error") or {}
    exc = rebuild_exception(str(error.get("type")), str(error.get("module")), str(error.get("message", "")))
    if "retry" in record:
        raise task.retry(exc=exc if error else None, **record["retry"])
    raise exc from ChildTraceback(str(error.get("traceback", "")).rstrip())


def _terminate(process: subprocess.Popen[bytes], signum: int) -> None:
    """`signum` to the call's process group, SIGKILL after the grace unless that was it."""
    _signal_group(process, signum)
    if signum != signal.SIGKILL:
        killer = threading.Timer(TERM_GRACE_S, _signal_group, (process, signal.SIGKILL))
        killer.daemon = True  # a worker that stops meanwhile does not wait for it
        killer.start()


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the call's process group while its leader is not yet reaped: once reaped, its pid (and so the group's
    id) may be another process's, and a late timer must not signal that."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
