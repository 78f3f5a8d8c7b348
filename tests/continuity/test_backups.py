"""Restore drills against sandbox data: the backup sets of ops/backup/continuity.yml, proven restorable.

The sample data (ledger, SQLite, files) is copied into a sandbox, backed up
through the same entry points the Celery tasks call, and restored into
another sandbox by a drill that re-hashes every file, runs integrity_check
and recounts ledger records.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from continuity.backup import api
from continuity.backup.config import load_backup_config
from continuity.backup.repository import Repository
from continuity.backup.storage.local import LocalBackend

ROOT = Path(__file__).resolve().parents[2]


def _sample_data(dest: Path) -> None:
    src = ROOT / "examples" / "data"
    if (src / "ledger.jsonl").exists() and (src / "ledger.db").exists():
        shutil.copytree(src, dest)
        return
    # the sample generator has not run in this checkout: make equivalent data
    (dest / "files").mkdir(parents=True)
    (dest / "telemetry").mkdir()
    (dest / "ledger.jsonl").write_text("".join(json.dumps({"seq": i, "amount_cents": i * 7}) + "\n"
                                               for i in range(1, 201)))
    con = sqlite3.connect(dest / "ledger.db")
    con.execute("CREATE TABLE entries (seq INTEGER PRIMARY KEY, amount INTEGER)")
    con.executemany("INSERT INTO entries VALUES (?, ?)", [(i, i) for i in range(1, 201)])
    con.commit()
    con.close()
    (dest / "files" / "README.txt").write_text("sample")
    (dest / "telemetry" / "orbit.csv").write_text("t,x\n0,1\n")


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> api.LoadedConfig:
    """The shipped config, rooted in a sandbox holding a copy of the sample data."""
    root = tmp_path / "project"
    _sample_data(root / "examples" / "data")
    (root / "ops" / "backup").mkdir(parents=True)
    shutil.copy(ROOT / "ops" / "backup" / "continuity.yml", root / "ops" / "backup" / "continuity.yml")
    monkeypatch.setenv("CONTINUITY_PASSWORD", "drill-password")
    monkeypatch.setenv("CONTINUITY_STATE", str(root / ".continuity"))  # repositories are "{state}/repos/..."
    from continuity.blueprint import load_blueprint
    from continuity.services.layout import service_dir

    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    cfg = load_backup_config(root / "ops" / "backup" / "continuity.yml", root=root, blueprint_nodes=bp.nodes,
                             blueprint_services=bp.services)
    for s in cfg.sets.values():  # a service set protects the live data in its node's service directory
        for svc in s.services():
            live = service_dir(s.node, svc)
            live.mkdir(parents=True, exist_ok=True)
            for f in ("ledger.jsonl", "ledger.db"):
                shutil.copy(root / "examples" / "data" / f, live / f)
    return cfg


def test_every_configured_set_restores_in_a_drill(sandbox: api.LoadedConfig) -> None:
    for name, s in sandbox.sets.items():
        snap = api.run_backup_set(name, sandbox, task_key=f"{name}:t1", node=s.node if s.services() else None)
        assert snap["partial"] is False and snap["files"] >= 1
        drill = api.restore_drill_set(name, sandbox)
        assert drill["ok"], drill
        assert drill["snapshot"] == snap["id"] and drill["source_node"] == s.node
        assert s.verify is not None and s.verify.node != s.node  # the drill belongs on another node
        assert drill["files_hashed"] == drill["files"] and not drill["damaged"]
        kinds = {src.kind for src in api.resolve_sources(sandbox, s, s.node)}
        assert len(drill["sqlite"]) == ("sqlite" in kinds) and len(drill["ledgers"]) == ("ledger" in kinds)


def test_drill_proves_ledger_counts_and_sqlite_integrity(sandbox: api.LoadedConfig) -> None:
    data = sandbox.root / "examples" / "data"
    records = sum(1 for line in (data / "ledger.jsonl").read_text().splitlines() if line.strip())
    last = json.loads((data / "ledger.jsonl").read_text().splitlines()[-1]).get("seq")
    api.run_backup_set("core-a-ledger", sandbox)
    with open(data / "ledger.jsonl", "a") as f:
        f.write(json.dumps({"seq": (last or 0) + 1, "amount_cents": 1}) + "\n")
    second = api.run_backup_set("core-a-ledger", sandbox)
    assert second["files_unmodified"] >= 1  # the files directory was not re-read
    drill = api.restore_drill_set("core-a-ledger", sandbox)
    ledger = drill["ledgers"][0]
    assert ledger["ok"] and ledger["records"] == records + 1 and ledger["last_seq"] == (last or 0) + 1
    assert drill["sqlite"][0]["integrity"] == "ok" and drill["sqlite"][0]["ok"]


def test_drill_names_damage_and_fails(sandbox: api.LoadedConfig) -> None:
    snap = api.run_backup_set("core-a-ledger", sandbox)
    repo_dir = Path(sandbox.resolve(sandbox.sets["core-a-ledger"].repository))
    for pack in (repo_dir / "data").rglob("*"):
        if pack.is_file():
            raw = bytearray(pack.read_bytes())
            raw[len(raw) // 3] ^= 0xFF
            pack.write_bytes(bytes(raw))
    drill = api.restore_drill_set("core-a-ledger", sandbox, snapshot=snap["id"])
    assert not drill["ok"]
    assert drill["damaged"], "a drill over corrupted packs must name what it could not restore"
    verify = api.verify_set("core-a-ledger", sandbox, read_data_subset="100%")
    assert not verify["ok"] and verify["damaged_packs"]


def test_idempotent_snapshot_task(sandbox: api.LoadedConfig) -> None:
    a = api.run_backup_set("core-a-ledger", sandbox, task_key="beat:42")
    b = api.run_backup_set("core-a-ledger", sandbox, task_key="beat:42")
    assert a["id"] == b["id"] and b["reused"]


def test_replication_then_drill_from_the_copy(sandbox: api.LoadedConfig) -> None:
    api.run_backup_set("sat-1-telemetry", sandbox)  # satellite snapshots locally ...
    res = api.copy_set("sat-1-telemetry", sandbox)  # ... and forwards to core when in contact
    assert res["ok"] and len(res["targets"][0]["copied"]) == 1
    assert api.copy_set("sat-1-telemetry", sandbox)["targets"][0]["copied"] == []
    core = Repository.open(LocalBackend(sandbox.resolve(".continuity/repos/main")), b"drill-password")
    copied = [s for s in core.load_snapshots()[0] if s.get("set") == "sat-1-telemetry"]
    assert len(copied) == 1
    from continuity.backup.verify import restore_drill

    assert restore_drill(core, copied[0]["id"])["ok"]


def test_forget_set_applies_configured_retention(sandbox: api.LoadedConfig, tmp_path: Path) -> None:
    cfg_path = Path(sandbox.file)
    doc = yaml.safe_load(cfg_path.read_text())
    doc["sets"]["core-a-ledger"]["retention"] = {"keep_last": 2}
    cfg_path.write_text(yaml.safe_dump(doc))
    cfg = load_backup_config(cfg_path, root=sandbox.root)
    ids = [api.run_backup_set("core-a-ledger", cfg, task_key=str(i))["id"] for i in range(4)]
    res = api.forget_set("core-a-ledger", cfg, now=datetime.now(UTC) + timedelta(days=1), prune_after=True)
    assert [k["id"] for k in res["keep"]] == ids[:1:-1] and len(res["remove"]) == 2
    assert api.verify_set("core-a-ledger", cfg, read_data_subset="100%")["ok"]
    assert api.restore_drill_set("core-a-ledger", cfg)["ok"]


def test_a_second_copy_of_a_set_steps_aside_while_one_runs(sandbox: api.LoadedConfig) -> None:
    """Two copies of one set at once would both send what the destination lacks: the second one waits its turn."""
    import fcntl
    import os

    from continuity import paths

    api.run_backup_set("sat-1-telemetry", sandbox)
    lock = paths.state_dir() / "backup-copy" / "sat-1-telemetry.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)  # another copy of the set, holding its lock
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        res = api.copy_set("sat-1-telemetry", sandbox)
        assert res["skipped"] == "another copy of this set is running" and res["targets"] == []
        assert not res["complete"]
    finally:
        os.close(fd)
    res = api.copy_set("sat-1-telemetry", sandbox)
    assert res["complete"] and len(res["targets"][0]["copied"]) == 1
