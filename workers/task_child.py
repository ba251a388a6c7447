"""The child process of a named training task: `python -m scalablejob.workers.task_child MODULE TASK`.

It imports the user's module (as the worker did), runs the task's function on the request body, and leaves its
return value, or its exception, in the result file for the worker. Its prints are the job's log, streamed by the
worker's command runner like any command's output; `ctx.progress` prints the `::progress` marker line. Cancel and
timeout are the runner's: SIGTERM to the process group, then SIGKILL.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BODY_ENV = "SCALABLEJOB_TASK_BODY"  # file holding the request body
RESULT_ENV = "SCALABLEJOB_TASK_RESULT"  # file the child writes its outcome to
CONTEXT_ENV = "SCALABLEJOB_TASK_CONTEXT"  # JSON: request id, tags, and the worker's sys.path (to import the module)
EXIT_TASK_FAILED = 1


def success_record(data: bytes, encoding: str) -> dict[str, Any]:
    return {"encoding": encoding, "data": base64.b64encode(data).decode()}


def failure_record(exc: BaseException) -> dict[str, Any]:
    kind = type(exc)
    return {"error": {"type": kind.__qualname__, "module": kind.__module__, "message": str(exc)}}


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(record), encoding="utf-8")


def read_record(path: Path) -> dict[str, Any] | None:
    """The child's outcome, or None when it wrote none (killed, or died before it could)."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def run(spec: str, name: str, environ: Mapping[str, str]) -> int:
    """Run the task once; returns the process's exit code."""
    context = json.loads(environ[CONTEXT_ENV])
    sys.path[:0] = [entry for entry in context.get("sys_path", []) if entry not in sys.path]
    result_path = Path(environ[RESULT_ENV])
    from scalablejob.api.job import QueryContext
    from scalablejob.api.user_code import load_task
    from scalablejob.model.task_result import encode_value
    from scalablejob.progress import report_progress

    try:
        task = load_task(spec, name)
        ctx = QueryContext(context["request_id"], context.get("tags", {}), report_progress)
        data, encoding = encode_value(task.handler(Path(environ[BODY_ENV]).read_bytes(), ctx))
    except Exception as exc:
        traceback.print_exc()  # the job's stderr: its log says where it failed
        write_record(result_path, failure_record(exc))
        return EXIT_TASK_FAILED
    sys.stdout.flush()
    write_record(result_path, success_record(data, encoding))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m scalablejob.workers.task_child MODULE TASK (started by a worker)", file=sys.stderr)
        return 2
    return run(args[0], args[1], os.environ)


if __name__ == "__main__":
    sys.exit(main())
