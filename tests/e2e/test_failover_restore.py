"""End to end: a standby with no data of its own is promoted from the latest verified snapshot of the live ledger.

``CONTINUITY_FAILOVER_PREPARE=backup`` makes prepare treat the old primary's
directory as unreachable (on one host it never is), so the backup path runs:
the ledger's live data is snapshotted on its primary (the task is sent to the
standby's queue and forwarded), proven by a restore drill on the standby, more
records are written, the primary is killed -9, and the standby comes up with
exactly the snapshot's records. What was written after the snapshot is the
measured data loss; the record names the snapshot and its age (achieved RPO).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery

from continuity.sample.client import LedgerClient
from continuity.state import keys
from tests.failover_support import Fleet
from tests.helpers import wait_for

pytestmark = pytest.mark.slow
SET = "ledger-live"


@pytest.fixture
def fleet(tmp_path: Path, state_dir: Path, redis_url: str, spawn: Any, start_worker: Any) -> Iterator[Fleet]:
    cfg = tmp_path / "backup.yml"
    cfg.write_text(
        "version: 1\nsets:\n"
        f"  {SET}:\n"
        "    node: core-a\n"
        "    sources:\n      - {kind: service, service: ledger}\n"
        f"    repository: {tmp_path / 'repo'}\n"
        "    schedule: '0 0 1 1 *'\n"  # this test sends the tasks itself: a yearly slot keeps beat out of its way
        "    key: {password_env: CONTINUITY_PASSWORD}\n"
        "    verify: {node: core-b, schedule: '0 0 1 1 *'}\n")
    f = Fleet(tmp_path, state_dir, redis_url, spawn, start_worker,
              extra_env={"CONTINUITY_FAILOVER_PREPARE": "backup", "CONTINUITY_BACKUP_CONFIG": str(cfg),
                         "CONTINUITY_PASSWORD": "restore-e2e"})
    # no replica on the standby: this test is about the path where the latest verified snapshot is all there is
    doc = yaml.safe_load(f.bp_path.read_text())
    doc["domains"]["payments"]["services"]["ledger"]["replication"] = {"mode": "off"}
    f.bp_path.write_text(yaml.safe_dump(doc))
    try:
        yield f
    finally:
        f.close()


def test_standby_is_promoted_from_the_verified_snapshot_and_the_loss_is_measured(fleet: Fleet,
                                                                                 redis_url: str) -> None:
    fleet.start()
    wait_for(lambda: json.loads(fleet.client.get(keys.route("ledger")) or "{}").get("epoch") == 1, timeout=20,
             what="a route to the bootstrapped ledger")
    client = LedgerClient(fleet.redis_url)
    for seq in range(1, 11):
        assert client.append(seq)

    app = Celery("probe", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    # sent to the standby's queue: the set protects the service's live data, so it is forwarded to the primary
    first = app.send_task("continuity.backup.snapshot", args=[SET], queue="node.core-b").get(timeout=60)
    assert first["forwarded_to"] == "core-a"
    status = wait_for(lambda: (s := fleet.client.hgetall(keys.backup_status(SET))).get("last_snapshot") and s,
                      timeout=60, what="the forwarded snapshot")
    assert status["node"] == "core-a"
    drill = app.send_task("continuity.backup.verify", args=[SET], queue="node.core-b").get(timeout=60)
    assert drill["ok"] and drill["snapshot"] == status["last_snapshot"], drill
    assert [c["last_seq"] for c in drill["ledgers"]] == [10]
    assert fleet.client.hget(keys.backup_status(SET), "last_verified") == status["last_snapshot"]

    for seq in range(11, 16):  # acknowledged after the snapshot: what a restore cannot bring back
        assert client.append(seq)
    fleet.workers["core-a"].kill9()
    fleet.kill_service("ledger", "core-a")

    (rec,) = fleet.wait_records(1)
    assert rec["outcome"] == "succeeded", json.dumps(rec, indent=1)
    (prep,) = [s for s in rec["steps"] if s["step"] == "prepare"]
    assert prep["node"] == "core-b" and prep["source"] == "snapshot" and prep["mode"] == "restore", prep
    assert prep["snapshot"] == status["last_snapshot"] and prep["set"] == SET
    assert prep["ledger_last_seq"] == 10 and prep["snapshot_node"] == "core-a"
    assert prep["rpo_achieved"] is not None and prep["rpo_achieved"] > 0

    health = fleet.health("ledger", "core-b")
    assert health and health["epoch"] == 2 and health["records"] == 10 and health["last_seq"] == 10
    restored = client.records()
    lost = sorted(set(range(1, 16)) - set(restored))
    assert restored == list(range(1, 11)) and lost == list(range(11, 16))
    print(f"\nrestore failover: snapshot {prep['snapshot'][:8]} age at prepare {prep['rpo_achieved']:.2f}s, "
          f"restored up to seq {prep['ledger_last_seq']}, lost {len(lost)} records written after it, "
          f"prepare {prep['duration']:.2f}s, mttr {rec['mttr']:.2f}s")
    assert client.append(16)  # the restored primary takes writes again
