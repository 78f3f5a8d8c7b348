"""Backup tasks on real workers: snapshot on the source node, restore drill on another, status in Redis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from celery import Celery

from continuity.backup import api
from continuity.state import keys
from tests.helpers import ROOT, signed_as_control

pytestmark = pytest.mark.slow

CONFIG = """\
version: 1
nodes:
  core-a: {{role: core}}
  core-b: {{role: core}}
sets:
  ledger:
    node: core-a
    sources:
      - {{kind: ledger, path: {data}/ledger.jsonl}}
      - {{kind: sqlite, path: {data}/ledger.db}}
      - {{kind: directory, path: {data}/files}}
    repository: {repo}
    schedule: 5m
    rpo: 15m
    retention: {{keep_last: 2}}
    key: {{password_env: CONTINUITY_PASSWORD}}
    verify: {{node: core-b, schedule: 1h}}
    replicate_to:
      - repository: {offsite}
"""


@pytest.fixture
def backup_env(tmp_path: Path, worker_env: dict[str, str]) -> dict[str, str]:
    data = tmp_path / "data"
    shutil.copytree(ROOT / "examples" / "data", data)
    repo = tmp_path / "repo"
    cfg = tmp_path / "backup.yml"
    cfg.write_text(CONFIG.format(data=data, repo=repo, offsite=tmp_path / "offsite"))
    api.open_repository(str(repo), b"correct horse", create=True)
    return dict(worker_env, CONTINUITY_BACKUP_CONFIG=str(cfg), CONTINUITY_PASSWORD="correct horse")


def test_snapshot_then_restore_drill_on_another_node(start_worker, backup_env, redis_url, rds, state_dir) -> None:
    start_worker("core-a", env=backup_env)
    start_worker("core-b", env=backup_env)
    app = Celery("probe", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    with signed_as_control(state_dir):  # beat and the CLI sign what they send; so does this test
        snap = app.send_task("continuity.backup.snapshot", args=["ledger"], queue="node.core-a").get(timeout=120)
        assert snap["files"] >= 5 and not snap["partial"]
        status = rds.hgetall(keys.backup_status("ledger"))
        assert status["last_snapshot"] == snap["id"] and status["node"] == "core-a"
        # what the metrics export: the snapshot's duration and the repository's size on disk afterwards
        assert float(status["last_snapshot_duration"]) == snap["duration"]
        repo = Path(backup_env["CONTINUITY_BACKUP_CONFIG"]).parent / "repo"
        stored = sum(f.stat().st_size for d in ("data", "index", "snapshots") for f in (repo / d).rglob("*")
                     if f.is_file())
        assert int(status["repository_bytes"]) == stored > 0

        drill = app.send_task("continuity.backup.verify", args=["ledger"], queue="node.core-b").get(timeout=120)
        assert drill["ok"], drill
        assert not drill["damaged"] and not drill["hash_mismatches"]
        status = rds.hgetall(keys.backup_status("ledger"))
        assert status["last_verified"] == drill["snapshot"]
        assert status["last_verify_node"] == "core-b"
        assert float(status["last_verify_duration"]) == drill["duration"]
        assert float(status["last_verified_time"]) == float(status["last_verify_time"])  # it passed
        assert float(status["verified_age"]) >= 0 and status["within_rpo"] == "1"

        # a restore drill refuses to run on the node that made the backup
        bad = app.send_task("continuity.backup.verify", args=["ledger"], queue="node.core-a")
        with pytest.raises(Exception, match="must not run on its source node"):
            bad.get(timeout=60)

        # retention and replication run on the source node's queue
        for _ in range(2):
            app.send_task("continuity.backup.snapshot", args=["ledger"], queue="node.core-a").get(timeout=120)
        forgot = app.send_task("continuity.backup.forget", args=["ledger"], kwargs={"prune": True},
                               queue="node.core-a").get(timeout=120)
        assert len(forgot["keep"]) == 2 and len(forgot["remove"]) == 1
        copied = app.send_task("continuity.backup.copy", args=["ledger"], queue="node.core-a").get(timeout=120)
        assert copied["ok"], copied
        assert rds.hget(keys.backup_status("ledger"), "last_copy_ok") == "1"

        kinds = [json.loads(f["event"])["kind"] for _, f in rds.xrange(keys.pulse_stream())]
        assert "continuity_layer.backup.snapshot" in kinds and "continuity_layer.backup.verified" in kinds
        app.close()
