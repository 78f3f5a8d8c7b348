"""Prepare's data source: the pure decision, service backup sets, and the all-or-nothing restore into a directory."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import fakeredis
import pytest

from continuity.backup import api, records
from continuity.backup.config import load_backup_config
from continuity.backup.restore import walk
from continuity.blueprint import load_blueprint
from continuity.errors import ConfigError
from continuity.failover import steps
from continuity.failover.context import FailoverContext
from continuity.failover.prepare import DataState, at_least_as_fresh, decide, loss, needs_more
from continuity.services.layout import service_dir
from continuity.state import keys
from continuity.state import replication as replication_state

ROOT = Path(__file__).resolve().parents[2]
BP = ROOT / "ops" / "blueprint.yml"


# --- the decision (pure) ------------------------------------------------------------------------------------------
def test_an_own_replica_holding_every_committed_record_is_kept_without_asking_anyone() -> None:
    committed = DataState(count=10)
    assert not needs_more(DataState(count=10), committed)
    assert decide(DataState(count=10), {"core-c": DataState(count=12)}, DataState(count=11), committed).source == \
        "replica"
    assert needs_more(DataState(count=9), committed) and needs_more(None, committed)
    assert needs_more(DataState(count=10), None)  # nothing known committed: look around
    assert needs_more(DataState(count=10), committed, force="backup")


def test_the_freshest_reachable_standby_is_fetched_when_the_own_replica_is_behind() -> None:
    d = decide(DataState(count=5), {"core-b": DataState(count=8), "core-c": DataState(count=9)}, None,
               DataState(count=9))
    assert (d.source, d.node) == ("standby", "core-c")
    assert decide(None, {"core-c": DataState(count=1)}, None).node == "core-c"  # the replaced machine
    # a tie keeps what is already here, then the standby met first (placement order)
    assert decide(DataState(count=9), {"core-b": DataState(count=9)}, None).source == "replica"
    assert decide(DataState(count=5), {"core-b": DataState(count=9), "core-c": DataState(count=9)}, None).node == \
        "core-b"


def test_the_snapshot_only_when_it_is_fresher_than_every_surviving_copy() -> None:
    assert decide(DataState(count=5), {"core-c": DataState(count=7)}, DataState(7, 1.0, 8)).source == "snapshot"
    assert decide(DataState(count=5), {"core-c": DataState(count=8)}, DataState(7, 1.0, 8)).source == "standby"
    assert decide(None, {}, DataState(18, 1.5)).source == "snapshot"
    assert decide(DataState(count=9), {}, DataState(7, 1.0, 8)).source == "replica"
    d = decide(None, {}, None)  # nothing anywhere: keep what there is (nothing) rather than fail the failover
    assert d.source == "replica" and "nothing survives" in d.reason


def test_forcing_backup_restores_the_snapshot_unless_the_own_copy_is_fresher() -> None:
    d = decide(None, {"core-c": DataState(count=30)}, DataState(18, 1.5, 18), force="backup")
    assert d.source == "snapshot" and "CONTINUITY_FAILOVER_PREPARE" in d.reason
    assert decide(DataState(count=25), {}, DataState(18, 1.5, 18), force="backup").source == "replica"
    with pytest.raises(ValueError):
        decide(None, {}, None, force="tape")


def test_freshness_uses_count_then_seq_then_time() -> None:
    assert at_least_as_fresh(DataState(1, 1.0, 10), DataState(99, 99.0, 9))
    assert at_least_as_fresh(DataState(10, 1.0), DataState(9, 99.0))
    assert not at_least_as_fresh(DataState(None, 99.0), DataState(1, 1.0))
    assert at_least_as_fresh(DataState(None, 5.0), DataState(None, 4.0))
    assert not at_least_as_fresh(None, DataState(None, 0.0))


def test_the_loss_is_measured_against_the_committed_position() -> None:
    committed = DataState(last_seq=120, time=1000.0, count=100)
    assert loss(DataState(last_seq=93, time=997.5, count=93), committed) == (7, 2.5)
    assert loss(DataState(count=100, time=1000.0), committed) == (0, 0.0)
    assert loss(DataState(count=104, time=1001.0), committed) == (0, 0.0)  # more than committed loses nothing
    assert loss(None, committed) == (100, None)  # nothing at all: every record, over a span nobody can tell
    assert loss(DataState(count=3), None) == (None, None)  # nothing known committed: nothing to measure against


# --- service backup sets ------------------------------------------------------------------------------------------
def _write_cfg(tmp_path: Path, service: str = "ledger", extra: str = "") -> Path:
    cfg = tmp_path / "backup.yml"
    cfg.write_text(
        "version: 1\nsets:\n"
        "  ledger-live:\n"
        "    node: core-a\n"
        f"    sources:\n      - {{kind: service, service: {service}}}\n{extra}"
        f"    repository: {tmp_path / 'repo'}\n"
        "    schedule: 30s\n"
        "    key: {password_env: CONTINUITY_PASSWORD}\n"
        "    verify: {node: core-b, schedule: 1m}\n")
    return cfg


def test_unknown_service_is_a_config_error_with_file_and_line(tmp_path: Path) -> None:
    bp = load_blueprint(BP)
    with pytest.raises(ConfigError) as exc:
        load_backup_config(_write_cfg(tmp_path, "ledgr"), blueprint_nodes=bp.nodes, blueprint_services=bp.services)
    assert exc.value.exit_code == 2
    assert "backup.yml:6" in str(exc.value) and "unknown service 'ledgr'" in str(exc.value)
    with pytest.raises(ConfigError) as exc:  # a service source has no path: it moves with the primary
        load_backup_config(_write_cfg(tmp_path, "ledger", "      - {kind: service, service: ledger, path: x}\n"))
    assert "backup.yml:" in str(exc.value)


def test_the_sample_config_protects_the_live_ledger() -> None:
    cfg = api.load_fleet_backup_config(ROOT / "ops" / "backup" / "continuity.yml", root=ROOT)
    name = api.service_set_for(cfg, "ledger")
    assert name is not None and cfg.sets[name].interval() is not None and cfg.sets[name].interval() <= 60
    assert {s.name for s in api.resolve_sources(cfg, cfg.sets[name], "core-b")} == {"ledger.jsonl", "ledger.db"}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("CONTINUITY_PULSE_FILE", str(tmp_path / "state" / "pulse_history.jsonl"))
    monkeypatch.setenv("CONTINUITY_PASSWORD", "prepare-pw")
    monkeypatch.setenv("CONTINUITY_BACKUP_CONFIG", str(_write_cfg(tmp_path)))
    monkeypatch.setenv("CONTINUITY_ROOT", str(ROOT))
    return tmp_path


def write_ledger(d: Path, seqs: range) -> None:
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "ledger.jsonl", "a", encoding="utf-8") as fh:
        for s in seqs:
            fh.write(json.dumps({"seq": s, "data": "x" * 50}) + "\n")
    db = sqlite3.connect(d / "ledger.db")
    db.execute("CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, data TEXT)")
    db.executemany("INSERT INTO records VALUES (?, ?)", [(s, "x") for s in seqs])
    db.commit()
    db.close()


def _cfg() -> api.LoadedConfig:
    from continuity import paths

    return api.load_fleet_backup_config(paths.backup_config_path(), root=ROOT, blueprint=BP)


def test_restore_service_data_swaps_in_a_proven_snapshot(env: Path) -> None:
    cfg = _cfg()
    write_ledger(service_dir("core-a", "ledger"), range(1, 11))
    snap = api.run_backup_set("ledger-live", cfg, node="core-a")
    assert snap["files"] == 2 and not snap["partial"]
    write_ledger(service_dir("core-a", "ledger"), range(11, 16))  # after the snapshot: what a restore loses
    target = service_dir("core-b", "ledger")
    target.mkdir(parents=True)
    (target / "service.log").write_text("kept: describes the instance, not its data\n")
    (target / "stale.tmp").write_text("not in the snapshot")
    res = api.restore_service_data("ledger-live", cfg, target, snapshot="latest-verified", verified=snap["id"])
    assert res.snapshot == snap["id"] and res.ledger_last_seq == 10 and res.ledger_records == 10
    assert res.snapshot_ts is not None and res.files == 2
    assert sorted(p.name for p in target.iterdir()) == ["ledger.db", "ledger.jsonl", "service.log"]
    lines = (target / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 11))
    assert sorted(p.name for p in target.parent.iterdir()) == ["ledger"]  # no staging or old dir left behind
    with pytest.raises(api.UsageError):
        api.restore_service_data("ledger-live", cfg, target, snapshot="latest-verified", verified=None)


def test_a_damaged_snapshot_is_refused_named_and_leaves_the_target_untouched(env: Path) -> None:
    cfg = _cfg()
    write_ledger(service_dir("core-a", "ledger"), range(1, 6))
    snap = api.run_backup_set("ledger-live", cfg, node="core-a")
    repo = api._repo(cfg, cfg.sets["ledger-live"])
    node = dict(walk(repo, repo.find_snapshot(snap["id"])["tree"]))["ledger.jsonl"]
    e = repo.index.get(bytes.fromhex(node["content"][0]))  # flip a byte inside the ledger's content blob
    path = next(p for p in (env / "repo").rglob(f"{e.pack}*") if p.is_file())
    raw = bytearray(path.read_bytes())
    raw[e.offset + e.length // 2] ^= 0x10
    path.write_bytes(bytes(raw))
    target = service_dir("core-b", "ledger")
    write_ledger(target, range(1, 3))
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    with pytest.raises(api.RestoreRefused) as exc:
        api.restore_service_data("ledger-live", cfg, target, snapshot=snap["id"])
    assert "ledger.jsonl" in str(exc.value) and snap["id"][:8] in str(exc.value)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["ledger"]


def test_an_interrupted_swap_is_put_back(env: Path) -> None:
    target = service_dir("core-b", "ledger")
    old = target.parent / ".ledger.restore-old"
    write_ledger(old, range(1, 3))
    assert api.recover_interrupted_swap(target)
    assert (target / "ledger.jsonl").exists() and not old.exists()


# --- the prepare step, forced through the backup engine -----------------------------------------------------------
def test_prepare_restores_the_verified_snapshot_and_records_its_age(env: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    bp = load_blueprint(BP)
    monkeypatch.setenv("CONTINUITY_BLUEPRINT", str(BP))
    cfg = _cfg()
    write_ledger(service_dir("core-a", "ledger"), range(1, 8))
    snap = api.run_backup_set("ledger-live", cfg, node="core-a")
    write_ledger(service_dir("core-a", "ledger"), range(8, 12))
    ctx = FailoverContext.from_dict({"service": "ledger", "candidate": "core-b", "old_primary": "core-a", "epoch": 2,
                                     "record_id": "r1"}, bp)
    # no verified snapshot yet: the forced path has nothing to restore and keeps the (empty) local copy
    monkeypatch.setenv("CONTINUITY_FAILOVER_PREPARE", "backup")
    assert steps.prepare(client, bp, ctx)["source"] == "replica"
    client.hset(keys.backup_status("ledger-live"), mapping={"last_verified": snap["id"]})
    out = steps.prepare(client, bp, ctx, now=lambda: records.timestamp(snap["time"]) + 42.0)
    assert out["source"] == "snapshot" and out["mode"] == "restore" and out["snapshot"] == snap["id"]
    assert out["rpo_achieved"] == pytest.approx(42.0, abs=0.01) and out["ledger_last_seq"] == 7
    assert out["starts_from"] == {"records": 7, "last_seq": 7}
    lines = (service_dir("core-b", "ledger") / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, 8))


def test_prepare_never_takes_the_old_primarys_files_and_says_what_was_lost(env: Path) -> None:
    """The old primary's directory holds 11 records (same host, in this test): none of them is taken. What the
    candidate has (4) is where the new epoch starts, the loss is measured against the committed position, and
    the committed position is re-based at the new epoch (else the new primary would be behind it for good)."""
    client = fakeredis.FakeRedis(decode_responses=True)
    bp = load_blueprint(BP)
    write_ledger(service_dir("core-a", "ledger"), range(1, 12))
    own = service_dir("core-b", "ledger")
    write_ledger(own, range(1, 5))
    with open(own / "ledger.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"seq": 5, "data": "torn')  # a line still being written is not a record
    replication_state.advance_committed(client, replication_state.Committed(
        "ledger", "ledger.jsonl", 1, 11, 999, 11, 1000.0, "core-a", 1000.0))
    ctx = FailoverContext.from_dict({"service": "ledger", "candidate": "core-b", "old_primary": "core-a", "epoch": 2,
                                     "record_id": "r1"}, bp)
    out = steps.prepare(client, bp, ctx)
    assert out["source"] == "replica" and out["mode"] == "local", out
    assert out["starts_from"] == {"records": 4, "last_seq": 4}
    assert out["committed"] == {"epoch": 1, "records": 11, "last_seq": 11, "node": "core-a"}
    assert out["loss_records"] == 7
    seqs = [json.loads(x)["seq"] for x in (own / "ledger.jsonl").read_text().splitlines()[:4]]
    assert seqs == [1, 2, 3, 4]
    rebased = replication_state.read_committed(client, ["ledger"])["ledger"]["ledger.jsonl"]
    assert (rebased.epoch, rebased.count, rebased.node, rebased.how) == (2, 4, "core-b", "rebased")
    # the detail is merged into the record's step entry: it must not shadow the entry's own fields
    assert not set(out) & {"attempt", "step", "node", "start", "end", "ok", "duration", "redeliveries"}
