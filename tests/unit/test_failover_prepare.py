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
from continuity.failover.prepare import DataState, at_least_as_fresh, decide
from continuity.services.layout import service_dir
from continuity.state import keys

ROOT = Path(__file__).resolve().parents[2]
BP = ROOT / "ops" / "blueprint.yml"


# --- the decision (pure) ------------------------------------------------------------------------------------------
def test_fresh_local_copy_is_kept_whatever_else_exists() -> None:
    local = DataState(20, 100.0)
    assert decide(local, DataState(20, 200.0), None).source == "local"
    assert decide(local, None, DataState(15, 90.0)).source == "local"
    assert decide(local, None, DataState(20, 90.0)).source == "local"  # a tie keeps what is already here


def test_readable_old_primary_is_the_fast_path_when_newer() -> None:
    d = decide(DataState(5, 1.0), DataState(20, 2.0), DataState(18, 1.5))
    assert d.source == "replica" and "replica copy" in d.reason
    assert decide(None, DataState(1, 1.0), None).source == "replica"


def test_stale_local_and_unreachable_primary_restore_the_verified_snapshot() -> None:
    assert decide(DataState(5, 1.0), None, DataState(18, 1.5)).source == "backup"
    assert decide(None, None, DataState(18, 1.5)).source == "backup"
    # nothing better anywhere: keep what there is (possibly nothing) rather than fail the failover
    assert decide(None, None, None).source == "local"


def test_forcing_backup_ignores_the_old_primarys_directory() -> None:
    d = decide(None, DataState(30, 3.0), DataState(18, 1.5), force="backup")
    assert d.source == "backup" and "CONTINUITY_FAILOVER_PREPARE" in d.reason
    # ...but never throws away a local copy that is fresher than the snapshot
    assert decide(DataState(25, 2.0), DataState(30, 3.0), DataState(18, 1.5), force="backup").source == "local"
    with pytest.raises(ValueError):
        decide(None, None, None, force="tape")


def test_freshness_uses_seq_before_time() -> None:
    assert at_least_as_fresh(DataState(10, 1.0), DataState(9, 99.0))
    assert not at_least_as_fresh(DataState(None, 99.0), DataState(1, 1.0))
    assert at_least_as_fresh(DataState(None, 5.0), DataState(None, 4.0))
    assert not at_least_as_fresh(None, DataState(None, 0.0))


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
    assert steps.prepare(client, bp, ctx)["source"] == "local"
    client.hset(keys.backup_status("ledger-live"), mapping={"last_verified": snap["id"]})
    out = steps.prepare(client, bp, ctx, now=lambda: records.timestamp(snap["time"]) + 42.0)
    assert out["source"] == "backup" and out["mode"] == "restore" and out["snapshot"] == snap["id"]
    assert out["rpo_achieved"] == pytest.approx(42.0, abs=0.01) and out["ledger_last_seq"] == 7
    lines = (service_dir("core-b", "ledger") / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(1, 8))
    # the fast path when the old primary is readable and nothing is forced
    monkeypatch.delenv("CONTINUITY_FAILOVER_PREPARE")
    out = steps.prepare(client, bp, ctx)
    assert out["source"] == "replica copy" and out["ledger_last_seq"] == 11
