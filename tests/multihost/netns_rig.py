"""Separate hosts on one machine (issue 13): network namespaces joined by a bridge, for the multi-host tests.

Layout: a bridge `br0` in a namespace of its own (`<prefix>-br`) and one namespace per node (`<prefix>-<node>`), each
joined to the bridge by a veth pair (`eth0` in the node, the node's name on the bridge side). Addresses come from
the documentation range 198.51.100.0/24 and exist only inside those namespaces: the root namespace gets no address
and no route to them, so nothing outside this machine is ever addressed. The prefix holds the owner's pid and a
random part, so that parallel runs never clash, and a rig whose owner was killed -9 is swept by the next one.

The test process itself stays in the root namespace: whatever must reach Redis (puts, reads, `scalablejob status`)
runs as a subprocess in a node's namespace (`run`, `spawn`), typically the client node `c` through
tests/multihost/netns_client.py, which answers in JSON on stdout.

Faults: `kill_host` (kill -9 of every process in a namespace), `partition` / `heal` (the node's link on the bridge
down / up). `close` always kills every process of every namespace and deletes them (and so their links).

No pytest here: `unavailable_reason` says why namespaces cannot be made, and the fixtures turn that into a skip.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from scalablejob.local.redis_server import redis_server_binary

REPO = Path(__file__).resolve().parents[2]
CLIENT = Path(__file__).resolve().with_name("netns_client.py")

SUBNET = "198.51.100"  # TEST-NET-2 (RFC 5737): never routed anywhere
PREFIX_LENGTH = 24
HOSTS = ("h1", "h2", "h3")
# node -> last byte of its address: the client, the single Redis, the three hosts
DEFAULT_NODES: Mapping[str, int] = {"c": 9, "redis": 10, "h1": 11, "h2": 12, "h3": 13}
# the failover layout: the client, the hosts, and three Redis nodes, each with one redis-server and one Sentinel
REDIS_NODES = ("r1", "r2", "r3")
SENTINEL_NODES: Mapping[str, int] = {"c": 9, "h1": 11, "h2": 12, "h3": 13, "r1": 20, "r2": 21, "r3": 22}
REDIS_PORT = 6379
SENTINEL_PORT = 26379
MASTER_NAME = "mymaster"
SENTINEL_QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
KILL_DEADLINE_S = 10.0
IP_TIMEOUT_S = 20.0
# what a process in a namespace inherits from the test's environment; everything else is passed on purpose
KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV")
SET_HOSTNAME = 'hostname "$0" && exec "$@"'  # sh -c: $0 is the hostname, "$@" the command
OWNED = re.compile(r"^sj-(\d+)-[0-9a-f]{4}-")  # a rig's namespace: sj-<owner pid>-<random>-<node>


class NetnsError(RuntimeError):
    """An `ip` command of the rig failed."""


@functools.cache
def unavailable_reason() -> str | None:
    """Why this machine cannot make network namespaces (None: it can), found by making and deleting one."""
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add); this run is not root"
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} is not on PATH (iproute2 / util-linux)"
    probe = f"sjprobe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip() or made.returncode}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=IP_TIMEOUT_S)
    return None


def ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; its stdout. A failure raises NetnsError with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done.stdout


def namespace_exists(name: str) -> bool:
    return name in ip("netns", "list").split()  # each line: NAME [(id: N)]


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process in a namespace: a few variables of this one, and `extra`."""
    kept = {name: os.environ[name] for name in KEPT_ENV if name in os.environ}
    return {**kept, "PYTHONUNBUFFERED": "1", **(extra or {})}


def sweep_orphans() -> list[str]:
    """Kill the processes of, and delete, the namespaces of rigs whose owner died without closing them (a test run
    killed -9); the names deleted. Rigs of live owners (parallel runs) are left alone."""
    swept = []
    for name in ip("netns", "list", check=False).split():
        owner = OWNED.match(name)
        if owner is None or pid_alive(int(owner.group(1))):
            continue
        with contextlib.suppress(NetnsError, OSError, subprocess.SubprocessError):
            for pid in NetnsRig._pids(name):  # noqa: SLF001 - the test drives the step itself
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            ip("netns", "del", name)
            swept.append(name)
    return swept


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class NetnsRig:
    """The namespaces of `nodes` (name -> last byte of its address) on one bridge; processes started in them, and a
    `close` that leaves nothing behind. Use as a context manager."""

    def __init__(self, folder: Path, nodes: Mapping[str, int] = DEFAULT_NODES) -> None:
        self.folder = folder
        self.nodes = dict(nodes)
        self.prefix = f"sj-{os.getpid()}-{secrets.token_hex(2)}"  # the owner's pid: see sweep_orphans
        self.bridge = f"{self.prefix}-br"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.redis_servers: dict[str, subprocess.Popen[bytes]] = {}  # node -> its redis-server (not Sentinel)
        self._made: list[str] = []  # namespaces made so far, deleted by close

    # layout

    def ns(self, node: str) -> str:
        """The namespace of `node`."""
        if node not in self.nodes:
            raise KeyError(f"no node {node!r} in this rig: expected one of {', '.join(self.nodes)}")
        return f"{self.prefix}-{node}"

    def address(self, node: str) -> str:
        self.ns(node)  # a known node
        return f"{SUBNET}.{self.nodes[node]}"

    def redis_url(self, node: str = "redis", port: int = REDIS_PORT, db: int = 0) -> str:
        return f"redis://{self.address(node)}:{port}/{db}"

    def sentinel_url(self, nodes: Sequence[str] = REDIS_NODES, db: int = 0) -> str:
        """The broker URL in kombu's sentinel transport form, naming every Sentinel of `nodes`."""
        hosts = ";".join(f"sentinel://{self.address(node)}:{SENTINEL_PORT}" for node in nodes)
        return f"{hosts}/{db}?master={MASTER_NAME}"

    def open(self) -> NetnsRig:
        """Make the bridge's namespace and every node's, each joined to the bridge; on any failure, undo it all."""
        self.folder.mkdir(parents=True, exist_ok=True)
        sweep_orphans()
        try:
            self._add_namespace(self.bridge)
            ip("-n", self.bridge, "link", "add", "br0", "type", "bridge")
            ip("-n", self.bridge, "link", "set", "br0", "up")
            ip("-n", self.bridge, "link", "set", "lo", "up")
            for node in self.nodes:
                self._add_node(node)
        except BaseException:
            self.close()
            raise
        return self

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self._made.append(name)

    def _add_node(self, node: str) -> None:
        """The node's namespace, with `eth0` (its address) paired to `node` on the bridge; the root sees neither."""
        ns = self.ns(node)
        self._add_namespace(ns)
        ip("-n", self.bridge, "link", "add", node, "type", "veth", "peer", "name", "eth0", "netns", ns)
        ip("-n", self.bridge, "link", "set", node, "master", "br0")
        ip("-n", self.bridge, "link", "set", node, "up")
        ip("-n", ns, "addr", "add", f"{self.address(node)}/{PREFIX_LENGTH}", "dev", "eth0")
        ip("-n", ns, "link", "set", "eth0", "up")
        ip("-n", ns, "link", "set", "lo", "up")

    # processes

    def command(self, node: str, argv: Sequence[str], hostname: str | None = None) -> list[str]:
        """`argv` run in `node`'s namespace, with a UTS namespace of its own named `hostname` when given."""
        inner = list(argv) if hostname is None else ["unshare", "--uts", "sh", "-c", SET_HOSTNAME, hostname, *argv]
        return ["ip", "netns", "exec", self.ns(node), *inner]

    def spawn(
        self, node: str, argv: Sequence[str], log_path: Path, *, env: Mapping[str, str] | None = None,
        hostname: str | None = None, cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:  # fmt: skip
        """Start `argv` in `node`'s namespace, in a session of its own, its output appended to `log_path`; `env` is
        all of its environment besides base_env's few variables. Killed by `close` at the latest."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                self.command(node, argv, hostname), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=base_env(env), cwd=cwd, start_new_session=True,
            )  # fmt: skip
        self.processes.append(process)
        return process

    def run(
        self, node: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, hostname: str | None = None,
        timeout: float = 60.0, cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run `argv` to its end in `node`'s namespace; its output captured, its exit code not checked."""
        return subprocess.run(
            self.command(node, argv, hostname), capture_output=True, text=True, env=base_env(env), cwd=cwd,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def ask(self, op: str, *args: str, node: str = "c", timeout: float = 60.0) -> list[dict[str, object]]:
        """Run netns_client.py OP ARGS in `node`'s namespace; the JSON lines it printed. A non-zero exit raises
        NetnsError with its output."""
        done = self.run(node, [sys.executable, str(CLIENT), op, *args], timeout=timeout, cwd=REPO)
        if done.returncode != 0:
            raise NetnsError(f"netns_client {op} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]

    def master(self) -> str | None:
        """The address of the master the Sentinels name now; None while they name none (in a failover)."""
        try:
            (seen,) = self.ask("topology", self.sentinel_url(), timeout=20)
        except (NetnsError, ValueError):
            return None
        return str(seen["master"]).split(":")[0]

    def pids(self, node: str) -> list[int]:
        """Every live process in `node`'s namespace."""
        return self._pids(self.ns(node))

    @staticmethod
    def _pids(ns: str) -> list[int]:
        return [int(pid) for pid in ip("netns", "pids", ns, check=False).split()]

    # faults

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """kill -9 one process this rig started (a Redis master, say), and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait(KILL_DEADLINE_S)

    @contextlib.contextmanager
    def frozen(self, process: subprocess.Popen[bytes]) -> Iterator[None]:
        """SIGSTOP one process this rig started for the block, SIGCONT after it, even if the block fails."""
        os.kill(process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGCONT)

    def kill_host(self, node: str) -> int:
        """kill -9 every process in `node`'s namespace (again and again until none is left: a fork in flight
        escapes one round); how many were killed."""
        return self._kill_all(self.ns(node))

    def _kill_all(self, ns: str) -> int:
        killed: set[int] = set()
        deadline = time.monotonic() + KILL_DEADLINE_S
        while pids := self._pids(ns):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            self._reap()
            if time.monotonic() > deadline:
                raise NetnsError(f"processes {pids} of {ns} outlived kill -9 for {KILL_DEADLINE_S} s")
            time.sleep(0.02)  # the kernel takes a moment to tear a killed process down
        self._reap()
        return len(killed)

    def _reap(self) -> None:
        """Collect the exit of the processes this rig started (so none stays a zombie)."""
        for process in self.processes:
            process.poll()

    def partition(self, node: str) -> None:
        """Cut `node` off: its link on the bridge goes down (no reset, no goodbye: packets just stop)."""
        self.ns(node)
        ip("-n", self.bridge, "link", "set", node, "down")

    def heal(self, node: str) -> None:
        self.ns(node)
        ip("-n", self.bridge, "link", "set", node, "up")

    # Redis

    def redis_argv(self, node: str, port: int = REDIS_PORT, *extra: str) -> list[str]:
        """A persistent redis-server bound to `node`'s address alone, its data in a folder of its own."""
        data = self.folder / f"redis-{node}-{port}"
        data.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_binary(), "--port", str(port), "--bind", self.address(node), "--dir", str(data),
            "--appendonly", "yes", "--save", "", "--protected-mode", "no", "--daemonize", "no", *extra,
        ]  # fmt: skip

    def start_redis(self, node: str = "redis", port: int = REDIS_PORT, *extra: str) -> subprocess.Popen[bytes]:
        """Start a redis-server in `node` (see redis_argv); wait for it with the client's `wait`."""
        process = self.spawn(node, self.redis_argv(node, port, *extra), self.folder / f"redis-{node}-{port}.log")
        self.redis_servers[node] = process
        return process

    def start_replica(self, node: str, master: str, port: int = REDIS_PORT) -> subprocess.Popen[bytes]:
        return self.start_redis(node, port, "--replicaof", self.address(master), str(REDIS_PORT))

    def start_sentinel(self, node: str, master: str, port: int = SENTINEL_PORT) -> subprocess.Popen[bytes]:
        """A Sentinel on `node` watching `master` as MASTER_NAME (quorum 2, down after 1 s). Its config file is its
        own: Sentinel rewrites it."""
        folder = self.folder / f"sentinel-{node}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind {self.address(node)}\nprotected-mode no\ndaemonize no\ndir {folder}\n"
            f"sentinel monitor {MASTER_NAME} {self.address(master)} {REDIS_PORT} {SENTINEL_QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        return self.spawn(node, [redis_server_binary(), str(conf), "--sentinel"], folder / "sentinel.log")

    # the end

    def close(self) -> None:
        """Kill every process of every namespace, delete the namespaces (their links go with them). Never raises
        before it has tried everything; what it could not do is printed to stderr."""
        problems = []
        for ns in reversed(self._made):
            try:
                self._kill_all(ns)
            except (NetnsError, OSError, subprocess.SubprocessError) as exc:
                problems.append(f"{ns}: {exc}")
        for process in self.processes:  # `ip netns exec` itself, had one not entered its namespace yet
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(KILL_DEADLINE_S)
        for ns in reversed(self._made):
            try:
                ip("netns", "del", ns)
            except (NetnsError, OSError, subprocess.SubprocessError) as exc:
                problems.append(f"{ns}: {exc}")
        self._made.clear()
        if problems:
            print("netns rig cleanup:\n  " + "\n  ".join(problems), file=sys.stderr)

    def __enter__(self) -> NetnsRig:
        return self.open()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
