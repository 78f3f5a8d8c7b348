"""Replication sessions between real replicators on loopback, with a real Redis holding the lease.

What a standby refuses: a primary whose answers are not signed with its key
(forged sender), a node that does not hold the lease, an epoch below one it
applied, and a primary of the same epoch with less than it already sent
(a node back on an empty disk). And what it does accept: a primary of a newer
epoch whose history parted from its own — the tail is kept aside, not merged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from continuity.blueprint import Blueprint, load_blueprint
from continuity.replication.authority import LeaseView, LeaseWatch
from continuity.replication.follower import Follower
from continuity.replication.node import Replicator
from continuity.state import epochs, leases
from continuity.state.heartbeats import SecretRing as KeyRing
from tests.failover_support import make_blueprint
from tests.helpers import wait_for

KEYS = {"core-a": b"a" * 32, "core-b": b"b" * 32, "core-c": b"c" * 32, "sat-1": b"s" * 32}


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def emit(self, kind: Any, *, node: str | None = None, service: str | None = None, epoch: int | None = None,
             data: dict[str, Any] | None = None) -> dict[str, Any]:
        ev = {"kind": str(kind), "node": node, "service": service, "epoch": epoch, "data": data or {}}
        self.events.append(ev)
        return ev

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e["data"] for e in self.events if e["kind"] == kind]


class Holds(LeaseWatch):
    """A lease watch that always says this node holds the role: a primary that lies, or missed the news."""

    def __init__(self, node: str, epoch: int) -> None:
        super().__init__(None, [])
        self.node, self.epoch = node, epoch

    def view(self, service: str) -> LeaseView:
        return LeaseView(service, self.node, self.epoch, self.clock(), self.clock() + 3600)

    def start(self) -> LeaseWatch:
        return self


@pytest.fixture
def fleet(tmp_path: Path, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Blueprint:
    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    return load_blueprint(make_blueprint(tmp_path, ("ledger",), third_node=True))


@pytest.fixture
def reps() -> Iterator[list[Replicator]]:
    made: list[Replicator] = []
    yield made
    for r in made:
        r.stop()


def ledger(state: Path, node: str) -> Path:
    return state / "nodes" / node / "ledger" / "ledger.jsonl"


def write(path: Path, seqs: range, epoch: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        for s in seqs:
            fh.write(json.dumps({"seq": s, "epoch": epoch}).encode() + b"\n")


def start(bp: Blueprint, node: str, rds: Any, reps: list[Replicator], keys: dict[str, bytes] | None = None,
          watch: LeaseWatch | None = None, pulse: Recorder | None = None, manage: bool = True) -> Replicator:
    r = Replicator(bp, node, rds, KeyRing(keys or KEYS), pulse=pulse)
    if watch is not None:
        r.ctx.leases = watch
    if not manage:
        r.services = []  # no follower of its own: the test aims one (see follow)
    reps.append(r.start())
    return r


def follow(r: Replicator, primary: str) -> Follower:
    """A follower of the ledger aimed at ``primary`` whoever holds the lease (what the manager never does)."""
    ds = r.bp.services["ledger"].spec.data[0]
    f = Follower(r.ctx, "ledger", ds, primary).start()
    r.followers[("ledger", "ledger.jsonl")] = f
    return f


def test_a_primary_that_cannot_sign_as_itself_is_refused_and_nothing_is_applied(fleet, rds, state_dir, reps) -> None:
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    write(ledger(state_dir, "core-a"), range(1, 51))
    forged = dict(KEYS, **{"core-a": b"x" * 32})  # the impostor has no core-a key: it makes one up
    start(fleet, "core-a", rds, reps, keys=forged)
    seen = Recorder()
    start(fleet, "core-b", rds, reps, pulse=seen)
    refused = wait_for(lambda: seen.of("replication.refused"), timeout=20, what="the forged primary refused")
    assert refused[0]["reason"] == "bad-mac" and refused[0]["peer"] == "core-a" and refused[0]["side"] == "standby"
    assert not ledger(state_dir, "core-b").exists() or ledger(state_dir, "core-b").read_bytes() == b""


def test_a_node_not_holding_the_lease_is_refused_before_anything_is_touched(fleet, rds, state_dir, reps) -> None:
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    write(ledger(state_dir, "core-c"), range(1, 31))  # core-c believes it is primary, and has other data
    start(fleet, "core-c", rds, reps, watch=Holds("core-c", 1))
    write(ledger(state_dir, "core-b"), range(100, 110))
    before = ledger(state_dir, "core-b").read_bytes()
    seen = Recorder()
    b = start(fleet, "core-b", rds, reps, pulse=seen, manage=False)
    follow(b, "core-c")
    refused = wait_for(lambda: seen.of("replication.refused"), timeout=20, what="core-c refused by core-b")
    assert refused[0]["reason"] == "not-holder"
    assert ledger(state_dir, "core-b").read_bytes() == before  # not cut to core-c's history, not appended


def test_frames_sent_after_the_lease_moved_on_are_not_applied(fleet, rds, state_dir, reps) -> None:
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    write(ledger(state_dir, "core-a"), range(1, 21))
    start(fleet, "core-a", rds, reps, watch=Holds("core-a", 1))  # keeps sending whatever the lease says
    seen = Recorder()
    r_b = start(fleet, "core-b", rds, reps, pulse=seen, manage=False)
    follow(r_b, "core-a")  # stays aimed at core-a when the role moves (the manager would re-aim it)
    wait_for(lambda: ledger(state_dir, "core-b").exists() and ledger(state_dir, "core-b").read_bytes() ==
             ledger(state_dir, "core-a").read_bytes(), timeout=20, what="core-b following core-a")
    assert leases.release(rds, "ledger", "core-a", 1)  # the role moves: core-c at epoch 2
    assert epochs.bump_epoch(rds, "ledger", 1, candidate="core-c") == 2
    assert leases.acquire(rds, "ledger", "core-c", 2, 3600)
    wait_for(lambda: (v := r_b.ctx.leases.view("ledger")) is not None and v.node == "core-c", timeout=10,
             what="core-b reading the new lease")
    write(ledger(state_dir, "core-a"), range(21, 41))  # the old primary goes on writing and sending
    refused = wait_for(lambda: [e for e in seen.of("replication.refused") if e["peer"] == "core-a"], timeout=20,
                       what="the old primary's frames refused")
    assert refused[0]["reason"] in ("not-holder", "stale-epoch") or "not-holder" in refused[0]["detail"]
    held = [json.loads(line)["seq"] for line in ledger(state_dir, "core-b").read_text().splitlines()]
    assert max(held) == 20


def test_an_epoch_below_the_highest_applied_is_refused_even_when_redis_says_otherwise(fleet, rds, state_dir,
                                                                                      reps) -> None:
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)  # a Redis that lost its data: epoch 1 again
    write(ledger(state_dir, "core-a"), range(1, 11))
    start(fleet, "core-a", rds, reps)
    replica = state_dir / "nodes" / "core-b" / "ledger" / ".replica"
    replica.mkdir(parents=True)
    (replica / "state.json").write_text(json.dumps({"epoch": 5, "primary": "core-c"}))
    seen = Recorder()
    start(fleet, "core-b", rds, reps, pulse=seen)
    refused = wait_for(lambda: seen.of("replication.refused"), timeout=20, what="epoch 1 refused by core-b")
    assert refused[0]["reason"] == "below-applied"
    assert not ledger(state_dir, "core-b").exists()


def test_a_same_epoch_primary_holding_less_is_refused_and_a_newer_epochs_history_wins(fleet, rds, state_dir,
                                                                                       reps) -> None:
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    write(ledger(state_dir, "core-a"), range(1, 101))
    a = start(fleet, "core-a", rds, reps)
    seen = Recorder()
    b = start(fleet, "core-b", rds, reps, pulse=seen)
    copy = ledger(state_dir, "core-b")
    wait_for(lambda: copy.exists() and copy.read_bytes() == ledger(state_dir, "core-a").read_bytes(), timeout=20,
             what="core-b holding 100 records")
    # core-a comes back on an empty disk, same epoch: its ledger restarts from nothing
    a.stop()
    reps.remove(a)
    os.remove(ledger(state_dir, "core-a"))
    write(ledger(state_dir, "core-a"), range(1, 6))
    start(fleet, "core-a", rds, reps)
    refused = wait_for(lambda: [e for e in seen.of("replication.refused") if e["reason"] == "primary-behind"],
                       timeout=30, what="the emptied primary refused")
    assert "holds 5 of the 100" in refused[0]["detail"]
    assert len(copy.read_text().splitlines()) == 100  # kept
    # a proper failover: core-c promoted at epoch 2 with the first 80 records, then writes its own
    assert leases.release(rds, "ledger", "core-a", 1)
    assert epochs.bump_epoch(rds, "ledger", 1, candidate="core-c") == 2
    lines = copy.read_text().splitlines(keepends=True)
    ledger(state_dir, "core-c").parent.mkdir(parents=True, exist_ok=True)
    ledger(state_dir, "core-c").write_text("".join(lines[:80]))
    write(ledger(state_dir, "core-c"), range(200, 210), epoch=2)
    assert leases.acquire(rds, "ledger", "core-c", 2, 3600)
    # the service's other source (its SQLite image) reached core-c's epoch first, as it does when its session
    # wins the race: the ledger copy still holds only epoch 1 and must judge core-c by its own history (it was
    # refused for good as "primary-behind" when the service's highest epoch stood for every source)
    b.ctx.raise_highest("ledger", 2, "core-c", "ledger.db")
    start(fleet, "core-c", rds, reps)
    wait_for(lambda: copy.read_bytes() == ledger(state_dir, "core-c").read_bytes(), timeout=30,
             what="core-b following core-c's history")
    diverged = seen.of("replication.diverged")
    assert len(diverged) == 1 and diverged[0]["records"] == 20 and diverged[0]["at"] == 80
    assert Path(diverged[0]["kept"]).read_text() == "".join(lines[80:])  # kept aside, whole


def _answer_once(answer: Any) -> tuple[int, Any]:
    """A one-shot server on loopback: reads a hello, writes ``answer(hello)`` (a plain frame), closes."""
    import socket
    import threading

    from continuity.replication import wire

    srv = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = srv.accept()
        with conn:
            hello = wire.read_plain(conn.makefile("rb"))
            out = conn.makefile("wb")
            wire.write_plain(out, answer(hello))
            out.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


@pytest.mark.parametrize(("case", "reason"), [("wrong-key", "bad-mac"), ("other-hello", "replayed"),
                                              ("no-epoch", "malformed")])
def test_a_welcome_must_be_signed_by_the_primary_for_this_very_hello(fleet, rds, case: str, reason: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from continuity.replication import handshake, wire
    from continuity.replication.wire import WireError

    def answer(hello: dict[str, Any]) -> dict[str, Any]:
        key = b"x" * 32 if case == "wrong-key" else KEYS["core-a"]
        doc = {"t": "welcome", "v": 1, "primary": "core-a", "standby": hello["standby"], "epoch": 1, "nonce": "n",
               "hello": "an older hello" if case == "other-hello" else hello["nonce"]}
        if case == "no-epoch":
            del doc["epoch"]
        return wire.sign(key, doc)

    port, t = _answer_once(answer)
    r = Replicator(fleet, "core-b", rds, KeyRing(KEYS))
    monkeypatch.setattr(r.ctx, "endpoint", lambda node: ("127.0.0.1", port))
    with pytest.raises(WireError) as exc:
        handshake.connect(r.ctx, "core-a", "ledger", "ledger.jsonl", "ledger")
    assert exc.value.reason == reason
    t.join(5)


@pytest.mark.parametrize(("change", "reason"), [
    ({"key": b"x" * 32}, "bad-mac"),  # claims to be core-b without its key
    ({"standby": "sat-1", "key": KEYS["sat-1"]}, "not-a-standby"),  # signed, but not in the placement
    ({"source": "other.jsonl"}, "unknown-source"),
    ({"kind": "sqlite"}, "unknown-source"),
    ({"encrypt": True}, "encryption-mismatch"),
])
def test_the_primary_answers_a_hello_it_cannot_accept_with_a_refusal_only(fleet, rds, state_dir, reps,
                                                                          change: dict[str, Any],
                                                                          reason: str) -> None:
    import socket

    from continuity.replication import wire

    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    write(ledger(state_dir, "core-a"), range(1, 11))
    a = start(fleet, "core-a", rds, reps)
    change = dict(change)
    key = change.pop("key", KEYS["core-b"])
    hello = {"t": "hello", "v": 1, "standby": "core-b", "primary": "core-a", "service": "ledger",
             "source": "ledger.jsonl", "kind": "ledger", "nonce": "n1", "encrypt": False, **change}
    with socket.create_connection(a.ctx.endpoint("core-a"), timeout=5) as sock:
        out = sock.makefile("wb")
        wire.write_plain(out, wire.sign(key, hello))
        out.close()
        answer = wire.read_plain(sock.makefile("rb"))
    assert answer == {"t": "refused", "reason": reason}  # no nonce, no epoch, nothing else


def test_sqlite_and_directories_reach_the_standby_and_a_small_change_costs_little(tmp_path: Path, state_dir: Path,
                                                                                 rds, reps, monkeypatch) -> None:
    import sqlite3

    import yaml

    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    path = make_blueprint(tmp_path, ("keystore",))
    doc = yaml.safe_load(path.read_text())
    svc = doc["domains"]["payments"]["services"]["keystore"]
    svc["data"] = [{"kind": "directory", "path": "data/files", "interval": "200ms"},
                   {"kind": "sqlite", "path": "data/keys.db", "interval": "200ms"}]
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    bp = load_blueprint(path)
    assert leases.bootstrap(rds, "keystore", "core-b", 3600)
    files = state_dir / "nodes" / "core-b" / "keystore" / "files"
    (files / "sub").mkdir(parents=True)
    (files / "sub" / "big.bin").write_bytes(os.urandom(4 << 20))
    (files / "k1").write_text("key one")
    db = sqlite3.connect(state_dir / "nodes" / "core-b" / "keystore" / "keys.db")
    db.execute("CREATE TABLE k (id INTEGER PRIMARY KEY, v BLOB)")
    db.executemany("INSERT INTO k VALUES (?, ?)", [(i, os.urandom(500)) for i in range(4000)])
    db.commit()
    start(bp, "core-b", rds, reps)
    a = start(bp, "core-a", rds, reps)
    mirror = state_dir / "nodes" / "core-a" / "keystore" / "files"
    replica = state_dir / "nodes" / "core-a" / "keystore" / "keys.db"

    def same() -> bool:
        want = {p.relative_to(files): p.read_bytes() for p in files.rglob("*") if p.is_file()}
        got = {p.relative_to(mirror): p.read_bytes() for p in mirror.rglob("*") if p.is_file()} if mirror.is_dir() \
            else {}
        rows = sqlite3.connect(replica).execute("SELECT count(*), sum(length(v)) FROM k").fetchone() \
            if replica.exists() else None
        return want == got and rows == db.execute("SELECT count(*), sum(length(v)) FROM k").fetchone()

    wait_for(same, timeout=30, what="core-a holding core-b's directory and database")
    followers = {src: f for (_, src), f in a.followers.items()}
    before = {src: f.received() for src, f in followers.items()}
    big = bytearray((files / "sub" / "big.bin").read_bytes())
    big[3_000_000:3_000_008] = b"CHANGED!"
    (files / "sub" / "big.bin").write_bytes(bytes(big))
    db.execute("UPDATE k SET v = x'00' WHERE id = 7")
    db.commit()
    wait_for(same, timeout=30, what="the changes on core-a")
    dir_cost = followers["files"].received() - before["files"]
    db_cost = followers["keys.db"].received() - before["keys.db"]
    assert dir_cost < (1 << 20) + 64 * 1024, f"{dir_cost} bytes for 8 changed bytes of a 4 MiB file"
    assert db_cost < 64 * 1024, f"{db_cost} bytes for one changed row"


def test_a_primary_that_lost_its_lease_stops_sending_even_to_a_standby_that_would_take_anything(
        fleet, rds, state_dir, reps) -> None:
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    write(ledger(state_dir, "core-a"), range(1, 21))
    a = start(fleet, "core-a", rds, reps)
    gullible = start(fleet, "core-b", rds, reps, watch=Holds("core-a", 1), manage=False)  # believes core-a holds
    f = follow(gullible, "core-a")
    wait_for(lambda: ledger(state_dir, "core-b").exists() and ledger(state_dir, "core-b").read_bytes() ==
             ledger(state_dir, "core-a").read_bytes(), timeout=20, what="core-b following core-a")
    assert leases.release(rds, "ledger", "core-a", 1)
    wait_for(lambda: (v := a.ctx.leases.view("ledger")) is not None and v.node is None, timeout=10,
             what="core-a reading that it no longer holds the lease")
    write(ledger(state_dir, "core-a"), range(21, 41))
    wait_for(lambda: "no longer confirmed as primary" in f.progress.last_error, timeout=20,
             what="core-a ending the session")
    held = [json.loads(line)["seq"] for line in ledger(state_dir, "core-b").read_text().splitlines()]
    assert max(held) == 20


def test_with_encryption_configured_both_ends_seal_every_frame_and_replicate_as_before(tmp_path: Path,
                                                                                      state_dir: Path, rds, reps,
                                                                                      monkeypatch) -> None:
    import yaml

    monkeypatch.setenv("CONTINUITY_STATE", str(state_dir))
    path = make_blueprint(tmp_path, ("ledger",))
    doc = yaml.safe_load(path.read_text())
    doc["policy"]["replication"]["encrypt"] = True
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    bp = load_blueprint(path)
    assert bp.policy.replication.encrypt
    assert leases.bootstrap(rds, "ledger", "core-a", 3600)
    write(ledger(state_dir, "core-a"), range(1, 51))
    start(bp, "core-a", rds, reps)
    b = start(bp, "core-b", rds, reps)
    wait_for(lambda: ledger(state_dir, "core-b").exists() and ledger(state_dir, "core-b").read_bytes() ==
             ledger(state_dir, "core-a").read_bytes(), timeout=20, what="core-b following core-a, encrypted")
    assert b.ctx.encrypt
