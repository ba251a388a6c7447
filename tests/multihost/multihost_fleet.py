"""One service run by a scaler per host of a NetnsRig (issue 13), and what the tests read of it: `scalablejob status
--json` (its hosts, its workers), puts and deliveries through netns_client.py in the client's namespace, and which
host started each command. A read that fails is None (Redis failing over, a host cut off); the waits
(conftest.wait_until) fail the test when their deadline passes.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from netns_rig import CLIENT, HOSTS, REPO, NetnsError, NetnsRig

from conftest import wait_until
from scalablejob.store.presence import scaler_host_of

T = TypeVar("T")
CLI = (sys.executable, "-m", "scalablejob")
MAX_REPLICAS = 6
JOIN_DEADLINE_S = 45.0  # scalers up and heartbeating (Python and Celery start slowly on a loaded 2-core machine)
BUSY_DEADLINE_S = 60.0  # a burst to all replicas busy: the workers start from zero
SETTLE_DEADLINE_S = 120.0
POLL_S = 1.0  # each read is a process in the client's namespace: not too often on 2 cores
# deploy/systemd/scalablejob-scaler@.service: Restart=on-failure, RestartSec=2 (a scaler whose lease another took
# exits non-zero; the tests assert that no failover or partition makes one exit)
SUPERVISOR_SAYS = "supervisor: exit"
RESTART_ON_FAILURE = f'while :; do "$@" && exit 0; echo "{SUPERVISOR_SAYS} $?, restart in 2 s" >&2; sleep 2; done'


def fleet_config(name: str, max_replicas: int = MAX_REPLICAS) -> dict[str, Any]:
    """A CPU service scaled from zero to `max_replicas`, one worker per waiting or running task."""
    return {
        "metadata": {"name": name, "type": "ScalableJob", "gpu": 0},
        "autoscaler": {"min": 0, "max": max_replicas, "strategies": {"avg_waiting_length": 1}},
    }


def host_of(worker: str | None) -> str | None:
    """The host of a worker node name `<service>-<hex>@<host>`."""
    return scaler_host_of(worker) if worker else None


def start_command(folder: Path, token: str, seconds: float) -> str:
    """A command task body that records its start as `folder/<token>.<hostname>.<pid>`, prints a start line and
    runs `seconds`."""
    code = (
        "import os, socket, time\n"
        f"open(os.path.join({str(folder)!r}, f'{token}.{{socket.gethostname()}}.{{os.getpid()}}'), 'w').close()\n"
        f"print('start', {token!r}, flush=True)\n"
        f"time.sleep({seconds})\n"
    )
    return json.dumps([sys.executable, "-c", code])


@dataclass(frozen=True)
class Snapshot:
    """One `status --json` of the service, with the counts the tests check."""

    document: Mapping[str, Any]

    @property
    def hosts(self) -> dict[str, Mapping[str, Any]]:
        return {entry["host"]: entry for entry in self.document.get("hosts", [])}

    def alive(self) -> set[str]:
        return {host for host, entry in self.hosts.items() if entry.get("alive")}

    def leader(self) -> str | None:
        """The host whose scaler made the last split (it leads)."""
        return next((host for host, entry in self.hosts.items() if entry.get("leader")), None)

    def workers(self, state: str | None = None) -> list[Mapping[str, Any]]:
        """Workers that are not stale (in `state`, when given)."""
        found = [w for w in self.document.get("workers", []) if not w.get("stale")]
        return [w for w in found if state is None or w.get("state") == state]

    def busy_by_host(self) -> Counter[str]:
        return Counter(worker["host"] for worker in self.workers("busy"))

    def held_by(self, host: str) -> list[str]:
        """The requests held by `host`'s busy workers."""
        return [rid for w in self.workers("busy") if w["host"] == host for rid in w.get("tasks", [])]

    def describe(self) -> str:
        hosts = {h: {k: e.get(k) for k in ("capacity", "share", "replicas", "alive")} for h, e in self.hosts.items()}
        workers = [f"{w['name']} {w['state']}{' stale' if w.get('stale') else ''}" for w in self.document["workers"]]
        return f"hosts {hosts}; workers {workers}"


class Fleet:
    """The service `name` on `rig`: its config, a scaler per host (`start_scaler`), and reads through the client."""

    def __init__(self, rig: NetnsRig, name: str, broker_url: str, *, env: Mapping[str, str] | None = None) -> None:
        self.rig = rig
        self.service = name
        self.broker_url = broker_url
        self.env = dict(env or {})
        self.folder = rig.folder / name
        self.starts_dir = self.folder / "starts"
        self.starts_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.folder / f"{name}.json"
        self.config_path.write_text(json.dumps(fleet_config(name)))
        self.capacities: dict[str, int] = {}
        self.seen_workers = 0  # the most workers (not stale) any snapshot showed
        self.putters: list[subprocess.Popen[bytes]] = []

    def start_scaler(self, host: str, capacity: int, *extra: str, env: Mapping[str, str] | None = None) -> None:
        """`scalablejob scaler --max-local capacity` in `host`'s namespace, under the hostname `host`, restarted
        when it fails as the systemd unit restarts it; `env` adds to the fleet's environment for this host."""
        argv = [*CLI, "scaler", str(self.config_path), "--broker", self.broker_url, "--max-local", str(capacity),
                "--log-dir", str(self.folder / f"{host}-workers"), *extra]  # fmt: skip
        supervised = ["sh", "-c", RESTART_ON_FAILURE, "supervise", *argv]
        log = self.folder / f"scaler-{host}.log"
        self.rig.spawn(host, supervised, log, env={**self.env, **(env or {})}, hostname=host, cwd=REPO)
        self.capacities[host] = capacity

    def status(self) -> Snapshot | None:
        """The service's status, or None while it cannot be read (Redis failing over, a host coming back)."""
        done = self.rig.run("c", [*CLI, "status", str(self.config_path), "--broker", self.broker_url, "--json"],
                            env=self.env, cwd=REPO, timeout=30)  # fmt: skip
        if done.returncode != 0:
            return None
        snapshot = Snapshot(json.loads(done.stdout))
        self.seen_workers = max(self.seen_workers, len(snapshot.workers()))
        return snapshot

    def alive(self) -> set[str]:
        """The hosts the status shows alive (none while it cannot be read)."""
        snapshot = self.status()
        return snapshot.alive() if snapshot else set()

    def put(self, tokens: Sequence[str], seconds: float) -> list[dict[str, Any]]:
        """Put a start_command per token (its request id is the token); what each put said."""
        items = [[start_command(self.starts_dir, token, seconds), "command", token] for token in tokens]
        return self.rig.ask("put", self.broker_url, self.service, json.dumps(items))

    def put_in_background(self, tokens: Sequence[str], seconds: float, gap_s: float) -> Path:
        """Start putting a start_command per token, `gap_s` apart, from the client's namespace; the file its
        answers go to, one JSON line per put (see `answers`)."""
        items = [[start_command(self.starts_dir, token, seconds), "command", token] for token in tokens]
        log = self.folder / f"puts-{uuid.uuid4().hex[:6]}.jsonl"
        argv = [sys.executable, str(CLIENT), "put", self.broker_url, self.service, json.dumps(items), str(gap_s)]
        self.putters.append(self.rig.spawn("c", argv, log, env=self.env, cwd=REPO))
        return log

    @staticmethod
    def answers(log: Path) -> list[dict[str, Any]]:
        """What each put of a background burst said so far (only whole lines)."""
        text = log.read_text(errors="replace") if log.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.startswith("{") and line.endswith("}")]

    def delivery(self, request_ids: Sequence[str]) -> dict[str, Any] | None:
        """{"finals": {id: n}, "states": {id: state}} (see netns_client.py), None while it cannot be read."""
        try:
            (document,) = self.rig.ask("delivery", self.broker_url, self.service, *request_ids)
        except (NetnsError, ValueError):
            return None
        return document

    # waits

    def join(self, capacities: Sequence[int], hosts: Sequence[str] = HOSTS) -> Snapshot:
        """A scaler per host with these capacities; the status once it shows every one of them alive, with its
        capacity."""
        for host, capacity in zip(hosts, capacities, strict=True):
            self.start_scaler(host, capacity)

        def joined() -> Snapshot | None:
            failed = self.restarted(hosts)
            assert not failed, f"the scaler of {failed[0]} exited before it joined:\n{self.log(failed[0])[-3000:]}"
            snapshot = self.status()
            return snapshot if snapshot and snapshot.alive() == set(hosts) else None

        snapshot: Snapshot = wait_until(joined, JOIN_DEADLINE_S, f"{hosts} never all showed alive", POLL_S)
        assert {host: snapshot.hosts[host]["capacity"] for host in hosts} == self.capacities, snapshot.describe()
        return snapshot

    def burst(self, count: int, seconds: float) -> list[str]:
        """`count` commands of `seconds`, each acknowledged; their request ids (also their start tokens)."""
        tokens = [f"t{n:02d}{uuid.uuid4().hex[:6]}" for n in range(count)]
        acks = self.put(tokens, seconds)
        assert [ack.get("requestId") for ack in acks if "index" in ack] == tokens, acks
        return tokens

    def all_busy(self, hosts: Sequence[str] = HOSTS, total: int = MAX_REPLICAS) -> Snapshot:
        """The status once `total` workers on `hosts` are busy, every one of `hosts` running at least one."""

        def busy() -> Snapshot | None:
            snapshot = self.status()
            if not snapshot:
                return None
            counts = snapshot.busy_by_host()
            return snapshot if sum(counts[h] for h in hosts) == total and all(counts[h] for h in hosts) else None

        found: Snapshot = wait_until(busy, BUSY_DEADLINE_S, f"never {total} busy workers on {hosts}", POLL_S)
        return found

    def settle(self, request_ids: Sequence[str], deadline_s: float = SETTLE_DEADLINE_S) -> dict[str, Any]:
        """The delivery once every request has a final state and a final entry."""

        def done() -> dict[str, Any] | None:
            document = self.delivery(request_ids)
            return document if settled(document, request_ids) else None

        found: dict[str, Any] = wait_until(done, deadline_s, "the requests never all ended", POLL_S)
        return found

    def rerun_after(self, request_ids: Sequence[str], lost: str, since: float, deadline_s: float) -> dict[str, float]:
        """Seconds from `since` (epoch) to each request's new start on a host other than `lost` (its state's
        started_at and worker, from RequestStore)."""

        def restarted() -> dict[str, float] | None:
            document = self.delivery(request_ids)
            if not document:
                return None
            delays = {}
            for rid in request_ids:
                state = document["states"].get(rid) or {}
                started, worker = state.get("started_at"), state.get("worker")
                if not (started and started >= since and host_of(worker) not in (None, lost)):
                    return None
                delays[rid] = round(started - since, 2)
            return delays

        found: dict[str, float] = wait_until(restarted, deadline_s, f"{lost}'s tasks never ran again elsewhere", 0.5)
        return found

    # what happened

    def log(self, host: str) -> str:
        return (self.folder / f"scaler-{host}.log").read_text(errors="replace")

    def worker_log_lines(self, host: str, needle: str) -> list[str]:
        """The lines of `host`'s worker logs that carry `needle`."""
        return [line.strip() for path in sorted((self.folder / f"{host}-workers").glob("*.log"))
                for line in path.read_text(errors="replace").splitlines() if needle in line]  # fmt: skip

    def restarted(self, hosts: Sequence[str] = HOSTS) -> list[str]:
        """The hosts whose scaler exited (and was started again by the supervisor loop) at least once."""
        return list(self.exit_reasons(hosts))

    def exit_reasons(self, hosts: Sequence[str] = HOSTS) -> dict[str, list[str]]:
        """For each host whose scaler exited, the line its scaler wrote last before each exit: why it stopped."""
        reasons: dict[str, list[str]] = {}
        for host in hosts:
            lines = ["(nothing logged)", *(line for line in self.log(host).splitlines() if line.strip())]
            for before, line in itertools.pairwise(lines):
                if SUPERVISOR_SAYS in line:
                    reasons.setdefault(host, []).append(before.strip()[-300:])
        return reasons

    def started_on(self, token: str) -> list[str]:
        """The hosts that started the command `token`, once per start."""
        return sorted(path.name.split(".")[1] for path in self.starts_dir.glob(f"{token}.*"))

    def logs(self, limit: int = 3000) -> str:
        """The end of every log of the scalers, then of their workers, for a failure (a CI report that keeps the
        start of the output keeps the scalers' decisions)."""
        paths = sorted(self.folder.rglob("*.log"), key=lambda path: (not path.name.startswith("scaler-"), path.name))
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-limit:]}" for path in paths)


def settled(document: Mapping[str, Any] | None, request_ids: Sequence[str]) -> bool:
    """Every request has a final state and at least one final entry."""
    if not document:
        return False
    states, finals = document["states"], document["finals"]
    return all(states.get(rid) and states[rid]["finished_at"] and finals.get(rid) for rid in request_ids)


def twice(document: Mapping[str, Any]) -> dict[str, int]:
    """Requests with more than one final entry in the whole output queue."""
    return {rid: count for rid, count in document["finals"].items() if count > 1}


def wait_until_absent(condition: Callable[[], T | None], window_s: float, interval: float = 0.5) -> T | None:
    """Watch `condition` for `window_s`: the first truthy value it gives (what must not happen), else None."""
    deadline = time.monotonic() + window_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    return None
