"""Snapshot and restore stream the tree: their peak memory does not grow with the number of files.

Each measurement runs in a fresh interpreter and traces Python allocations
(``tracemalloc``), which depend on what the code holds, not on how busy the
machine is. Packs, snapshot jobs and restore batches are made small so that
what is held per file would dominate the peak if it were kept for the whole
tree: a node per file (the snapshot's tree, the restore's plan) or a dict
entry per blob.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys, tracemalloc
from continuity.backup import restore as restore_mod, snapshot as snapshot_mod, spilltable
from continuity.backup.repository import Repository
from continuity.backup.storage.local import LocalBackend

snapshot_mod.BATCH_FILES = 16  # files per snapshot job: few nodes in flight
restore_mod.BATCH_FILES = 64  # files per restore batch
snapshot_mod.INDEX_EVERY = 500  # blobs per index file: a restore decodes one at a time
spilltable.BLOCK = 4096  # the restore index's write buffer (bounded, but 1 MiB would hide a small test)
src, repo_dir, out = sys.argv[1:4]
repo = Repository.init(LocalBackend(repo_dir), b"pw", kdf={"n": 1024, "r": 8, "p": 1})
tracemalloc.start()
snap = snapshot_mod.take_snapshot(repo, [snapshot_mod.Source("directory", src)], workers=1)
snap_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
repo = Repository.open(LocalBackend(repo_dir), b"pw")
tracemalloc.start()
res = restore_mod.restore(repo, repo.find_snapshot(snap["id"]), out, workers=2, processes=1)  # traced here
restore_peak = tracemalloc.get_traced_memory()[1]
print(json.dumps({"snapshot": snap_peak, "restore": restore_peak, "files": snap["files"],
                  "restored": res["files"], "damaged": len(res["damaged"])}))
"""


def _tree(root: Path, files: int) -> None:
    rnd = random.Random(files)
    for i in range(files):
        d = root / f"d{i // 400:03d}" / f"s{i // 40 % 10}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:06d}").write_bytes(rnd.randbytes(rnd.randint(200, 1500)))


def _peaks(tmp: Path, files: int) -> dict[str, int]:
    src = tmp / f"src{files}"
    _tree(src, files)
    env = {**os.environ, "CONTINUITY_PACK_SIZE": str(64 * 1024), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(src), str(tmp / f"repo{files}"), str(tmp / f"out{files}")],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    peaks = json.loads(out.stdout.strip().splitlines()[-1])
    assert peaks["files"] == peaks["restored"] == files and peaks["damaged"] == 0
    return peaks


@pytest.mark.timeout(900)
def test_peak_memory_of_snapshot_and_restore_does_not_follow_the_file_count(tmp_path: Path) -> None:
    small, large = _peaks(tmp_path, 3000), _peaks(tmp_path, 12000)
    # What a snapshot may grow with is the ids of the blobs written so far (they are checked for duplicates):
    # ~50 bytes each in the table, a few times that while an index file is encoded. A node per file kept for
    # the whole tree (a snapshot's tree, a restore's plan) costs 1-2 KiB a file and fails this.
    per_file = (large["snapshot"] - small["snapshot"]) / (12000 - 3000)
    assert per_file < 350, ("snapshot", per_file, small, large)
    # A restore keeps the index in a file: what grows is each directory's node (metadata is set last, one
    # directory per 40 files here) and each pack's name, ~30 bytes a file; the index in memory would add
    # ~80 bytes a blob and fails this.
    per_file = (large["restore"] - small["restore"]) / (12000 - 3000)
    assert per_file < 60, ("restore", per_file, small, large)
