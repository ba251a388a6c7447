"""Names of every Redis key a service uses, in one place, so components agree without sharing code paths."""

from __future__ import annotations

KEY_PREFIX = "scalablejob"


def sink_stream(service: str) -> str:
    """The output queue: a Redis Stream of results, logs and progress."""
    return f"{service}/sink"


def sink_index_counter(service: str) -> str:
    """The counter that gives sink entries their monotonically increasing index."""
    return f"{KEY_PREFIX}:{service}:sink:index"


def input_index_counter(service: str) -> str:
    """The counter that gives input requests their monotonically increasing index."""
    return f"{KEY_PREFIX}:{service}:input:index"


def input_index_prefix(service: str) -> str:
    """The prefix of the keys from input index to request id: state_create.lua, which draws the index, appends it."""
    return f"{KEY_PREFIX}:{service}:input:by-index:"


def input_index_entry(service: str, index: int) -> str:
    """String key holding the id of the request with this input index, so a request can be found by its index.
    One key per index rather than one hash, so each expires with its request's state."""
    return f"{input_index_prefix(service)}{index}"


def task_sent_channel(service: str) -> str:
    """Pub/sub channel a put publishes its queue's name on, in the script that queues it: the scaler wakes at once."""
    return f"{KEY_PREFIX}:{service}:sent"


def request_state(service: str, request_id: str) -> str:
    """Hash holding one request's state (queued, running, done, ...) and timestamps."""
    return f"{KEY_PREFIX}:{service}:request:{request_id}"


def request_state_pattern(request_id: str, *, prefix: bool = False) -> str:
    """A SCAN pattern that finds a request's state key in any service; with `prefix`, of every request whose id
    starts with `request_id` (the short ids that `watch` shows)."""
    escaped = "".join(f"\\{char}" if char in "*?[]\\" else char for char in request_id)
    return f"{KEY_PREFIX}:*:request:{escaped}{'*' if prefix else ''}"


def request_of_state(key: str) -> tuple[str, str]:
    """The service and request id named in a request state key (the inverse of `request_state`)."""
    _, service, rest = key.split(":", 2)
    return service, rest.removeprefix("request:")


def service_of_request_state(key: str) -> str:
    """The service named in a request state key (the inverse of `request_state`)."""
    return key.split(":", 2)[1] if key.startswith(f"{KEY_PREFIX}:") else ""


def init_failures(service: str) -> str:
    """Hash from worker name to its failed init command (exit code, output tail), for status and the scaler."""
    return f"{KEY_PREFIX}:{service}:init-failures"


def worker_presence(service: str) -> str:
    """Hash from worker node name to the state that worker publishes (pid, GPUs, held tasks, heartbeat)."""
    return f"{KEY_PREFIX}:{service}:workers"


def scaler_processes(service: str) -> str:
    """Hash from worker node name to the process a scaler spawned (pid, start time, host), so a restart adopts it."""
    return f"{KEY_PREFIX}:{service}:scaler:processes"


def scaler_lease(service: str, host: str) -> str:
    """Held by the one scaler of a service on a host, so two scalers never fight over the same workers."""
    return f"{KEY_PREFIX}:{service}:scaler:lease:{host}"


def scaler_decisions(service: str) -> str:
    """Capped list of the scaler's recent decisions that changed something, newest first, for `status`."""
    return f"{KEY_PREFIX}:{service}:scaler:decisions"


def scaler_status(service: str, host: str) -> str:
    """Hash with the scaler's last decision (desired, replicas, reason, inputs), for status commands and tests."""
    return f"{KEY_PREFIX}:{service}:scaler:status:{host}"


def scaler_hosts(service: str) -> str:
    """Hash of the hosts whose scalers serve a service: host -> JSON member id, capacity, workers, heartbeat."""
    return f"{KEY_PREFIX}:{service}:hosts"


def scaler_leader(service: str) -> str:
    """The leader lease of a service's scalers (value: the leader's member id); the leader makes the one decision."""
    return f"{KEY_PREFIX}:{service}:leader"


def scaler_leader_epoch(service: str) -> str:
    """Counter bumped at each new leadership: the fencing token a plan carries."""
    return f"{KEY_PREFIX}:{service}:leader-epoch"


def scaler_plan(service: str) -> str:
    """Hash of the leader's last decision: desired count, each host's share, epoch, time, reason."""
    return f"{KEY_PREFIX}:{service}:plan"


def frontend_sink_stream(service: str, frontend: str) -> str:
    """A front end's output queue; the service's own front end (named like it) keeps the plain `<service>/sink`."""
    return sink_stream(service) if frontend == service else f"{service}/{frontend}/sink"


def frontend_sink_index_counter(service: str, frontend: str) -> str:
    """The index counter of a front end's output queue."""
    return sink_index_counter(service) if frontend == service else f"{KEY_PREFIX}:{service}:fe:{frontend}:sink:index"


def frontend_sink_clock(service: str, frontend: str) -> str:
    """Sorted set of a front end's output queue checkpoints (index scored by the time it was appended), which
    maps an age to an index for trimming the queue to its maximum age (scalablejob.store.sink)."""
    return f"{_frontend_sink_prefix(service, frontend)}:clock"


def frontend_sink_evicted(service: str, frontend: str) -> str:
    """How far eviction has looked in a front end's output queue: the stream id of the newest entry it has
    examined. Past the maximum length the oldest entries after it that are not final go (scalablejob.store.sink)."""
    return f"{_frontend_sink_prefix(service, frontend)}:evicted"


def _frontend_sink_prefix(service: str, frontend: str) -> str:
    """The prefix of the keys that keep a front end's output queue to its limits."""
    return f"{KEY_PREFIX}:{service}:sink" if frontend == service else f"{KEY_PREFIX}:{service}:fe:{frontend}:sink"


def input_stream(service: str, frontend: str) -> str:
    """A front end's input queue as the protocol reads it: its requests not yet finished, by index."""
    return f"{KEY_PREFIX}:{service}:fe:{frontend}:input"


def input_streams(service: str) -> str:
    """Set of the service's input streams, one per front end a request was put through: the reconciler reads every
    request not yet finished from them."""
    return f"{KEY_PREFIX}:{service}:inputs"


def frontend_registry(service: str) -> str:
    """Hash of the front ends bound to a service: name -> token, so a restarted front end keeps its token."""
    return f"{KEY_PREFIX}:{service}:frontends"


def queue_limits(service: str) -> str:
    """Hash of the service's queue limits (scalablejob.store.limits), read by the scripts that write the queues."""
    return f"{KEY_PREFIX}:{service}:queue-limits"


def task_registry(service: str) -> str:
    """Hash of the service's named tasks (@job.task): name -> JSON type and default, written by workers at start and
    read by every put, so an unknown task name is refused before anything is enqueued."""
    return f"{KEY_PREFIX}:{service}:tasks"


def history(service: str) -> str:
    """Stream of the leading scaler's samples, one per second at most, capped at 30 minutes (scalablejob.model.history):
    what the dashboard charts. Its ids are the Redis server's clock."""
    return f"{KEY_PREFIX}:{service}:history"


def activity_counts(service: str) -> str:
    """Hash of counters of tasks started, finished and failed since the service began: bumped by the workers' flushes
    (workers/activity.py) and by the request state scripts of the other parts."""
    return f"{KEY_PREFIX}:{service}:activity:counts"


def activity_timings(service: str) -> str:
    """Capped list of the waits and run times of starts and finishes not yet sampled (the workers' flushes and the
    state scripts push, the leading scaler drains it once per sample)."""
    return f"{KEY_PREFIX}:{service}:activity:timings"


def recent_failures(service: str) -> str:
    """Capped list of the ids of the service's newest failed requests, newest first (state_finish.lua pushes)."""
    return f"{KEY_PREFIX}:{service}:activity:failures"


def frontend_instances(service: str) -> str:
    """Set of the ids of the front-end processes that hold (or held) watchers, so that a live one can sweep a dead
    one's records once its lease is gone."""
    return f"{KEY_PREFIX}:{service}:frontend:instances"


def frontend_lease_prefix(service: str) -> str:
    """The prefix of a front-end process's lease (a string with an expiry, renewed by its heartbeat); its id follows."""
    return f"{KEY_PREFIX}:{service}:frontend:lease:"


def frontend_lease(service: str, instance: str) -> str:
    """A front-end process's lease: while it exists, the watchers it holds are connected."""
    return f"{frontend_lease_prefix(service)}{instance}"


def frontend_watchers(service: str) -> str:
    """Hash from a watcher (queue, group and consumer) to the front-end process it is connected to, so that one
    watcher per queue, group and consumer holds across processes and hosts."""
    return f"{KEY_PREFIX}:{service}:frontend:watchers"


def frontend_instance_watchers_prefix(service: str) -> str:
    """The prefix of the set of the watchers one front-end process holds; its id follows."""
    return f"{KEY_PREFIX}:{service}:frontend:holds:"


def frontend_instance_watchers(service: str, instance: str) -> str:
    """Set of the watchers one front-end process holds: what a sweep removes once its lease is gone."""
    return f"{frontend_instance_watchers_prefix(service)}{instance}"


def frontend_watching(service: str) -> str:
    """Hash from `<process id>\\n<front end name>` to the watchers that process holds for that front end (token):
    their sum over live processes is what security.http.max_watchers_per_token caps."""
    return f"{KEY_PREFIX}:{service}:frontend:watching"
