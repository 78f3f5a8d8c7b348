"""The sample ledger service: sequence-numbered records in a JSON ledger and a SQLite database, over HTTP.

It exists so a failover moves real data and real clients: hooks start and stop
it, the node agent probes ``/health``, clients follow the route to it. Every
write is role-guarded: before appending, the service checks that the epoch it
was started with is still the service's current epoch in Redis, so a primary
that was fenced (paused, cut off, superseded) answers 409 instead of accepting a
write nobody will ever see again. Fencing tokens only go up on its side too: the
highest epoch an instance on this node was started with is kept in its data dir
(``epoch.max``), and an instance started with a lower one — a Redis that lost
data handed an old epoch back — refuses every write (409), also after a restart.

    python -m continuity.sample.ledger_service start --service S --node N --port P --epoch E
    python -m continuity.sample.ledger_service stop --service S --node N

``start`` forks the instance (no second interpreter to start: its start-up is
recovery time) and returns when the instance *says* it is ready, over a pipe:
it has the data directory's lock, has loaded its whole ledger and is listening.
Nothing is polled. The instance runs detached, with its pid and settings in
``$CONTINUITY_STATE/nodes/<node>/<service>/``.

One instance per data directory: each instance holds an exclusive ``flock`` on
``service.lock`` for its whole life and takes it *before* reading its ledger.
Two instances of one service on one node once both served (a local restart and
a demote 0.3 s apart); the later one had loaded the ledger before the other
appended to it, and acknowledged a seq that was already stored. Now a second
instance waits until the first is gone, then loads what it left.

Every record names the instance that accepted it (``instance``), beside its
epoch, node and time of acceptance: the split-brain checks read what each
instance actually accepted from the ledgers themselves.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import select
import signal
import sqlite3
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from continuity import paths, settings
from continuity.detect import outage
from continuity.events import FAILOVER_SERVICE_DEMOTED
from continuity.pulse import Pulse
from continuity.replication.local import SyncGate
from continuity.services.layout import service_dir
from continuity.state import epochs, leases
from continuity.state import replication as replication_state

LEDGER = "ledger.jsonl"
DATABASE = "ledger.db"
LOCK = "service.lock"
EPOCH_FLOOR = "epoch.max"  # listed in services.layout.RUNTIME_FILES: each node keeps its own, never copied
START_TIMEOUT = 15.0
LOCK_POLL = 0.01  # seconds between tries for the data directory's lock while a previous instance exits


class AlreadyServed(RuntimeError):
    """Another instance still holds this data directory after the deadline."""


def lock_data_dir(directory: Path, timeout: float) -> int:
    """Take the data directory's exclusive lock (held until the process exits); the fd, or AlreadyServed.

    The kernel drops the lock when its holder dies, however it dies, so a killed instance never
    blocks the next one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout
    said = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not said:
                print(f"waiting for the instance that holds {directory / LOCK} to exit", file=sys.stderr, flush=True)
                said = True
            if time.monotonic() >= deadline:
                os.close(fd)
                raise AlreadyServed(f"another instance still serves {directory} after {timeout:g}s") from None
            time.sleep(LOCK_POLL)


class Ledger:
    """The data: the JSON ledger is the source of truth, the SQLite table is rebuilt from it if behind."""

    def __init__(self, directory: Path, instance: str = "") -> None:
        self.dir = directory
        self.instance = instance
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = directory / LEDGER
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.seqs: set[int] = set()
        self.lines = 0  # complete lines in the file: the record count replication and the committed position use
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    self.lines += line.endswith("\n")
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue  # a torn last line from a crash: never acknowledged, so never promised
                    if isinstance(rec, dict) and isinstance(rec.get("seq"), int) and rec["seq"] not in self.seqs:
                        self.records.append(rec)
                        self.seqs.add(rec["seq"])
        self.db = sqlite3.connect(str(directory / DATABASE), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, epoch INTEGER, node TEXT,"
                        " ts REAL, data TEXT)")
        have = {row[0] for row in self.db.execute("SELECT seq FROM records")}
        missing = [r for r in self.records if r["seq"] not in have]
        if missing:
            self.db.executemany("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?)",
                                [(r["seq"], r.get("epoch"), r.get("node"), r.get("ts"),
                                  json.dumps(r.get("data"))) for r in missing])
        self.db.commit()
        self.fh = open(self.path, "a", encoding="utf-8")
        self.size = os.fstat(self.fh.fileno()).st_size  # bytes in the ledger file: the position a sync write waits for

    @property
    def last_seq(self) -> int | None:
        return max(self.seqs) if self.seqs else None

    def append(self, seq: int, epoch: int, node: str, data: Any) -> bool:
        """Durably append; False when ``seq`` is already there (a client retry after a lost answer)."""
        if seq in self.seqs:
            return False
        rec = {"seq": seq, "epoch": epoch, "node": node, "ts": time.time(), "instance": self.instance, "data": data}
        self.fh.write(json.dumps(rec, sort_keys=True) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.size = os.fstat(self.fh.fileno()).st_size
        self.lines += 1
        self.db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?)",
                        (seq, epoch, node, rec["ts"], json.dumps(data)))
        self.db.commit()
        self.records.append(rec)
        self.seqs.add(seq)
        return True


class EpochFloor:
    """The highest epoch an instance of this service on this node was ever started with, on its own disk.

    Redis is the epoch's source of truth, but a Redis that lost writes (a failover to a replica that was
    behind, an AOF rewound) can hand out an epoch again, or a lower one. What a node has served at, it
    remembers itself: a start with a lower epoch is refused writes however current Redis says it is.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / EPOCH_FLOOR

    def read(self) -> int:
        try:
            return int(json.loads(self.path.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def raise_to(self, epoch: int) -> int:
        """Record ``epoch`` if it is the highest yet (durably: temp file, fsync, rename, fsync dir); the floor."""
        floor = self.read()
        if epoch <= floor:
            return floor
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps({"epoch": epoch, "at": time.time()}))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        fd = os.open(str(self.path.parent), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return epoch


class LeaseView:
    """One look at the lease: ``ours``, ``absent``, ``taken`` (``why`` says by whom) or ``error`` (with
    ``verdict``, the reading of why Redis did not answer: down / failing over, or we are cut off).
    ``left``: for ``ours``, the seconds the lease still had at Redis when read."""

    def __init__(self, kind: str, why: str = "", verdict: outage.Verdict | None = None,
                 left: float | None = None) -> None:
        self.kind, self.why, self.verdict, self.left = kind, why, verdict, left


class EpochGuard:
    """Is this instance still the primary? Asked of Redis before every write, and watched in the background.

    Two independent fences: (1) every write checks that our epoch is still the
    current one (a stale writer gets 409); (2) a watcher thread checks our lease
    a few times per lease period and shuts the instance down as soon as the
    lease is gone or someone else's, or cannot be confirmed for most of a lease
    period. So a primary whose node agent is frozen (SIGSTOP, a hung worker)
    stops on its own before the lease + margin after which a standby may be
    promoted, and the pulse history shows it.
    """

    def __init__(self, service: str, node: str, epoch: int, redis_url: str | None) -> None:
        self.service = service
        self.node = node
        self.epoch = epoch
        self.url = redis_url
        self.client = None
        if redis_url:
            from continuity.redisd import connect, no_retry

            self.client = connect(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=no_retry())

    def check(self) -> tuple[int, int | None, str]:
        """(HTTP status to answer if refusing or 0 when allowed, current epoch, message)."""
        if self.client is None:
            return 0, None, "no Redis configured: unguarded"
        try:
            epochs.check_epoch(self.client, self.service, self.epoch)
            return 0, self.epoch, "current"
        except epochs.StaleEpoch as exc:
            return 409, exc.current, f"stale epoch {self.epoch}: the role moved on to epoch {exc.current}"
        except Exception as exc:  # noqa: BLE001 - any Redis failure means "cannot prove we are primary"
            return 503, None, f"cannot verify the epoch: {exc}"

    def look(self) -> LeaseView:
        """Whose the lease is now, or why Redis could not say (read as in :func:`outage.classify`)."""
        if self.client is None:
            return LeaseView("ours", "no Redis configured: unguarded")
        try:
            lease = leases.read(self.client, self.service)
        except Exception as exc:  # noqa: BLE001 - Redis unreachable: the reason decides, see watch_lease
            from continuity.redisd import diagnose, peer_address

            try:
                found = diagnose(exc, self.url, peer_address(self.client))
                verdict = outage.classify(found.symptom, found.sentinels)
            except Exception:  # noqa: BLE001 - an unexplained failure proves nothing: cut off
                verdict = outage.Verdict(outage.CUT_OFF, "unexplained failure")
            return LeaseView("error", f"lease unconfirmed: {exc}", verdict)
        if lease is None:
            return LeaseView("absent", "lease expired or released")
        if lease.node != self.node or lease.epoch != self.epoch:
            return LeaseView("taken", f"lease now held by {lease.node} at epoch {lease.epoch}")
        return LeaseView("ours", left=lease.ttl)


class Handler(BaseHTTPRequestHandler):
    server_version = "continuity-ledger/1"
    app: App

    def log_message(self, fmt: str, *args: Any) -> None:  # keep the service log for errors only
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body, sort_keys=True).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urlparse(self.path)
        if url.path == "/health":
            self._send(200, self.app.health())
        elif url.path == "/records":
            try:
                after = int(parse_qs(url.query).get("after", ["-1"])[0])
            except ValueError:
                self._send(400, {"error": "after must be an integer"})
                return
            with self.app.ledger.lock:
                recs = [r for r in self.app.ledger.records if r["seq"] > after]
            self._send(200, {"records": recs, "count": len(recs), **self.app.identity()})
        else:
            self._send(404, {"error": f"no such path {url.path}"})

    def do_POST(self) -> None:  # noqa: N802
        if urlparse(self.path).path != "/records":
            self._send(404, {"error": f"no such path {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._send(400, {"error": "body must be JSON"})
            return
        if not isinstance(body, dict) or not isinstance(body.get("seq"), int) or isinstance(body["seq"], bool):
            self._send(400, {"error": "body must be a JSON object with an integer 'seq'"})
            return
        status, body_out = self.app.write(body["seq"], {k: v for k, v in body.items() if k != "seq"})
        self._send(status, body_out)


class App:
    def __init__(self, service: str, node: str, port: int, epoch: int, directory: Path,
                 redis_url: str | None) -> None:
        self.service, self.node, self.port, self.epoch = service, node, port, epoch
        self.instance = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.ledger = Ledger(directory, self.instance)
        self.guard = EpochGuard(service, node, epoch, redis_url)
        self.floor = EpochFloor(directory).raise_to(epoch)
        # sync mode (blueprint ``replication: {mode: sync}``): a write is acknowledged only once the node's
        # replicator says enough standbys hold it durably (continuity/replication/local.py)
        self.gate = SyncGate(service, node, LEDGER)
        self.rejected = 0
        self.demoted: str | None = None

    def identity(self) -> dict[str, Any]:
        return {"service": self.service, "node": self.node, "epoch": self.epoch, "instance": self.instance}

    def health(self) -> dict[str, Any]:
        return {**self.identity(), "records": len(self.ledger.seqs), "last_seq": self.ledger.last_seq,
                "rejected": self.rejected, "pid": os.getpid(), "epoch_floor": self.floor}

    def write(self, seq: int, data: Any) -> tuple[int, dict[str, Any]]:
        with self.ledger.lock:
            if self.demoted:
                self.rejected += 1
                return 409, {"ok": False, "error": f"demoted: {self.demoted}", **self.identity()}
            if self.epoch < self.floor:
                self.rejected += 1
                return 409, {"ok": False, "error": f"epoch {self.epoch} is lower than epoch {self.floor}, the highest "
                             "this node has served this service at: fencing tokens never go back",
                             "current_epoch": None, **self.identity()}
            status, current, message = self.guard.check()
            if status:
                self.rejected += 1
                return status, {"ok": False, "error": message, "current_epoch": current, **self.identity()}
            fresh = self.ledger.append(seq, self.epoch, self.node, data)
            upto = self.ledger.size  # a retried duplicate waits for everything so far: it is in there
            last = self.ledger.records[-1] if self.ledger.records else {}
            position = (self.ledger.lines, upto, last.get("seq"), last.get("ts"))
        confirmed = self.gate.confirm(upto)  # outside the lock: concurrent writes wait together
        if not confirmed.ok:
            self.rejected += 1
            return 503, {"ok": False, "error": f"not replicated: {confirmed.detail}", "stored": True, "seq": seq,
                         "replication": confirmed.mode, **self.identity()}
        committed = self.commit(*position)
        if committed:
            self.rejected += 1
            return 503, {"ok": False, "error": f"cannot record the acknowledgement: {committed}", "stored": True,
                         "seq": seq, "replication": confirmed.mode, **self.identity()}
        return 200, {"ok": True, "seq": seq, "duplicate": not fresh, "replication": confirmed.mode,
                     **self.identity()}


    def commit(self, count: int, offset: int, last_seq: int | None, at: float | None) -> str:
        """Raise the service's committed position to this write before acknowledging it ("" when done or not
        needed, else why it could not be): what a failover's prepare step measures its loss against is then
        exactly what clients were told, even when this node's replicator was frozen or dead at the time."""
        spec = self.gate.spec()
        if self.guard.client is None or spec is None or LEDGER not in spec.ledgers:
            return ""
        try:
            replication_state.advance_committed(self.guard.client, replication_state.Committed(
                self.service, LEDGER, self.epoch, count, offset, last_seq, at, self.node, time.time()))
        except Exception as exc:  # noqa: BLE001 - Redis away: the write is kept but not promised
            return str(exc)[:200]
        return ""


# --- process management ------------------------------------------------------------------------------------------
def _files(node: str, service: str) -> tuple[Path, Path, Path]:
    d = service_dir(node, service)
    return d / "service.pid", d / "service.json", d / "service.log"


def _alive(pid: int) -> bool:
    """Alive and not a zombie (Linux /proc; the demo fleet runs on one Linux host)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(") ", 1)[1][:1] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _health(port: int, timeout: float = 0.5, host: str = "127.0.0.1") -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=timeout) as resp:  # noqa: S310
            doc = json.loads(resp.read())
            return doc if isinstance(doc, dict) else None
    except (urllib.error.URLError, OSError, ValueError):
        return None


def running(node: str, service: str) -> dict[str, Any] | None:
    """The instance's settings if its process is alive, else None."""
    pidfile, info, _ = _files(node, service)
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    if not _alive(pid):
        return None
    return {**_read_json(info), "pid": pid}


def start(service: str, node: str, port: int, epoch: int, timeout: float = START_TIMEOUT,
          host: str = "127.0.0.1") -> int:
    """Idempotent: an instance already serving this epoch on this address and port is left alone.

    ``host`` is the address it listens on: loopback for the one-host demo, the node's own
    address (the blueprint's ``{address}``) where nodes are separate hosts.
    Forks the instance and waits for its ready line on a pipe (EOF first: it failed, and its log says why).
    """
    cur = running(node, service)
    if cur is not None:
        h = _health(port, host=host)
        if cur.get("epoch") == epoch and cur.get("port") == port and h and h.get("epoch") == epoch:
            print(f"{service} already running on {node} with epoch {epoch} (pid {cur['pid']})")
            return 0
        stop(service, node)
    _, _, log = _files(node, service)
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the instance: its own session, its own log, never the hook's pipes (the hook waits on them)
        os.close(read_fd)
        code = 1
        try:
            os.setsid()
            _redirect_stdio(log)
            code = serve(service, node, port, epoch, ready_fd=write_fd, lock_timeout=timeout, host=host)
        except BaseException:  # noqa: BLE001 - the instance's last words go to its log
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    line = _await_line(read_fd, timeout)
    if line.startswith("ready "):
        print(f"{service} started on {node} port {port} epoch {epoch} (pid {pid})")
        return 0
    _kill(pid)
    if line:
        print(f"{service} on {node} did not become ready within {timeout:g}s", file=sys.stderr)
    else:
        tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
        print(f"{service} on {node} exited at start:\n{tail}", file=sys.stderr)
    return 1


def _redirect_stdio(log: Path) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)


def _await_line(fd: int, timeout: float) -> str:
    """The ready line from the instance; "" when it closed the pipe without one; "timeout" at the deadline."""
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return "timeout"
            chunk = os.read(fd, 256)
            if not chunk:
                return ""
            buf += chunk
        return buf.decode(errors="replace").splitlines()[0]
    finally:
        os.close(fd)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def stop(service: str, node: str, timeout: float = 5.0) -> int:
    pidfile, _, _ = _files(node, service)
    cur = running(node, service)
    if cur is None:
        pidfile.unlink(missing_ok=True)
        return 0
    pid = int(cur["pid"])
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.02)
        if not _alive(pid):
            break
    try:
        if int(pidfile.read_text().strip()) == pid:  # never the pid file of an instance started since
            pidfile.unlink()
    except (OSError, ValueError):
        pass
    print(f"{service} stopped on {node} (pid {pid})")
    return 0


def stop_all() -> list[str]:
    """Stop every sample instance under the state dir (used by `continuity up` at shutdown and by tests)."""
    stopped = []
    root = paths.state_dir() / "nodes"
    for pidfile in sorted(root.glob("*/*/service.pid")) if root.is_dir() else []:
        node, service = pidfile.parent.parent.name, pidfile.parent.name
        stop(service, node, timeout=3.0)
        stopped.append(f"{service}@{node}")
    return stopped


def _lease_policy() -> tuple[float, float]:
    """(lease_ttl, redis_outage_tolerance) from the blueprint, else the blueprint's defaults."""
    try:
        from continuity.blueprint import load_blueprint  # pydantic (~0.5 s): after serving, see watch_lease

        policy = load_blueprint(paths.blueprint_path()).policy
        return float(policy.lease_ttl), float(policy.redis_outage_tolerance)
    except Exception:  # noqa: BLE001 - the blueprint's defaults
        return 3.0, 60.0


def lease_verdict(view: LeaseView, now: float, last_ok: float, down_at: float | None, limit: float,
                  tolerance: float, grace_until: float) -> str | None:
    """Why the instance must stop after ``view``, or None. ``down_at``: the latest proof Redis was down.

    Redis down or failing over is ridden out as the node agent does (:func:`outage.must_stop`); so is the
    lease found missing right after such an outage — it expired while Redis was down, and the agent takes it
    back within a retry — for as long as the outage itself would have been. Outside an outage a missing lease
    means the agent let the role go: stop at once.
    """
    if view.kind == "ours":
        return None
    if view.kind == "taken":
        return view.why
    if view.kind == "error":
        return outage.must_stop(now, last_ok, down_at, limit, tolerance)
    if now < grace_until:
        return None  # the promoter acquires the lease just before starting us
    if down_at is not None and outage.must_stop(now, last_ok, down_at, limit, tolerance) is None:
        return None
    return view.why


class LeaseClock:
    """The instance's reckoning of its lease, counted from the holder's last renewal, as the agent counts.

    A look that finds the lease ours also reads how long it has left, so the renewal is dated to when it
    happened at Redis, not to when this instance last looked: an instance cut off just before its agent
    would have renewed again stops a lease period after that renewal, before the lease runs out at Redis.
    """

    def __init__(self, ttl: float, tolerance: float, started: float) -> None:
        self.ttl, self.tolerance, self.limit = ttl, tolerance, 0.75 * ttl
        self.grace_until = started + ttl
        self.last_ok = started
        self.down_at: float | None = None

    def step(self, view: LeaseView, sent: float, now: float) -> str | None:
        """Why the instance must stop after ``view`` (asked at ``sent``, answered by ``now``), or None."""
        if view.kind == "ours":
            renewed = sent - max(0.0, self.ttl - view.left) if view.left is not None else sent
            self.last_ok, self.down_at = renewed, None
            return None
        if view.kind == "error":
            assert view.verdict is not None
            self.down_at = sent if view.verdict.cause == outage.REDIS_DOWN else None
        why = lease_verdict(view, now, self.last_ok, self.down_at, self.limit, self.tolerance, self.grace_until)
        if why is not None and view.kind == "error":
            why = f"{why}: {view.why} ({view.verdict.why if view.verdict else 'unexplained'})"
        return why


def watch_lease(app: App, httpd: ThreadingHTTPServer, stop: threading.Event) -> None:
    """Self-fencing of the instance itself: stop serving as soon as the role is no longer ours.

    Cut off from Redis (timeouts, no sentinel answering) it stops within most of a lease period of the last
    renewal; through a Redis outage (refused, loading, a Sentinel promotion) it keeps serving, as its node
    agent keeps the role.
    """
    ttl, tolerance = _lease_policy()  # loaded here, not before serving: start-up time is recovery time
    clock = LeaseClock(ttl, tolerance, time.monotonic())
    while not stop.wait(min(0.2, ttl / 10)):
        sent = time.monotonic()
        view = app.guard.look()
        why = clock.step(view, sent, time.monotonic())
        if why is None:
            continue
        app.demoted = why  # from here every write is refused: this instant is when the instance gave up
        _emit_demoted(app, why, time.time())
        threading.Thread(target=httpd.shutdown, daemon=True).start()
        return


def _emit_demoted(app: App, why: str, at: float) -> None:
    """Record the self-demotion decided at ``at`` (wall clock), which importing redis-py must not push later."""
    try:
        from continuity.redisd import connect  # imports redis-py (~0.4 s): only when demoting with Redis set

        client = connect(socket_timeout=1) if settings.REDIS_URL.get() else None
        Pulse(client=client, path=paths.pulse_file(), node=app.node).emit(
            FAILOVER_SERVICE_DEMOTED, service=app.service, epoch=app.epoch,
            data={"reason": why, "pid": os.getpid(), "at": at, "records": len(app.ledger.seqs)})
    except Exception as exc:  # noqa: BLE001 - stopping matters more than telling
        print(f"could not record self-demotion: {exc}", file=sys.stderr)


def serve(service: str, node: str, port: int, epoch: int, ready_fd: int | None = None,
          lock_timeout: float = START_TIMEOUT, host: str = "127.0.0.1") -> int:
    """Run one instance: data lock, whole ledger loaded, listening — then the ready line — then serve.

    The ready line (``ready <pid> <port> <epoch>``) goes to ``ready_fd`` (the pipe ``start`` waits on)
    or, run in the foreground, to stdout.
    """
    directory = service_dir(node, service)
    try:
        lock_fd = lock_data_dir(directory, lock_timeout)
    except AlreadyServed as exc:
        print(f"{service} on {node}: {exc}", file=sys.stderr)
        return 1
    app = App(service, node, port, epoch, directory, settings.REDIS_URL.get())  # the whole ledger, before anything
    handler = type("BoundHandler", (Handler,), {"app": app})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    pidfile, info, _ = _files(node, service)
    tmp = info.with_name(info.name + ".tmp")
    tmp.write_text(json.dumps({"service": service, "node": node, "port": port, "epoch": epoch,
                               "pid": os.getpid(), "instance": app.instance, "started": time.time()}))
    os.replace(tmp, info)
    pidfile.write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    stop = threading.Event()
    if app.guard.client is not None and settings.SAMPLE_LEASE_WATCH.get():
        threading.Thread(target=watch_lease, args=(app, httpd, stop), daemon=True).start()
    _say_ready(ready_fd, f"ready {os.getpid()} {port} {epoch}")
    try:
        httpd.serve_forever(poll_interval=0.1)
    finally:
        stop.set()
        httpd.server_close()
        os.close(lock_fd)
    return 0


def _say_ready(fd: int | None, line: str) -> None:
    if fd is None:
        print(line, flush=True)
        return
    try:
        os.write(fd, (line + "\n").encode())
    except OSError:
        pass  # the starter gave up waiting; serving is still right (it will stop us or a probe will find us)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m continuity.sample.ledger_service",
                                     description="The sample ledger service (start/stop/serve).")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("start", "serve"):
        p = sub.add_parser(name)
        p.add_argument("--service", required=True)
        p.add_argument("--node", required=True)
        p.add_argument("--port", required=True, type=int)
        p.add_argument("--epoch", required=True, type=int)
        p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default: loopback).")
        if name == "serve":
            p.add_argument("--ready-fd", type=int, default=None, help="write the ready line here (else stdout)")
    p = sub.add_parser("stop")
    p.add_argument("--service", required=True)
    p.add_argument("--node", required=True)
    sub.add_parser("stop-all")
    args = parser.parse_args(argv)
    if args.cmd == "start":
        return start(args.service, args.node, args.port, args.epoch, host=args.host)
    if args.cmd == "serve":
        return serve(args.service, args.node, args.port, args.epoch, ready_fd=args.ready_fd, host=args.host)
    if args.cmd == "stop":
        return stop(args.service, args.node)
    for name in stop_all():
        print(f"stopped {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
