"""Which Redis errors are a refusal for now, that a write waits out, and how such a refusal is said: raw, in a
pipeline or from inside a Lua script. The Redis 6.2 texts are copied from a real server whose disk was full
(tests/integration/test_full_disk.py meets them live); the Redis 7 one follows its documented form (the error's own
code first, then ` script: SHA, on @user_script:LINE.`)."""

from __future__ import annotations

import pytest
import redis

from scalablejob.store.outage import describe_refusal, is_outage

FULL_DISK_62_SCRIPT = (
    "Error running script (call to f_e665a3820fd4f28467b5aa5ee549efd9052d9292): @user_script:18: @user_script: 18: "
    "-MISCONF Errors writing to the AOF file: No space left on device"
)
FULL_DISK_7_SCRIPT = (
    "MISCONF Errors writing to the AOF file: No space left on device script: e665a3820fd4f28467b5aa5ee549efd9052d9292"
    ", on @user_script:18."
)
FULL_DISK = "MISCONF Errors writing to the AOF file: No space left on device"
FULL_DISK_PIPELINE = f"Command # 1 (DEL scalablejob:full:tasks) of pipeline caused error: {FULL_DISK}"
OOM_62_SCRIPT = (
    "Error running script (call to f_0123): @user_script:5: @user_script: 5: -OOM command not allowed when used "
    "memory > 'maxmemory'."
)


@pytest.mark.parametrize(
    ("text", "passing"),
    [
        (FULL_DISK, True),
        (FULL_DISK_62_SCRIPT, True),
        (FULL_DISK_7_SCRIPT, True),
        (FULL_DISK_PIPELINE, True),
        (OOM_62_SCRIPT, True),
        ("READONLY You can't write against a read only replica.", True),
        ("NOREPLICAS Not enough good replicas to write.", True),
        ("ERR wrong number of arguments for 'set' command", False),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
        ("Error running script (call to f_0123): @user_script:3: user_script:3: attempt to compare nil", False),
        ("ERR MISCONFIGURED is not a code", False),
    ],
)
def test_refusals_for_now_pass_and_everything_else_surfaces(text: str, passing: bool) -> None:
    assert is_outage(redis.ResponseError(text)) is passing
    assert (describe_refusal(text) is not None) is passing


@pytest.mark.parametrize("text", [FULL_DISK, FULL_DISK_62_SCRIPT, FULL_DISK_7_SCRIPT])
def test_a_full_disk_is_named_with_redis_own_words(text: str) -> None:
    assert describe_refusal(text) == (
        "the broker cannot persist its data: its disk is full (MISCONF Errors writing to the AOF file: No space left "
        f"on device{text.split('on device', 1)[1]})"
    )


def test_other_refusals_say_their_cause() -> None:
    assert describe_refusal(OOM_62_SCRIPT) == (
        "the broker is out of memory (maxmemory) (OOM command not allowed when used memory > 'maxmemory'.)"
    )
