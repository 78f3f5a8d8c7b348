"""Engine round trips: snapshot, incremental skip, dedup, sources, keys, copy, forget/prune, locks."""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
from pathlib import Path

import pytest

from continuity.backup.locks import Lock
from continuity.backup.prune import forget, prune
from continuity.backup.replicate import copy
from continuity.backup.repository import Repository
from continuity.backup.restore import restore
from continuity.backup.retention import Policy
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from continuity.backup.verify import check, restore_drill, select_subset
from continuity.errors import RepositoryLocked, RepositoryMissing, WrongKey

FAST_KDF = {"n": 2**10, "r": 8, "p": 1}


def make_repo(path: Path, password: bytes = b"pw", **kw: object) -> Repository:
    return Repository.init(LocalBackend(str(path)), password, kdf=FAST_KDF, **kw)  # type: ignore[arg-type]


def make_tree(root: Path, seed: int = 0, files: int = 30) -> None:
    rnd = random.Random(seed)
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        d = root / ("a" if i % 3 else "a/b")
        (d / f"f{i}.json").write_text(json.dumps({"i": i, "v": rnd.random()}))
    (root / "big.bin").write_bytes(rnd.randbytes(2_500_000))
    (root / "empty").write_bytes(b"")
    os.symlink("a/f1.json", root / "link")


def tree_bytes(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, _dirs, files in os.walk(root):
        for fn in files:
            p = Path(dirpath) / fn
            rel = str(p.relative_to(root))
            out[rel] = os.readlink(p) if p.is_symlink() else p.read_bytes()
    return out


def test_roundtrip_incremental_and_dedup(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    repo = make_repo(tmp_path / "repo")
    s1 = take_snapshot(repo, [Source("directory", str(src))])
    assert s1["files_new"] == 32 and s1["data_added"] > 2_000_000
    s2 = take_snapshot(repo, [Source("directory", str(src))])
    # nothing re-read, nothing stored: the files cache works off size/mtime/ctime/inode
    assert s2["bytes_read"] == 0 and s2["data_added"] == 0 and s2["files_unmodified"] == 32
    assert s2["parent"] == s1["id"]
    (src / "a" / "f1.json").write_text("changed")
    s3 = take_snapshot(repo, [Source("directory", str(src))])
    assert s3["files_changed"] == 1 and s3["bytes_read"] == len("changed")
    for sid, expect_changed in ((s1["id"], False), (s3["id"], True)):
        out = tmp_path / f"out-{sid[:6]}"
        res = restore(Repository.open(LocalBackend(str(tmp_path / "repo")), b"pw"),
                      repo.find_snapshot(sid), str(out))
        assert res["damaged"] == []
        got = tree_bytes(out / "src")
        want = tree_bytes(src)
        if not expect_changed:
            want["a/f1.json"] = got["a/f1.json"]
            assert got["a/f1.json"] != b"changed"
        assert got == want
    assert check(repo, read_data=True)["ok"]


def test_restore_include_and_metadata(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    os.chmod(src / "big.bin", 0o600)
    repo = make_repo(tmp_path / "repo")
    sid = take_snapshot(repo, [Source("directory", str(src))])["id"]
    out = tmp_path / "out"
    restore(repo, repo.find_snapshot(sid), str(out), includes=["src/a/b"])
    got = tree_bytes(out)
    assert got and all(k.startswith("src/a/b/") for k in got)
    restore(repo, repo.find_snapshot(sid), str(out))
    st_src, st_out = os.stat(src / "big.bin"), os.stat(out / "src" / "big.bin")
    assert st_out.st_mode & 0o777 == 0o600 and st_out.st_mtime_ns == st_src.st_mtime_ns


def test_dedup_across_nodes_sharing_a_repo(tmp_path: Path) -> None:
    big = random.Random(5).randbytes(3_000_000)
    for node in ("n1", "n2"):
        (tmp_path / node).mkdir()
        (tmp_path / node / "blob").write_bytes(big)
    repo = make_repo(tmp_path / "repo")
    a = take_snapshot(repo, [Source("directory", str(tmp_path / "n1"))], node_name="n1")
    b = take_snapshot(repo, [Source("directory", str(tmp_path / "n2"))], node_name="n2")
    assert a["data_added"] > 2_900_000 and b["data_added"] < 10_000


def test_ledger_and_sqlite_sources(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text("".join(json.dumps({"seq": i, "amt": i * 3}) + "\n" for i in range(1, 101))
                      + '{"seq": 101, "amt"')  # an append in flight
    db = tmp_path / "app.db"
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.executemany("INSERT INTO t (v) VALUES (?)", [(f"v{i}",) for i in range(500)])
    con.commit()
    repo = make_repo(tmp_path / "repo")
    summary = take_snapshot(repo, [Source("ledger", str(ledger)), Source("sqlite", str(db))])
    assert summary["errors"] == []
    snap = repo.find_snapshot(summary["id"])
    man = {s["kind"]: s["manifest"] for s in snap["sources"]}
    assert man["ledger"]["records"] == 100 and man["ledger"]["last_seq"] == 100
    assert man["ledger"]["pending_bytes"] > 0
    assert man["sqlite"]["tables"] == {"t": 500}
    drill = restore_drill(repo, summary["id"])
    assert drill["ok"], drill
    assert drill["ledgers"][0]["records"] == 100 and drill["sqlite"][0]["integrity"] == "ok"
    con.close()


def test_invalid_ledger_is_stored_but_reported(tmp_path: Path) -> None:
    ledger = tmp_path / "l.jsonl"
    ledger.write_text('{"seq": 1}\nnot json\n{"seq": 3}\n')
    repo = make_repo(tmp_path / "repo")
    summary = take_snapshot(repo, [Source("ledger", str(ledger))])
    assert len(summary["errors"]) == 1 and "line 2" in summary["errors"][0]
    out = tmp_path / "out"
    restore(repo, repo.find_snapshot(summary["id"]), str(out))
    assert (out / "l.jsonl").read_bytes() == ledger.read_bytes()


def test_task_key_makes_snapshot_idempotent(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("x")
    repo = make_repo(tmp_path / "repo")
    a = take_snapshot(repo, [Source("directory", str(tmp_path / "d"))], set_name="s", task_key="t1")
    b = take_snapshot(repo, [Source("directory", str(tmp_path / "d"))], set_name="s", task_key="t1")
    c = take_snapshot(repo, [Source("directory", str(tmp_path / "d"))], set_name="s", task_key="t2")
    assert a["id"] == b["id"] and b["reused"] and c["id"] != a["id"]
    assert len(repo.snapshot_ids()) == 2


def test_keys_add_remove_rotate(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_bytes(b"old data" * 1000)
    repo = make_repo(tmp_path / "repo")
    backend = repo.backend
    s_old = take_snapshot(repo, [Source("directory", str(tmp_path / "d"))])
    kid2 = repo.add_key(b"second", FAST_KDF)
    with pytest.raises(WrongKey):
        Repository.open(backend, b"nope")
    r2 = Repository.open(backend, b"second")
    old_data_key = r2.keyring.current
    new_data_key = r2.rotate()
    assert new_data_key != old_data_key
    (tmp_path / "d" / "new").write_bytes(b"new data" * 1000)
    s_new = take_snapshot(r2, [Source("directory", str(tmp_path / "d"))])
    # the first password still opens everything, old and new data alike
    r1 = Repository.open(backend, b"pw")
    assert r1.keyring.current == new_data_key and old_data_key in r1.keyring.data_keys
    for sid in (s_old["id"], s_new["id"]):
        assert restore_drill(r1, sid)["ok"]
    r1.remove_key(kid2)
    with pytest.raises(WrongKey):
        Repository.open(backend, b"second")
    assert len(r1.list_keys()) == 1


def test_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(RepositoryMissing):
        Repository.open(LocalBackend(str(tmp_path / "none")), b"pw")


def test_copy_moves_only_missing_blobs(tmp_path: Path) -> None:
    src_dir = tmp_path / "d"
    make_tree(src_dir)
    src = make_repo(tmp_path / "src")
    s1 = take_snapshot(src, [Source("directory", str(src_dir))], set_name="x")
    # destination shares id key and chunker seed: blob ids agree
    from continuity.backup import crypto

    ring = crypto.Keyring.new()
    ring.id_key, ring.chunker_seed = src.keyring.id_key, src.keyring.chunker_seed
    dst = make_repo(tmp_path / "dst", b"other", keyring=ring)
    r1 = copy(src, dst)
    assert len(r1["copied"]) == 1 and r1["bytes_added"] > 2_000_000
    assert copy(src, dst)["copied"] == []  # idempotent
    (src_dir / "a" / "f2.json").write_text("new")
    take_snapshot(src, [Source("directory", str(src_dir))], set_name="x")
    r3 = copy(src, dst)
    assert len(r3["copied"]) == 1 and r3["bytes_added"] < 20_000
    assert check(dst, read_data=True)["ok"]
    copied_id = r1["copied"][0]["id"]
    assert restore_drill(dst, copied_id)["ok"]
    # a destination with its own params still receives correct data (ids recomputed)
    other = make_repo(tmp_path / "other", b"third")
    r4 = copy(src, other)
    assert len(r4["copied"]) == 2
    assert all(restore_drill(other, c["id"])["ok"] for c in r4["copied"])
    assert s1["id"] in {s.get("original") for s in other.load_snapshots()[0]}


def test_forget_and_prune_reclaim_space(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    repo = make_repo(tmp_path / "repo")
    ids = []
    for i in range(4):
        (d / "data").write_bytes(random.Random(i).randbytes(1_000_000))
        ids.append(take_snapshot(repo, [Source("directory", str(d))], set_name="s")["id"])
    before = sum(repo.list_packs().values())
    res = forget(repo, Policy(keep_last=1), set_name="s")
    assert [r["id"] for r in res["keep"]] == [ids[-1]]
    p = prune(repo)
    after = sum(repo.list_packs().values())
    assert after < before / 2 and p["packs_deleted"] + p["packs_repacked"] >= 3
    assert repo.snapshot_ids() == [ids[-1]]
    rep = check(repo, read_data=True)
    assert rep["ok"] and rep["unreferenced_packs"] == []
    assert restore_drill(repo, ids[-1])["ok"]


def test_locks_shared_vs_exclusive_and_stale(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    with Lock(repo.backend, exclusive=False, operation="snapshot"):
        with Lock(repo.backend, exclusive=False, operation="snapshot"):
            pass  # concurrent snapshots do not block each other
        with pytest.raises(RepositoryLocked, match="continuity backup unlock"):
            Lock(repo.backend, exclusive=True, operation="prune").acquire()
    # a lock left by a dead process on this host is stale and does not block
    dead = _dead_pid()
    repo.backend.write("locks/deadbeef", json.dumps({
        "hostname": socket.gethostname(), "pid": dead, "time": 1e10, "exclusive": True,
        "operation": "prune"}).encode())
    lock = Lock(repo.backend, exclusive=True, operation="prune").acquire()
    assert any("stale" in n for n in lock.notes)
    lock.release()
    assert list(repo.backend.list("locks")) == []


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_subset_selection() -> None:
    packs = [f"{i:02x}" + "0" * 62 for i in range(200)]
    parts = [set(select_subset(packs, f"{n}/5")) for n in range(1, 6)]
    assert set().union(*parts) == set(packs) and sum(map(len, parts)) == len(packs)
    assert len(select_subset(packs, "10%", random.Random(1))) == 20
    for bad in ("0/5", "6/5", "150%", "abc"):
        with pytest.raises(Exception, match="read-data-subset"):
            select_subset(packs, bad)


def test_restore_keeps_few_files_open(tmp_path: Path) -> None:
    import resource

    src = tmp_path / "many"
    src.mkdir()
    for i in range(400):
        (src / f"f{i}").write_text(str(i))
    repo = make_repo(tmp_path / "repo")
    sid = take_snapshot(repo, [Source("directory", str(src))])["id"]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(128, hard), hard))
    try:
        res = restore(repo, repo.find_snapshot(sid), str(tmp_path / "out"))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert res["files"] == 400 and res["damaged"] == []
    assert (tmp_path / "out" / "many" / "f399").read_text() == "399"


def test_incremental_sees_deletes_adds_and_chmod(tmp_path: Path) -> None:
    """Unchanged subtrees are reused wholesale; any change below a directory must still be seen."""
    src = tmp_path / "src"
    make_tree(src)
    repo = make_repo(tmp_path / "repo")
    take_snapshot(repo, [Source("directory", str(src))])
    (src / "a" / "b" / "f0.json").unlink()
    (src / "a" / "new.txt").write_text("new")
    os.chmod(src / "a" / "f1.json", 0o600)
    os.chmod(src / "a", 0o700)
    s = take_snapshot(repo, [Source("directory", str(src))])
    out = tmp_path / "out"
    restore(repo, repo.find_snapshot(s["id"]), str(out))
    assert tree_bytes(out / "src") == tree_bytes(src)
    assert os.stat(out / "src" / "a" / "f1.json").st_mode & 0o777 == 0o600
    assert os.stat(out / "src" / "a").st_mode & 0o777 == 0o700


def _age_atimes(root: Path) -> dict[str, int]:
    """Set every file's atime a day before its mtime (what relatime updates on the next read); return them."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            os.utime(p, ns=(st.st_mtime_ns - 86_400 * 10**9, st.st_mtime_ns))
            out[str(p)] = p.stat().st_atime_ns
    return out


def test_a_snapshot_leaves_the_access_times_of_what_it_reads(tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_tree(src)
    probe = src / "a" / "f1.json"
    _age_atimes(src)
    before = probe.stat().st_atime_ns
    probe.read_bytes()
    if probe.stat().st_atime_ns == before:
        pytest.skip("this file system does not update access times on read (noatime)")
    atimes = _age_atimes(src)  # small files (one read) and a chunked large one alike
    take_snapshot(make_repo(tmp_path / "repo"), [Source("directory", str(src))])
    assert {p: Path(p).stat().st_atime_ns for p in atimes} == atimes


def test_a_file_that_refuses_noatime_is_read_all_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # O_NOATIME is the owner's (or CAP_FOWNER's) to ask for: anyone else gets EPERM, and reads without it
    from continuity.backup import snapshot

    real_open = os.open
    refused: list[str] = []

    def open_(path, flags, *a):  # noqa: ANN001, ANN202 - os.open's shape
        if flags & getattr(os, "O_NOATIME", 0):
            refused.append(path)
            raise PermissionError(1, "Operation not permitted", path)
        return real_open(path, flags, *a)

    monkeypatch.setattr(snapshot, "_read_flags", snapshot._read_flags)
    monkeypatch.setattr(snapshot.os, "open", open_)
    src = tmp_path / "src"
    make_tree(src)
    repo = make_repo(tmp_path / "repo")
    s = take_snapshot(repo, [Source("directory", str(src))])
    monkeypatch.undo()
    assert s["files_new"] == 32 and not s.get("errors")
    if getattr(os, "O_NOATIME", 0):
        assert len(refused) == 1, "the flag is dropped at the first refusal"
    restore(repo, repo.find_snapshot(s["id"]), str(tmp_path / "out"))
    assert tree_bytes(tmp_path / "out" / "src") == tree_bytes(src)
