"""The local call services make for sync mode: the gate's decisions, and the socket under a burst of writers."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from continuity.replication.local import GateSpec, LocalServer, SyncGate


def serve(tmp_path: Path, answer: Any) -> LocalServer:
    srv = LocalServer("core-a", answer, state=tmp_path)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def gate(tmp_path: Path, mode: str, policy: str = "refuse") -> SyncGate:
    return SyncGate("ledger", "core-a", "ledger.jsonl", state=tmp_path,
                    loader=lambda service: GateSpec(mode, 0.5, policy))


def test_in_async_mode_a_write_is_confirmed_without_asking_anyone(tmp_path: Path) -> None:
    c = gate(tmp_path, "async").confirm(10)  # no replicator is listening: it is not asked
    assert c.ok and c.mode == "async"


@pytest.mark.parametrize(("policy", "ok", "mode"), [("refuse", False, "sync"), ("degrade", True, "degraded")])
def test_with_the_replicator_unreachable_a_sync_service_follows_its_policy(tmp_path: Path, policy: str, ok: bool,
                                                                          mode: str) -> None:
    c = gate(tmp_path, "sync", policy).confirm(10)
    assert (c.ok, c.mode) == (ok, mode) and "unreachable" in c.detail


def test_settings_that_cannot_be_read_refuse_writes_rather_than_guess(tmp_path: Path) -> None:
    def broken(service: str) -> GateSpec:
        raise ValueError("blueprint.yml:3: not a blueprint")

    c = SyncGate("ledger", "core-a", "ledger.jsonl", state=tmp_path, loader=broken).confirm(10)
    assert not c.ok and "not a blueprint" in c.detail


def test_the_replicators_answer_is_what_the_write_gets(tmp_path: Path) -> None:
    asked: list[dict[str, Any]] = []

    def answer(req: dict[str, Any]) -> dict[str, Any]:
        asked.append(req)
        ok = req["offset"] <= 100
        return {"ok": ok, "mode": "sync", "acked_by": ["core-b"] if ok else [], "reason": "" if ok else "too far"}

    srv = serve(tmp_path, answer)
    try:
        g = gate(tmp_path, "sync")
        good, bad = g.confirm(100), g.confirm(101)
        assert good.ok and good.acked_by == ("core-b",) and not bad.ok and bad.detail == "too far"
        assert asked[0] == {"op": "wait", "service": "ledger", "source": "ledger.jsonl", "offset": 100, "timeout": 0.5}
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_burst_of_writers_on_short_lived_threads_is_served_without_a_refused_connection(tmp_path: Path) -> None:
    """A threading HTTP server runs every request on a new thread: 200 of them at once must all get an answer."""
    def answer(req: dict[str, Any]) -> dict[str, Any]:
        time.sleep(0.01)  # a sync wait takes a moment: connections pile up meanwhile
        return {"ok": True, "mode": "sync", "acked_by": ["core-b"], "reason": ""}

    srv = serve(tmp_path, answer)
    g = gate(tmp_path, "sync")
    results: list[Any] = []
    try:
        threads = [threading.Thread(target=lambda: results.append(g.confirm(1))) for _ in range(200)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(results) == 200 and all(r.ok for r in results), [r.detail for r in results if not r.ok][:3]
    finally:
        srv.shutdown()
        srv.server_close()


def test_a_full_accept_queue_is_waited_out_not_reported_as_an_unreachable_replicator(tmp_path: Path) -> None:
    """Linux answers EAGAIN at once to a UNIX connect when the backlog is full: the client must wait, not fail."""
    import json
    import socket

    from continuity.replication.local import LocalClient, address

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address("core-a", tmp_path))
    listener.listen(0)  # room for one pending connection: the other callers find the queue full
    accepting = threading.Event()

    def late_server() -> None:
        accepting.wait(10)
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as r:
                r.readline()
                conn.sendall((json.dumps({"ok": True}) + "\n").encode())

    threading.Thread(target=late_server, daemon=True).start()
    results: list[Any] = []
    errors: list[str] = []

    def caller() -> None:
        try:
            results.append(LocalClient("core-a", tmp_path).call({"op": "state"}, timeout=20))
        except OSError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the callers meet a queue nobody accepts from yet
    accepting.set()
    for t in threads:
        t.join(30)
    listener.close()
    assert not errors and len(results) == 8, errors[:2]
