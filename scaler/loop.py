"""The scaler loop: observe -> decide -> act, one pass per `tick(now)`; `run()` only keeps time.

Each pass reads queue depths and worker presence, reaps workers that ended (putting back the tasks a dead one
held), decides the replicas with the pure policy, and spawns or warm-stops workers to match. Every decision that
changes something is logged with its inputs at INFO (every pass at DEBUG) and published to Redis and Prometheus.
The loop's clock (`now`) is this host's monotonic clock; wall time (`Parts.wall`) only goes into displayed values.
Liveness is what this scaler sees change (scalablejob.model.freshness): no clock is compared with another host's.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import secrets
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import redis

from scalablejob.host.gpus import Gpu, assign_gpus
from scalablejob.model.errors import KubernetesError
from scalablejob.model.freshness import ChangeTracker
from scalablejob.model.history import HostWorkers, ScaleEvent
from scalablejob.scaler.backoff import Backoff
from scalablejob.scaler.exporter import Exporter
from scalablejob.scaler.history import HistoryWriter
from scalablejob.scaler.hosts import HostLoad, describe, split, total_capacity, totals
from scalablejob.scaler.liveness import holders, silent_holders, strays
from scalablejob.scaler.membership import HOST_STALE_AFTER_S, Membership, SharePlan
from scalablejob.scaler.metrics import MetricsSource, Observation
from scalablejob.scaler.plan import WorkerView, plan
from scalablejob.scaler.policy import Decision, History, Policy, Snapshot, decide
from scalablejob.scaler.pool import Launcher, WorkerSpec
from scalablejob.scaler.reconcile import STALE_AFTER_S
from scalablejob.scaler.records import ProcessRecord, ScalerStore
from scalablejob.scaler.recovery import Recoverer
from scalablejob.scaler.wakeup import DEFAULT_INTERVAL_S, Wakeup
from scalablejob.store.presence import STALE_AFTER_S as PRESENCE_STALE_AFTER_S
from scalablejob.store.presence import WorkerState
from scalablejob.transport.errors import BrokerOperationalError as OperationalError

logger = logging.getLogger(__name__)

MIN_PASS_GAP_S = 0.02
RECONCILE_EVERY_S = 3.0  # how often the delivery invariant is checked (scaler.reconcile)
LEFTOVER_BOOKKEEPING_S = 10.0  # stopping, no worker left: how long a broker refusing their bookkeeping is waited for
_TRANSIENT = (redis.RedisError, OperationalError)  # the broker is away: skip this pass, try again next one


@dataclass(frozen=True)
class Fleet:
    """What the workers look like: service, host, the GPUs to hand out and how many each worker gets."""

    service: str
    host: str
    gpus: tuple[Gpu, ...] = ()
    gpu_per_worker: int = 0
    initial: int = 0  # workers to start with (metadata.instance, within the policy's bounds)
    stale_after_s: float = STALE_AFTER_S
    host_stale_after_s: float = HOST_STALE_AFTER_S  # another host's worker not seen changing this long holds nothing
    shared: bool = False  # the workers are shared by the service's scalers (pods): only the leader acts on them
    worker_names: Callable[[str], str] | None = None  # a new worker's name from a random token (default below)


@dataclass(frozen=True)
class Parts:
    """The loop's connections to the world: observe, act on processes, recover tasks, remember, export."""

    metrics: MetricsSource
    launcher: Launcher
    recovery: Recoverer
    store: ScalerStore
    exporter: Exporter | None = None
    membership: Membership | None = None  # None: this host alone decides for the service
    wall: Callable[[], float] = time.time  # this host's wall time, for displayed values only (never compared)
    history: HistoryWriter | None = None  # the dashboard's samples, written while this scaler leads


@dataclass
class Managed:
    """One of this scaler's workers: its process record and what the loop knows of it."""

    record: ProcessRecord
    stopping: bool = False  # a warm stop was asked (by us, or seen in its presence)
    ready: bool = False  # it reported idle or busy at least once
    killed: bool = False  # killed for a stale heartbeat: reaped (and its tasks put back) once it is dead


@dataclass(frozen=True)
class _Ended:
    """A worker that ended and whose tasks may still have to be put back."""

    managed: Managed
    exit_code: int | None


@dataclass
class _Memory:
    """What the loop carries from one pass to the next, besides its workers."""

    history: History = field(default_factory=History)
    backoff: Backoff = field(default_factory=Backoff)
    next_reconcile: float = -math.inf
    silent_holders: frozenset[str] = frozenset()  # the workers whose tasks the last reconcile was told are orphaned
    last_logged: tuple[int, int, int] | None = None
    heard_since: float | None = None  # since when the broker has answered every pass (heartbeats are judged after)
    hosts: dict[str, HostWorkers] | None = None  # each live host's desired / running / busy, as the leader saw them
    pool_adopted: bool = False  # a shared pool: this leader has adopted the pool's workers


class Scaler:
    """Owns one service's worker processes on this host and keeps their number right."""

    def __init__(self, fleet: Fleet, policy: Policy, parts: Parts) -> None:
        self.fleet = fleet
        self.policy = policy
        self.parts = parts
        self.workers: dict[str, Managed] = {}
        self._ended: list[_Ended] = []
        self._memory = _Memory()
        self._seen = ChangeTracker()  # when this scaler last saw each worker's presence change (its own clock)

    @property
    def backoff(self) -> Backoff:
        return self._memory.backoff

    def start(self, now: float) -> None:
        """Take the lease, adopt (or recover from) the workers of a previous run, then start the initial ones. A
        shared pool's workers are adopted by its leader alone (and by a scaler when it takes the lead)."""
        self.parts.store.acquire_lease()
        if not self.fleet.shared:
            self._adopt(now)
        self._memory.heard_since = now
        membership = self.parts.membership
        if membership is not None:
            membership.beat(len(self.workers), 0, self.parts.wall())
            if not membership.lead():
                return  # the leader's plan gives this host its share on the first pass
            if self.fleet.shared:
                self._adopt(now)
                self._memory.pool_adopted = True
        for _ in range(self.fleet.initial - len(self.workers)):
            if not self._spawn(now):
                break

    def _adopt(self, now: float) -> None:
        """Take over the workers this host's records name and those the backend lists (a shared pool's pods): the
        live ones are ours again; the tasks of those that died while no scaler watched them go back."""
        launcher = self.parts.launcher
        found = {record.name: record for record in self.parts.store.records()}
        found.update({record.name: record for record in launcher.listed()})
        for record in found.values():
            if record.name in self.workers:
                continue
            if launcher.adopt(record):
                self.workers[record.name] = Managed(record, ready=True)
                logger.info("adopted worker %s (%s) from a previous scaler run", record.name, _where(record))
            else:  # it died while no scaler watched it
                self._ended.append(_Ended(Managed(record, ready=True), None))
        self.reap(now)

    def tick(self, now: float) -> Decision:
        """One pass: observe, reap, kill the stale, decide, act, report; now and then, reconcile."""
        try:
            observation = self.parts.metrics.observe()
        except _TRANSIENT:
            self._memory.heard_since = None  # heartbeats could not be written meanwhile either
            raise
        if self._memory.heard_since is None:
            self._memory.heard_since = now
        self._seen.observe({name: presence.token for name, presence in observation.workers.items()}, now)
        if self.fleet.shared and not self._lead_the_pool(now):
            return self._stand_by(observation, now)
        self.reap(now)
        self._kill_stale(observation, now)
        self._note_states(observation)
        views = self._views(observation)
        snapshot = self._snapshot(observation, views, now)
        if self._leads() and self._reconcile_due(observation, now):  # before deciding: the plan that hands a lost
            self._reconcile(observation, now)  # worker's slot on is published once its tasks are back at the head
        decision = self._decide(snapshot, observation, now)
        acted = self._act(decision, views, now)
        self._report(decision, observation, acted, now)
        return decision

    def _lead_the_pool(self, now: float) -> bool:
        """A shared pool: take or keep the lead; on taking it, adopt the pool's workers (before anything is counted,
        so that none is started twice); on losing it, let them go untouched. True while this scaler leads."""
        membership = self.parts.membership
        assert membership is not None, "a shared pool is led through the membership's lease"
        if membership.lead():
            if not self._memory.pool_adopted:  # taking the lead, or a pass whose adoption the API server refused
                self._adopt(now)
                self._memory.pool_adopted = True
            return True
        if self.workers:
            logger.warning("another scaler leads the pool now: leaving its %d worker(s) to it", len(self.workers))
            self._let_go_all()
        return False

    def _let_go_all(self) -> None:
        self._memory.pool_adopted = False
        for name in self.workers:
            self.parts.launcher.let_go(name)
        self.workers.clear()
        self._ended.clear()  # their bookkeeping is the leader's now (its checks re-send what nobody holds)

    def _stand_by(self, observation: Observation, now: float) -> Decision:
        """A scaler that does not lead a shared pool acts on nothing: it keeps its lease and record, and says so."""
        self.parts.store.renew_lease()
        membership = self.parts.membership
        assert membership is not None
        membership.beat(0, 0, self.parts.wall())
        plan = membership.plan()
        leader = f"scaler {plan.leader} (epoch {plan.epoch})" if plan is not None else "another scaler"
        snapshot = Snapshot(observation.total_queued, 0, 0, 0)
        decision = Decision(0, 0, f"standby: {leader} leads the pool and acts on its workers", History(), snapshot)
        self._report(decision, observation, False, now)
        return decision

    def _reconcile_due(self, observation: Observation, now: float) -> bool:
        """Every few seconds; and at once when a host was just declared dead, or a worker holding tasks has just been
        silent for the bound: its tasks go back now, not a period later, when the workers started in its place may
        have taken other tasks."""
        if now >= self._memory.next_reconcile or self._declared_dead_now():
            return True
        return not self._silent_holders(observation, now) <= self._memory.silent_holders

    def _silent_holders(self, observation: Observation, now: float) -> frozenset[str]:
        silent = functools.partial(self._silent, now=now)
        return silent_holders(observation.workers, self.workers, silent, self.fleet.host_stale_after_s)

    def _declared_dead_now(self) -> bool:
        membership = self.parts.membership
        return membership is not None and bool(membership.newly_dead)

    def _leads(self) -> bool:
        membership = self.parts.membership
        return membership is None or membership.epoch is not None

    def _decide(self, local: Snapshot, observation: Observation, now: float) -> Decision:
        """This host's desired workers: the policy's decision alone, or with other hosts this host's share of the
        leader's decision (made here when this scaler leads)."""
        if self.parts.store.renew_lease():  # a failover may have lost our workers' records with the lease
            for managed in self.workers.values():
                self.parts.store.save(managed.record)
        membership = self.parts.membership
        if membership is None:
            decision = decide(local, self.policy, self._memory.history, now)
            self._memory.history = decision.history
            return decision
        membership.beat(local.replicas, local.busy, self.parts.wall())
        if self.fleet.shared:
            return self._lead_shared(membership, local, now)
        if not membership.lead():
            membership.live_hosts(now, self._heard())  # a follower watches the records too: if it takes over, it
            return self._follow(membership, local)  # knows since when each host has been silent, with no new bound
        return self._lead(membership, local, observation, now)

    def _lead(self, membership: Membership, local: Snapshot, observation: Observation, now: float) -> Decision:
        """Decide for the service and split it across the live hosts. Live workers of hosts with no live scaler
        (strays, leaving on their own) still count: the live hosts share what is left of the desired count."""
        hosts = [HostLoad(r.host, r.capacity, r.replicas, r.busy) for r in membership.live_hosts(now, self._heard())]
        fresh = self._seen.fresh(now, self.fleet.host_stale_after_s, self._heard())
        stray = strays(observation.workers, {h.host for h in hosts}, self.workers, fresh.__contains__)
        stray_busy = sum(1 for presence in stray if presence.state is WorkerState.BUSY)
        replicas, busy = totals(hosts)
        capacity = total_capacity(hosts) + len(stray)  # the hosts' capacities bound the service
        policy = replace(self.policy, gpu_capacity=capacity)
        service = Snapshot(local.queued, local.running, replicas + len(stray), busy + stray_busy)
        decision = decide(service, policy, self._memory.history, now)
        self._memory.history = decision.history
        shares = split(max(0, decision.desired - len(stray)), hosts)
        self._memory.hosts = {h.host: HostWorkers(shares.get(h.host, 0), h.replicas, h.busy) for h in hosts}
        epoch = membership.epoch or 0
        reason = decision.reason + (f"; {len(stray)} worker(s) of hosts without a scaler counted" if stray else "")
        membership.publish(SharePlan(decision.desired, shares, epoch, self.parts.wall(), membership.member, reason))
        share = shares.get(self.fleet.host, 0)
        why = f"{reason}; shares of {decision.desired}: {describe(shares)} (leader, epoch {epoch})"
        return Decision(share, decision.target, why, decision.history, local)

    def _lead_shared(self, membership: Membership, local: Snapshot, now: float) -> Decision:
        """The leader of a shared pool decides for the service on its own workers, which are all of them; the
        other scalers stand by (share 0)."""
        decision = decide(local, self.policy, self._memory.history, now)
        self._memory.history = decision.history
        epoch = membership.epoch or 0
        shares = {record.host: 0 for record in membership.live_hosts(now, self._heard())}
        shares[self.fleet.host] = decision.desired
        membership.publish(SharePlan(decision.desired, shares, epoch, self.parts.wall(), membership.member,
                                     decision.reason))  # fmt: skip
        return replace(decision, reason=f"{decision.reason} (leader of the pool, epoch {epoch})")

    def _heard(self) -> float:
        """Since when the broker has answered every pass: silence before that is not the writers'."""
        return self._memory.heard_since if self._memory.heard_since is not None else math.inf

    def _silent(self, name: str, now: float) -> float:
        """How long this scaler has not seen the worker's presence change (0 for one never seen)."""
        return self._seen.silent_for(name, now, self._heard())

    def _follow(self, membership: Membership, local: Snapshot) -> Decision:
        """Keep this host's share of the leader's plan; with no current plan (its leader lost the lease), hold."""
        plan = membership.plan()
        if plan is not None and self.fleet.host in plan.shares:
            share = max(plan.shares[self.fleet.host], local.busy)
            why = f"share {share} of {plan.desired} from leader {plan.leader} (epoch {plan.epoch}): {plan.reason}"
            return Decision(share, share, why, self._memory.history, local)
        return Decision(local.replicas, local.replicas, "holding: no current plan from a leader", History(), local)

    def reap(self, now: float) -> None:
        """Handle every worker that ended; if the broker is away meanwhile, the rest is handled on a later pass."""
        for exited in self.parts.launcher.reap():
            managed = self.workers.pop(exited.name, None)
            if managed is not None:
                self._ended.append(_Ended(managed, exited.exit_code))
        while self._ended:
            ended = self._ended[0]
            self._on_exit(ended.managed, ended.exit_code, now)
            self._ended.pop(0)

    def drain(self) -> None:
        """Warm-stop every worker, busy ones included: the scaler itself is stopping. A shared pool's workers are
        left running to the scaler that leads next (a rolling update must not stop the service's pods)."""
        if self.fleet.shared:
            if self.workers:
                logger.info("leaving %d worker(s) of the shared pool to the next leader", len(self.workers))
            self._let_go_all()
            return
        for name, managed in self.workers.items():
            if not managed.stopping:
                self.parts.launcher.stop(name)
                managed.stopping = True

    def kill_all(self) -> None:
        """Stop at once (a second stop request): tasks in flight go back on their queues when reaped."""
        for name in self.workers:
            self.parts.launcher.kill(name)

    def close(self) -> None:
        """Let go of this host's lease and membership; a broker that refuses (both expire) is logged, not raised."""
        _guarded(lambda _now: self.parts.store.release(), 0.0)
        if self.parts.membership is not None:
            membership = self.parts.membership
            _guarded(lambda _now: membership.leave(), 0.0)

    def run(
        self, wakeup: Wakeup, clock: Callable[[], float] = time.monotonic, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        """Pass after pass until a stop is requested; then drain the workers (a second request kills them)."""
        self._start_once_the_broker_answers(wakeup, clock, interval_s)
        try:
            while not wakeup.stop_requests:
                started = clock()
                _guarded(self.tick, started)
                wakeup.wait(interval_s)
                time.sleep(max(0.0, started + MIN_PASS_GAP_S - clock()))  # a storm of wake-ups is not a busy loop
            logger.info("stopping: warm shutdown of %d worker(s); stop again to kill them", len(self.workers))
            self.drain()
            self._wait_drained(wakeup, clock, interval_s)
        finally:
            self.close()

    def _start_once_the_broker_answers(self, wakeup: Wakeup, clock: Callable[[], float], interval_s: float) -> None:
        """`start`, again each pass while the broker is away (frozen, restarting): a blip at start must not end the
        scaler, and `up` with it. Each step of `start` is safe to repeat."""
        while True:
            try:
                self.start(clock())
                return
            except _TRANSIENT as exc:
                logger.error("broker unavailable at start, retrying next pass: %s", exc)
            if wakeup.stop_requests:
                return
            wakeup.wait(interval_s)
            time.sleep(MIN_PASS_GAP_S)

    def _wait_drained(self, wakeup: Wakeup, clock: Callable[[], float], interval_s: float) -> None:
        """Until every worker has ended and been handled. Once none runs, a broker that refuses their bookkeeping (a
        full disk) is waited for LEFTOVER_BOOKKEEPING_S only: what it would requeue, the next scaler's checks send
        again, and a stop must not wait on the disk."""
        left_since: float | None = None  # since when no worker runs and only their bookkeeping is left
        while self.workers or self._ended:
            if wakeup.stop_requests > 1:
                self.kill_all()
            _guarded(self.reap, clock())
            if self.workers:
                left_since = None
            elif left_since is None:
                left_since = clock()
            elif self._ended and clock() - left_since >= LEFTOVER_BOOKKEEPING_S:
                logger.warning(
                    "stopping without the bookkeeping of %d ended worker(s): the broker refused it for %g s; the "
                    "checks of the next scaler send their tasks again", len(self._ended), LEFTOVER_BOOKKEEPING_S,
                )  # fmt: skip
                return
            wakeup.wait(interval_s)

    # ---- steps of a pass -----------------------------------------------------------------------------------

    def _on_exit(self, managed: Managed, exit_code: int | None, now: float) -> None:
        """A worker ended: kill what it left behind, put back what it held, forget it. Safe to repeat."""
        name, record = managed.record.name, managed.record
        crashed = not managed.stopping or exit_code not in (0, None, -signal.SIGTERM)
        leftovers = self.parts.launcher.kill_leftovers(name) if crashed else 0
        presence = self.parts.store.presence_of(name)
        reason = f"worker {name} ({_where(record)}) {_how(exit_code)}"
        requeued = self.parts.recovery.recover(name, presence.held if presence else {}, reason)
        self.parts.store.forget_worker(name)
        if crashed and not managed.ready and not managed.stopping:
            self._memory.backoff = self._memory.backoff.failed(now)
        log = logger.warning if crashed else logger.info
        log("%s; %d task(s) requeued %s, %d leftover process(es) killed", reason, len(requeued), requeued, leftovers)
        if self.parts.exporter is not None:
            self.parts.exporter.worker_exited(crashed=crashed, requeued=len(requeued))

    def _kill_stale(self, observation: Observation, now: float) -> None:
        """SIGKILL (with its process tree) each worker whose presence this scaler has not seen change for the bound:
        frozen (SIGSTOP, a hung interpreter) or cut off from Redis. It stops counting as a replica at once; its tasks
        are put back when it is reaped, dead, not before. Silence is counted only over time the broker answered us,
        on this scaler's monotonic clock: a step of the wall clock changes nothing."""
        for name, managed in self.workers.items():
            presence = observation.workers.get(name)
            if presence is None or managed.killed:
                continue
            silent_s = self._silent(name, now)
            if silent_s >= self.fleet.stale_after_s:
                logger.warning(
                    "worker %s (%s): its presence has not changed for %.0f s: killing it and its jobs; its tasks "
                    "go back on the queue once it is dead", name, _where(managed.record), silent_s,
                )  # fmt: skip
                self.parts.launcher.kill(name)  # its jobs go when it is reaped, as for any worker that crashed
                managed.killed = managed.stopping = True

    def _note_states(self, observation: Observation) -> None:
        for name, managed in self.workers.items():
            presence = observation.workers.get(name)
            if presence is None:
                continue
            if presence.state in (WorkerState.IDLE, WorkerState.BUSY) and not managed.ready:
                managed.ready = True
                self._memory.backoff = self._memory.backoff.succeeded()
            if presence.state is WorkerState.STOPPING:
                managed.stopping = True

    def _views(self, observation: Observation) -> list[WorkerView]:
        views = []
        for name, managed in self.workers.items():
            presence = observation.workers.get(name)
            state = presence.state if presence is not None else WorkerState.STARTING
            state = WorkerState.STOPPING if managed.stopping else state
            views.append(WorkerView(name, state, managed.record.started_at))
        return views

    def _snapshot(self, observation: Observation, views: list[WorkerView], now: float) -> Snapshot:
        active = [view for view in views if view.state is not WorkerState.STOPPING]
        busy = sum(1 for view in active if view.state is WorkerState.BUSY)
        live = self._seen.fresh(now, PRESENCE_STALE_AFTER_S, self._heard())  # it has just seen observation.workers
        return Snapshot(observation.total_queued, observation.running(live), len(active), busy)

    def _act(self, decision: Decision, views: list[WorkerView], now: float) -> bool:
        """Spawn or warm-stop workers to reach the decision; True when something was done."""
        changes = plan(decision.desired, views)
        for name in changes.stop:
            self.parts.launcher.stop(name)
            self.workers[name].stopping = True
            logger.info("stopping idle worker %s (warm shutdown)", name)
        spawned = 0
        while spawned < changes.spawn and self._spawn(now):
            spawned += 1
        return bool(changes.stop) or spawned > 0

    def _spawn(self, now: float) -> bool:
        """Start one worker on free GPUs; False when the crash backoff or the GPUs do not allow it now."""
        if not self._memory.backoff.allows(now):
            logger.debug("spawn held back until %.1f: workers keep dying at start", self._memory.backoff.not_before)
            return False
        in_use = {uuid for managed in self.workers.values() for uuid in managed.record.gpus}
        gpus = assign_gpus(self.fleet.gpus, in_use, self.fleet.gpu_per_worker)
        if gpus is None:
            logger.warning("no free GPU for another worker (%d per worker)", self.fleet.gpu_per_worker)
            return False
        token = secrets.token_hex(4)
        names = self.fleet.worker_names
        name = names(token) if names is not None else f"{self.fleet.service}-{token}@{self.fleet.host}"
        try:
            record = self.parts.launcher.spawn(WorkerSpec(name, gpus))
        except (OSError, KubernetesError) as exc:
            logger.error("cannot start worker %s: %s", name, exc)
            self._memory.backoff = self._memory.backoff.failed(now)
            return False
        self.parts.store.save(record)
        self.workers[name] = Managed(record)
        logger.info("spawned worker %s (%s, GPUs %s)", name, _where(record), ",".join(record.gpus) or "none")
        return True

    def _report(self, decision: Decision, observation: Observation, acted: bool, now: float) -> None:
        snap = decision.snapshot
        key = (decision.desired, snap.replicas, decision.target)
        changed = acted or key != self._memory.last_logged
        log = logger.info if changed else logger.debug
        log(
            "decision: queued=%d running=%d replicas=%d busy=%d -> desired=%d (%s): %s",
            snap.queued, snap.running, snap.replicas, snap.busy, decision.desired, decision.change, decision.reason,
        )  # fmt: skip
        self._memory.last_logged = key
        states = {view.name: view.state.value for view in self._views(observation)}
        remark = self.parts.launcher.remark()
        inputs: dict[str, str | int | float] = {
            "desired": decision.desired, "replicas": snap.replicas, "busy": snap.busy, "queued": snap.queued,
            "running": snap.running, "target": decision.target, "at": self.parts.wall(),
            "reason": f"{decision.reason}; {remark}" if remark else decision.reason,
        }  # fmt: skip
        self.parts.store.report({**inputs, "workers": json.dumps(states), "pool": remark})
        if changed:
            self.parts.store.record_decision({**inputs, "change": decision.change})
        if self.parts.exporter is not None:
            self.parts.exporter.record(decision, observation.queued, [WorkerState(s) for s in states.values()])
        self._record_history(decision, observation, changed, now)

    def _record_history(self, decision: Decision, observation: Observation, changed: bool, now: float) -> None:
        """Hand the pass to the history writer while this scaler leads (it samples once a second at most)."""
        history = self.parts.history
        if history is None:
            return
        if not self._leads():
            history.forget()
            return
        snap = decision.snapshot
        hosts = self._memory.hosts or {self.fleet.host: HostWorkers(decision.desired, snap.replicas, snap.busy)}
        desired = sum(host.desired for host in hosts.values())
        event = ScaleEvent(decision.change, desired, decision.reason) if changed else None
        history.record(now, observation.queued, hosts, event)

    def _reconcile(self, observation: Observation, now: float) -> None:
        """Re-send what is backed by nothing (scaler.reconcile); tasks of workers seen silent are held by nobody, but
        a worker seen changing holds its tasks, whatever its host's record says (scaler.liveness)."""
        membership = self.parts.membership
        dead = membership.dead_hosts if membership is not None else set()
        silent = functools.partial(self._silent, now=now)
        found = holders(observation.workers, self.workers, silent, self.fleet.host_stale_after_s, dead)
        self._memory.silent_holders = self._silent_holders(observation, now)
        # the reconciler compares its `now` with kombu's delivery times (wall): it gets this host's wall time
        resent = self.parts.recovery.reconcile(found.held, self.parts.wall(), found.orphaned)
        self._memory.next_reconcile = now + RECONCILE_EVERY_S  # a check that outlasts it is followed by the newest
        if resent:
            logger.warning("re-sent %d request(s), each logged with its reason: %s", len(resent), resent)


def _where(record: ProcessRecord) -> str:
    """How a worker is found, for the log: its pid, or for a pod (no pid of this host) its pod."""
    return f"pid {record.pid}" if record.pid else "a pod"


def _how(exit_code: int | None) -> str:
    if exit_code is None:
        return "ended while it was not our child (exit code unknown)"
    if exit_code < 0:
        return f"was killed by signal {-exit_code}"
    return f"exited with code {exit_code}"


def _guarded(step: Callable[[float], object], now: float) -> None:
    """Run one step; a broker outage is logged and retried next pass instead of ending the scaler."""
    try:
        step(now)
    except _TRANSIENT as exc:
        logger.error("broker unavailable, retrying next pass: %s", exc)
    except KubernetesError as exc:
        logger.error("Kubernetes API server unavailable, retrying next pass: %s", exc)
