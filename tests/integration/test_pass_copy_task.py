"""The copy task on a real satellite worker: told its pass's end, it stops before the margin; the next copy
resumes where it stopped and nothing arrives twice.

The link is 512 KiB/s (the satellite's ``links:`` entry) and the backlog 4 MiB, so a pass ending a few seconds
after the task is sent cannot carry it all. Nothing here waits on a fixed time: the assertions are about what
the destination holds (written before the pass's deadline, never the same blob twice), which holds however
slowly the worker picks the task up.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from celery import Celery

from continuity.backup import api
from continuity.backup.repository import Repository
from continuity.backup.storage.local import LocalBackend
from continuity.state import keys
from tests.helpers import signed_as_control

pytestmark = pytest.mark.slow

CONFIG = """\
version: 1
links:
  sat-1: {{limit_upload: 512, pass_margin: 2s}}
sets:
  telemetry:
    node: sat-1
    sources: [{{kind: directory, path: {data}}}]
    repository: {repo}
    key: {{password_env: CONTINUITY_PASSWORD}}
    replicate_to: [{{repository: {ground}}}]
"""


def test_a_pass_bound_copy_stops_before_the_pass_ends_and_the_next_resumes(start_worker, worker_env, redis_url,
                                                                              rds, state_dir, tmp_path: Path,
                                                                              monkeypatch) -> None:
    data = tmp_path / "telemetry"
    data.mkdir()
    for i in range(4):
        (data / f"frame-{i}.bin").write_bytes(os.urandom(1024 * 1024))
    cfg_file = tmp_path / "backup.yml"
    cfg_file.write_text(CONFIG.format(data=data, repo=tmp_path / "sat-repo", ground=tmp_path / "ground"))
    env = dict(worker_env, CONTINUITY_BACKUP_CONFIG=str(cfg_file), CONTINUITY_PASSWORD="pw",
               CONTINUITY_PACK_SIZE=str(16 * 1024 * 1024))
    api.open_repository(str(tmp_path / "sat-repo"), b"pw", create=True)
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    api.run_backup_set("telemetry", api.load_backup_config(cfg_file))  # the satellite's backlog, local
    start_worker("sat-1", env=env)
    app = Celery("probe", broker=redis_url, backend=redis_url)
    app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
    with signed_as_control(state_dir):
        now = time.time()
        pass_end = now + 6.0  # deadline: now + 4 s; 4 MiB at 512 KiB/s needs 8
        first = app.send_task("continuity.backup.copy", args=["telemetry"],
                              kwargs={"pass_start": now, "pass_end": pass_end},
                              queue="node.sat-1").get(timeout=120)
        assert not first["complete"], first
        assert rds.hget(keys.backup_status("telemetry"), "last_copy_complete") in ("0", None)
        ground = tmp_path / "ground"
        written = [p for p in ground.rglob("*") if p.is_file() and "/locks/" not in str(p)]
        late = [p for p in written if p.stat().st_mtime > pass_end - 2.0 + 0.5]
        assert not late, f"written after the pass's deadline: {late}"
        second = app.send_task("continuity.backup.copy", args=["telemetry"], kwargs={"pass_start": time.time(),
                               "pass_end": time.time() + 600}, queue="node.sat-1").get(timeout=120)
        assert second["complete"], second
        assert rds.hget(keys.backup_status("telemetry"), "last_copy_complete") == "1"
    repo = Repository.open(LocalBackend(str(tmp_path / "ground")), b"pw")
    seen: set[bytes] = set()
    for pack in repo.list_packs():
        for _typ, bid, *_ in repo.read_pack_header(pack):
            assert bid not in seen, "a blob arrived twice"
            seen.add(bid)
    assert len(repo.load_snapshots()[0]) == 1
