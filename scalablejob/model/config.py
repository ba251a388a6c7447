"""Service config: the cloud service's JSON, validated once into frozen dataclasses that components take as arguments.

Pure except `load_config`, which reads a file. Every default is a named constant in the block below; every
problem raises ConfigError with the JSON path of the field, what was expected and what was found.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from scalablejob.model.errors import ConfigError
from scalablejob.model.json_reader import JsonObject, found
from scalablejob.model.routing import ALLOWED_TASK_TYPES, TaskType, parse_task_type

# Defaults: the one place they are written down. Optional fields not listed here default to None (unset).
DEFAULT_INSTANCE = 1
DEFAULT_WORKER_THREADS = 4
DEFAULT_GPU = 0
DEFAULT_SHELL = False
DEFAULT_WRITE_LOG_TO_QUEUE: Mapping[str, bool] = MappingProxyType({"command": True, "query": False})
DEFAULT_LOG_CAP_BYTES = 8 * 1024 * 1024  # per job: a chatty job cannot fill Redis
DEFAULT_CANCEL_GRACE_S = 10.0  # SIGTERM to SIGKILL when a running command is cancelled or times out
DEFAULT_TASK_TIMEOUT_S: float | None = None  # no limit
DEFAULT_MIN_REPLICAS = 1
DEFAULT_MAX_REPLICAS = 10
DEFAULT_AVG_WAITING_LENGTH = 2.0
DEFAULT_SCALE_UP_WINDOW_S = 0.0
DEFAULT_SCALE_DOWN_WINDOW_S = 1.0
DEFAULT_SCALE_TO_ZERO_GRACE_S = 60.0
DEFAULT_FRONTEND_HOST = "127.0.0.1"  # the queue service's HTTP front end: loopback unless asked otherwise
DEFAULT_FRONTEND_PORT = 8080  # the port the cloud's queue service gateway answers on
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024  # a request body over this is refused with 413
DEFAULT_INPUT_MAX_LENGTH = 100_000  # requests queued or running per front end; a put beyond is refused with 429
DEFAULT_SINK_MAX_LENGTH = 100_000  # output queue entries per front end; the oldest are evicted beyond it
DEFAULT_SINK_MAX_AGE_S = 7 * 24 * 3600  # output queue entries, and finished request states, are kept a week
# Which task types a front end's token may submit (security.frontends): the service's own front end (named like the
# service) is the operator's, whose holder can run commands through the CLI anyway; any other front end bound to a
# standalone service is a client's, limited to queries unless the config says otherwise.
DEFAULT_OWN_FRONTEND_TASK_TYPES: tuple[str, ...] = ("command", "query")
DEFAULT_OTHER_FRONTEND_TASK_TYPES: tuple[str, ...] = ("query",)
# The HTTP front end's connection limits (security.http)
DEFAULT_MAX_HEADER_BYTES = 8 * 1024  # request line and headers; over it: 431 (nginx's and websockets' line limit)
MAX_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0  # from a request's first byte (or the connection's start) to its last header
DEFAULT_BODY_TIMEOUT_S = 30.0  # the longest wait for the next piece of a request body
DEFAULT_REQUEST_TIMEOUT_S = 30.0  # from a request's first byte (or the connection's start) to its body's last byte
DEFAULT_MIN_REQUEST_RATE = 64 * 1024  # bytes a second: each this many received give a request one more second
DEFAULT_KEEP_ALIVE_S = 5  # an idle connection between two requests is closed after this
DEFAULT_MAX_CONNECTIONS = 1000  # open connections (HTTP and websocket) at once: the last resort, for all clients
DEFAULT_MAX_CONNECTIONS_PER_CLIENT = 100  # HTTP connections of one client address; idle ones are reclaimed first
DEFAULT_MAX_WATCHERS_PER_TOKEN = 64  # websocket watchers of one front end (one token) at once; beyond: 429

TYPE_STANDALONE = "ScalableJob"
TYPE_INTEGRATED = "ScalableJobService"
SERVICE_TYPES: tuple[str, ...] = (TYPE_STANDALONE, TYPE_INTEGRATED)
NAME_PATTERN = "^[A-Za-z][A-Za-z0-9_-]{0,62}$"

_NAME_RE = re.compile(NAME_PATTERN[1:-1])  # used with fullmatch: "$" would let a trailing newline through
_DEFAULT_SOURCE = "<config>"
_MAX_PORT = 65535
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RUN_AS_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")
_ENV_EXPECTED = 'an object of name -> string, or a list of {"name": ..., "value": ...} objects'


@dataclass(frozen=True)
class ContainerConfig:
    """One container entry; locally only the first one's command and port matter (the query model server)."""

    image: str | None = None
    command: str | None = None
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # A read-only copy, so that a frozen config cannot be changed through the mapping it was given.
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))


@dataclass(frozen=True)
class Metadata:
    """Who the service is and what each worker gets; the name ends up in Redis keys and Celery queue names."""

    name: str
    type: str
    instance: int = DEFAULT_INSTANCE
    worker_threads: int = DEFAULT_WORKER_THREADS
    cpu: float | None = None
    gpu: int = DEFAULT_GPU
    memory: int | None = None


@dataclass(frozen=True)
class FrontEndConfig:
    """The user's own front-end program (integrated mode), which `scalablejob up` starts and keeps alive."""

    port: int | None = None
    script: str | None = None
    cpu: float | None = None
    memory: int | None = None
    token: str | None = None


@dataclass(frozen=True)
class ScalableJobConfig:
    """How workers run tasks: log streaming, the per-worker init command, the taskType used when none is sent."""

    enable_write_log_to_queue: bool | None = None
    init_command: str | None = None
    default_task_type: str | None = None
    shell: bool = DEFAULT_SHELL
    working_dir: str | None = None
    request_env: tuple[str, ...] = ()
    log_cap_bytes: int = DEFAULT_LOG_CAP_BYTES
    task_timeout_s: float | None = DEFAULT_TASK_TIMEOUT_S
    cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S
    run_as: str | None = None  # "user" or "user:group": jobs run as them (the worker must be root); None: as the worker

    def write_log_to_queue(self, task_type: str | TaskType) -> bool:
        """Whether a task's output lines go to the sink: the explicit setting, else the task type's default."""
        kind = parse_task_type(task_type)
        if self.enable_write_log_to_queue is not None:
            return self.enable_write_log_to_queue
        return DEFAULT_WRITE_LOG_TO_QUEUE[kind.value]


@dataclass(frozen=True)
class AutoscalerConfig:
    """The bounds and timing the scaler's pure policy decides with."""

    min: int = DEFAULT_MIN_REPLICAS
    max: int = DEFAULT_MAX_REPLICAS
    avg_waiting_length: float = DEFAULT_AVG_WAITING_LENGTH
    scale_up_window_s: float = DEFAULT_SCALE_UP_WINDOW_S
    scale_down_window_s: float = DEFAULT_SCALE_DOWN_WINDOW_S
    scale_to_zero_grace_s: float = DEFAULT_SCALE_TO_ZERO_GRACE_S


@dataclass(frozen=True)
class QueueConfig:
    """The limits of each front end's two queues, as the cloud's queue service has them: the largest payload,
    how many requests may wait (or run) in the input queue, and how many entries the output queue keeps and for
    how long (a finished request's state is kept as long, so a result and its request are forgotten together)."""

    max_payload_bytes: int = DEFAULT_MAX_BODY_BYTES
    input_max_length: int = DEFAULT_INPUT_MAX_LENGTH
    sink_max_length: int = DEFAULT_SINK_MAX_LENGTH
    sink_max_age_s: int = DEFAULT_SINK_MAX_AGE_S


@dataclass(frozen=True)
class HttpLimits:
    """What one client connection may hold of the front end: header size and time, body pace, a whole request's
    time, idle time, and how many connections (of one client address, and of all) and watchers there may be at
    once."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    keep_alive_s: int = DEFAULT_KEEP_ALIVE_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_watchers_per_token: int = DEFAULT_MAX_WATCHERS_PER_TOKEN
    max_connections_per_client: int = DEFAULT_MAX_CONNECTIONS_PER_CLIENT
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    min_request_rate: int = DEFAULT_MIN_REQUEST_RATE  # bytes a second; 0: the request timeout is not extended

    @property
    def connections_per_client(self) -> int:
        """The per-client cap in force: never above the cap for all clients."""
        return min(self.max_connections_per_client, self.max_connections)


@dataclass(frozen=True)
class SecurityConfig:
    """Scopes (which task types each front end's token may submit) and the front end's connection limits."""

    frontends: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)
    http: HttpLimits = field(default_factory=HttpLimits)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frontends", MappingProxyType(dict(self.frontends)))

    def task_types(self, frontend: str, service: str) -> tuple[str, ...]:
        """The task types front end `frontend` may submit: the configured ones, else the default of its kind."""
        if frontend in self.frontends:
            return self.frontends[frontend]
        return DEFAULT_OWN_FRONTEND_TASK_TYPES if frontend == service else DEFAULT_OTHER_FRONTEND_TASK_TYPES


@dataclass(frozen=True)
class ServiceConfig:
    """The whole service config, parsed once; components take the pieces they need."""

    containers: tuple[ContainerConfig, ...]
    metadata: Metadata
    front_end: FrontEndConfig | None = None
    scalable_job: ScalableJobConfig = field(default_factory=ScalableJobConfig)
    autoscaler: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    @property
    def name(self) -> str:
        """The service name, which prefixes its Redis keys and Celery queues."""
        return self.metadata.name

    @property
    def model_server(self) -> ContainerConfig | None:
        """The first container when it names a local HTTP model server (command and port), else None."""
        first = self.containers[0] if self.containers else None
        if first is None or not first.command or first.port is None:
            return None
        return first

    @property
    def is_integrated(self) -> bool:
        """True for ScalableJobService (job service plus one bound front end), False for standalone."""
        return self.metadata.type == TYPE_INTEGRATED


# ---- Public entry points -------------------------------------------------------------------------------------


def parse_config(data: object, *, source: str = _DEFAULT_SOURCE) -> ServiceConfig:
    """Validate already-decoded service JSON; a `source` (file name) is added to error messages."""
    try:
        return _parse_service(JsonObject(data, "$"))
    except ConfigError as exc:
        if source == _DEFAULT_SOURCE:
            raise
        raise ConfigError(exc.path, f"{exc.message} (in {source})") from None


def parse_config_text(text: str, source: str = _DEFAULT_SOURCE) -> ServiceConfig:
    """Decode and validate service JSON text; invalid JSON is a ConfigError at ``$`` with its line and column."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = "" if source == _DEFAULT_SOURCE else f" (in {source})"
        message = f"expected valid JSON, found an error at line {exc.lineno} column {exc.colno}: {exc.msg}{where}"
        raise ConfigError("$", message) from None
    return parse_config(data, source=source)


def load_config(path: str | os.PathLike[str]) -> ServiceConfig:
    """Read and validate a service JSON file; a missing or unreadable file is a ConfigError naming it."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ConfigError("$", f"cannot read config file {name!r}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("$", f"expected UTF-8 text in config file {name!r}, got {exc.reason}") from exc
    return parse_config_text(text, source=name)


# ---- Section parsers -----------------------------------------------------------------------------------------


def _parse_service(root: JsonObject) -> ServiceConfig:
    containers = tuple(_parse_container(JsonObject(item, path)) for path, item in root.items("containers"))
    metadata = _parse_metadata(root.required_section("metadata"))
    front_end_obj = root.optional_section("front_end")
    config = ServiceConfig(
        containers=containers,
        metadata=metadata,
        front_end=None if front_end_obj is None else _parse_front_end(front_end_obj),
        scalable_job=_parse_scalable_job(root.section("scalable_job")),
        autoscaler=_parse_autoscaler(root.section("autoscaler")),
        queue=_parse_queue(root.section("queue")),
        security=_parse_security(root.section("security"), metadata),
    )
    root.done()
    return config


def _parse_container(obj: JsonObject) -> ContainerConfig:
    container = ContainerConfig(
        image=obj.string("image", None),
        command=obj.string("command", None),
        port=obj.integer("port", None, ge=1, le=_MAX_PORT),
        env=_parse_env(obj.raw("env", {}), obj.at("env")),
    )
    obj.done()
    return container


def _parse_env(raw: object, path: str) -> dict[str, str]:
    """Both env forms: {"NAME": "value"} and the cloud's [{"name": "NAME", "value": "value"}]."""
    if isinstance(raw, dict):
        env_obj = JsonObject(raw, path)
        pairs = [(name, env_obj.at(name), env_obj.string(name, "", nonempty=False)) for name in raw]
    elif isinstance(raw, list):
        pairs = [_parse_env_entry(item, f"{path}[{i}]") for i, item in enumerate(raw)]
    else:
        raise ConfigError(path, f"expected {_ENV_EXPECTED}, got {found(raw)}")
    env: dict[str, str] = {}
    for name, where, value in pairs:
        if not name or "=" in name:
            raise ConfigError(where, f"expected an environment variable name (non-empty, no '='), got {name!r}")
        if name in env:
            raise ConfigError(where, f"expected each name once, got {name!r} again")
        env[name] = value
    return env


def _parse_env_entry(item: object, path: str) -> tuple[str, str, str]:
    entry = JsonObject(item, path)
    name = entry.required_string("name", nonempty=False)  # checked with the other form's names below
    value = entry.required_string("value", nonempty=False)
    entry.done()
    return name, entry.at("name"), value


def _parse_metadata(meta: JsonObject) -> Metadata:
    name = meta.required_string("name")
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            meta.at("name"),
            f"expected a name matching {NAME_PATTERN} (it is used in Redis keys and Celery queue names), "
            f"got {json.dumps(name)}",
        )
    metadata = Metadata(
        name=name,
        type=meta.required_string("type", choices=SERVICE_TYPES),
        instance=meta.integer("instance", DEFAULT_INSTANCE, ge=0),
        worker_threads=meta.integer("rpc.worker_threads", DEFAULT_WORKER_THREADS, ge=1),
        cpu=meta.number("cpu", None, gt=0),
        gpu=meta.integer("gpu", DEFAULT_GPU, ge=0),
        memory=meta.integer("memory", None, ge=1),
    )
    meta.done()
    return metadata


def _parse_front_end(obj: JsonObject) -> FrontEndConfig:
    front_end = FrontEndConfig(
        port=obj.integer("port", None, ge=1, le=_MAX_PORT),
        script=obj.string("script", None),
        cpu=obj.number("cpu", None, gt=0),
        memory=obj.integer("memory", None, ge=1),
        token=obj.string("token", None),
    )
    obj.done()
    return front_end


def _parse_scalable_job(obj: JsonObject) -> ScalableJobConfig:
    scalable_job = ScalableJobConfig(
        enable_write_log_to_queue=obj.boolean("enable_write_log_to_queue", None),
        init_command=obj.string("init_command", None),
        default_task_type=obj.string("default_task_type", None, choices=ALLOWED_TASK_TYPES),
        shell=obj.boolean("shell", DEFAULT_SHELL),
        working_dir=obj.string("working_dir", None),
        request_env=_env_names(obj.items("request_env")),
        log_cap_bytes=obj.integer("log_cap_bytes", DEFAULT_LOG_CAP_BYTES, ge=1024),
        task_timeout_s=obj.number("task_timeout_seconds", DEFAULT_TASK_TIMEOUT_S, gt=0),
        cancel_grace_s=obj.number("cancel_grace_seconds", DEFAULT_CANCEL_GRACE_S, ge=0),
        run_as=_run_as(obj),
    )
    obj.done()
    return scalable_job


def _run_as(obj: JsonObject) -> str | None:
    """`run_as`: "user" or "user:group" (names or numbers); whether they exist is checked where the worker runs."""
    value = obj.string("run_as", None)
    if value is not None and not _RUN_AS_RE.fullmatch(value):
        raise ConfigError(obj.at("run_as"), f'expected "user" or "user:group" (names or numbers), got {found(value)}')
    return value


def _env_names(items: list[tuple[str, object]]) -> tuple[str, ...]:
    """Environment variable names a request may set through `env.NAME` tags."""
    for path, name in items:
        if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name):
            raise ConfigError(path, f"expected an environment variable name like LEARNING_RATE, got {found(name)}")
    return tuple(str(name) for _, name in items)


def _parse_queue(obj: JsonObject) -> QueueConfig:
    source, sink = obj.section("source"), obj.section("sink")
    queue = QueueConfig(
        max_payload_bytes=obj.integer("max_payload_bytes", DEFAULT_MAX_BODY_BYTES, ge=1),
        input_max_length=source.integer("max_length", DEFAULT_INPUT_MAX_LENGTH, ge=1),
        sink_max_length=sink.integer("max_length", DEFAULT_SINK_MAX_LENGTH, ge=1),
        sink_max_age_s=sink.integer("max_age_seconds", DEFAULT_SINK_MAX_AGE_S, ge=1),
    )
    for section in (source, sink, obj):
        section.done()
    return queue


def _parse_autoscaler(obj: JsonObject) -> AutoscalerConfig:
    min_replicas = obj.integer("min", DEFAULT_MIN_REPLICAS, ge=0)
    max_replicas = obj.integer("max", DEFAULT_MAX_REPLICAS, ge=1)
    strategies = obj.section("strategies")
    avg_waiting_length = strategies.number("avg_waiting_length", DEFAULT_AVG_WAITING_LENGTH, gt=0)
    strategies.done()
    behavior = obj.section("behavior")
    scale_up = _window(behavior, "scaleUp", "stabilizationWindowSeconds", DEFAULT_SCALE_UP_WINDOW_S)
    scale_down = _window(behavior, "scaleDown", "stabilizationWindowSeconds", DEFAULT_SCALE_DOWN_WINDOW_S)
    to_zero = _window(behavior, "onZero", "scaleDownGracePeriodSeconds", DEFAULT_SCALE_TO_ZERO_GRACE_S)
    behavior.done()
    obj.done()
    if min_replicas > max_replicas:
        raise ConfigError(obj.at("min"), f"min must be <= max, got min {min_replicas} and max {max_replicas}")
    return AutoscalerConfig(min_replicas, max_replicas, avg_waiting_length, scale_up, scale_down, to_zero)


def _window(behavior: JsonObject, section: str, key: str, default: float) -> float:
    obj = behavior.section(section)
    seconds = obj.number(key, default, ge=0)
    obj.done()
    return seconds


def _parse_security(obj: JsonObject, metadata: Metadata) -> SecurityConfig:
    raw = obj.raw("frontends", {})
    frontends_obj = JsonObject(raw, obj.at("frontends"))  # checks that it is an object
    names = list(raw) if isinstance(raw, dict) else []
    frontends = {name: _frontend_scope(frontends_obj, name, metadata) for name in names}
    frontends_obj.done()
    http = obj.section("http")
    limits = HttpLimits(
        max_header_bytes=http.integer("max_header_bytes", DEFAULT_MAX_HEADER_BYTES, ge=1024, le=MAX_MAX_HEADER_BYTES),
        header_timeout_s=http.number("header_timeout_seconds", DEFAULT_HEADER_TIMEOUT_S, gt=0),
        body_timeout_s=http.number("body_timeout_seconds", DEFAULT_BODY_TIMEOUT_S, gt=0),
        keep_alive_s=http.integer("keep_alive_seconds", DEFAULT_KEEP_ALIVE_S, ge=1),
        max_connections=http.integer("max_connections", DEFAULT_MAX_CONNECTIONS, ge=1),
        max_watchers_per_token=http.integer("max_watchers_per_token", DEFAULT_MAX_WATCHERS_PER_TOKEN, ge=1),
        max_connections_per_client=http.integer("max_connections_per_client", DEFAULT_MAX_CONNECTIONS_PER_CLIENT, ge=1),
        request_timeout_s=http.number("request_timeout_seconds", DEFAULT_REQUEST_TIMEOUT_S, gt=0),
        min_request_rate=http.integer("min_request_rate_bytes_per_second", DEFAULT_MIN_REQUEST_RATE, ge=0),
    )
    http.done()
    obj.done()
    return SecurityConfig(frontends, limits)


def _frontend_scope(frontends: JsonObject, name: str, metadata: Metadata) -> tuple[str, ...]:
    """One front end's `task_types`: a list of task types, each once (empty: it may submit nothing)."""
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(frontends.at(name), f"expected a front end name matching {NAME_PATTERN}, got {name!r}")
    if metadata.type == TYPE_INTEGRATED and name != metadata.name:
        raise ConfigError(
            frontends.at(name),
            f"a ScalableJobService has one front end, named like the service ({metadata.name}), not {name!r}",
        )
    scope = frontends.section(name)
    listed = scope.raw("task_types", None)
    if listed is None:
        expected = f"expected an object with task_types, a list of {', '.join(ALLOWED_TASK_TYPES)}"
        raise ConfigError(frontends.at(name), f"{expected}; task_types is required")
    if not isinstance(listed, list):
        raise ConfigError(scope.at("task_types"), f"expected a list, got {found(listed)}")
    task_types: list[str] = []
    for number, value in enumerate(listed):
        path = f"{scope.at('task_types')}[{number}]"
        if value not in ALLOWED_TASK_TYPES:
            raise ConfigError(path, f"expected one of {', '.join(ALLOWED_TASK_TYPES)}, got {found(value)}")
        if value in task_types:
            raise ConfigError(path, f"expected each task type once, got {value!r} again")
        task_types.append(str(value))
    scope.done()
    return tuple(task_types)
