"""The sample ledger service: sequence-numbered records in a JSON ledger and a SQLite database, over HTTP.

It exists so a failover moves real data and real clients: hooks start and stop
it, the node agent probes ``/health``, clients follow the route to it. Every
write is role-guarded: before appending, the service checks that the epoch it
was started with is still the service's current epoch in Redis, so a primary
that was fenced (paused, cut off, superseded) answers 409 instead of accepting a
write nobody will ever see again.

    python -m continuity.sample.ledger_service start --service S --node N --port P --epoch E
    python -m continuity.sample.ledger_service stop --service S --node N

``start`` returns once the instance answers healthy (or fails after a
deadline); the instance itself runs detached, with its pid and settings in
``$CONTINUITY_STATE/nodes/<node>/<service>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from continuity import paths, settings
from continuity.events import FAILOVER_SERVICE_DEMOTED
from continuity.pulse import Pulse
from continuity.services.layout import service_dir
from continuity.state import epochs, leases

LEDGER = "ledger.jsonl"
DATABASE = "ledger.db"
START_TIMEOUT = 15.0


class Ledger:
    """The data: the JSON ledger is the source of truth, the SQLite table is rebuilt from it if behind."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = directory / LEDGER
        self.lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.seqs: set[int] = set()
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
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

    @property
    def last_seq(self) -> int | None:
        return max(self.seqs) if self.seqs else None

    def append(self, seq: int, epoch: int, node: str, data: Any) -> bool:
        """Durably append; False when ``seq`` is already there (a client retry after a lost answer)."""
        if seq in self.seqs:
            return False
        rec = {"seq": seq, "epoch": epoch, "node": node, "ts": time.time(), "data": data}
        self.fh.write(json.dumps(rec, sort_keys=True) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.db.execute("INSERT OR IGNORE INTO records VALUES (?,?,?,?,?)",
                        (seq, epoch, node, rec["ts"], json.dumps(data)))
        self.db.commit()
        self.records.append(rec)
        self.seqs.add(seq)
        return True


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
        self.client = None
        if redis_url:
            import redis

            self.client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=0.5,
                                               socket_connect_timeout=0.5)

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

    def lease_lost(self, last_ok: float, ttl: float, now: float) -> str | None:
        """Why we must stop now, or None while the lease is ours (or unconfirmed for less than most of a TTL)."""
        if self.client is None:
            return None
        try:
            lease = leases.read(self.client, self.service)
        except Exception as exc:  # noqa: BLE001 - unreachable Redis: we cannot renew either
            if now - last_ok > 0.75 * ttl:
                return f"lease unconfirmed for {now - last_ok:.2f}s: {exc}"
            return None
        if lease is None:
            return "lease expired or released"
        if lease.node != self.node or lease.epoch != self.epoch:
            return f"lease now held by {lease.node} at epoch {lease.epoch}"
        return None


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
        self.ledger = Ledger(directory)
        self.guard = EpochGuard(service, node, epoch, redis_url)
        self.rejected = 0
        self.demoted: str | None = None

    def identity(self) -> dict[str, Any]:
        return {"service": self.service, "node": self.node, "epoch": self.epoch}

    def health(self) -> dict[str, Any]:
        return {**self.identity(), "records": len(self.ledger.seqs), "last_seq": self.ledger.last_seq,
                "rejected": self.rejected, "pid": os.getpid()}

    def write(self, seq: int, data: Any) -> tuple[int, dict[str, Any]]:
        with self.ledger.lock:
            if self.demoted:
                self.rejected += 1
                return 409, {"ok": False, "error": f"demoted: {self.demoted}", **self.identity()}
            status, current, message = self.guard.check()
            if status:
                self.rejected += 1
                return status, {"ok": False, "error": message, "current_epoch": current, **self.identity()}
            fresh = self.ledger.append(seq, self.epoch, self.node, data)
        return 200, {"ok": True, "seq": seq, "duplicate": not fresh, **self.identity()}


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


def _health(port: int, timeout: float = 0.5) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as resp:  # noqa: S310
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


def start(service: str, node: str, port: int, epoch: int, timeout: float = START_TIMEOUT) -> int:
    """Idempotent: an instance already serving this epoch on this port is left alone."""
    cur = running(node, service)
    if cur is not None:
        h = _health(port)
        if cur.get("epoch") == epoch and cur.get("port") == port and h and h.get("epoch") == epoch:
            print(f"{service} already running on {node} with epoch {epoch} (pid {cur['pid']})")
            return 0
        stop(service, node)
    pidfile, _, log = _files(node, service)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "continuity.sample.ledger_service", "serve", "--service", service,
            "--node", node, "--port", str(port), "--epoch", str(epoch)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            print(f"{service} on {node} exited with {proc.returncode} at start:\n{tail}", file=sys.stderr)
            return 1
        h = _health(port, timeout=0.3)
        if h and h.get("epoch") == epoch and h.get("pid") == proc.pid:
            print(f"{service} started on {node} port {port} epoch {epoch} (pid {proc.pid})")
            return 0
        time.sleep(0.02)
    proc.kill()
    print(f"{service} on {node} did not become healthy within {timeout:.0f}s", file=sys.stderr)
    return 1


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
    pidfile.unlink(missing_ok=True)
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


def _lease_ttl() -> float:
    try:
        from continuity.blueprint import load_blueprint  # pydantic (~0.5 s): after serving, see watch_lease

        return float(load_blueprint(paths.blueprint_path()).policy.lease_ttl)
    except Exception:  # noqa: BLE001 - the blueprint's default
        return 3.0


def watch_lease(app: App, httpd: ThreadingHTTPServer, stop: threading.Event) -> None:
    """Self-fencing of the instance itself: stop serving as soon as the role is no longer ours."""
    ttl = _lease_ttl()  # loaded here, not before serving: start-up time is recovery time
    grace_until = time.monotonic() + ttl  # the promoter acquires the lease just before starting us
    last_ok = time.monotonic()
    while not stop.wait(min(0.2, ttl / 10)):
        now = time.monotonic()
        why = app.guard.lease_lost(last_ok, ttl, now)
        if why is None:
            last_ok = now
            continue
        if now < grace_until and why == "lease expired or released":
            continue
        app.demoted = why
        _emit_demoted(app, why)
        threading.Thread(target=httpd.shutdown, daemon=True).start()
        return


def _emit_demoted(app: App, why: str) -> None:
    try:
        from continuity.redisd import connect  # imports redis-py (~0.4 s): only when demoting with Redis set

        client = connect(socket_timeout=1) if settings.REDIS_URL.get() else None
        Pulse(client=client, path=paths.pulse_file(), node=app.node).emit(
            FAILOVER_SERVICE_DEMOTED, service=app.service, epoch=app.epoch,
            data={"reason": why, "pid": os.getpid(), "at": time.time(), "records": len(app.ledger.seqs)})
    except Exception as exc:  # noqa: BLE001 - stopping matters more than telling
        print(f"could not record self-demotion: {exc}", file=sys.stderr)


def serve(service: str, node: str, port: int, epoch: int) -> int:
    directory = service_dir(node, service)
    app = App(service, node, port, epoch, directory, settings.REDIS_URL.get())
    handler = type("BoundHandler", (Handler,), {"app": app})
    httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
    httpd.daemon_threads = True
    pidfile, info, _ = _files(node, service)
    tmp = info.with_name(info.name + ".tmp")
    tmp.write_text(json.dumps({"service": service, "node": node, "port": port, "epoch": epoch,
                               "pid": os.getpid(), "started": time.time()}))
    os.replace(tmp, info)
    pidfile.write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    stop = threading.Event()
    if app.guard.client is not None and settings.SAMPLE_LEASE_WATCH.get():
        threading.Thread(target=watch_lease, args=(app, httpd, stop), daemon=True).start()
    try:
        httpd.serve_forever(poll_interval=0.1)
    finally:
        stop.set()
        httpd.server_close()
    return 0


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
    p = sub.add_parser("stop")
    p.add_argument("--service", required=True)
    p.add_argument("--node", required=True)
    sub.add_parser("stop-all")
    args = parser.parse_args(argv)
    if args.cmd == "start":
        return start(args.service, args.node, args.port, args.epoch)
    if args.cmd == "serve":
        return serve(args.service, args.node, args.port, args.epoch)
    if args.cmd == "stop":
        return stop(args.service, args.node)
    for name in stop_all():
        print(f"stopped {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
