"""A bed of separate hosts on one Linux machine, for tests and drills that must not be able to cheat.

Each node of a blueprint becomes a host: its own network namespace and
address (:mod:`continuity.netbed.net`), its own data root — the directory its
processes are told to use as ``$CONTINUITY_STATE``, so everything the node
keeps (service data, keys, pulse copy, hook locks) is there and nowhere else —
and the disk guard (:mod:`continuity.netbed.guard`) refusing and reporting any
open of that root by another node. Redis listens on the bridge (``.1``); the
workers, the sample services and the clients reach it and each other over the
nodes' addresses, never over loopback.

Layout under the bed's work directory::

    roots/            one tmpfs (the guard watches exactly this filesystem)
      <node>/         the node's data root ($CONTINUITY_STATE of its processes)
        nodes/<node>/   its services' files (what ``paths.node_dir`` names)
        nodes/<other>   a trap: a link to the other node's directory, so code that still
                        assumes one shared disk reaches the real thing and is caught
        keys/           every node's heartbeat key, as provisioning would install them
      .lost/          a lost node's root on its way to deletion
    control/          $CONTINUITY_STATE of the bed's own processes (beat, the CLI, the test)
    config/           the blueprint as the hosts see it (each node at its address)
    keys/             the provisioning copy of the keys (a revived node gets them again)
    redis/ logs/ violations.jsonl

The operations later work builds on: :meth:`Bed.start_worker` (a node's worker
inside its namespace), :meth:`Bed.lose` (kill -9 of everything of the node and
its root gone in the same instant), :meth:`Bed.partition` / :meth:`Bed.heal`
(its cable out and back), :meth:`Bed.revive` (the replaced machine: same
address, empty root). :meth:`Bed.close` removes every namespace, link, mount
and process, and a bed whose owner died without closing it is removed by the
next :func:`~continuity.netbed.registry.sweep_stale` (every bed is recorded under ``/run/continuity-netbed``
before anything of it is created).
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path
from typing import IO, Any

import yaml

from continuity import paths, settings, signing, task_auth
from continuity.blueprint import load_blueprint
from continuity.netbed import guard as disk_guard
from continuity.netbed import net
from continuity.netbed.net import NetError
from continuity.netbed.procs import KILL_TIMEOUT, freeze, kill_group, kill_netns, start_time
from continuity.netbed.registry import REGISTRY, claim_subnet, dismantle, leftovers, mounted, owner
from continuity.redisd import RedisServer
from continuity.state import nodes as node_registry
from continuity.state.heartbeats import read_registry, register

ROOTS_SIZE = "1g"  # a cap, not an allocation: tmpfs holds only what is written
GUARD_READY_TIMEOUT = 30.0


class IsolationBroken(NetError):
    """A node opened another node's root, or the guard that would have said so is gone."""


@dataclass(frozen=True)
class Host:
    """One node as a host: its namespace, the host end of its cable, its address and its data root."""

    node: str
    netns: str
    veth: str
    address: str
    root: Path


@dataclass(frozen=True)
class Loss:
    """What :meth:`Bed.lose` did: the processes it killed and how long the node took to vanish."""

    node: str
    pids: tuple[int, ...]
    root: Path
    seconds: float


def host_blueprint(doc: dict[str, Any], addresses: Mapping[str, str]) -> dict[str, Any]:
    """The blueprint as the bed's hosts see it: every node at its own address, no port offsets.

    Offsets exist so simulated nodes sharing one loopback do not collide; separate hosts
    need none, and keeping them would hide a client that talks to the right port on the
    wrong host.
    """
    out = json.loads(json.dumps(doc))  # a deep copy of plain YAML data
    for node, spec in out.get("nodes", {}).items():
        spec["address"] = addresses[node]
        labels = spec.setdefault("labels", {})
        labels["port_offset"] = "0"
    return out


# --- the bed --------------------------------------------------------------------------------------------------
@dataclass
class Bed:
    """Separate hosts for the nodes of ``blueprint``, under ``workdir``. Use :meth:`start`, then :meth:`close`."""

    blueprint: Path
    workdir: Path
    guard: bool = True
    trap_links: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    redis_appendonly: bool = False
    id: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: dict[str, Host] = field(default_factory=dict)
    redis: RedisServer | None = None
    subnet: IPv4Network | None = None
    plan: dict[str, Any] = field(default_factory=dict, repr=False)
    _guard: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _procs: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict, repr=False)
    _logs: list[IO[bytes]] = field(default_factory=list, repr=False)
    _losses: int = field(default=0, repr=False)
    _taken: int = field(default=0, repr=False)  # bytes of the violations file already taken
    _closed: bool = field(default=False, repr=False)

    # paths
    @property
    def roots(self) -> Path:
        return self.workdir / "roots"

    @property
    def control(self) -> Path:
        return self.workdir / "control"

    @property
    def blueprint_path(self) -> Path:
        return self.workdir / "config" / "blueprint.yml"

    @property
    def violations_path(self) -> Path:
        return self.workdir / "violations.jsonl"

    @property
    def gateway(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    @property
    def url(self) -> str:
        assert self.redis is not None, "the bed is not started"
        return self.redis.url

    def host(self, node: str) -> Host:
        return self.hosts[node]

    # --- start ------------------------------------------------------------------------------------------------
    def start(self) -> Bed:
        """Wire the hosts, start Redis on the bridge and the guard; on any failure, remove what was made."""
        doc = yaml.safe_load(Path(self.blueprint).read_text())
        node_ids = sorted(doc.get("nodes", {}))
        if not node_ids:
            raise NetError(f"{self.blueprint}: no nodes to make hosts of")
        if len(node_ids) > 250:
            raise NetError(f"{self.blueprint}: {len(node_ids)} nodes do not fit a /24")
        self.workdir = Path(self.workdir).resolve()
        self.subnet, claim = claim_subnet(self.id)
        first = self.subnet.network_address
        for i, node in enumerate(node_ids):
            self.hosts[node] = Host(node, net.netns_name(self.id, node), net.veth_name(self.id, i),
                                    str(first + 2 + i), self.roots / node)
        REGISTRY.mkdir(parents=True, exist_ok=True)
        self.plan = {"id": self.id, **owner(), "subnet": str(self.subnet), "bridge": net.bridge_name(self.id),
                     "hosts": [{"netns": h.netns, "veth": h.veth} for h in self.hosts.values()],
                     "mount": str(self.roots), "claim": str(claim), "record": str(REGISTRY / f"{self.id}.json"),
                     "pids": [], "workdir": str(self.workdir)}
        self._save()
        try:
            self._wire(doc)
        except BaseException:
            self.close()
            raise
        return self

    def _save(self) -> None:
        record = Path(self.plan["record"])
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.plan))
        os.replace(tmp, record)

    def _track(self, pid: int) -> None:
        self.plan["pids"].append([pid, start_time(pid)])
        self._save()

    def _wire(self, doc: dict[str, Any]) -> None:
        for d in ("control", "config", "keys", "logs"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self.roots.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={ROOTS_SIZE},mode=0755", f"ctb-{self.id}",
                        str(self.roots)], check=True, capture_output=True)
        assert self.subnet is not None
        net.create_bridge(self.plan["bridge"], f"{self.gateway}/{self.subnet.prefixlen}")
        for h in self.hosts.values():
            net.create_host(h.netns, h.veth, self.plan["bridge"], f"{h.address}/{self.subnet.prefixlen}")
        self.blueprint_path.write_text(yaml.safe_dump(
            host_blueprint(doc, {n: h.address for n, h in self.hosts.items()}), sort_keys=False))
        load_blueprint(self.blueprint_path)  # a blueprint the hosts cannot load fails here, with its own message
        for node in self.hosts:
            key = self.workdir / "keys" / f"{node}.key"
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
        self._provision_heartbeat_keys()
        self._provision_role_keys()
        self._install_keys(self.control)
        self._install_role_keys(self.control, None)
        for node in self.hosts:
            self._make_root(node)
        self.redis = RedisServer(self.workdir / "redis", host=self.gateway, appendonly=self.redis_appendonly)
        self.redis.start()
        assert self.redis.proc is not None
        self._track(self.redis.proc.pid)
        if self.guard:
            self._start_guard()

    def _provision_heartbeat_keys(self) -> None:
        """Each node's own Ed25519 heartbeat key, kept in the provisioning copy (a replaced machine gets it again),
        and the public halves in the control host's registry: the detector verifies with them and signs as no one."""
        publics = {}
        for node in self.hosts:
            path = self.workdir / "keys" / "nodes" / node / "heartbeat.ed25519"
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            publics[node] = signing.ensure_key(path, "heartbeat", node).public.raw
        register(publics, self.control / "trust" / "nodes.pub")

    def _provision_role_keys(self) -> None:
        """The task-signing keys, made once as an operator provisions separate hosts (SIGNING_POLICY.md): each
        node's own node key and the control host's control key, kept in the provisioning copy so a replaced
        machine gets its own key again. Without this every host made its own on first use and trusted only
        that: a step signed by one node and taken off the shared control queue by another was refused, and a
        chain advanced only when the signer happened to run its own step (a replaced machine, with a new key,
        could stall a failover for good)."""
        prov = self.workdir / "keys" / "roles"
        prov.mkdir(parents=True, exist_ok=True, mode=0o700)
        for node in self.hosts:
            signing.ensure_key(prov / f"node-{node}.ed25519", task_auth.NODE, node)
        signing.ensure_key(prov / "control.ed25519", task_auth.CONTROL, task_auth.CONTROL)

    def _install_role_keys(self, state: Path, node: str | None) -> None:
        """Under ``state``: the host's own signing key (``node``'s node key, or the control key for the control
        host) and the public halves of every node key and of the control key in ``keys/trusted/``."""
        prov = self.workdir / "keys" / "roles"
        own = prov / (f"node-{node}.ed25519" if node else "control.ed25519")
        dst = state / "keys" / own.name
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(own.read_bytes())
        trusted = [(task_auth.NODE, n, prov / f"node-{n}.ed25519") for n in self.hosts]
        trusted.append((task_auth.CONTROL, task_auth.CONTROL, prov / "control.ed25519"))
        for role, name, path in trusted:
            pub = state / "keys" / "trusted" / role / f"{name}.pub"
            pub.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            pub.write_text(signing.ensure_key(path, role, name).public.line() + "\n", encoding="utf-8")

    def _install_node_key(self, node: str, state: Path) -> None:
        """``node``'s own heartbeat key (and no other node's) where its worker looks for it, under ``state``."""
        src = self.workdir / "keys" / "nodes" / node / "heartbeat.ed25519"
        dst = state / "keys" / "nodes" / node / "heartbeat.ed25519"
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(src.read_bytes())

    def _install_keys(self, state: Path) -> None:
        """Every node's heartbeat key where :func:`continuity.state.heartbeats.key_file` looks for it, under
        ``state`` (each node verifies the others' beats)."""
        key_dir = state / "keys"
        key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for src in sorted((self.workdir / "keys").glob("*.key")):
            dst = key_dir / src.name
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(src.read_bytes())

    def _make_root(self, node: str) -> Path:
        root = self.hosts[node].root
        root.mkdir(mode=0o755)
        self._install_keys(root)
        self._install_node_key(node, root)
        self._install_role_keys(root, node)
        # the node-key registry (public halves only): a core node's worker may lead the detector
        register(read_registry(self.control / "trust" / "nodes.pub"), root / "trust" / "nodes.pub")
        (root / "nodes").mkdir()
        if self.trap_links:
            for other in self.hosts:
                if other != node:
                    (root / "nodes" / other).symlink_to(self.hosts[other].root / "nodes" / other)
        return root

    def _start_guard(self) -> None:
        argv = [sys.executable, "-m", "continuity.netbed.guard", "--roots", str(self.roots),
                "--log", str(self.violations_path)]
        argv += [f"--node={h.node}={h.root.name}={h.netns}" for h in self.hosts.values()]
        err = self._log("guard")
        self._guard = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                       cwd=paths.root(), env=self.env(), start_new_session=True)
        self._track(self._guard.pid)
        assert self._guard.stdout is not None
        ready, _, _ = select.select([self._guard.stdout], [], [], GUARD_READY_TIMEOUT)
        line = self._guard.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self._guard.kill()
            tail = (self.workdir / "logs" / "guard.log").read_text(errors="replace")[-600:]
            raise NetError(f"the disk guard did not start: {tail.strip() or 'no answer'}")

    def _log(self, name: str) -> IO[bytes]:
        fh = open(self.workdir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - closed by close()
        self._logs.append(fh)
        return fh

    # --- environments and processes ---------------------------------------------------------------------------
    def env(self, state: Path | None = None) -> dict[str, str]:
        """Environment of the bed's own processes (beat, the CLI): Redis on the bridge, the hosts' blueprint."""
        state = state or self.control
        env = {k: v for k, v in os.environ.items() if not k.startswith(settings.PREFIX)}
        env.update({
            settings.REDIS_URL.name: self.redis.url if self.redis else "",
            settings.ROOT.name: str(paths.root()),
            settings.STATE.name: str(state),
            settings.PULSE_FILE.name: str(state / "pulse_history.jsonl"),
            settings.BLUEPRINT.name: str(self.blueprint_path),
            # no backup jobs unless the caller brings sets for the hosts' blueprint
            settings.BACKUP_CONFIG.name: str(self.workdir / "config" / "no-backup-sets.yml"),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def node_env(self, node: str) -> dict[str, str]:
        """Environment of ``node``'s processes: as :meth:`env`, with the node's own root as its state."""
        return self.env(self.hosts[node].root)

    def run(self, node: str, argv: Sequence[str], name: str, env: Mapping[str, str] | None = None
            ) -> subprocess.Popen[bytes]:
        """Start ``argv`` on ``node``: inside its network namespace, with its environment, in a session of its own."""
        h = self.hosts[node]
        proc = subprocess.Popen(["ip", "netns", "exec", h.netns, *argv], env=dict(env or self.node_env(node)),
                                cwd=paths.root(), stdout=self._log(name), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.setdefault(node, []).append(proc)
        return proc

    def call(self, node: str, argv: Sequence[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on ``node`` to completion (a CLI command as the node would run it); output captured."""
        return subprocess.run(["ip", "netns", "exec", self.hosts[node].netns, *argv], env=self.node_env(node),
                              cwd=paths.root(), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def run_control(self, argv: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the root namespace with the bed's environment (beat, a CLI command)."""
        proc = subprocess.Popen(list(argv), env=self.env(), cwd=paths.root(), stdout=self._log(name),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._procs.setdefault("", []).append(proc)
        self._track(proc.pid)
        return proc

    def start_worker(self, node: str, concurrency: int = 2, timeout: float = 60.0) -> subprocess.Popen[bytes]:
        """``continuity worker --node NODE`` on its host; returns once that very process has registered in Redis."""
        name = f"worker-{node}"
        proc = self.run(node, [sys.executable, "-m", "continuity", "worker", "--node", node,
                               "--concurrency", str(concurrency)], name)
        client = self.client()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise NetError(f"worker {node} exited with {proc.returncode}; see {self.log_path(name)}")
                info = node_registry.read_registry(client, node)
                if info and info.get("pid") == proc.pid:
                    return proc
                time.sleep(0.05)
        finally:
            client.close()
        raise NetError(f"worker {node} did not register within {timeout:.0f}s; see {self.log_path(name)}")

    def log_path(self, name: str) -> Path:
        return self.workdir / "logs" / f"{name}.log"

    def client(self) -> Any:
        from continuity.redisd import connect  # redis-py: only the bed's owner talks to Redis directly

        return connect(self.url, socket_timeout=5, socket_connect_timeout=3)

    def pids(self, node: str) -> set[int]:
        """Every live process of ``node`` (by network namespace, as ``ip netns pids`` finds them)."""
        return net.netns_pids(self.hosts[node].netns)

    # --- faults -----------------------------------------------------------------------------------------------
    def lose(self, node: str) -> Loss:
        """Node loss: every process of the node killed -9 and its data root gone, in the same instant.

        "Same instant" as the node sees it: its processes are all stopped first, then the
        root is renamed away (one atomic step), then they are killed. No process of the
        node runs between losing its disk and dying, so none can notice the one without
        the other, or write after the disk is gone.
        """
        h = self.hosts[node]
        started = time.monotonic()
        pids = freeze(h.netns)
        self._losses += 1
        trash = self.roots / ".lost" / f"{node}-{self._losses}"
        trash.parent.mkdir(exist_ok=True)
        if h.root.exists():
            os.rename(h.root, trash)
        kill_netns(h.netns)  # SIGKILL ends stopped processes too
        seconds = time.monotonic() - started
        for proc in self._procs.pop(node, []):
            proc.wait(KILL_TIMEOUT)
        shutil.rmtree(trash, ignore_errors=True)
        return Loss(node, tuple(sorted(pids)), h.root, seconds)

    def partition(self, node: str) -> None:
        """Cable out: nothing reaches the node and nothing leaves it; it keeps its address and its disk."""
        net.set_link(self.hosts[node].veth, up=False)

    def heal(self, node: str) -> None:
        net.set_link(self.hosts[node].veth, up=True)

    def revive(self, node: str) -> Path:
        """The replaced machine: same address, a fresh empty root with only the provisioned keys. Start its worker
        with :meth:`start_worker`. Refused while the node still has a root or a process (lose it first)."""
        h = self.hosts[node]
        if h.root.exists() or self.pids(node):
            raise NetError(f"{node} is not lost: it still has a root or processes")
        return self._make_root(node)

    # --- isolation --------------------------------------------------------------------------------------------
    def _unread(self) -> tuple[list[disk_guard.Violation], int]:
        """Violations written since the last :meth:`take_violations`, and where the complete lines end."""
        try:
            data = self.violations_path.read_bytes()
        except FileNotFoundError:
            return [], 0
        end = data.rfind(b"\n") + 1  # a line the guard is still writing is read next time
        return disk_guard.parse_violations(data[self._taken:end].decode(errors="replace")), end

    def violations(self) -> list[disk_guard.Violation]:
        """Every refused open not yet taken by :meth:`take_violations`."""
        return self._unread()[0]

    def take_violations(self) -> list[disk_guard.Violation]:
        """The violations so far, forgotten once read (for a test that provokes them on purpose).

        The file is never truncated (the guard appends to it while we read); the bed remembers how far it took.
        """
        found, self._taken = self._unread()
        return found

    def assert_isolated(self) -> None:
        """Raise :class:`IsolationBroken` if any node opened another's root, or the guard is not watching."""
        found = self.violations()
        if found:
            raise IsolationBroken(f"{len(found)} open(s) of another node's root:\n  "
                                  + "\n  ".join(v.line() for v in found[:20]))
        if self.guard and not self._closed and (self._guard is None or self._guard.poll() is not None):
            raise IsolationBroken(f"the disk guard is not running; see {self.log_path('guard')}")

    # --- teardown ---------------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Remove everything of the bed; what could not be removed, in words (empty when all is gone)."""
        self._closed = True
        for procs in self._procs.values():
            for proc in procs:
                if proc.poll() is None:
                    kill_group(proc.pid)
        problems = dismantle(self.plan) if self.plan else []
        for procs in self._procs.values():
            for proc in procs:
                try:
                    proc.wait(KILL_TIMEOUT)
                except subprocess.TimeoutExpired:
                    problems.append(f"pid {proc.pid} did not exit")
        self._procs.clear()
        if self.redis is not None:
            self.redis.kill()
        if self._guard is not None:
            try:
                self._guard.wait(KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                problems.append(f"the disk guard (pid {self._guard.pid}) did not exit")
            if self._guard.stdout is not None:
                self._guard.stdout.close()
        for fh in self._logs:
            fh.close()
        self._logs.clear()
        if self.roots.is_dir() and not mounted(str(self.roots)):
            shutil.rmtree(self.roots, ignore_errors=True)
        return problems

    def leftovers(self) -> list[str]:
        return leftovers(self.plan) if self.plan else []
