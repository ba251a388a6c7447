"""How a command's end reads: its exit code, and whether the kernel's OOM killer ended it. Pure.

An OOM kill is a SIGKILL, so its exit code, 137, says nothing more than `kill -9` would. The job's own memory
cgroup counts the OOM kills of its processes (then it is certain); without one, the host's counter only says the
OOM killer was at work while the job ran (then it is probable, and said so).
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_SIGKILL = 128 + 9  # the exit code of a process killed by SIGKILL, as a shell says it
OOM_KILLS_TAG = "oomKills"  # the result entry's count of the job's processes the OOM killer killed


@dataclass(frozen=True)
class OomKills:
    """How many processes the kernel's OOM killer killed while a job ran: of the job itself (`of_job`: its memory
    cgroup counted them), or of the whole host (no cgroup of its own: any process)."""

    count: int
    of_job: bool
    limit_mb: int | None = None  # the worker's memory limit (metadata.memory), when one was enforced

    @property
    def out_of_memory(self) -> str:
        return "out of memory" if self.limit_mb is None else f"out of memory: limit {self.limit_mb} MB"


def shell_exit_code(returncode: int) -> int:
    """A process's exit status as a shell says it: 128 + N when signal N killed it (Popen says -N)."""
    return returncode if returncode >= 0 else 128 - returncode


def exit_error(exit_code: int, oom: OomKills | None = None) -> str:
    """A failed command's error: its exit code, and the OOM killer where it ended the command, or some of it."""
    killed = exit_code == EXIT_SIGKILL
    if oom is None or oom.count <= 0 or (not killed and not oom.of_job):
        return f"command exited with code {exit_code}"
    if oom.of_job and killed:
        return f"command killed by the kernel's OOM killer ({oom.out_of_memory}; exit code {exit_code})"
    if oom.of_job:
        return (
            f"command exited with code {exit_code} after the kernel's OOM killer killed {_processes(oom.count)} of "
            f"it ({oom.out_of_memory})"
        )
    return (
        f"command killed by SIGKILL (exit code {exit_code}) while the kernel's OOM killer killed "
        f"{_processes(oom.count)} on this host: probably out of memory"
    )


def oom_notice(oom: OomKills | None) -> str | None:
    """The job's log line about the OOM kills of its own processes, if any (a child killed, the job ran on)."""
    if oom is None or not oom.of_job or oom.count <= 0:
        return None
    return f"the kernel's OOM killer killed {_processes(oom.count)} of this job ({oom.out_of_memory})"


def oom_tags(oom: OomKills | None) -> dict[str, str]:
    """The result entry's tag for the OOM kills of the job's own processes: none when there were none."""
    return {OOM_KILLS_TAG: str(oom.count)} if oom is not None and oom.of_job and oom.count > 0 else {}


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"
