"""The worker's side of a named training task: the child's command line, its files, and what it reported."""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from scalablejob.host.job_user import JobUser
from scalablejob.model.task_result import ERROR_MODULE_TAG, ERROR_TYPE_TAG, encoding_tags
from scalablejob.workers.command import CommandOutcome
from scalablejob.workers.runtime import ProgramResult
from scalablejob.workers.task_child import BODY_ENV, CONTEXT_ENV, RESULT_ENV, read_record

CHILD_MODULE = "scalablejob.workers.task_child"


@dataclass(frozen=True)
class ChildProgram:
    """One run of a training task in a child process (the command runner's Program)."""

    argv: list[str]
    result_path: Path
    env: Mapping[str, str] = field(default_factory=dict)

    def result(self, outcome: CommandOutcome) -> ProgramResult:
        """The child's return value (on exit 0) or its exception, from the result file."""
        return program_result(read_record(self.result_path), outcome.exit_code)


def program_result(record: Mapping[str, object] | None, exit_code: int) -> ProgramResult:
    """What a child's record says: pure, so each case is tested without a process."""
    error = record.get("error") if record else None
    if isinstance(error, dict):
        text = f"{error.get('type')}: {error.get('message')}"
        tags = {ERROR_TYPE_TAG: str(error.get("type")), ERROR_MODULE_TAG: str(error.get("module"))}
        return ProgramResult(tags=tags, error=text)
    if exit_code != 0:
        return ProgramResult()  # killed, or exited on its own: the exit code says it
    try:
        data = base64.b64decode(str(record["data"]), validate=True) if record else None
    except (KeyError, binascii.Error):
        data = None
    if data is None or record is None:
        return ProgramResult(error="the task's process exited 0 without reporting a result")
    return ProgramResult(data=data, tags=encoding_tags(str(record.get("encoding", "bytes"))))


@contextmanager
def child_program(
    spec: str, name: str, request_id: str, body: bytes, tags: Mapping[str, str], owner: JobUser | None = None
) -> Iterator[ChildProgram]:
    """The program of one request of task `name` (in module `spec`); its files go when the block ends. With an
    `owner` (scalable_job.run_as), the child runs as that user: its folder is theirs, to read the body and write the
    result in."""
    with tempfile.TemporaryDirectory(prefix="scalablejob-task-") as folder:
        if owner is not None:
            os.chown(folder, owner.uid, owner.gid)
        body_path, result_path = Path(folder, "body"), Path(folder, "result.json")
        body_path.write_bytes(body)
        context = {
            "request_id": request_id,
            "tags": dict(tags),
            "sys_path": [os.path.abspath(p or os.curdir) for p in sys.path],
        }
        env = {BODY_ENV: str(body_path), RESULT_ENV: str(result_path), CONTEXT_ENV: json.dumps(context)}
        yield ChildProgram([sys.executable, "-m", CHILD_MODULE, spec, name], result_path, env)
