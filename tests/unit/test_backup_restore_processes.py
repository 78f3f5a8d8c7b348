"""A restore spread over forked worker processes gives exactly what a restore in one process gives.

Batches are made small (8 files) so that a tree of a few hundred files goes through many batches and both
workers; every property a restore promises is compared between the two ways: bytes, modes, mtimes, hard
links, damage named per file. A worker that fails or dies fails the restore in one line, and leaves no
process behind.
"""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest

from continuity.backup import forked
from continuity.backup import restore as restore_mod
from continuity.backup.repository import Repository
from continuity.backup.restore import restore
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from tests.unit.test_backup_engine import FAST_KDF


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", kdf=FAST_KDF)


@pytest.fixture(autouse=True)
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(restore_mod, "BATCH_FILES", 8)


def _tree(root: Path) -> None:
    rnd = random.Random(3)
    for i in range(300):
        d = root / f"d{i % 7}" / f"e{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        f = d / f"f{i}"
        f.write_bytes(rnd.randbytes(rnd.choice([0, 10, 900, 5000])))
        f.chmod(rnd.choice([0o600, 0o644, 0o755, 0o444]))
        os.utime(f, ns=(1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i * 1000))
    (root / "big").write_bytes(rnd.randbytes(3 * 1024 * 1024))  # several blobs, a batch of its own
    os.link(root / "d0" / "e0" / "f0", root / "d1" / "hardlink")
    os.symlink("d0/e0/f0", root / "link")


def _listing(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if stat.S_ISREG(st.st_mode) else os.readlink(p) if p.is_symlink() else None
        out[str(p.relative_to(root))] = (stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode),
                                         st.st_mtime_ns if not p.is_dir() else None, data)
    return out


def _snap(repo: Repository, src: Path) -> dict:
    return repo.find_snapshot(take_snapshot(repo, [Source("directory", str(src))])["id"])


def test_workers_restore_what_one_process_restores(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    snap = _snap(repo, src)
    one = restore(repo, snap, str(tmp_path / "one"), processes=1)
    two = restore(repo, snap, str(tmp_path / "two"), processes=2)
    assert two["files"] == one["files"] == 302 and two["bytes"] == one["bytes"]
    assert two["links"] == one["links"] == 1
    assert two["damaged"] == one["damaged"] == [] and two["failed"] == one["failed"] == []
    assert _listing(tmp_path / "two" / "src") == _listing(tmp_path / "one" / "src") == _listing(src)
    restored = tmp_path / "two" / "src"
    assert os.stat(restored / "d1" / "hardlink").st_ino == os.stat(restored / "d0" / "e0" / "f0").st_ino


def test_damage_found_in_a_worker_is_named_per_file(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    snap = _snap(repo, src)
    packs = sorted((tmp_path / "repo" / "data").rglob("*"))
    victim = next(p for p in packs if p.is_file())
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one blob of one pack no longer authenticates
    victim.write_bytes(bytes(raw))
    one = restore(repo, snap, str(tmp_path / "one"), processes=1)
    two = restore(repo, snap, str(tmp_path / "two"), processes=2)
    assert one["damaged"], "the flipped byte hit a blob"
    assert sorted(d["path"] for d in two["damaged"]) == sorted(d["path"] for d in one["damaged"])
    assert two["files"] == one["files"]
    for d in two["damaged"]:  # a damaged file is never left looking restored
        assert not (tmp_path / "two" / d["path"]).exists()


def _children() -> set[int]:
    me = os.getpid()
    found = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:
            found.add(int(pid))
    return found


def _raises(self: object, files: list) -> dict:
    raise RuntimeError("disk on fire")


def _dies(self: object, files: list) -> dict:
    os._exit(9)  # as the OOM killer would leave it


@pytest.mark.parametrize(("worker", "said"), [(_raises, r"^worker process \d+ failed: RuntimeError: disk on fire$"),
                                              (_dies, r"^worker process \d+ died while restoring a batch$")])
def test_a_worker_that_fails_or_dies_fails_the_restore_in_one_line(repo: Repository, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   worker: object, said: str) -> None:
    src = tmp_path / "src"
    _tree(src)
    snap = _snap(repo, src)
    before = _children()
    monkeypatch.setattr(restore_mod._Run, "_restore_files", worker)  # inherited by the forked workers
    with pytest.raises(forked.WorkerFailed, match=said):  # not a hang, not a traceback of the worker's
        restore(repo, snap, str(tmp_path / "out"), processes=2)
    assert _children() == before, "every worker was reaped"


def test_workers_are_used_only_for_large_restores_from_a_local_repository(tmp_path: Path) -> None:
    from continuity.backup.storage.append_only import AppendOnlyBackend
    from continuity.backup.throttle import Limits, ThrottledBackend

    local = LocalBackend(str(tmp_path / "r"))
    many = restore_mod.PROCESS_MIN_FILES + 1
    cores = max(1, min(4, os.cpu_count() or 1))
    assert restore_mod._process_count(local, many) == cores
    assert restore_mod._process_count(AppendOnlyBackend(local), many) == cores
    assert restore_mod._process_count(local, many - 1) == 1  # forking costs more than a small restore saves
    # a read limit is one token bucket in this process; workers would each take the whole rate
    assert restore_mod._process_count(ThrottledBackend(local, Limits.from_kib(None, 100)), many) == 1
    sftp_like = type("Remote", (), {"read_threads": 8})()
    assert restore_mod._process_count(sftp_like, many) == 1
