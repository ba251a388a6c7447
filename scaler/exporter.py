"""Prometheus metrics of the scaler: queue depth, replicas, desired, decisions, worker states, crashes, requeues.

A registry of its own (not the process-global one), so several scalers in one test process do not collide.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from scalablejob.scaler.policy import Decision
from scalablejob.store.presence import WorkerState


class Exporter:
    """The scaler's metrics, labelled by service."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        self.queue_depth = self._gauge("scalablejob_queue_depth", "Messages waiting", "queue")
        self.running = self._gauge("scalablejob_tasks_running", "Tasks held by workers")
        self.replicas = self._gauge("scalablejob_replicas", "Workers not stopping")
        self.desired = self._gauge("scalablejob_desired_replicas", "Replicas the policy wants")
        self.workers = self._gauge("scalablejob_workers", "Workers by state", "state")
        self.decisions = self._counter("scalablejob_scale_decisions", "Scaling decisions by outcome", "change")
        self.exits = self._counter("scalablejob_worker_exits", "Worker processes that ended", "kind")
        self.requeued = self._counter("scalablejob_tasks_requeued", "Tasks put back after their worker died")

    def _gauge(self, name: str, documentation: str, *labels: str) -> Gauge:
        return Gauge(name, documentation, ["service", *labels], registry=self.registry)

    def _counter(self, name: str, documentation: str, *labels: str) -> Counter:
        return Counter(name, documentation, ["service", *labels], registry=self.registry)

    def record(self, decision: Decision, queued: Mapping[str, int], states: Iterable[WorkerState]) -> None:
        """Everything one pass observed and decided."""
        for queue, depth in queued.items():
            self.queue_depth.labels(self.service, queue).set(depth)
        self.running.labels(self.service).set(decision.snapshot.running)
        self.replicas.labels(self.service).set(decision.snapshot.replicas)
        self.desired.labels(self.service).set(decision.desired)
        self.decisions.labels(self.service, decision.change).inc()
        counts = dict.fromkeys(WorkerState, 0)
        for state in states:
            counts[state] += 1
        for state, count in counts.items():
            self.workers.labels(self.service, state.value).set(count)

    def worker_exited(self, *, crashed: bool, requeued: int) -> None:
        self.exits.labels(self.service, "crashed" if crashed else "stopped").inc()
        if requeued:
            self.requeued.labels(self.service).inc(requeued)

    def serve(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve /metrics on a port (0: a free one); returns the port."""
        server, _thread = start_http_server(port, addr, registry=self.registry)
        return int(server.server_port)
