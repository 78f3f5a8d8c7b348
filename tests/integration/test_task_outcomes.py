"""What Flower sees of backup tasks, from the events real workers send (Flower draws its task pages from these).

A copy whose target repository is locked fails: the task is FAILURE with the reason, its ``task-failed``
event carries it, and the set's status and pulse still record the attempt. A snapshot reports progress as
``task-progress`` events (Flower: state PROGRESS, the text in the Result column) before it succeeds.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from celery import Celery

from continuity.backup import api
from continuity.backup.locks import Lock
from continuity.backup.storage import open_backend
from continuity.state import keys
from tests.helpers import ROOT, wait_for

pytestmark = pytest.mark.slow

CONFIG = """\
version: 1
sets:
  ledger:
    node: core-a
    sources:
      - {{kind: ledger, path: {data}/ledger.jsonl}}
      - {{kind: directory, path: {data}/files}}
    repository: {repo}
    schedule: 5m
    key: {{password_env: CONTINUITY_PASSWORD}}
    replicate_to:
      - repository: {offsite}
"""


class Events:
    """Every task event the workers send, collected by a Celery event receiver (as Flower's is)."""

    def __init__(self, app: Celery) -> None:
        self.seen: list[dict] = []
        self.conn = app.connection()
        self.recv = app.events.Receiver(self.conn, handlers={"*": self.seen.append})
        self.thread = threading.Thread(target=self.recv.capture, kwargs={"limit": None}, daemon=True)
        self.thread.start()
        wait_for(lambda: self._probe(app), interval=0.2, what="the event receiver to listen")

    def _probe(self, app: Celery) -> bool:
        """Listening once an event we send comes back (events sent before that would be lost)."""
        with app.events.default_dispatcher(hostname="probe") as d:
            d.send("probe-ready")
        return any(e["type"] == "probe-ready" for e in self.seen)

    def of(self, task_id: str) -> list[dict]:
        return [e for e in self.seen if e.get("uuid") == task_id]

    def close(self) -> None:
        self.recv.should_stop = True
        self.thread.join(10)
        self.conn.release()


@pytest.fixture
def backup_env(tmp_path: Path, worker_env: dict[str, str]) -> dict[str, str]:
    data = tmp_path / "data"
    shutil.copytree(ROOT / "examples" / "data", data)
    big = data / "files" / "big.bin"  # enough bytes for a few progress reports
    big.write_bytes(bytes(range(256)) * (48 * 1024 * 1024 // 256))
    cfg = tmp_path / "backup.yml"
    cfg.write_text(CONFIG.format(data=data, repo=tmp_path / "repo", offsite=tmp_path / "offsite"))
    api.open_repository(str(tmp_path / "repo"), b"pw", create=True)
    api.open_repository(str(tmp_path / "offsite"), b"pw", create=True)
    return dict(worker_env, CONTINUITY_BACKUP_CONFIG=str(cfg), CONTINUITY_PASSWORD="pw")


def test_failed_copy_is_a_failure_and_progress_is_shown(start_worker, backup_env, redis_url, rds,
                                                        tmp_path: Path) -> None:
    start_worker("core-a", env=backup_env)
    app = Celery("probe", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    events = Events(app)
    try:
        snap = app.send_task("continuity.backup.snapshot", args=["ledger"], queue="node.core-a")
        assert snap.get(timeout=180)["files"] >= 5
        wait_for(lambda: any(e["type"] == "task-succeeded" for e in events.of(snap.id)), what="snapshot events")
        progress = [e for e in events.of(snap.id) if e["type"] == "task-progress"]
        assert progress, [e["type"] for e in events.of(snap.id)]
        assert all(e["result"].startswith("snapshot ledger: ") and "%" in e["result"] for e in progress)
        assert all(e["progress"]["set"] == "ledger" for e in progress)

        lock = Lock(open_backend(str(tmp_path / "offsite")), exclusive=True, operation="prune").acquire()
        try:
            copy = app.send_task("continuity.backup.copy", args=["ledger"], queue="node.core-a")
            with pytest.raises(Exception, match="copy of set ledger failed for 1 target"):
                copy.get(timeout=180)
        finally:
            lock.release()
        assert copy.state == "FAILURE"
        failed = wait_for(lambda: [e for e in events.of(copy.id) if e["type"] == "task-failed"],
                          what="the copy's task-failed event")
        assert "locked" in failed[0]["exception"]
        assert not [e for e in events.of(copy.id) if e["type"] == "task-succeeded"]
        assert rds.hget(keys.backup_status("ledger"), "last_copy_ok") == "0"  # recorded before it failed

        again = app.send_task("continuity.backup.copy", args=["ledger"], queue="node.core-a").get(timeout=180)
        assert again["ok"]  # unlocked: the same task succeeds
    finally:
        events.close()
        app.close()
