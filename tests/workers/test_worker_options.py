"""The `celery worker` options a scalablejob worker refuses (with a one-line reason), takes and sets itself."""

from __future__ import annotations

from typing import Any

import pytest
from celery import concurrency

from scalablejob.workers.worker_options import (
    given_options,
    pool_name,
    refusal,
    service_options,
    shape_of,
)

SHAPE = shape_of(["svc.command", "svc.query"], query_slots=4)
THREADS = concurrency.get_implementation("threads")


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"queues": ["other"]}, "-Q/--queues other: a scalablejob worker consumes exactly its service's queues "
                                "(svc.command,svc.query)"),
        ({"queues": ["svc.query"]}, "-Q/--queues svc.query:"),  # one of the two is not enough
        ({"exclude_queues": ["svc.query"]}, "-X/--exclude-queues svc.query:"),
        ({"autoscale": (4, 1)}, "--autoscale: Celery's autoscale resizes one worker's pool"),
        ({"prefetch_multiplier": 4}, "--prefetch-multiplier 4: idle first needs 1"),
        ({"disable_prefetch": True}, "--disable-prefetch: the idle-first gate already fetches"),
        ({"pool": concurrency.get_implementation("prefork")}, "-P/--pool prefork: a scalablejob worker runs"),
        ({"pool": "solo"}, "-P/--pool solo:"),
        ({"concurrency": 8}, "-c/--concurrency 8: this service's workers have 5 slots (4 query slots"),
        ({"purge": True}, "--purge: it would drop queued messages"),
        ({"time_limit": 60.0}, "--time-limit 60.0: a scalablejob worker does not apply a worker-wide time limit"),
        ({"soft_time_limit": 30.0}, "--soft-time-limit 30.0: a scalablejob worker does not apply"),
    ],
    ids=["queues", "one-queue", "exclude", "autoscale", "prefetch", "disable-prefetch", "prefork", "solo",
         "concurrency", "purge", "time-limit", "soft-time-limit"],
)  # fmt: skip
def test_an_option_that_would_break_the_service_is_refused_with_its_reason(
    options: dict[str, Any], reason: str
) -> None:
    found = refusal(options, set(options), SHAPE)

    assert found is not None and found.startswith(reason) and "\n" not in found


@pytest.mark.parametrize(
    "options",
    [
        {"queues": ["svc.query", "svc.command"]},  # both, in any order
        {"pool": THREADS},
        {"pool": "threads"},
        {"concurrency": 5},
        {"prefetch_multiplier": 1},
        {"loglevel": "DEBUG", "optimization": "fair", "hostname": "w1@host"},
    ],
    ids=["both-queues", "threads-class", "threads-name", "own-slots", "prefetch-1", "harmless"],
)
def test_options_that_fit_the_service_are_taken(options: dict[str, Any]) -> None:
    assert refusal(options, set(options), SHAPE) is None


def test_a_default_celery_filled_in_is_not_refused() -> None:
    # the command line gives -P prefork when -P is absent: only what the user set counts
    assert refusal({"pool": concurrency.get_implementation("prefork")}, set(), SHAPE) is None


def test_the_worker_sets_queues_threads_slots_and_prefetch_and_keeps_a_given_gossip_flag() -> None:
    options = service_options({"without_gossip"}, SHAPE, THREADS)

    assert options == {
        "queues": ["svc.command", "svc.query"], "pool": THREADS, "pool_cls": None, "concurrency": 5,
        "prefetch_multiplier": 1, "without_mingle": True,
    }  # fmt: skip


def test_given_options_come_from_the_command_lines_sources_else_from_values() -> None:
    assert given_options({"queues": ["x"], "purge": True}, {"queues": True, "purge": False}) == {"queues"}
    assert given_options({"queues": ["x"], "purge": False, "autoscale": None}, None) == {"queues"}


def test_pool_name_reads_names_and_classes() -> None:
    assert pool_name(THREADS) == "threads"
    assert pool_name("gevent") == "gevent"
    assert pool_name(None) is None


def test_an_app_without_a_service_config_cannot_run_a_worker(capsys: pytest.CaptureFixture[str]) -> None:
    from scalablejob.api.celery_app import make_app
    from scalablejob.workers.celery_worker import service_config_of

    with pytest.raises(SystemExit) as exited:
        service_config_of(make_app("svc", "redis://127.0.0.1:1/0"))

    assert exited.value.code == 2
    assert capsys.readouterr().err.startswith("Error: the app of service svc has no service config")
