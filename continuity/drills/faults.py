"""Fault injectors, each split into *prepare* (learn what is needed to undo it) and *inject*.

The split is the safety rule: ``prepare`` touches nothing and returns the
rollback actions (plain JSON: the pids to SIGCONT, the exact argv/env/cwd to
relaunch a killed worker, the original bytes of a corrupted region); the runner
registers them durably (a 0600 file on this host: :mod:`continuity.drills.rollbacks`)
and only then calls ``inject``. So no fault can exist whose undo was not written down first.

Faults act on real processes and files found through the blueprint and the
live registry — the worker pid a node registered *and signed* (:mod:`continuity.registrations`),
whoever listens on a service's port, the node's link proxy — never on names guessed from config,
and never on a pid or argv because Redis alone said so.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continuity import paths, redact, settings, supervision
from continuity.blueprint import Blueprint
from continuity.drills import procs
from continuity.drills.probes import current_primary, http_get, service_port, worker_pid
from continuity.drills.targets import TargetPlan
from continuity.durations import parse_duration
from continuity.errors import ContinuityError
from continuity.services.hooks import run_service_hook
from continuity.state import epochs, links

SUPERVISOR_RESTART_WAIT = 90.0  # a worker's start (Celery import, registration) on a loaded 2-core host


class FaultError(ContinuityError):
    """The fault could not be prepared or injected (nothing to hit, proxy missing...)."""


@dataclass
class FaultContext:
    client: Any
    bp: Blueprint
    state: Path  # where drills keep logs, rollback files, the spawned-process ledger
    hold: float = 120.0  # upper bound on how long a self-expiring fault (link) may stay

    @property
    def spawned_ledger(self) -> Path:
        return self.state / "spawned.jsonl"


@dataclass
class Prepared:
    description: str
    rollbacks: list[dict[str, Any]]
    inject: Callable[[], dict[str, Any]]
    detail: dict[str, Any] = field(default_factory=dict)


# --- helpers -----------------------------------------------------------------------------------------------------
def _worker(ctx: FaultContext, node: str) -> int:
    pid = worker_pid(ctx.client, node)
    if pid is None:
        raise FaultError(f"node {node!r} has no live registered worker to hit")
    return pid


def _service_pids(ctx: FaultContext, node: str, services: list[str] | None = None) -> dict[str, list[int]]:
    out = {}
    for sid in services if services is not None else sorted(ctx.bp.services):
        port = service_port(ctx.bp, sid, node)
        if port:
            pids = procs.listeners(port)
            if pids:
                out[sid] = pids
    return out


def _hold_for_drill(ctx: FaultContext, nodes: tuple[str, ...]) -> list[str]:
    """Under a supervisor (``continuity up``), ask it to leave these nodes down until the rollback: one restarter."""
    if supervision.supervisor() is None:
        return []
    for node in nodes:
        supervision.hold(node, ctx.hold, "node-kill drill")
    return list(nodes)


def _relaunch_action(ctx: FaultContext, node: str, pid: int) -> dict[str, Any]:
    """How to start this worker again exactly as it was started (read from /proc before it dies)."""
    argv = procs.cmdline(pid)
    if not argv:
        raise FaultError(f"cannot read the command line of node {node!r}'s worker (pid {pid})")
    env, redacted = _safe_env(procs.environ(pid))
    return {"kind": "restart-process", "node": node, "argv": argv, "env": env, "env_redacted": redacted,
            "cwd": procs.cwd(pid), "name": f"worker-{node}"}


_SECRET_WORDS = ("KEY", "PASS", "SECRET", "TOKEN", "CRED")


def _safe_env(env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment minus anything that looks like a secret: the rollback file outlives the drill on disk.
    The relaunch takes redacted values from the runner's own environment. Names are matched by word, and the
    settings table's secrets are always redacted (CONTINUITY_FLOWER_AUTH has none of the words)."""
    safe, by_value = redact.redact_env(env)  # by value: CONTINUITY_REDIS_URL carries the Redis password
    redacted = sorted(set(by_value) | {k for k in safe if any(w in k.upper() for w in _SECRET_WORDS)})
    return {k: v for k, v in safe.items() if k not in redacted}, redacted


# --- node faults -------------------------------------------------------------------------------------------------
def node_kill(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    victims: dict[str, list[int]] = {}
    rollbacks = []
    for node in plan.nodes:
        pid = _worker(ctx, node)
        rollbacks.append(_relaunch_action(ctx, node, pid))
        services = _service_pids(ctx, node)
        victims[node] = procs.tree(pid) + sorted({p for ps in services.values() for p in ps})

    def inject() -> dict[str, Any]:
        held = _hold_for_drill(ctx, plan.nodes)
        for pids in victims.values():
            procs.send(pids, signal.SIGKILL)
            procs.wait_gone(pids, 10)
        return {"killed": victims, "supervisor_held": held}

    return Prepared(f"kill -9 the worker and services of {', '.join(plan.nodes)}", rollbacks, inject,
                    {"pids": victims})


def node_root(node: str, env: Mapping[str, str], cwd: str | None) -> Path:
    """The node's own data directory as its worker sees it (``paths.node_dir`` in that process's environment).

    Read from the worker's environment, not the runner's: on a bed of separate hosts each node has its own
    ``$CONTINUITY_STATE``, and the root to delete is the one the node writes to."""
    base = Path(cwd or "/")
    state = env.get(settings.STATE.name)
    state_path = base / state if state else base / (env.get(settings.ROOT.name) or ".") / ".continuity"
    return state_path / "nodes" / node


def check_loss_root(root: Path, node: str, fenced: Mapping[str, Path]) -> Path:
    """The directory a node loss may delete, resolved; FaultError when it is anything but ``node``'s own root.

    Deleting is the one step no rollback undoes, so the path is held to its shape (``.../nodes/<node>``, a real
    directory, not a link: the separate-hosts bed plants links to other nodes' roots exactly there) and must
    neither be, contain nor sit inside any ``fenced`` path (what -> path: the other nodes' roots, the drill's
    own state with its rollback files)."""
    if not node or node in (".", "..") or "/" in node or root.name != node or root.parent.name != "nodes":
        raise FaultError(f"refusing to delete {root}: not the data root of node {node!r} (.../nodes/{node})")
    if root.is_symlink():
        raise FaultError(f"refusing to delete {root}: it is a link ({os.readlink(root)}), not node {node!r}'s root")
    real = root.resolve()
    if real.name != node or real.parent.name != "nodes":
        raise FaultError(f"refusing to delete {root}: it resolves to {real}, not a node root named {node!r}")
    for what, path in fenced.items():
        other = path.resolve()
        if real == other or other.is_relative_to(real) or real.is_relative_to(other):
            raise FaultError(f"refusing to delete {real}: it overlaps {what} ({other})")
    return real


def _fenced(ctx: FaultContext, node: str) -> dict[str, Path]:
    """What a loss of ``node`` must not touch: every other node's root, as this host and their workers see it."""
    out = {"the drill state": ctx.state, "the drill records": paths.state_dir() / "drills"}
    for other in sorted(ctx.bp.nodes):
        if other == node:
            continue
        out[f"node {other!r}'s root"] = paths.node_dir(other)
        pid = worker_pid(ctx.client, other)
        if pid is not None:
            out[f"node {other!r}'s root (its worker's)"] = node_root(other, procs.environ(pid), procs.cwd(pid))
    return out


def node_loss(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    """``node-kill`` plus the node's data root gone, in the same instant: the machine is replaced.

    The node's processes (its worker tree: the replicator and shipper are its children; its services by
    port) are stopped first, then its root is renamed away (one atomic step), then they are killed: none of
    them runs between losing the disk and dying, so none writes after the disk is gone. The rollback
    relaunches the worker on an empty root; it must rejoin as a standby and catch up (it is behind the
    committed position, so it takes no role: :mod:`continuity.services.survivors`)."""
    victims: dict[str, list[int]] = {}
    checked: dict[str, Path] = {}
    rollbacks = []
    for node in plan.nodes:
        pid = _worker(ctx, node)
        rollbacks.append(_relaunch_action(ctx, node, pid))
        services = _service_pids(ctx, node)
        victims[node] = procs.tree(pid) + sorted({p for ps in services.values() for p in ps})
        if os.getpid() in victims[node]:  # a drill run as a task by the very worker it would freeze and kill
            raise FaultError(f"this drill runs inside node {node!r}'s worker (pid {os.getpid()}): losing the node "
                             "would stop the runner before its disk is gone; run it from another node or the CLI")
        root = node_root(node, procs.environ(pid), procs.cwd(pid))
        checked[node] = check_loss_root(root, node, _fenced(ctx, node))

    def inject() -> dict[str, Any]:
        held = _hold_for_drill(ctx, plan.nodes)
        all_pids = [p for ps in victims.values() for p in ps]
        procs.send(all_pids, signal.SIGSTOP)
        moved: dict[str, Path] = {}
        try:
            for node, root in checked.items():
                if root.is_symlink() or not root.is_dir():
                    continue  # changed since prepare (or never written): nothing of this node to delete
                trash = root.with_name(f".lost-{node}-{time.time_ns()}")
                os.rename(root, trash)
                moved[node] = trash
        finally:
            procs.send(all_pids, signal.SIGKILL)  # SIGKILL ends stopped processes too
            procs.wait_gone(all_pids, 10)
        for trash in moved.values():
            shutil.rmtree(trash, ignore_errors=True)
        return {"killed": victims, "deleted": {n: str(r) for n, r in checked.items() if n in moved},
                "supervisor_held": held}

    return Prepared(f"kill -9 everything of {', '.join(plan.nodes)} and delete its data root "
                    f"({', '.join(str(r) for r in checked.values())})", rollbacks, inject,
                    {"pids": victims, "roots": {n: str(r) for n, r in checked.items()}})


def node_stop(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    """SIGSTOP the node's worker tree: it stops heartbeating yet holds its sockets, like a hung host."""
    victims: dict[str, list[int]] = {}
    for node in plan.nodes:
        pid = _worker(ctx, node)
        pids = procs.tree(pid)
        if params.get("services"):
            pids += sorted({p for ps in _service_pids(ctx, node).values() for p in ps})
        victims[node] = pids
    all_pids = [p for ps in victims.values() for p in ps]
    rollbacks = [{"kind": "signal", "signal": "SIGCONT", "pids": all_pids}]

    def inject() -> dict[str, Any]:
        procs.send(all_pids, signal.SIGSTOP)
        return {"stopped": victims}

    return Prepared(f"SIGSTOP the worker of {', '.join(plan.nodes)}", rollbacks, inject, {"pids": victims})


def satellite_blackout(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    for node in plan.nodes:
        if ctx.bp.nodes[node].kind == "core":
            raise FaultError(f"satellite-blackout targets satellites; {node!r} is a core node")
    prepared = node_stop(ctx, plan, {"services": True, **dict(params)})
    prepared.description = f"black out satellite {', '.join(plan.nodes)} (worker and services silent)"
    return prepared


def service_crash(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    victims: dict[str, list[int]] = {}
    rollbacks = []
    for sid in plan.services:
        node = plan.placements.get(sid) or current_primary(ctx.client, ctx.bp, sid)
        pids = _service_pids(ctx, node, [sid]).get(sid)
        if not pids:
            raise FaultError(f"service {sid!r} is not listening on {node!r}: nothing to crash")
        victims[sid] = pids
        rollbacks.append({"kind": "restart-service", "service": sid, "node": node})

    def inject() -> dict[str, Any]:
        for pids in victims.values():
            procs.send(pids, signal.SIGKILL)
            procs.wait_gone(pids, 10)
        return {"killed": victims}

    return Prepared(f"kill -9 {', '.join(plan.services)}", rollbacks, inject, {"pids": victims})


# --- link faults (through the node's proxy) ----------------------------------------------------------------------
def _link_fault(ctx: FaultContext, plan: TargetPlan, fault: dict[str, Any], what: str) -> Prepared:
    for node in plan.nodes:
        if not links.has_proxy(ctx.client, node):
            raise FaultError(f"node {node!r} has no Redis-link proxy running "
                             f"(start `python -m continuity.drills.proxy --node {node} ...`, point its worker at it)")
    rollbacks = [{"kind": "link-clear", "node": n} for n in plan.nodes]

    def inject() -> dict[str, Any]:
        ttl_ms = int(ctx.hold * 1000)
        for node in plan.nodes:
            links.set_fault(ctx.client, node, fault, ttl_ms)
        deadline = time.monotonic() + 5
        pending = set(plan.nodes)
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                if links.applies(links.read_status(ctx.client, node), fault):
                    pending.discard(node)
            time.sleep(0.05)
        if pending:
            raise FaultError(f"link proxy of {', '.join(sorted(pending))} did not apply the fault")
        return {"link": fault, "nodes": list(plan.nodes)}

    return Prepared(what, rollbacks, inject, {"fault": fault})


def link_latency(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    delay = parse_duration(params.get("delay", "200ms")) * 1000
    jitter = parse_duration(params.get("jitter", 0)) * 1000
    return _link_fault(ctx, plan, {"delay_ms": delay, "jitter_ms": jitter, "drop": False},
                       f"add {delay:.0f}ms latency to the Redis link of {', '.join(plan.nodes)}")


def link_partition(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    return _link_fault(ctx, plan, {"delay_ms": 0, "jitter_ms": 0, "drop": True},
                       f"cut {', '.join(plan.nodes)} off Redis")


# --- file faults -------------------------------------------------------------------------------------------------
def _fill(text: str, **values: str) -> str:
    base = {"root": str(paths.root()), "state": str(paths.state_dir()), "python": sys.executable}
    try:
        return text.format_map({**base, **values})
    except (KeyError, ValueError, IndexError) as exc:
        raise FaultError(f"cannot fill path {text!r}: unknown placeholder {exc}") from None


def _middle_line(data: bytes, length: int) -> tuple[int, int]:
    """A region inside a line in the middle of a text file (never touching a newline)."""
    starts = [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A and i + 1 < len(data)]
    start = starts[len(starts) // 2]
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    return start, max(1, min(length, end - start))


def _pwrite(path: Path, data: bytes, offset: int) -> None:
    """Overwrite in place (never truncate, never move appended data) and make it durable."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def corruption(path: Path, mode: str = "flip", length: int = 16, offset: int | None = None) -> Prepared:
    """Plan an in-place corruption of ``path``; the rollback puts the original bytes back (only if ours are there)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FaultError(f"cannot read {path}: {exc.strerror}") from None
    if not data:
        raise FaultError(f"{path} is empty: nothing to corrupt")
    if mode == "garbage":
        start, n = (offset, length) if offset is not None else _middle_line(data, length)
        n = min(n, len(data) - start)
        bad = bytes(0x58 if b != 0x0A else 0x0A for b in data[start:start + n])  # 'X', keep line breaks
    else:
        start = offset if offset is not None else len(data) // 2
        n = min(length, len(data) - start)
        bad = bytes(b ^ 0xFF for b in data[start:start + n])
    original = data[start:start + n]
    action = {"kind": "restore-bytes", "path": str(path), "offset": start,
              "original_b64": base64.b64encode(original).decode(), "corrupt_b64": base64.b64encode(bad).decode()}

    def inject() -> dict[str, Any]:
        _pwrite(path, bad, start)
        return {"path": str(path), "offset": start, "length": n, "mode": mode}

    return Prepared(f"corrupt {n} bytes of {path} at offset {start}", [action], inject,
                    {"path": str(path), "offset": start, "length": n})


def file_corruption(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    template = params.get("path")
    if not template:
        raise FaultError("file-corruption needs params.path")
    service = plan.services[0] if plan.services else ""
    node = plan.placements.get(service) if service else (plan.nodes[0] if plan.nodes else "")
    node = node or ""
    path = paths.resolve(_fill(str(template), node=node, service=service,
                               node_dir=str(paths.node_dir(node)) if node else ""))
    return corruption(path, str(params.get("mode", "garbage")), int(params.get("length", 16)), params.get("offset"))


def repository_file(repo: Path, which: str = "data") -> Path:
    """A deterministic victim inside a backup repository: the largest file of the chosen kind."""
    if not repo.is_dir():
        raise FaultError(f"backup repository {repo} does not exist")
    files = [p for p in repo.rglob("*") if p.is_file() and not p.name.endswith((".lock", ".tmp"))]
    if which != "any":
        files = [p for p in files if which in p.relative_to(repo).parts[:-1]]
    if not files:
        raise FaultError(f"no {which} files in backup repository {repo}")
    return max(files, key=lambda p: (p.stat().st_size, str(p)))


def backup_corruption(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    repo = params.get("repository") or plan.repository
    if not repo:
        raise FaultError("backup-corruption needs a repository (target.repository or params.repository)")
    victim = repository_file(paths.resolve(_fill(str(repo))), str(params.get("file", "data")))
    return corruption(victim, "flip", int(params.get("length", 32)), params.get("offset"))


# --- broker ------------------------------------------------------------------------------------------------------
_REDIS_RESTART_CONFIG = ("port", "bind", "dir", "appendonly", "appendfsync", "appenddirname", "appendfilename",
                         "dbfilename", "maxmemory-policy", "maxmemory", "save", "logfile", "protected-mode")


def redis_restart(ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    """Shut Redis down cleanly and start it again with the same settings (read from the live server).

    The command line cannot be read back (redis-server rewrites its process title), so the relaunch is
    built from ``executable`` and CONFIG GET; ``requirepass`` is never copied (secrets stay out of the
    registry). The embedded server of `continuity up` is relaunched from the 0600 config file it was started
    with (:func:`continuity.redisd.own_conf`): its password stays out of argv (``ps`` shows argv to every user)
    and its ACL rules (no ``CONFIG SET``, ``MODULE``, ``DEBUG``) stay in force. Any other password-protected
    server takes the password from $CONTINUITY_REDIS_PASSWORD at restart."""
    info = ctx.client.info("server")
    pid = int(info.get("process_id", 0))
    exe = info.get("executable")
    if not exe or not procs.alive(pid):
        raise FaultError("redis-restart needs a redis-server on this host (its process is not visible here)")
    if not procs.same_program(pid, str(exe)):
        # the server's word is all INFO is: the program relaunched (and the pid killed) must be what /proc says
        raise FaultError(f"redis-restart: the server says it is {exe} with pid {pid}, but that pid runs another "
                         "program here (a server on another host, or one that lies): not touching it")
    from continuity.redisd import own_conf, parse_sentinel  # redis-py: only when this fault is prepared

    conf = own_conf(ctx.client.config_get("dir").get("dir"))
    argv = [str(exe)] + ([str(conf)] if conf is not None else [])  # redis-server takes its config file first
    for name in _REDIS_RESTART_CONFIG:
        value = ctx.client.config_get(name).get(name)
        if value is not None:
            argv += [f"--{name}", str(value)]
    argv += ["--daemonize", "no"]
    port = int(info.get("tcp_port", 0))

    # the restarted server itself (with Sentinel the fleet's URL leads to whichever server is master by then)
    fleet = settings.REDIS_URL.get()
    url = fleet if fleet and parse_sentinel(fleet) is None else f"redis://127.0.0.1:{port}/0"
    action = {"kind": "redis-start", "argv": argv, "cwd": procs.cwd(pid), "url": url, "port": port,
              "config_file": str(conf) if conf is not None else None}

    def inject() -> dict[str, Any]:
        try:
            ctx.client.shutdown(nosave=False)  # AOF is fsynced on shutdown: what a clean restart keeps
        except Exception:  # noqa: BLE001 - the connection drops as the server exits: expected
            pass
        if not procs.wait_gone([pid], 15):
            procs.send([pid], signal.SIGKILL)
            procs.wait_gone([pid], 5)
        return {"stopped_pid": pid, "port": port}

    return Prepared(f"restart the Redis broker (pid {pid}, port {port})", [action], inject, {"pid": pid})


def extra_rollbacks(ctx: FaultContext, plan: TargetPlan, names: list[str]) -> list[dict[str, Any]]:
    """Rollbacks a scenario asks for beyond undoing its fault: make sure the target's services and nodes run.

    Both are no-ops when the system already recovered (the executors check first), so they are a safety
    net for a fault whose undo alone does not bring the service back."""
    out: list[dict[str, Any]] = []
    if "restart-node" in names:
        for node in plan.nodes:
            pid = worker_pid(ctx.client, node)
            if pid is not None:
                out.append(_relaunch_action(ctx, node, pid))
    if "restart-service" in names:
        for sid in plan.services:
            if ctx.bp.services[sid].spec.port is not None and ctx.bp.services[sid].spec.hooks.start:
                out.append({"kind": "restart-service", "service": sid, "node": plan.placements.get(sid)})
    return out


INJECTORS: dict[str, Callable[[FaultContext, TargetPlan, Mapping[str, Any]], Prepared]] = {
    "node-kill": node_kill, "node-loss": node_loss, "node-stop": node_stop, "satellite-blackout": satellite_blackout,
    "service-crash": service_crash, "link-latency": link_latency, "link-partition": link_partition,
    "file-corruption": file_corruption, "backup-corruption": backup_corruption, "redis-restart": redis_restart,
}


def prepare(fault_type: str, ctx: FaultContext, plan: TargetPlan, params: Mapping[str, Any]) -> Prepared:
    return INJECTORS[fault_type](ctx, plan, params)


# --- rollback executors ------------------------------------------------------------------------------------------
def executors(ctx: FaultContext) -> dict[str, Callable[[Mapping[str, Any]], None]]:
    """Rollback kind -> function; each is idempotent (a recovering runner may repeat one that half ran)."""

    def do_signal(a: Mapping[str, Any]) -> None:
        sig = getattr(signal, str(a.get("signal", "SIGCONT")))
        pids = [int(p) for p in a.get("pids", [])]
        procs.send(pids, sig)
        if sig == signal.SIGCONT:
            still = [p for p in pids if procs.stopped(p)]
            if still:
                raise FaultError(f"processes still stopped after SIGCONT: {still}")

    def do_restart_process(a: Mapping[str, Any]) -> None:
        node = a.get("node")
        if node and worker_pid(ctx.client, str(node)) is not None:
            supervision.unhold(str(node))
            return  # already back (someone restarted it, or this rollback ran before)
        if node and supervision.supervisor() is not None:
            # the supervisor restarts its own child: starting one here too made two workers for one node
            supervision.unhold(str(node))
            deadline = time.monotonic() + SUPERVISOR_RESTART_WAIT
            while worker_pid(ctx.client, str(node)) is None:
                if time.monotonic() >= deadline:
                    raise FaultError(f"the supervisor did not bring {node!r}'s worker back within"
                                     f" {SUPERVISOR_RESTART_WAIT:g}s")
                time.sleep(0.2)
            return
        env = dict(a.get("env") or os.environ)
        for name in a.get("env_redacted", []):
            if name in os.environ:
                env[name] = os.environ[name]
        procs.launch(list(a["argv"]), env, a.get("cwd"), ctx.state / "logs" / f"{a.get('name', 'proc')}.log",
                     ctx.spawned_ledger, str(a.get("name", "proc")))

    def do_restore_bytes(a: Mapping[str, Any]) -> None:
        path = Path(a["path"])
        original = base64.b64decode(a["original_b64"])
        corrupt = base64.b64decode(a["corrupt_b64"])
        offset = int(a["offset"])
        with open(path, "rb") as f:
            f.seek(offset)
            now = f.read(len(original))
        if now == original:
            return
        if now != corrupt:
            raise FaultError(f"{path} changed at offset {offset} since the corruption; not overwriting it")
        _pwrite(path, original, offset)

    def do_link_clear(a: Mapping[str, Any]) -> None:
        node = str(a["node"])
        links.clear_fault(ctx.client, node)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            st = links.read_status(ctx.client, node)
            if not st or (int(st.get("drop", 0)) == 0 and float(st.get("delay_ms", 0)) == 0):
                return
            time.sleep(0.05)
        raise FaultError(f"link proxy of {node!r} still applies a fault after it was cleared")

    def do_redis_start(a: Mapping[str, Any]) -> None:
        import redis

        from continuity.redisd import connect  # redis-py: only when a rollback restarts Redis

        client = connect(str(a["url"]), socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                pass
            argv = list(a["argv"])
            conf = a.get("config_file")
            if conf:
                if not Path(conf).is_file():  # never relaunch without it: no password, no ACL rules
                    raise FaultError(f"redis-server's config file {conf} is gone: not starting it without its "
                                     "password and ACL rules (start it with `continuity up`)")
            else:
                redis_password = settings.REDIS_PASSWORD.get()
                if redis_password:
                    argv += ["--requirepass", redis_password]
            procs.launch(argv, dict(os.environ), a.get("cwd"), ctx.state / "logs" / "redis-server.log",
                         ctx.spawned_ledger, "redis-server")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
            raise FaultError(f"redis-server did not come back on port {a.get('port')}")
        finally:
            client.close()

    def do_restart_service(a: Mapping[str, Any]) -> None:
        service = str(a["service"])
        node = current_primary(ctx.client, ctx.bp, service)
        port = service_port(ctx.bp, service, node)
        if port:
            try:
                status, _ = http_get(f"http://{ctx.bp.nodes[node].address}:{port}/health", 1.0)
                if status == 200:
                    return  # failover (or the agent) already brought it back
            except OSError:
                pass
        hooks = ctx.bp.services[service].spec.hooks
        if hooks.start is None:
            raise FaultError(f"service {service!r} is down on {node!r} and has no start hook")
        epoch = epochs.current_epoch(ctx.client, service)
        res = run_service_hook(ctx.bp, service, node, "start", epoch or None)
        if res is not None and not res.ok:
            raise FaultError(f"start hook of {service!r} on {node!r} failed: {res.output[-200:]}")

    return {"signal": do_signal, "restart-process": do_restart_process, "restore-bytes": do_restore_bytes,
            "link-clear": do_link_clear, "redis-start": do_redis_start, "restart-service": do_restart_service}
