"""The embedded default: the whole fleet on one machine with one command.

``continuity up`` starts a private redis-server (unless $CONTINUITY_REDIS_URL
names one), one worker per blueprint node, beat and Flower, and supervises
them as child process groups — the redis-server too: one that dies is reaped and
started again on the same port from its own directory, so its append-only file
brings the fleet's state back (AOF on, fsync every second). Stopping (Ctrl-C, SIGTERM) tears every group
down, so nothing is left orphaned to confuse the next run. No Celery import
here: children are separate processes, exactly as on a real fleet.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from continuity import paths, secretfiles, settings, supervision
from continuity.backup import api
from continuity.backup.config import load_fleet_backup_config
from continuity.blueprint import Blueprint
from continuity.drills import procs
from continuity.errors import ContinuityError
from continuity.metrics.exporter import Server, from_files, serve
from continuity.redisd import RedisServer, connect, free_port, redis_url
from continuity.sample import ledger_service
from continuity.state.heartbeats import ensure_node_key, provision


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def pick_port(preferred: int) -> int:
    """The preferred port when it is free (a stable Flower URL), else any free one."""
    return preferred if preferred and port_free(preferred) else free_port()


# Flower's task list shows name, uuid, state, times and worker by default; an operator needs what each task
# was about (the set, the failover record and step) and its outcome or progress text, so args and result too
FLOWER_TASK_COLUMNS = "name,state,args,result,received,runtime,worker"


def lock_down_state() -> Path:
    """Least privilege on the machine: the state directory (0700) and everything the fleet writes in it (AOF,
    logs, pulse history, keys, the URL holding the Redis password: 0600) is its owner's alone. The umask is
    set for this process and so for every child; entries an earlier run left open are closed too."""
    os.umask(0o077)
    state = paths.state_dir()
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    for p in [state, *state.iterdir()]:
        mode = p.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            p.chmod(stat.S_IMODE(mode) & ~0o077)
    return state


@dataclass
class Child:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    extra_env: dict[str, str] | None = None  # this child's own additions (Flower: signs no task messages)
    node: str | None = None  # the blueprint node whose worker this is (a drill may hold it down)

    def start(self, env: dict[str, str]) -> None:
        env = {**env, **(self.extra_env or {})}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as fh:
            self.popen = subprocess.Popen(self.argv, env=env, cwd=paths.root(), stdout=fh, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Runtime:
    """Supervisor for the embedded fleet."""

    blueprint: Blueprint
    flower_port: int = 5555
    concurrency: int = 2
    metrics_port: int | None = None  # None: $CONTINUITY_METRICS_PORT; 0: any free port
    redis: RedisServer | None = None
    url: str = ""
    flower_url: str = ""
    metrics: Server | None = None
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    flower_auth: str = ""

    def start(self) -> None:
        state = lock_down_state()
        self.url = redis_url() or ""
        self.env = dict(os.environ)
        if not self.url:
            # our own server: a generated password (0600 file) and an ACL that refuses CONFIG SET, MODULE,
            # DEBUG and ACL to every client (redisd.HARDENED_RULES)
            password = secretfiles.ensure("redis.password")
            port = settings.REDIS_PORT.get()
            self.redis = RedisServer(state / "redis", port=port, appendonly=True, password=password,
                                     harden=True).start()
            self.url = self.redis.url
            # the redis-restart drill relaunches this server from its 0600 redis.conf (redisd.own_conf); the
            # variable only serves a relaunch that cannot find that file's server
            self.env[settings.REDIS_PASSWORD.name] = password
        self.env.update({settings.REDIS_URL.name: self.url, settings.ROOT.name: str(paths.root()),
                         settings.STATE.name: str(state), "PYTHONUNBUFFERED": "1"})
        _prepare_node_keys(self.blueprint, self.env)
        _prepare_backups(self.env)
        self._serve_metrics()
        py = sys.executable
        logs = state / "logs"
        for node in sorted(self.blueprint.nodes):
            self.children.append(Child(f"worker:{node}", [py, "-m", "continuity", "worker", "--node", node,
                                                          "--concurrency", str(self.concurrency)],
                                       logs / f"worker-{node}.log", node=node))
        self.children.append(Child("beat", [py, "-m", "continuity", "beat"], logs / "beat.log"))
        fport = pick_port(self.flower_port)
        self.flower_url = f"http://127.0.0.1:{fport}"
        flower_argv = [py, "-m", "celery", "-A", "workers.app", "flower", "--address=127.0.0.1",
                       f"--port={fport}", "--persistent=False", f"--tasks_columns={FLOWER_TASK_COLUMNS}"]
        # basic auth always (generated unless the operator set one), handed over in Flower's environment, never
        # argv; never FLOWER_UNAUTHENTICATED_API, which also answers every web page with Allow-Origin: *
        self.flower_auth = settings.FLOWER_AUTH.get() or secretfiles.ensure(
            "flower.auth", lambda: f"admin:{secrets.token_urlsafe(24)}")
        self.env.pop("FLOWER_UNAUTHENTICATED_API", None)
        self.env.pop("FLOWER_BASIC_AUTH", None)
        self.children.append(Child("flower", flower_argv, logs / "flower.log",
                                   extra_env={settings.SIGNER.name: "none", "FLOWER_BASIC_AUTH": self.flower_auth}))
        supervision.claim()
        for child in self.children:
            child.start(self.env)

    def _serve_metrics(self) -> None:
        """Serve /metrics from this process before any worker starts, so the URL printed is this one; the workers
        get the same port and, finding it taken, stay quiet (each would take over if this process went away)."""
        port = settings.METRICS_PORT.get() if self.metrics_port is None else self.metrics_port
        addr = settings.METRICS_ADDR.get()
        clients: list[object] = []

        def client() -> object:
            if not clients:
                clients.append(connect(self.url, socket_timeout=5))
            return clients[0]

        exporter = from_files(client, background=True)
        self.metrics = serve(exporter, pick_port(port), addr) if port or self.metrics_port == 0 else None
        self.env[settings.METRICS_PORT.name] = str(self.metrics.port if self.metrics else port)

    def supervise_once(self) -> list[str]:
        """Restart any child that died (a crashed worker is a node back from the dead); names restarted.

        A node a drill holds down (:mod:`continuity.supervision`) is left down: the drill's rollback
        lifts the hold and this loop restarts it, so one process, this one, restarts every worker.

        Redis first: everything else needs it, and a dead one left unreaped was a zombie holding nothing.
        """
        restarted = []
        if self.redis is not None and not self.redis.alive():
            try:
                self.redis.restart()
                restarted.append("redis")
            except ContinuityError as exc:  # tried again on the next round; say why meanwhile
                print(f"continuity: redis-server did not restart: {exc}", file=sys.stderr)
        for child in self.children:
            if child.popen is not None and not child.alive():
                if child.node is not None and supervision.held(child.node) is not None:
                    continue
                child.popen.wait()  # reap it before its replacement starts
                child.restarts += 1
                child.start(self.env)
                restarted.append(child.name)
        return restarted

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every child group, the services the hooks started, what drills launched, and Redis; nothing stays."""
        for child in self.children:
            child.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children:
            if child.popen is None:
                continue
            try:
                child.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            child.signal_group(signal.SIGKILL)  # also reaps grandchildren (pool processes, service hooks)
            try:
                child.popen.wait(5)
            except subprocess.TimeoutExpired:
                pass
        _stop_services(self.env)
        if self.metrics is not None:
            self.metrics.close()
        ours = {os.getpid()} | ({self.redis.proc.pid} if self.redis is not None and self.redis.proc else set())
        leftovers = procs.stop_fleet_processes(paths.state_dir(), exclude=ours)
        if leftovers:
            print(f"continuity: stopped leftover processes: {', '.join(map(str, leftovers))}", file=sys.stderr)
        if self.redis is not None:
            self.redis.stop()
        supervision.release()


def _prepare_node_keys(bp: Blueprint, env: dict[str, str]) -> None:
    """Give every simulated node its own keys (on disk, never in Redis): the replication secret, and the Ed25519
    heartbeat key whose public half `continuity up`, as the operator, writes into the registry the detector
    trusts (:func:`continuity.state.heartbeats.provision`)."""
    old = dict(os.environ)
    os.environ.update(env)
    try:
        for node in bp.nodes:
            ensure_node_key(node)
        provision(bp.nodes)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _prepare_backups(env: dict[str, str]) -> None:
    """Give the embedded fleet a backup password (a 0600 file, never in Redis) and initialised repositories.

    restic makes `init` a separate step; for the one-command demo we do it here so
    the first scheduled snapshot has somewhere to go. An operator's own
    CONTINUITY_PASSWORD always wins.
    """
    if not settings.PASSWORD.is_set(env):
        env[settings.PASSWORD.name] = secretfiles.ensure("backup.password")
    try:
        cfg = load_fleet_backup_config(paths.backup_config_path(), root=paths.root())
    except ContinuityError as exc:
        print(f"continuity: backups not scheduled: {exc}", file=sys.stderr)
        return
    password = env[settings.PASSWORD.name].encode()
    opened: dict[str, object] = {}
    for s in cfg.sets.values():
        for url in [s.repository, *(r.repository for r in s.replicate_to)]:
            full = cfg.resolve(url)
            if full in opened:
                continue
            try:
                first = next(iter(opened.values()), None)
                opened[full] = api.open_repository(full, password, create=True, params_from=first)  # type: ignore
            except ContinuityError as exc:
                print(f"continuity: repository {full}: {exc}", file=sys.stderr)


def _stop_services(env: dict[str, str]) -> None:
    """Stop sample services the hooks started (they run in their own sessions, outliving workers)."""
    stop_all = getattr(ledger_service, "stop_all", None)
    if stop_all is None:
        return
    old = dict(os.environ)
    os.environ.update(env)
    try:
        stop_all()
    except Exception as exc:  # noqa: BLE001 - best effort at shutdown
        print(f"continuity: could not stop sample services: {exc}", file=sys.stderr)
    finally:
        os.environ.clear()
        os.environ.update(old)


def require_ok(rt: Runtime) -> None:
    dead = [c.name for c in rt.children if not c.alive()]
    if dead:
        raise ContinuityError(f"failed to start: {', '.join(dead)} (see {paths.state_dir() / 'logs'})")
