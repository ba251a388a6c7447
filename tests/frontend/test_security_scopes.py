"""Scopes: which task types each front end's token may submit (the config's security.frontends). A put outside
the scope is 403, names the task type and the setting, and enqueues nothing: no state, no message, no item."""

from __future__ import annotations

import httpx
import pytest

from conftest import service_config
from scalablejob.model import keys
from scalablejob.model.routing import TaskInfo, TaskType, queue_for
from scalablejob.store.queues import priority_lists
from scalablejob.store.task_registry import record_tasks

pytest_plugins = ["frontend_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICE = "scoped"


def scoped_config(**task_types: list[str]) -> dict:
    frontends = {name: {"task_types": types} for name, types in task_types.items()}
    return {**service_config(SERVICE), "security": {"frontends": frontends}}


def nothing_enqueued(redis_client, frontend: str, request_id: str) -> bool:
    """No request state, no Celery message of either type, no input-queue item, no index taken."""
    messages = sum(redis_client.llen(key) for t in TaskType for key in priority_lists(queue_for(SERVICE, t)))
    return (
        not redis_client.exists(keys.request_state(SERVICE, request_id)) and messages == 0
        and redis_client.xlen(keys.input_stream(SERVICE, frontend)) == 0
        and not redis_client.exists(keys.input_index_counter(SERVICE))
    )  # fmt: skip


def put(served, name: str, request_id: str, **tags: str) -> httpx.Response:
    params = {"requestId": request_id, **tags}
    return httpx.post(f"{served.url}/api/predict/{name}", params=params, content=b"echo hi",
                      headers={"Authorization": served.token(name)}, timeout=30)  # fmt: skip


def test_another_front_end_may_submit_queries_only_by_default(serve, redis_client):
    # given a standalone service's own front end and another one, with the default scopes
    served = serve(service_config(SERVICE), names=[SERVICE, "web"], token=None)

    # when the other one submits a command, then it is refused with 403, naming the type and the setting
    refused = put(served, "web", "forbidden-1", taskType="command")
    assert refused.status_code == 403
    assert "taskType command is not allowed for front end web" in refused.text
    assert '"security": {"frontends": {"web": {"task_types"' in refused.text
    # and nothing was enqueued
    assert nothing_enqueued(redis_client, "web", "forbidden-1")

    # while its queries, and the service's own front end's commands, are accepted
    assert put(served, "web", "query-1", taskType="query").status_code == 200
    assert put(served, SERVICE, "command-1", taskType="command").status_code == 200


def test_the_default_task_type_and_named_tasks_are_checked_as_the_type_they_route_to(serve, redis_client):
    # given a service whose untagged requests are commands, and a named command task in its registry
    config = {**service_config(SERVICE), "scalable_job": {"default_task_type": "command"}}
    served = serve(config, names=[SERVICE, "web"], token=None)
    record_tasks(redis_client, SERVICE, {"train": TaskInfo(TaskType.COMMAND)})

    # when the query-only front end sends no taskType, or names the command task, then both are refused
    assert put(served, "web", "untagged").status_code == 403
    assert put(served, "web", "named", task="train").status_code == 403
    assert nothing_enqueued(redis_client, "web", "untagged") and nothing_enqueued(redis_client, "web", "named")


def test_the_config_allows_commands_or_limits_the_own_front_end_to_queries(serve, redis_client):
    served = serve(scoped_config(**{"web": ["query", "command"], SERVICE: ["query"]}), names=[SERVICE, "web"],
                   token=None)  # fmt: skip
    assert put(served, "web", "allowed", taskType="command").status_code == 200
    refused = put(served, SERVICE, "own-refused", taskType="command")
    assert refused.status_code == 403 and f"front end {SERVICE} (it may submit query)" in refused.text
    assert not redis_client.exists(keys.request_state(SERVICE, "own-refused"))


def test_a_front_end_with_no_task_type_may_only_read(serve, redis_client):
    served = serve(scoped_config(web=[]), names=["web"], token=None)
    refused = put(served, "web", "reader", taskType="query")
    assert refused.status_code == 403 and "(it may submit no task type)" in refused.text
    reads = httpx.get(f"{served.url}/api/predict/web/sink", headers={"Authorization": served.token("web")})
    assert reads.status_code == 200 and nothing_enqueued(redis_client, "web", "reader")
