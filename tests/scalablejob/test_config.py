"""Service config parsing: the example files, every default, and one exact error per kind of bad input."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from scalablejob.model.config import (
    DEFAULT_AVG_WAITING_LENGTH,
    DEFAULT_GPU,
    DEFAULT_INPUT_MAX_LENGTH,
    DEFAULT_INSTANCE,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_REPLICAS,
    DEFAULT_MIN_REPLICAS,
    DEFAULT_SCALE_DOWN_WINDOW_S,
    DEFAULT_SCALE_TO_ZERO_GRACE_S,
    DEFAULT_SCALE_UP_WINDOW_S,
    DEFAULT_SHELL,
    DEFAULT_SINK_MAX_AGE_S,
    DEFAULT_SINK_MAX_LENGTH,
    DEFAULT_WORKER_THREADS,
    AutoscalerConfig,
    ContainerConfig,
    FrontEndConfig,
    HttpLimits,
    Metadata,
    QueueConfig,
    ScalableJobConfig,
    ServiceConfig,
    load_config,
    parse_config,
    parse_config_text,
)
from scalablejob.model.errors import ConfigError, TaskTypeError
from scalablejob.model.routing import TaskType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
META = {"name": "demo", "type": "ScalableJob"}


def config_with(**sections: Any) -> dict[str, Any]:
    """A minimal valid service JSON plus the given top-level sections (which may replace metadata)."""
    return {"metadata": copy.deepcopy(META), **sections}


def meta_with(**fields: Any) -> dict[str, Any]:
    return config_with(metadata={**META, **fields})


def container_with(**fields: Any) -> dict[str, Any]:
    return config_with(containers=[{"command": "python app.py", "port": 8000, **fields}])


def behavior(section: str, key: str, value: object) -> dict[str, Any]:
    return config_with(autoscaler={"behavior": {section: {key: value}}})


# ---- The example files -------------------------------------------------------------------------------------

EXPECTED_EXAMPLES = {
    "inference.json": ServiceConfig(
        containers=(),
        metadata=Metadata(name="demo", type="ScalableJob", instance=1, worker_threads=4, gpu=0),
        scalable_job=ScalableJobConfig(enable_write_log_to_queue=False),
        autoscaler=AutoscalerConfig(
            min=1, max=4, avg_waiting_length=2, scale_down_window_s=1, scale_to_zero_grace_s=60
        ),
    ),
    "training.json": ServiceConfig(
        containers=(),
        metadata=Metadata(name="trainer", type="ScalableJobService", gpu=0),
        front_end=FrontEndConfig(port=8001),
        scalable_job=ScalableJobConfig(enable_write_log_to_queue=True, default_task_type="command"),
        autoscaler=AutoscalerConfig(min=0, max=2),
    ),
    "model_server.json": ServiceConfig(
        containers=(
            ContainerConfig(image="local/echo", command="python examples/echo_server.py --port 8765", port=8765),
        ),
        metadata=Metadata(name="echo-model", type="ScalableJob", instance=1, worker_threads=4, gpu=0),
        scalable_job=ScalableJobConfig(enable_write_log_to_queue=False),
        autoscaler=AutoscalerConfig(
            min=1, max=4, avg_waiting_length=2, scale_down_window_s=1, scale_to_zero_grace_s=60
        ),
    ),
}


@pytest.mark.parametrize("file_name", sorted(EXPECTED_EXAMPLES))
def test_example_file_parses_to_expected_config(file_name: str) -> None:
    assert load_config(EXAMPLES / file_name) == EXPECTED_EXAMPLES[file_name]


@pytest.mark.parametrize(
    ("file_name", "name", "is_integrated", "model_server_port"),
    [
        ("inference.json", "demo", False, None),
        ("training.json", "trainer", True, None),
        ("model_server.json", "echo-model", False, 8765),
    ],
)
def test_example_file_properties(file_name: str, name: str, is_integrated: bool, model_server_port: int | None) -> None:
    config = load_config(str(EXAMPLES / file_name))
    assert config.name == name
    assert config.is_integrated is is_integrated
    port = None if config.model_server is None else config.model_server.port
    assert port == model_server_port


# ---- Defaults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(config_with(), id="sections-missing"),
        pytest.param(
            config_with(containers=[], scalable_job={}, autoscaler={"strategies": {}, "behavior": {}}),
            id="sections-empty",
        ),
        pytest.param(
            config_with(autoscaler={"behavior": {"scaleUp": {}, "scaleDown": {}, "onZero": {}}}),
            id="behavior-sections-empty",
        ),
    ],
)
@pytest.mark.parametrize(
    ("read", "default"),
    [
        (lambda c: c.containers, ()),
        (lambda c: c.front_end, None),
        (lambda c: c.metadata.instance, DEFAULT_INSTANCE),
        (lambda c: c.metadata.worker_threads, DEFAULT_WORKER_THREADS),
        (lambda c: c.metadata.gpu, DEFAULT_GPU),
        (lambda c: c.metadata.cpu, None),
        (lambda c: c.metadata.memory, None),
        (lambda c: c.scalable_job.enable_write_log_to_queue, None),
        (lambda c: c.scalable_job.init_command, None),
        (lambda c: c.scalable_job.default_task_type, None),
        (lambda c: c.scalable_job.shell, DEFAULT_SHELL),
        (lambda c: c.autoscaler.min, DEFAULT_MIN_REPLICAS),
        (lambda c: c.autoscaler.max, DEFAULT_MAX_REPLICAS),
        (lambda c: c.autoscaler.avg_waiting_length, DEFAULT_AVG_WAITING_LENGTH),
        (lambda c: c.autoscaler.scale_up_window_s, DEFAULT_SCALE_UP_WINDOW_S),
        (lambda c: c.autoscaler.scale_down_window_s, DEFAULT_SCALE_DOWN_WINDOW_S),
        (lambda c: c.autoscaler.scale_to_zero_grace_s, DEFAULT_SCALE_TO_ZERO_GRACE_S),
        (lambda c: c.model_server, None),
        (lambda c: c.is_integrated, False),
        (lambda c: c.queue.max_payload_bytes, DEFAULT_MAX_BODY_BYTES),
        (lambda c: c.queue.input_max_length, DEFAULT_INPUT_MAX_LENGTH),
        (lambda c: c.queue.sink_max_length, DEFAULT_SINK_MAX_LENGTH),
        (lambda c: c.queue.sink_max_age_s, DEFAULT_SINK_MAX_AGE_S),
    ],
)
def test_missing_field_takes_its_default(data: dict[str, Any], read: Any, default: object) -> None:
    assert read(parse_config(data)) == default


def test_defaults_match_the_documented_values() -> None:
    assert (DEFAULT_INSTANCE, DEFAULT_WORKER_THREADS, DEFAULT_GPU, DEFAULT_SHELL) == (1, 4, 0, False)
    assert (DEFAULT_MIN_REPLICAS, DEFAULT_MAX_REPLICAS, DEFAULT_AVG_WAITING_LENGTH) == (1, 10, 2)
    assert (DEFAULT_SCALE_UP_WINDOW_S, DEFAULT_SCALE_DOWN_WINDOW_S, DEFAULT_SCALE_TO_ZERO_GRACE_S) == (0, 1, 60)
    assert (DEFAULT_INPUT_MAX_LENGTH, DEFAULT_SINK_MAX_LENGTH, DEFAULT_SINK_MAX_AGE_S) == (100_000, 100_000, 604_800)


def test_queue_limits_are_read_from_the_queue_section() -> None:
    sink = {"max_length": 50, "max_age_seconds": 3600}
    queue = {"max_payload_bytes": 1024, "source": {"max_length": 5}, "sink": sink}
    assert parse_config(config_with(queue=queue)).queue == QueueConfig(1024, 5, 50, 3600)


@pytest.mark.parametrize(
    ("queue", "path", "message"),
    [
        ({"source": {"max_length": 0}}, "$.queue.source.max_length", "expected an integer >= 1, got 0"),
        ({"sink": {"max_len": 5}}, "$.queue.sink.max_len", "unknown key 'max_len'"),
        ({"max_payload_bytes": "big"}, "$.queue.max_payload_bytes", "expected an integer"),
        ({"sink": {"max_age_seconds": 0}}, "$.queue.sink.max_age_seconds", "expected an integer >= 1, got 0"),
        ({"sink": {"max_age_seconds": 1.5}}, "$.queue.sink.max_age_seconds", "expected an integer >= 1, got"),
    ],
)
def test_a_bad_queue_limit_names_its_path(queue: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(config_with(queue=queue))
    assert error.value.path == path and error.value.message.startswith(message)


def test_empty_front_end_is_present_with_every_field_unset() -> None:
    assert parse_config(config_with(front_end={})).front_end == FrontEndConfig()


def test_parsed_defaults_equal_dataclass_defaults() -> None:
    assert parse_config(config_with()) == ServiceConfig(
        containers=(), metadata=Metadata(name="demo", type="ScalableJob")
    )


# ---- Accepted values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "read", "expected"),
    [
        pytest.param(config_with(autoscaler={"strategies": {"avg_waiting_length": 3}}), "avg", 3.0, id="int-as-number"),
        pytest.param(config_with(autoscaler={"strategies": {"avg_waiting_length": 0.5}}), "avg", 0.5, id="float"),
        pytest.param(meta_with(cpu=4), "cpu", 4.0, id="cpu-int"),
        pytest.param(meta_with(cpu=0.5), "cpu", 0.5, id="cpu-float"),
        pytest.param(meta_with(name="a" * 63), "name", "a" * 63, id="name-63-chars"),
        pytest.param(meta_with(name="My_svc-2"), "name", "My_svc-2", id="name-mixed"),
        pytest.param(config_with(autoscaler={"min": 0, "max": 1}), "bounds", (0, 1), id="min-zero"),
        pytest.param(config_with(autoscaler={"min": 3, "max": 3}), "bounds", (3, 3), id="min-equals-max"),
        pytest.param(config_with(scalable_job={"shell": True}), "shell", True, id="shell"),
        pytest.param(
            config_with(scalable_job={"init_command": "pip install -e ."}), "init", "pip install -e .", id="init"
        ),
    ],
)
def test_accepted_value(data: dict[str, Any], read: str, expected: object) -> None:
    config = parse_config(data)
    readers = {
        "avg": lambda: config.autoscaler.avg_waiting_length,
        "cpu": lambda: config.metadata.cpu,
        "name": lambda: config.name,
        "bounds": lambda: (config.autoscaler.min, config.autoscaler.max),
        "shell": lambda: config.scalable_job.shell,
        "init": lambda: config.scalable_job.init_command,
    }
    assert readers[read]() == expected


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({"A": "1", "B": ""}, id="object"),
        pytest.param([{"name": "A", "value": "1"}, {"name": "B", "value": ""}], id="cloud-list"),
    ],
)
def test_env_accepts_both_forms(env: object) -> None:
    config = parse_config(container_with(env=env))
    assert dict(config.containers[0].env) == {"A": "1", "B": ""}


def test_env_is_read_only_and_config_is_hashable() -> None:
    config = parse_config(container_with(env={"A": "1"}))
    with pytest.raises(TypeError):
        config.containers[0].env["A"] = "2"  # type: ignore[index]
    assert hash(config) == hash(parse_config(container_with(env={"A": "1"})))


def test_container_copies_the_env_it_is_given() -> None:
    env = {"A": "1"}
    container = ContainerConfig(env=env)
    env["A"] = "2"
    assert container.env == {"A": "1"}


@pytest.mark.parametrize(
    ("containers", "has_model_server"),
    [
        ([], False),
        ([{"command": "python app.py", "port": 8000}], True),
        ([{"command": "python app.py"}], False),
        ([{"port": 8000}], False),
        ([{"image": "x"}, {"command": "python app.py", "port": 8000}], False),
    ],
)
def test_model_server_is_first_container_with_command_and_port(containers: list[Any], has_model_server: bool) -> None:
    config = parse_config(config_with(containers=containers))
    assert (config.model_server is not None) is has_model_server
    if has_model_server:
        assert config.model_server is config.containers[0]


@pytest.mark.parametrize(
    ("explicit", "task_type", "expected"),
    [
        (None, "command", True),
        (None, "query", False),
        (None, TaskType.COMMAND, True),
        (None, TaskType.QUERY, False),
        (True, "query", True),
        (True, "command", True),
        (False, "command", False),
        (False, "query", False),
    ],
)
def test_write_log_to_queue_explicit_else_per_task_type(explicit: bool | None, task_type: str, expected: bool) -> None:
    assert ScalableJobConfig(enable_write_log_to_queue=explicit).write_log_to_queue(task_type) is expected


def test_write_log_to_queue_rejects_unknown_task_type() -> None:
    with pytest.raises(TaskTypeError, match="command, query"):
        ScalableJobConfig().write_log_to_queue("batch")


@pytest.mark.parametrize(
    ("obj", "attribute"),
    [
        (parse_config(config_with()), "metadata"),
        (parse_config(config_with()).metadata, "name"),
        (parse_config(config_with()).autoscaler, "max"),
        (parse_config(config_with()).scalable_job, "shell"),
        (FrontEndConfig(), "port"),
        (ContainerConfig(), "env"),
    ],
)
def test_config_objects_are_frozen(obj: object, attribute: str) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(obj, attribute, None)


# ---- Errors: exact path, and a message naming what was expected ----------------------------------------------

NAME_RULE = "expected a name matching ^[A-Za-z][A-Za-z0-9_-]{0,62}$ (it is used in Redis keys and Celery queue names)"
SERVICE_TYPES = 'one of "ScalableJob", "ScalableJobService"'
TOP_KEYS = "containers, metadata, front_end, scalable_job, autoscaler, queue, security"

BAD_CONFIGS = [
    (
        "run-as-shell",
        config_with(scalable_job={"run_as": "bob; rm -rf /"}),
        "$.scalable_job.run_as",
        'expected "user" or "user:group" (names or numbers), got string "bob; rm -rf /"',
    ),
    (
        "run-as-empty-group",
        config_with(scalable_job={"run_as": "bob:"}),
        "$.scalable_job.run_as",
        'expected "user" or "user:group" (names or numbers), got string "bob:"',
    ),
    # unknown keys, at every level
    ("unknown-top", config_with(foo=1), "$.foo", f"unknown key 'foo' (allowed: {TOP_KEYS})"),
    (
        "unknown-metadata",
        meta_with(nmae="x"),
        "$.metadata.nmae",
        "unknown key 'nmae' (allowed: name, type, instance, rpc.worker_threads, cpu, gpu, memory)",
    ),
    (
        "unknown-container",
        container_with(cmd="x"),
        "$.containers[0].cmd",
        "unknown key 'cmd' (allowed: image, command, port, env)",
    ),
    (
        "unknown-front-end",
        config_with(front_end={"prot": 1}),
        "$.front_end.prot",
        "unknown key 'prot' (allowed: port, script, cpu, memory, token)",
    ),
    (
        "unknown-scalable-job",
        config_with(scalable_job={"x": 1}),
        "$.scalable_job.x",
        "unknown key 'x' (allowed: enable_write_log_to_queue, init_command, default_task_type, shell, working_dir, "
        "request_env, log_cap_bytes, task_timeout_seconds, cancel_grace_seconds, run_as)",
    ),
    (
        "unknown-autoscaler",
        config_with(autoscaler={"maxx": 1}),
        "$.autoscaler.maxx",
        "unknown key 'maxx' (allowed: min, max, strategies, behavior)",
    ),
    (
        "unknown-nested-deep",
        behavior("scaleDown", "foo", 1),
        "$.autoscaler.behavior.scaleDown.foo",
        "unknown key 'foo' (allowed: stabilizationWindowSeconds)",
    ),
    (
        "unknown-behavior",
        config_with(autoscaler={"behavior": {"scaledown": {}}}),
        "$.autoscaler.behavior.scaledown",
        "unknown key 'scaledown' (allowed: scaleUp, scaleDown, onZero)",
    ),
    (
        "unknown-env-entry-key",
        container_with(env=[{"name": "A", "value": "1", "valueFrom": {}}]),
        "$.containers[0].env[0].valueFrom",
        "unknown key 'valueFrom' (allowed: name, value)",
    ),
    # wrong types
    ("root-list", [], "$", "expected an object, got list"),
    ("root-null", None, "$", "expected an object, got null"),
    ("list-for-object", config_with(autoscaler=[]), "$.autoscaler", "expected an object, got list"),
    ("string-for-object", meta_with() | {"front_end": "x"}, "$.front_end", 'expected an object, got string "x"'),
    ("object-for-list", config_with(containers={}), "$.containers", "expected a list, got object"),
    ("string-for-container", config_with(containers=["x"]), "$.containers[0]", 'expected an object, got string "x"'),
    ("string-for-int", meta_with(instance="1"), "$.metadata.instance", 'expected an integer >= 0, got string "1"'),
    ("bool-for-int", meta_with(gpu=True), "$.metadata.gpu", "expected an integer >= 0, got boolean true"),
    ("float-for-int", meta_with(instance=1.5), "$.metadata.instance", "expected an integer >= 0, got number 1.5"),
    ("null-for-int", meta_with(gpu=None), "$.metadata.gpu", "expected an integer >= 0, got null"),
    (
        "bool-for-number",
        config_with(autoscaler={"strategies": {"avg_waiting_length": True}}),
        "$.autoscaler.strategies.avg_waiting_length",
        "expected a number > 0, got boolean true",
    ),
    ("string-for-number", meta_with(cpu="4"), "$.metadata.cpu", 'expected a number > 0, got string "4"'),
    (
        "int-for-string",
        container_with(command=1),
        "$.containers[0].command",
        "expected a non-empty string, got integer 1",
    ),
    (
        "string-for-bool",
        config_with(scalable_job={"enable_write_log_to_queue": "yes"}),
        "$.scalable_job.enable_write_log_to_queue",
        'expected a boolean (true or false), got string "yes"',
    ),
    (
        "int-for-bool",
        config_with(scalable_job={"shell": 1}),
        "$.scalable_job.shell",
        "expected a boolean (true or false), got integer 1",
    ),
    # ranges
    (
        "min-above-max",
        config_with(autoscaler={"min": 5, "max": 2}),
        "$.autoscaler.min",
        "min must be <= max, got min 5 and max 2",
    ),
    (
        "min-above-default-max",
        config_with(autoscaler={"min": 11}),
        "$.autoscaler.min",
        "min must be <= max, got min 11 and max 10",
    ),
    ("min-negative", config_with(autoscaler={"min": -1}), "$.autoscaler.min", "expected an integer >= 0, got -1"),
    ("max-zero", config_with(autoscaler={"max": 0}), "$.autoscaler.max", "expected an integer >= 1, got 0"),
    (
        "avg-zero",
        config_with(autoscaler={"strategies": {"avg_waiting_length": 0}}),
        "$.autoscaler.strategies.avg_waiting_length",
        "expected a number > 0, got 0",
    ),
    (
        "avg-nan",
        config_with(autoscaler={"strategies": {"avg_waiting_length": float("nan")}}),
        "$.autoscaler.strategies.avg_waiting_length",
        "expected a number > 0, got nan",
    ),
    (
        "scale-up-window-negative",
        behavior("scaleUp", "stabilizationWindowSeconds", -1),
        "$.autoscaler.behavior.scaleUp.stabilizationWindowSeconds",
        "expected a number >= 0, got -1",
    ),
    (
        "scale-down-window-negative",
        behavior("scaleDown", "stabilizationWindowSeconds", -0.5),
        "$.autoscaler.behavior.scaleDown.stabilizationWindowSeconds",
        "expected a number >= 0, got -0.5",
    ),
    (
        "grace-negative",
        behavior("onZero", "scaleDownGracePeriodSeconds", -60),
        "$.autoscaler.behavior.onZero.scaleDownGracePeriodSeconds",
        "expected a number >= 0, got -60",
    ),
    ("instance-negative", meta_with(instance=-1), "$.metadata.instance", "expected an integer >= 0, got -1"),
    (
        "worker-threads-zero",
        meta_with(**{"rpc.worker_threads": 0}),
        '$.metadata["rpc.worker_threads"]',
        "expected an integer >= 1, got 0",
    ),
    ("gpu-negative", meta_with(gpu=-1), "$.metadata.gpu", "expected an integer >= 0, got -1"),
    ("cpu-zero", meta_with(cpu=0), "$.metadata.cpu", "expected a number > 0, got 0"),
    ("memory-zero", meta_with(memory=0), "$.metadata.memory", "expected an integer >= 1, got 0"),
    ("port-zero", container_with(port=0), "$.containers[0].port", "expected an integer between 1 and 65535, got 0"),
    (
        "port-too-big",
        config_with(front_end={"port": 70000}),
        "$.front_end.port",
        "expected an integer between 1 and 65535, got 70000",
    ),
    # required fields, names and choices
    ("metadata-missing", {}, "$.metadata", "required, expected an object"),
    (
        "name-missing",
        config_with(metadata={"type": "ScalableJob"}),
        "$.metadata.name",
        "required, expected a non-empty string",
    ),
    ("name-empty", meta_with(name=""), "$.metadata.name", 'expected a non-empty string, got string ""'),
    ("name-space", meta_with(name="my service"), "$.metadata.name", f'{NAME_RULE}, got "my service"'),
    ("name-colon", meta_with(name="a:b"), "$.metadata.name", f'{NAME_RULE}, got "a:b"'),
    ("name-digit-first", meta_with(name="1abc"), "$.metadata.name", f'{NAME_RULE}, got "1abc"'),
    ("name-too-long", meta_with(name="a" * 64), "$.metadata.name", f'{NAME_RULE}, got "{"a" * 64}"'),
    ("name-trailing-newline", meta_with(name="demo\n"), "$.metadata.name", f'{NAME_RULE}, got "demo\\n"'),
    ("type-missing", config_with(metadata={"name": "demo"}), "$.metadata.type", f"required, expected {SERVICE_TYPES}"),
    ("type-other", meta_with(type="Job"), "$.metadata.type", f'expected {SERVICE_TYPES}, got string "Job"'),
    (
        "default-task-type",
        config_with(scalable_job={"default_task_type": "batch"}),
        "$.scalable_job.default_task_type",
        'expected one of "command", "query", got string "batch"',
    ),
    (
        "command-empty",
        container_with(command=""),
        "$.containers[0].command",
        'expected a non-empty string, got string ""',
    ),
    # env
    (
        "env-string",
        container_with(env="A=1"),
        "$.containers[0].env",
        'expected an object of name -> string, or a list of {"name": ..., "value": ...} objects, got string "A=1"',
    ),
    ("env-value-int", container_with(env={"A": 1}), "$.containers[0].env.A", "expected a string, got integer 1"),
    (
        "env-name-empty",
        container_with(env={"": "1"}),
        '$.containers[0].env[""]',
        "expected an environment variable name (non-empty, no '='), got ''",
    ),
    (
        "env-entry-no-value",
        container_with(env=[{"name": "A"}]),
        "$.containers[0].env[0].value",
        "required, expected a string",
    ),
    (
        "env-entry-not-object",
        container_with(env=["A=1"]),
        "$.containers[0].env[0]",
        'expected an object, got string "A=1"',
    ),
    (
        "env-duplicate",
        container_with(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
        "$.containers[0].env[1].name",
        "expected each name once, got 'A' again",
    ),
    (
        "env-name-with-equals",
        container_with(env=[{"name": "A=B", "value": "1"}]),
        "$.containers[0].env[0].name",
        "expected an environment variable name (non-empty, no '='), got 'A=B'",
    ),
    # security: scopes and the front end's limits
    (
        "scope-unknown-task-type",
        config_with(security={"frontends": {"web": {"task_types": ["query", "train"]}}}),
        "$.security.frontends.web.task_types[1]",
        'expected one of command, query, got string "train"',
    ),
    (
        "scope-task-type-twice",
        config_with(security={"frontends": {"web": {"task_types": ["query", "query"]}}}),
        "$.security.frontends.web.task_types[1]",
        "expected each task type once, got 'query' again",
    ),
    (
        "scope-without-task-types",
        config_with(security={"frontends": {"web": {}}}),
        "$.security.frontends.web",
        "expected an object with task_types, a list of command, query; task_types is required",
    ),
    (
        "scope-bad-name",
        config_with(security={"frontends": {"a b": {"task_types": []}}}),
        '$.security.frontends["a b"]',
        "expected a front end name matching ^[A-Za-z][A-Za-z0-9_-]{0,62}$, got 'a b'",
    ),
    (
        "scope-unknown-key",
        config_with(security={"frontends": {"web": {"task_types": [], "tokens": 1}}}),
        "$.security.frontends.web.tokens",
        "unknown key 'tokens' (allowed: task_types)",
    ),
    (
        "scope-other-front-end-of-integrated",
        {
            "metadata": {"name": "svc", "type": "ScalableJobService"},
            "security": {"frontends": {"web": {"task_types": ["query"]}}},
        },
        "$.security.frontends.web",
        "a ScalableJobService has one front end, named like the service (svc), not 'web'",
    ),
    (
        "header-limit-too-small",
        config_with(security={"http": {"max_header_bytes": 100}}),
        "$.security.http.max_header_bytes",
        "expected an integer between 1024 and 65536, got 100",
    ),
    (
        "header-timeout-zero",
        config_with(security={"http": {"header_timeout_seconds": 0}}),
        "$.security.http.header_timeout_seconds",
        "expected a number > 0, got 0",
    ),
    (
        "request-timeout-zero",
        config_with(security={"http": {"request_timeout_seconds": 0}}),
        "$.security.http.request_timeout_seconds",
        "expected a number > 0, got 0",
    ),
    (
        "per-client-cap-zero",
        config_with(security={"http": {"max_connections_per_client": 0}}),
        "$.security.http.max_connections_per_client",
        "expected an integer >= 1, got 0",
    ),
    (
        "unknown-http-limit",
        config_with(security={"http": {"max_conections": 5}}),
        "$.security.http.max_conections",
        "unknown key 'max_conections' (allowed: max_header_bytes, header_timeout_seconds, body_timeout_seconds, "
        "keep_alive_seconds, max_connections, max_watchers_per_token, max_connections_per_client, "
        "request_timeout_seconds, min_request_rate_bytes_per_second)",
    ),
]


@pytest.mark.parametrize(("data", "path", "message"), [pytest.param(*case[1:], id=case[0]) for case in BAD_CONFIGS])
def test_bad_config_names_path_and_expectation(data: object, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.path == path
    assert caught.value.message == message
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("", 1),
        ('{"metadata": }', 1),
        ('{\n  "metadata": {"name": "demo",\n  "type": "ScalableJob",}\n}', 3),
    ],
)
def test_invalid_json_text_is_an_error_at_root_with_its_line(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config_text(text)
    assert caught.value.path == "$"
    assert "expected valid JSON" in caught.value.message
    assert f"line {line} column" in caught.value.message


def test_valid_json_text_parses() -> None:
    assert parse_config_text(json.dumps(config_with())).name == "demo"


def test_source_is_named_in_errors(tmp_path: Path) -> None:
    bad = tmp_path / "service.json"
    bad.write_text(json.dumps(meta_with(gpu=-1)))
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.path == "$.metadata.gpu"
    assert caught.value.message == f"expected an integer >= 0, got -1 (in {bad})"


def test_invalid_json_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text("{")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert caught.value.path == "$"
    assert caught.value.message.endswith(f"(in {bad})")


def test_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as caught:
        load_config(missing)
    assert caught.value.path == "$"
    assert str(missing) in caught.value.message
    assert "cannot read config file" in caught.value.message


def test_directory_is_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)


def test_scopes_default_to_commands_for_the_own_front_end_and_queries_for_others() -> None:
    config = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}})
    assert config.security.task_types("svc", "svc") == ("command", "query")
    assert config.security.task_types("web", "svc") == ("query",)
    configured = parse_config(
        {"metadata": {"name": "svc", "type": "ScalableJob"},
         "security": {"frontends": {"svc": {"task_types": ["query"]}, "web": {"task_types": ["command", "query"]}}}}
    )  # fmt: skip
    assert configured.security.task_types("svc", "svc") == ("query",)
    assert configured.security.task_types("web", "svc") == ("command", "query")


def test_http_limits_have_defaults_and_take_the_configs_values() -> None:
    config = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}})
    assert config.security.http == HttpLimits()
    limits = {"max_header_bytes": 4096, "header_timeout_seconds": 2.5, "body_timeout_seconds": 7,
              "keep_alive_seconds": 3, "max_connections": 10, "max_watchers_per_token": 2,
              "max_connections_per_client": 4, "request_timeout_seconds": 12.5,
              "min_request_rate_bytes_per_second": 0}  # fmt: skip
    config = parse_config({"metadata": {"name": "svc", "type": "ScalableJob"}, "security": {"http": limits}})
    assert config.security.http == HttpLimits(4096, 2.5, 7, 3, 10, 2, 4, 12.5, 0)


def test_the_per_client_connection_cap_never_exceeds_the_cap_for_all() -> None:
    assert HttpLimits(max_connections=10, max_connections_per_client=50).connections_per_client == 10
    assert HttpLimits(max_connections=10, max_connections_per_client=4).connections_per_client == 4
