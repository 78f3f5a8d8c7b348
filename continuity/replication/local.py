"""The local call a service makes to its node's replicator: "tell me when position P is on enough standbys".

This is how a service implements sync mode (the sample ledger does, see
``continuity/sample/ledger_service.py``): after its own durable write, and
before acknowledging it, it asks the replicator of its node to wait until the
write's end offset is held durably by the standbys the blueprint requires.

The socket: a Unix stream socket in the Linux abstract namespace, named
``continuity-replication/<tag>`` where ``tag`` is the first 24 hex digits of
SHA-256 of ``"<state dir>|<node>"`` (:func:`address`). Abstract, because a
path under the node's data root can exceed the 108 bytes a socket path may
have; reachable only from the node's own network namespace (on separate hosts,
the node itself). The call is read-only (it waits, it changes nothing), so it
needs no credentials.

Protocol: one JSON object per line each way, any number of calls per connection::

    -> {"op": "wait", "service": "ledger", "source": "ledger.jsonl", "offset": 12345, "timeout": 2.0}
    <- {"ok": true, "mode": "sync", "acked_by": ["core-b"], "reason": ""}

``offset`` is the byte offset just past the write (the ledger's size after it).
``ok`` false means: do not acknowledge the write (``reason`` says why: too few
standbys reachable under ``on_no_standby: refuse``, or not acknowledged within
the timeout). ``mode`` is ``sync``, ``degraded`` (acknowledged without enough
standbys, ``on_no_standby: degrade``) or ``async`` (the service is not in sync
mode: acknowledge at once). ``{"op": "state"}`` returns the replicator's streams
and standbys (for people and benchmarks).

:class:`SyncGate` is the client side a Python service uses; it also decides what
to do when the replicator itself cannot be reached (the declared policy, as for
no standby).
"""

from __future__ import annotations

import hashlib
import json
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuity import paths

CALL_SLACK = 1.0  # a wait call's socket timeout is its own timeout plus this
POOL = 32  # idle connections a client keeps to its replicator


def address(node: str, state: Path | None = None) -> str:
    base = Path(state) if state is not None else paths.state_dir()
    tag = hashlib.sha256(f"{base.resolve()}|{node}".encode()).hexdigest()[:24]
    return f"\0continuity-replication/{tag}"


def _close(conn: tuple[socket.socket, Any]) -> None:
    for part in (conn[1], conn[0]):
        try:
            part.close()
        except OSError:
            pass


# --- server ------------------------------------------------------------------------------------------------------
Answer = Callable[[dict[str, Any]], dict[str, Any]]


class LocalServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of writers connecting at once is not refused

    def __init__(self, node: str, answer: Answer, state: Path | None = None) -> None:
        self.answer = answer
        super().__init__(address(node, state), _LocalHandler)


class _LocalHandler(socketserver.StreamRequestHandler):
    server: Any

    def handle(self) -> None:
        for line in self.rfile:
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
                out = self.server.answer(req)
            except (ValueError, TypeError, KeyError) as exc:
                out = {"ok": False, "mode": "unknown", "reason": f"bad request: {exc}"}
            try:
                self.wfile.write((json.dumps(out, sort_keys=True) + "\n").encode())
                self.wfile.flush()
            except OSError:
                return


# --- client ------------------------------------------------------------------------------------------------------
class LocalClient:
    """Calls to one node's replicator over a small pool of connections (reopened after any failure).

    A pool and not one connection per thread: a threading HTTP server (the sample ledger's) runs each
    request on a thread of its own, so per-thread connections would mean a connect per write.
    """

    def __init__(self, node: str, state: Path | None = None) -> None:
        self.addr = address(node, state)
        self._idle: list[tuple[socket.socket, Any]] = []
        self._lock = threading.Lock()

    def _take(self, timeout: float) -> tuple[socket.socket, Any]:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect(timeout)
        conn[0].settimeout(timeout)
        return conn

    def _connect(self, timeout: float) -> tuple[socket.socket, Any]:
        """A new connection; a full accept queue is waited out, not reported as an unreachable replicator.

        A UNIX socket with a timeout is non-blocking underneath, and Linux answers EAGAIN at once when the
        server's backlog is full (TCP would wait): on a loaded machine a burst of writers fills it while the
        accept loop waits for the CPU.
        """
        deadline = time.monotonic() + timeout
        pause = 0.001
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(0.001, deadline - time.monotonic()))
                sock.connect(self.addr)
                return (sock, sock.makefile("rb"))
            except BlockingIOError:
                sock.close()
                if time.monotonic() + pause >= deadline:
                    raise TimeoutError("the replicator's accept queue stayed full") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.05)
            except OSError:
                sock.close()
                raise

    def _give(self, conn: tuple[socket.socket, Any]) -> None:
        with self._lock:
            if len(self._idle) < POOL:
                self._idle.append(conn)
                return
        _close(conn)

    def call(self, req: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
        """One request and its answer; OSError when the replicator cannot be reached or did not answer in time."""
        data = (json.dumps(req) + "\n").encode()
        for attempt in (0, 1):
            conn = None
            try:
                conn = self._take(timeout)
                conn[0].sendall(data)
                line = conn[1].readline()
                if not line:
                    raise ConnectionResetError("the replicator closed the connection")
                out = json.loads(line)
                self._give(conn)
                return out if isinstance(out, dict) else {}
            except (OSError, ValueError) as exc:
                if conn is not None:
                    _close(conn)
                # a stale pooled connection gets one more try; a timed-out wait is never sent twice
                if attempt or isinstance(exc, TimeoutError):
                    raise OSError(f"replicator call failed: {exc}") from None
        raise OSError("unreachable")  # pragma: no cover

    def wait(self, service: str, source: str, offset: int, timeout: float) -> dict[str, Any]:
        return self.call({"op": "wait", "service": service, "source": source, "offset": int(offset),
                          "timeout": timeout}, timeout=timeout + CALL_SLACK)

    def state(self) -> dict[str, Any]:
        return self.call({"op": "state"})


@dataclass(frozen=True)
class Confirmation:
    """May the service acknowledge the write? ``mode`` says how it is replicated; ``detail`` why not, if not."""

    ok: bool
    mode: str
    detail: str = ""
    acked_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateSpec:
    """What a service needs of its blueprint replication settings (read once, in the background)."""

    mode: str
    timeout: float
    policy: str
    ledgers: tuple[str, ...] = ()  # the service's declared ledger sources (file names): whose acks are committed


def load_spec(service: str) -> GateSpec:
    """The service's replication settings from the blueprint (its last good copy if an edit broke it). A service
    the blueprint does not declare, or no blueprint at all, is not replicated ("off"); a blueprint that cannot be
    read at all raises, and the gate then refuses writes rather than guess a sync service is async."""
    # pydantic (~0.5 s): only when a service asks, on the gate's own thread, off the service's start path
    from continuity.blueprint import load_blueprint
    from continuity.config_watch import load_or_last_good

    path = paths.blueprint_path()
    if not path.exists():
        return GateSpec("off", 0.0, "refuse")
    bp = load_or_last_good(load_blueprint, path, paths.last_good("blueprint.yml")).value
    sv = bp.services.get(service)
    if sv is None:
        return GateSpec("off", 0.0, "refuse")
    from continuity.replication.context import source_name

    ledgers = tuple(source_name(ds) for ds in sv.spec.data if ds.kind == "ledger")
    return GateSpec(sv.replication.mode, sv.replication.timeout, sv.replication.policy, ledgers)


class SyncGate:
    """What a service calls between its own durable write and acknowledging it (:meth:`confirm`).

    The blueprint is read on a thread started with the gate, so serving starts at once; a write that
    arrives before it is read waits for it (a sync service must never acknowledge asynchronously by
    accident). In async (or off) mode :meth:`confirm` returns at once without any call.
    """

    def __init__(self, service: str, node: str, source: str, state: Path | None = None,
                 loader: Callable[[str], GateSpec] = load_spec) -> None:
        self.service = service
        self.source = source
        self.client = LocalClient(node, state)
        self._spec: GateSpec | None = None
        self._error: str = ""
        self._ready = threading.Event()
        threading.Thread(target=self._load, args=(loader,), daemon=True, name="continuity-sync-gate").start()

    def _load(self, loader: Callable[[str], GateSpec]) -> None:
        try:
            self._spec = loader(self.service)
        except Exception as exc:  # noqa: BLE001 - reported on every write until fixed
            self._error = f"cannot read the replication settings: {exc}"
        finally:
            self._ready.set()

    def spec(self, timeout: float = 30.0) -> GateSpec | None:
        self._ready.wait(timeout)
        return self._spec

    def confirm(self, offset: int) -> Confirmation:
        spec = self.spec()
        if spec is None:
            return Confirmation(False, "unknown", self._error or "replication settings not loaded")
        if spec.mode != "sync":
            return Confirmation(True, spec.mode)
        try:
            out = self.client.wait(self.service, self.source, offset, spec.timeout)
        except OSError as exc:
            if spec.policy == "degrade":
                return Confirmation(True, "degraded", f"the node's replicator is unreachable: {exc}")
            return Confirmation(False, "sync", f"the node's replicator is unreachable: {exc}")
        return Confirmation(bool(out.get("ok")), str(out.get("mode") or "sync"), str(out.get("reason") or ""),
                            tuple(out.get("acked_by") or ()))
