"""Restore and repository hardening: each attack from issue 11, and each defence shown to matter.

Every test here was run against the code with its defence removed and failed (see the report of the
branch that added them): setuid/setgid stripping, temp-file-and-rename for every entry, decompression
bounded by the index, the blob-id check after decryption, scrypt caps, the keyring stamp, name-length
checks, special-file reporting, the free-space check, and prune keeping every live snapshot.
"""

from __future__ import annotations

import json
import os
import random
import socket
import stat
from pathlib import Path

import pytest
import zstandard

from continuity.backup import crypto
from continuity.backup import repository as repo_mod
from continuity.backup.prune import prune
from continuity.backup.repository import DATA, TREE, KeyringRollback, PackWriter, Repository
from continuity.backup.restore import NotEnoughSpace, restore
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from continuity.backup.verify import check, restore_drill
from continuity.errors import WrongKey
from tests.unit.test_backup_damage import run_cli
from tests.unit.test_backup_engine import FAST_KDF

PW = "hardening-pw"
Cap = pytest.CaptureFixture[str]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="restoring ownership needs root")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repository:
    monkeypatch.setenv("CONTINUITY_PASSWORD", PW)
    return Repository.init(LocalBackend(str(tmp_path / "repo")), PW.encode(), kdf=FAST_KDF)


def crafted(repo: Repository, nodes: list[dict], blobs: dict[str, tuple[bytes, bytes, int]] | None = None) -> str:
    """A validly sealed snapshot of ``nodes`` (one directory), as someone holding the repository key could write.

    ``blobs`` maps a placeholder used in a node's ``content`` to ``(claimed id, sealed payload, declared
    plaintext length)``, stored as given: the only checks left to catch a lie are the restorer's.
    """
    w = PackWriter(repo)
    for bid, sealed, raw_len in (blobs or {}).values():
        w.reserve(bid)
        w.add(bid, DATA, sealed, raw_len)
    for n in nodes:
        n["content"] = [blobs[c][0].hex() if blobs and c in blobs else c for c in n.get("content", [])]
        n.setdefault("mode", 0o644)
        n.setdefault("mtime", 0)
    tree = w.save(TREE, json.dumps({"nodes": nodes}, sort_keys=True, separators=(",", ":")).encode())
    repo.save_index(w.finish())
    return repo.save_file("snapshots", {"version": 1, "time": "2026-01-01T00:00:00+00:00", "hostname": "evil",
                                        "paths": ["/x"], "tree": tree.hex(), "sources": []})


def file_node(repo: Repository, name: str, data: bytes) -> dict:
    w = PackWriter(repo)
    bid = w.save(DATA, data)
    repo.save_index(w.finish())
    return {"name": name, "type": "file", "size": len(data), "content": [bid.hex()]}


def snap_of(repo: Repository, src: Path) -> dict:
    return repo.find_snapshot(take_snapshot(repo, [Source("directory", str(src))])["id"])


# ------------------------------------------------------------------------------------------- setuid / setgid
def setuid_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "shared").mkdir(parents=True)
    (src / "tool").write_bytes(b"#!/bin/sh\necho hi\n")
    if os.geteuid() == 0:
        os.chown(src / "tool", 65534, 65534)  # before chmod: a chown clears the setuid bit
    os.chmod(src / "tool", 0o4755)
    os.chmod(src / "shared", 0o2775)
    return src


def test_setuid_and_setgid_are_dropped_when_ownership_is_not_restored(repo: Repository, tmp_path: Path) -> None:
    snap = snap_of(repo, setuid_tree(tmp_path))
    out = tmp_path / "out"
    restore(repo, snap, str(out), same_owner=False)  # what a restore by an ordinary user does
    assert stat.S_IMODE(os.stat(out / "src" / "tool").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(out / "src" / "shared").st_mode) == 0o775


@root_only
def test_as_root_setuid_comes_back_only_with_its_owner(repo: Repository, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    snap = snap_of(repo, setuid_tree(tmp_path))
    out = tmp_path / "out"
    restore(repo, snap, str(out))  # root: ownership restored, as tar does
    st = os.stat(out / "src" / "tool")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o4755)
    # a chown that fails (e.g. an unmapped uid in a user namespace) must not leave a root-owned setuid file
    real_chown = os.chown

    def refusing_chown(where: object, uid: int, gid: int, **kw: object) -> None:
        if uid == 65534:
            raise PermissionError(1, "Operation not permitted")
        real_chown(where, uid, gid, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "chown", refusing_chown)
    out2 = tmp_path / "out2"
    restore(repo, snap, str(out2))
    st = os.stat(out2 / "src" / "tool")
    assert st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o755


# ------------------------------------------------------------------------------------- nothing written through
def test_a_symlink_planted_at_a_file_path_is_replaced_not_written_through(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"restored content")  # one blob
    (src / "big").write_bytes(random.Random(1).randbytes(1_500_000))  # several blobs
    snap = snap_of(repo, src)
    victims = {}
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    for name in ("f", "big"):
        victims[name] = tmp_path / f"victim-{name}"
        victims[name].write_bytes(b"precious")
        os.symlink(victims[name], out / "src" / name)
    res = restore(repo, snap, str(out))
    assert res["damaged"] == [] and res["failed"] == []
    for name, victim in victims.items():
        assert victim.read_bytes() == b"precious"
        assert not (out / "src" / name).is_symlink()
        assert (out / "src" / name).read_bytes() == (src / name).read_bytes()


class _RacingOs:
    """``os`` for the restore module, except that it plants a symlink to ``victim`` where the restore is about
    to create a file: at the file's own name (``at_final``), at a temp name, and again right after a temp name
    is removed (the races a shared directory allows)."""

    def __init__(self, victim: Path, *, at_final: bool, at_temp: bool) -> None:
        self.victim, self.at_final, self.at_temp = victim, at_final, at_temp
        self.planted: list[str] = []

    def __getattr__(self, name: str):
        return getattr(os, name)

    def _plant(self, path: str) -> None:
        if path not in self.planted:
            os.symlink(self.victim, path)
            self.planted.append(path)

    def open(self, path, flags, *a, **kw):
        temp = os.path.basename(path).startswith(".continuity-restore-")
        if flags & os.O_CREAT and (self.at_temp if temp else self.at_final):
            self._plant(path)
        return os.open(path, flags, *a, **kw)

    def unlink(self, path, *a, **kw):
        try:
            os.unlink(path, *a, **kw)
        finally:
            if os.path.basename(path).startswith(".continuity-restore-") and self.at_temp:
                self.planted.remove(path)
                self._plant(path)


def _one_file_snapshot(repo: Repository, tmp_path: Path) -> tuple[dict, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"restored content")  # one blob
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    return snap_of(repo, src), victim


def test_a_symlink_planted_at_the_name_just_before_the_create_is_replaced_not_written_through(
        repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file is created at its own name with O_CREAT|O_EXCL|O_NOFOLLOW: a symlink planted there a moment
    before makes that create fail, and the file is written aside and renamed over the link itself."""
    from continuity.backup import restore as restore_mod

    snap, victim = _one_file_snapshot(repo, tmp_path)
    racing = _RacingOs(victim, at_final=True, at_temp=False)
    monkeypatch.setattr(restore_mod, "os", racing)
    res = restore(repo, snap, str(tmp_path / "out"))
    assert racing.planted == [str(tmp_path / "out" / "src" / "f")], "the race window was reached"
    assert victim.read_bytes() == b"precious"
    assert res["failed"] == [] and res["files"] == 1
    assert not (tmp_path / "out" / "src" / "f").is_symlink()
    assert (tmp_path / "out" / "src" / "f").read_bytes() == b"restored content"


def test_a_symlink_planted_at_the_temp_name_in_the_race_window_is_not_written_through(
        repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The temp file is created with O_CREAT|O_EXCL|O_NOFOLLOW too: a symlink someone plants at its name,
    and again between the leftover-removal and the second create, makes the create fail, never lets the
    write go to the link's target."""
    from continuity.backup import restore as restore_mod

    snap, victim = _one_file_snapshot(repo, tmp_path)
    racing = _RacingOs(victim, at_final=True, at_temp=True)
    monkeypatch.setattr(restore_mod, "os", racing)
    res = restore(repo, snap, str(tmp_path / "out"))
    assert any(".continuity-restore-" in p for p in racing.planted), "the race window was reached"
    assert victim.read_bytes() == b"precious"
    assert [f["path"] for f in res["failed"]] == ["src/f"] and "cannot create" in res["failed"][0]["reason"]


def test_a_hard_link_planted_at_a_file_path_is_replaced_not_written_through(repo: Repository,
                                                                             tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"restored content")
    snap = snap_of(repo, src)
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.link(victim, out / "src" / "f")
    restore(repo, snap, str(out))
    assert victim.read_bytes() == b"precious"
    assert (out / "src" / "f").read_bytes() == b"restored content"
    assert os.stat(out / "src" / "f").st_ino != os.stat(victim).st_ino


def test_a_directory_in_the_way_of_a_symlink_or_file_is_reported(repo: Repository, tmp_path: Path,
                                                                  capsys: Cap) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    os.symlink("f", src / "link")
    sid = snap_of(repo, src)["id"]
    out = tmp_path / "out"
    for name in ("f", "link"):
        (out / "src" / name).mkdir(parents=True)
    rc, _, err = run_cli(["backup", "restore", sid[:8], "--repo", str(tmp_path / "repo"), "--target", str(out)],
                         capsys)
    assert rc == 1 and "Traceback" not in err
    assert "failed: src/f: a directory stands at" in err and "failed: src/link: a directory stands at" in err


# --------------------------------------------------------------------------------------- what blobs may claim
def test_a_blob_sealed_under_another_blobs_id_is_damage(repo: Repository, tmp_path: Path, capsys: Cap) -> None:
    honest = b"the real content"
    claimed = repo.blob_id(honest)
    forged = repo.seal_blob(claimed, DATA, b"other bytes!!!!!")  # decrypts fine: sealed under the claimed id
    sid = crafted(repo, [{"name": "f", "type": "file", "size": 16, "content": ["X"]}],
                  {"X": (claimed, forged, 16)})
    res = restore(repo, repo.find_snapshot(sid), str(tmp_path / "out"))
    assert res["damaged"] == [{"path": "f", "reason": f"blob {claimed.hex()[:16]}: content hash mismatch"}]
    assert not (tmp_path / "out" / "f").exists()
    report = check(repo, read_data=True)
    assert not report["ok"] and [d["path"] for d in report["damaged_files"]] == ["f"]


def test_decompression_stops_at_the_length_the_index_declares(repo: Repository, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    bomb = zstandard.ZstdCompressor(level=3).compress(b"\0" * (64 << 20))  # ~2 KiB that inflate to 64 MiB
    quiet = zstandard.ZstdCompressor(level=3, write_content_size=False).compress(b"\0" * (64 << 20))
    produced: list[int] = []  # how much each decompression of a bomb produced
    real = repo_mod._zd()

    class Recording:
        def decompress(self, data: bytes, **kw: int) -> bytes:
            out = real.decompress(data, **kw)
            if bytes(data) in (bomb, quiet):
                produced.append(len(out))
            return out

    monkeypatch.setattr(repo_mod, "_zd", lambda: Recording())
    bid = os.urandom(32)
    sealed = repo.keyring.seal(b"\x01" + bomb, bid + bytes([DATA]))
    sid = crafted(repo, [{"name": "bomb", "type": "file", "size": 5, "content": ["B"]}], {"B": (bid, sealed, 5)})
    res = restore(repo, repo.find_snapshot(sid), str(tmp_path / "out"))
    assert len(res["damaged"]) == 1 and f"declares {64 << 20} bytes, 5 expected" in res["damaged"][0]["reason"]
    assert all(n <= 5 for n in produced)  # nothing was inflated beyond what the index declared
    # a frame that does not declare its size is cut at the bound instead
    with pytest.raises(zstandard.ZstdError):
        repo_mod.decompress(quiet, 5)
    assert all(n <= 5 for n in produced)


# ------------------------------------------------------------------------------------------------ key files
def _absurd_key_file(repo: Repository) -> str:
    """A key file asking scrypt for 32 GiB, listed before the good one."""
    doc = crypto.make_key_file(b"whatever", repo.master, FAST_KDF)
    doc["n"] = 2**25
    name = "0" * 32
    repo.backend.write(f"keys/{name}", json.dumps(doc).encode())
    return name


def test_absurd_kdf_parameters_are_refused_and_each_key_file_failure_is_named(repo: Repository, tmp_path: Path,
                                                                              capsys: Cap) -> None:
    bad = _absurd_key_file(repo)
    Path(repo.backend.root, "keys", "1" * 32).write_text("{not json")
    opened = Repository.open(repo.backend, PW.encode())  # the good key file still opens it, at once
    assert any(p.startswith(bad[:8]) and "32768 MiB" in p for p in opened.key_problems)
    with pytest.raises(WrongKey) as exc:
        Repository.open(repo.backend, b"wrong")
    msg = str(exc.value)
    assert f"{bad[:8]}: refused, scrypt n=33554432, r=8 needs 32768 MiB of memory (limit 256 MiB)" in msg
    assert "11111111: unreadable (not JSON)" in msg
    assert f"{repo.key_id[:8]}: the password does not open it" in msg
    rc, out, err = run_cli(["backup", "list", "--repo", str(tmp_path / "repo"), "--password-file",
                            str(_write(tmp_path / "pw", "wrong"))], capsys)
    assert rc == 12 and "Traceback" not in err and err.count("\n") == 1 and "refused, scrypt" in err
    listed = {k["id"]: k for k in opened.list_keys()}
    assert "refused" in listed[bad]
    rc, out, _ = run_cli(["backup", "key", "list", "--repo", str(tmp_path / "repo")], capsys)
    assert rc == 0 and f"{bad[:8]}  refused: scrypt n=33554432" in out and "11111111  damaged" in out


def test_key_files_beyond_the_caps_are_never_written(repo: Repository) -> None:
    from continuity.errors import UsageError

    with pytest.raises(UsageError, match="memory"):
        repo.add_key(b"x", {"n": 2**22, "r": 8, "p": 1})
    with pytest.raises(UsageError, match="r=64"):
        repo.add_key(b"x", {"n": 2**10, "r": 64, "p": 1})


def _write(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    return path


def test_deleting_the_newest_keyring_generation_is_noticed(repo: Repository, tmp_path: Path, capsys: Cap) -> None:
    repo.add_key(b"second", FAST_KDF)
    retired = repo.keyring.current
    repo.rotate()
    newest = sorted((tmp_path / "repo" / "keyring").iterdir())[-1]
    assert newest.name.startswith("00000001-")
    newest.unlink()  # what a storage-level attacker (or an unlucky cleanup) does
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("new data")
    for password in (PW, "second"):  # both key files were re-stamped by the rotate
        r = Repository.open(LocalBackend(str(tmp_path / "repo")), password.encode())
        assert r.keyring.current == retired  # the retired data key is all that is left ...
        with pytest.raises(KeyringRollback, match="keyring generation 1 is missing"):
            take_snapshot(r, [Source("directory", str(src))])  # ... and nothing is sealed with it
    assert repo.snapshot_ids() == []
    rc, _, err = run_cli(["backup", "snapshot", str(src), "--repo", str(tmp_path / "repo")], capsys)
    assert rc == 1 and "keyring generation 1 is missing" in err and "Traceback" not in err
    rc, out, err = run_cli(["backup", "verify", "--repo", str(tmp_path / "repo"), "--json"], capsys)
    assert rc == 1 and "keyring generation 1 is missing" in json.loads(out)["keyring"]
    # a rotate starts a generation above the lost one and the repository is writable again
    r = Repository.open(LocalBackend(str(tmp_path / "repo")), PW.encode())
    r.rotate()
    assert r.keyring.generation == 2 and r.keyring.current != retired
    assert take_snapshot(r, [Source("directory", str(src))])["id"]


def test_an_edited_keyring_stamp_is_noticed(repo: Repository, tmp_path: Path) -> None:
    key = tmp_path / "repo" / "keys" / repo.key_id
    doc = json.loads(key.read_text())
    doc["keyring"]["generation"] = 0
    doc["keyring"]["mac"] = "00" * 32
    key.write_text(json.dumps(doc))
    r = Repository.open(LocalBackend(str(tmp_path / "repo")), PW.encode())
    with pytest.raises(KeyringRollback, match="stamp does not authenticate"):
        r.require_writable()


# --------------------------------------------------------------------------------------------- names, kinds
def test_over_long_names_are_reported_not_a_traceback(repo: Repository, tmp_path: Path, capsys: Cap) -> None:
    longest = "n" * 255  # the most the filesystem allows: its temporary name must not be longer
    nodes = [file_node(repo, "x" * 300, b"a"), file_node(repo, longest, b"b"), file_node(repo, "ok", b"c"),
             {"name": "d" * 300, "type": "dir", "subtree": None}]
    sid = crafted(repo, nodes)
    out = tmp_path / "out"
    rc, _, err = run_cli(["backup", "restore", sid[:8], "--repo", str(tmp_path / "repo"), "--target", str(out)],
                         capsys)
    assert rc == 1 and "Traceback" not in err
    assert f"failed: {'x' * 300}: name is 300 bytes long; the target filesystem allows 255" in err
    assert f"failed: {'d' * 300}: name is 300 bytes long" in err
    assert (out / longest).read_bytes() == b"b" and (out / "ok").read_bytes() == b"c"
    assert err.strip().splitlines()[-1].startswith("continuity: 2 failed entries not restored")


def test_special_files_are_reported_not_silently_skipped(repo: Repository, tmp_path: Path, capsys: Cap) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "plain").write_text("x")
    os.mkfifo(src / "pipe", 0o640)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    device = True
    try:
        os.mknod(src / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    except OSError:  # no CAP_MKNOD here: the device half of the test is skipped, the rest still runs
        device = False
    try:
        rc, out, err = run_cli(["backup", "snapshot", str(src), "--repo", str(tmp_path / "repo"), "--json"],
                               capsys)
    finally:
        sock.close()
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["skipped"] == [{"path": str(src / "sock"), "reason": "socket: not stored"}]
    assert f"skipped: {src / 'sock'}: socket: not stored" in err
    target = tmp_path / "out"
    rc, out, err = run_cli(["backup", "restore", summary["id"][:8], "--repo", str(tmp_path / "repo"), "--target",
                            str(target), "--json"], capsys)
    assert rc == 0, err
    st = os.lstat(target / "src" / "pipe")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o640
    if device:
        assert json.loads(out)["skipped"] == [{"path": "src/null", "reason": "character device 1:3 not recreated "
                                                                             "(a restore never creates device nodes "
                                                                             "or sockets)"}]
        assert "skipped: src/null: character device 1:3" in err and not os.path.lexists(target / "src" / "null")


def test_a_restore_larger_than_the_free_space_is_refused_before_writing(repo: Repository, tmp_path: Path,
                                                                        capsys: Cap) -> None:
    node = file_node(repo, "huge", b"tiny")
    node["size"] = 1 << 60  # an exabyte declared
    sid = crafted(repo, [node])
    target = tmp_path / "not-yet" / "out"
    with pytest.raises(NotEnoughSpace):
        restore(repo, repo.find_snapshot(sid), str(target))
    rc, _, err = run_cli(["backup", "restore", sid[:8], "--repo", str(tmp_path / "repo"), "--target",
                          str(target)], capsys)
    assert rc == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert "refusing to restore: the snapshot declares 1048576.0 TiB of file data but" in err and "free" in err
    assert not (tmp_path / "not-yet").exists()


# ------------------------------------------------------------------------------------------------------ prune
def test_prune_keeps_every_live_snapshot_among_several(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Five snapshots sharing some data, two forgotten from the middle: every kept one restores exactly."""
    monkeypatch.setenv("CONTINUITY_PACK_SIZE", str(64 * 1024))  # blobs of different snapshots share packs
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", kdf=FAST_KDF)
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared").write_bytes(random.Random(99).randbytes(40_000))
    ids, contents = [], []
    for i in range(5):
        (src / "own").write_bytes(random.Random(i).randbytes(30_000 + i))
        if i % 2:
            (src / f"extra{i}").write_bytes(random.Random(100 + i).randbytes(20_000))
        ids.append(take_snapshot(repo, [Source("directory", str(src))], set_name="s")["id"])
        contents.append({p.name: p.read_bytes() for p in src.iterdir()})
    for gone in (ids[1], ids[3]):
        repo.backend.delete(f"snapshots/{gone}")
    before = sum(repo.list_packs().values())
    res = prune(repo)
    assert res["packs_deleted"] + res["packs_repacked"] > 0 and sum(repo.list_packs().values()) < before
    report = check(repo, read_data=True)
    assert report["ok"] and report["unreferenced_packs"] == []
    for i in (0, 2, 4):
        out = tmp_path / f"out{i}"
        res = restore(repo, repo.find_snapshot(ids[i]), str(out))
        assert res["damaged"] == [] and res["failed"] == []
        assert {p.name: p.read_bytes() for p in (out / "src").iterdir()} == contents[i]
        assert restore_drill(repo, ids[i])["ok"]


def test_hard_links_come_back_as_hard_links(repo: Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a").write_bytes(b"one inode, three names")
    os.link(src / "a", src / "sub" / "b")
    os.link(src / "a", src / "c")
    (src / "lonely").write_bytes(b"one inode, three names")  # same content, its own inode: stays its own
    snap = snap_of(repo, src)
    out = tmp_path / "out"
    res = restore(repo, snap, str(out))
    assert res["links"] == 2 and res["failed"] == []
    inodes = {name: os.stat(out / "src" / name) for name in ("a", "sub/b", "c", "lonely")}
    assert inodes["a"].st_ino == inodes["sub/b"].st_ino == inodes["c"].st_ino and inodes["a"].st_nlink == 3
    assert inodes["lonely"].st_ino != inodes["a"].st_ino and inodes["lonely"].st_nlink == 1
    assert (out / "src" / "c").read_bytes() == b"one inode, three names"
