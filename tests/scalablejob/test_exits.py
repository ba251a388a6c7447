"""How a command's end reads: an OOM kill says out of memory, certainly with the job's own cgroup, probably without."""

from __future__ import annotations

import pytest

from scalablejob.model.exits import OomKills, exit_error, oom_notice, oom_tags, shell_exit_code
from scalablejob.model.task_result import command_failure

OF_JOB, ON_HOST = True, False


@pytest.mark.parametrize(
    ("exit_code", "oom", "error"),
    [
        (3, None, "command exited with code 3"),
        (137, None, "command exited with code 137"),  # not told: a SIGKILL is all it says
        (137, OomKills(0, OF_JOB), "command exited with code 137"),  # its cgroup saw no OOM kill: someone's kill -9
        (137, OomKills(1, OF_JOB), "command killed by the kernel's OOM killer (out of memory; exit code 137)"),
        (
            1,
            OomKills(2, OF_JOB),
            "command exited with code 1 after the kernel's OOM killer killed 2 processes of it (out of memory)",
        ),
        (
            137,
            OomKills(1, ON_HOST),
            "command killed by SIGKILL (exit code 137) while the kernel's OOM killer killed 1 process on this host: "
            "probably out of memory",
        ),
        (1, OomKills(3, ON_HOST), "command exited with code 1"),  # another process's OOM kill says nothing of it
        (137, OomKills(0, ON_HOST), "command exited with code 137"),
    ],
    ids=["code", "sigkill", "sigkill-no-oom", "oom", "child-oom", "host-oom", "host-oom-other-exit", "host-no-oom"],
)
def test_exit_error(exit_code: int, oom: OomKills | None, error: str) -> None:
    assert exit_error(exit_code, oom) == error


def test_an_oom_error_says_its_exit_code_once() -> None:
    error = exit_error(137, OomKills(1, OF_JOB))

    assert command_failure(error, 137) == error


@pytest.mark.parametrize(
    ("oom", "notice", "tags"),
    [
        (None, None, {}),
        (OomKills(0, OF_JOB), None, {}),
        (
            OomKills(1, OF_JOB),
            "the kernel's OOM killer killed 1 process of this job (out of memory)",
            {"oomKills": "1"},
        ),
        (OomKills(2, ON_HOST), None, {}),  # the host's count is no count of the job's processes
    ],
)
def test_only_the_job_s_own_oom_kills_get_a_log_line_and_a_tag(
    oom: OomKills | None, notice: str | None, tags: dict[str, str]
) -> None:
    assert (oom_notice(oom), oom_tags(oom)) == (notice, tags)


@pytest.mark.parametrize(("returncode", "exit_code"), [(0, 0), (3, 3), (-9, 137), (-15, 143)])
def test_a_process_killed_by_a_signal_exits_with_128_plus_its_number(returncode: int, exit_code: int) -> None:
    assert shell_exit_code(returncode) == exit_code
