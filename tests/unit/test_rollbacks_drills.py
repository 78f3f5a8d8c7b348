"""Rollback registry: registered before injection, run newest first, survive a crash, finished on next start."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from continuity.blueprint import load_blueprint
from continuity.drills.faults import FaultContext, corruption, executors
from continuity.drills.rollbacks import RegistrationFailed, RollbackRegistry
from continuity.state import keys
from tests.helpers import ROOT


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()

    def __call__(self, action: dict) -> None:
        if action["name"] in self.fail:
            raise RuntimeError(f"{action['name']} broke")
        self.calls.append(action["name"])


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


def test_register_writes_both_stores_and_run_clears_them(tmp_path: Path, client) -> None:
    rec = Recorder()
    reg = RollbackRegistry(client, tmp_path, {"x": rec})
    reg.register("d1", {"kind": "x", "name": "first"})
    reg.register("d1", {"kind": "x", "name": "second"})
    assert client.sismember(keys.drill_pending_rollbacks(), "d1")
    assert len(client.hgetall(keys.drill_rollbacks("d1"))) == 2
    assert len(json.loads((tmp_path / "d1.json").read_text())) == 2
    out = reg.run("d1")
    assert out.ok and rec.calls == ["second", "first"]  # newest first: undo in reverse
    assert not client.sismember(keys.drill_pending_rollbacks(), "d1")
    assert not (tmp_path / "d1.json").exists()
    mirrored = [json.loads(v) for v in client.hgetall(keys.drill_rollbacks("d1")).values()]
    assert all(e["status"] == "done" for e in mirrored)
    assert all(e["action"] == {"kind": "x", "name": n} for e, n in zip(sorted(mirrored, key=lambda e: e["idx"]),
                                                                          ("first", "second"), strict=True))


def test_redis_gets_a_summary_never_how_to_run_it(tmp_path: Path, client) -> None:
    """argv, env, cwd, pids, paths and bytes stay in the 0600 local file; Redis sees kind and node only."""
    reg = RollbackRegistry(client, tmp_path / "rb", {"restart-process": Recorder()})
    reg.register("d7", {"kind": "restart-process", "node": "core-a", "argv": ["/bin/sh"], "env": {"A": "b"},
                        "cwd": "/", "name": "worker-core-a"})
    [stored] = [json.loads(v) for v in client.hgetall(keys.drill_rollbacks("d7")).values()]
    assert stored["action"] == {"kind": "restart-process", "node": "core-a", "name": "worker-core-a"}
    assert (tmp_path / "rb" / "d7.json").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "rb").stat().st_mode & 0o777 == 0o700


def test_unknown_kind_is_refused_before_injection(tmp_path: Path, client) -> None:
    reg = RollbackRegistry(client, tmp_path, {})
    with pytest.raises(RegistrationFailed):
        reg.register("d1", {"kind": "nope"})


def test_registration_survives_redis_down_via_the_local_file(tmp_path: Path) -> None:
    class Down:
        def __getattr__(self, name: str):
            def fail(*a, **k):
                raise ConnectionError("redis down")
            return fail

    rec = Recorder()
    reg = RollbackRegistry(Down(), tmp_path, {"x": rec})
    reg.register("d2", {"kind": "x", "name": "only"})
    assert reg.pending() == ["d2"]
    assert reg.recover_pending()[0].ok and rec.calls == ["only"]


def test_registration_fails_without_the_local_file_even_when_redis_takes_it(tmp_path: Path, client) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    reg = RollbackRegistry(client, blocker / "sub", {"x": Recorder()})
    with pytest.raises(RegistrationFailed):
        reg.register("d3", {"kind": "x", "name": "a"})


def test_failed_rollback_stays_pending_and_next_start_finishes_it(tmp_path: Path, client) -> None:
    rec = Recorder()
    rec.fail = {"b"}
    reg = RollbackRegistry(client, tmp_path, {"x": rec})
    for name in ("a", "b", "c"):
        reg.register("d4", {"kind": "x", "name": name})
    out = reg.run("d4")
    assert not out.ok and out.errors == ["x: b broke"] and rec.calls == ["c", "a"]
    assert reg.pending() == ["d4"]
    rec.fail = set()
    # a new registry = the runner's next start (after a crash or a failed rollback)
    again = RollbackRegistry(client, tmp_path, {"x": rec}).recover_pending()
    assert [o.ok for o in again] == [True]
    assert rec.calls == ["c", "a", "b"]  # only the one that had failed ran again
    assert reg.pending() == []


def test_another_host_sees_the_pending_drill_but_runs_nothing(tmp_path: Path, client) -> None:
    rec = Recorder()
    RollbackRegistry(client, tmp_path / "node-1", {"x": rec}).register("d5", {"kind": "x", "name": "z"})
    other = RollbackRegistry(client, tmp_path / "node-2", {"x": rec})  # no local file: not its rollback
    assert other.recover_pending() == [] and other.elsewhere() == ["d5"] and rec.calls == []
    outs = RollbackRegistry(client, tmp_path / "node-1", {"x": rec}).recover_pending()  # the host that made it
    assert [o.drill_id for o in outs] == ["d5"] and rec.calls == ["z"]


def test_a_done_mark_in_redis_does_not_skip_a_rollback(tmp_path: Path, client) -> None:
    rec = Recorder()
    reg = RollbackRegistry(client, tmp_path, {"x": rec})
    reg.register("d8", {"kind": "x", "name": "undo"})
    entry = json.loads(client.hget(keys.drill_rollbacks("d8"), "0"))
    client.hset(keys.drill_rollbacks("d8"), "0", json.dumps({**entry, "status": "done"}))
    assert reg.run("d8").ok and rec.calls == ["undo"]


def test_file_corruption_rollback_restores_bytes_and_keeps_appends(tmp_path: Path, client) -> None:
    ledger = tmp_path / "ledger.jsonl"
    lines = [json.dumps({"seq": i, "data": "x" * 20}) + "\n" for i in range(1, 8)]
    ledger.write_text("".join(lines))
    original = ledger.read_bytes()
    prepared = corruption(ledger, "garbage", 12)
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    reg = RollbackRegistry(client, tmp_path / "rb", executors(FaultContext(client, bp, tmp_path)))
    for action in prepared.rollbacks:
        reg.register("d6", action)
    prepared.inject()
    damaged = ledger.read_bytes()
    assert damaged != original and len(damaged) == len(original) and damaged.count(b"\n") == 7
    with open(ledger, "a") as f:  # the service keeps appending while the fault is active
        f.write(json.dumps({"seq": 8}) + "\n")
    assert reg.run("d6").ok
    assert ledger.read_bytes() == original + (json.dumps({"seq": 8}) + "\n").encode()
    assert reg.run("d6").ok  # idempotent


def test_file_corruption_rollback_refuses_to_clobber_a_rewritten_file(tmp_path: Path, client) -> None:
    f = tmp_path / "blob"
    f.write_bytes(bytes(range(256)))
    prepared = corruption(f, "flip", 8)
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    run = executors(FaultContext(client, bp, tmp_path))["restore-bytes"]
    prepared.inject()
    f.write_bytes(b"\x00" * 256)  # someone rewrote the file meanwhile
    with pytest.raises(Exception, match="changed"):
        run(prepared.rollbacks[0])


def test_redis_restart_refuses_a_server_whose_pid_runs_another_program(tmp_path: Path) -> None:
    """INFO is the server's word: a pid that is not the program it names is neither killed nor relaunched."""
    import os

    from continuity.drills.faults import FaultError, redis_restart
    from continuity.drills.targets import TargetPlan

    class Liar:
        def info(self, section: str) -> dict:
            return {"process_id": os.getpid(), "executable": "/bin/sh", "tcp_port": 6379}  # pid: this Python

        def config_get(self, name: str) -> dict:
            return {}

    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    with pytest.raises(FaultError, match="another program"):
        redis_restart(FaultContext(Liar(), bp, tmp_path), TargetPlan("broker", (), ()), {})
