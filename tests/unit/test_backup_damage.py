"""Damage in packs, index and snapshot files: named by verify, never restored as content."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from continuity.backup import repository as repo_mod
from continuity.backup.repository import Repository
from continuity.backup.restore import UnsafeSnapshot, restore
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from continuity.cli import main
from tests.unit.test_backup_engine import FAST_KDF

PW = "damage-pw"


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture
def fixture_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, list[str]]:
    """Two snapshots of ~40 distinct files spread over many small packs."""
    monkeypatch.setenv("CONTINUITY_PACK_SIZE", str(48 * 1024))
    monkeypatch.setenv("CONTINUITY_PASSWORD", PW)
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    rnd = random.Random(3)
    for i in range(40):
        (src / "d" / f"f{i:02d}").write_bytes(rnd.randbytes(6000 + i))
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), PW.encode(), kdf=FAST_KDF)
    s1 = take_snapshot(repo, [Source("directory", str(src))])["id"]
    (src / "d" / "late").write_bytes(rnd.randbytes(9000))
    s2 = take_snapshot(repo, [Source("directory", str(src))])["id"]
    return tmp_path / "repo", src, [s1, s2]


def damage(path: Path, how: str, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    pos = len(data) // 2 if at is None else at
    if how == "flip":
        data[pos] ^= 0x10
    elif how == "truncate":
        data = data[:pos]
    elif how == "delete":
        del data[pos:pos + 7]
    path.write_bytes(bytes(data))


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def source_files(src: Path) -> dict[str, bytes]:
    """What a restore of ``src`` should produce below the target (the source's basename first)."""
    return {f"{src.name}/{k}": v for k, v in files_under(src).items()}


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_pack_damage(fixture_repo: tuple[Path, Path, list[str]], how: str, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    repo_path, src, (s1, s2) = fixture_repo
    repo = Repository.open(LocalBackend(str(repo_path)), PW.encode())
    # damage a pack of file contents inside its first blob (tree damage is covered by the drill tests)
    pack, ents = next((p, e) for p, e in sorted(repo.index.packs.items())
                      if all(x[0] == repo_mod.DATA for x in e))
    _typ, _bid, off, length, _raw = ents[0]
    damage(repo_path / "data" / pack[:2] / pack, how, off + length // 2)

    rc, out, err = run_cli(["backup", "verify", "--repo", str(repo_path)], capsys)
    assert rc in (0, 1)  # metadata check: a truncation is visible without reading data, a flip is not
    rc, out, err = run_cli(["backup", "verify", "--repo", str(repo_path), "--read-data", "--json"], capsys)
    report = json.loads(out)
    assert rc == 1 and not report["ok"]
    assert pack[:8] in err and any(d["pack"] == pack for d in report["damaged_packs"])
    damaged_files = {d["path"] for d in report["damaged_files"]}
    assert damaged_files and all(d["snapshot"] in (s1, s2) for d in report["damaged_files"])

    target = tmp_path / "out"
    rc, out, err = run_cli(["backup", "restore", s2[:8], "--repo", str(repo_path), "--target", str(target)], capsys)
    assert rc == 1 and "damaged" in err
    restored = files_under(target)
    original = source_files(src)
    bad = {p for p in damaged_files}
    assert bad and not (bad & set(restored))  # a damaged file is not written at all
    for rel, data in restored.items():
        assert data == original[rel]  # every written byte is right
    assert set(restored) | bad == set(original)  # everything undamaged came back
    assert not [p for p in target.rglob(".*continuity-restore*")]


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_index_damage(fixture_repo: tuple[Path, Path, list[str]], how: str, tmp_path: Path,
                      capsys: pytest.CaptureFixture[str]) -> None:
    repo_path, src, (s1, s2) = fixture_repo
    idx_file = sorted((repo_path / "index").iterdir())[0]
    damage(idx_file, how)
    rc, out, err = run_cli(["backup", "verify", "--repo", str(repo_path), "--read-data"], capsys)
    assert rc == 1 and idx_file.name[:8] in err
    # the packs' own headers still locate every blob: both snapshots restore completely
    for sid in (s1, s2):
        target = tmp_path / f"out-{sid[:6]}"
        rc, _, err = run_cli(["backup", "restore", sid, "--repo", str(repo_path), "--target", str(target)], capsys)
        assert rc == 0, err
    assert files_under(tmp_path / f"out-{s2[:6]}") == source_files(src)


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_snapshot_damage(fixture_repo: tuple[Path, Path, list[str]], how: str, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    repo_path, src, (s1, s2) = fixture_repo
    damage(repo_path / "snapshots" / s2, how)
    rc, out, err = run_cli(["backup", "verify", "--repo", str(repo_path), "--read-data"], capsys)
    assert rc == 1 and f"snapshot {s2[:8]}" in err
    rc, out, err = run_cli(["backup", "list", "--repo", str(repo_path), "--json"], capsys)
    assert [s["id"] for s in json.loads(out)] == [s1] and f"damaged snapshot {s2[:8]}" in err
    rc, _, err = run_cli(["backup", "restore", s2[:8], "--repo", str(repo_path), "--target",
                          str(tmp_path / "x")], capsys)
    assert rc == 1 and "damaged" in err
    target = tmp_path / "ok"
    rc, _, err = run_cli(["backup", "restore", s1[:8], "--repo", str(repo_path), "--target", str(target)], capsys)
    assert rc == 0, err
    expected = source_files(src)
    del expected["src/d/late"]
    assert files_under(target) == expected


def _crafted(repo: Repository, name: str) -> str:
    """A validly encrypted snapshot whose tree names ``name``: only path checks can stop it."""
    w = repo_mod.PackWriter(repo)
    blob = w.save(repo_mod.DATA, b"pwned")
    leaf = json.dumps({"nodes": [{"name": name, "type": "file", "mode": 0o644, "mtime": 0, "size": 5,
                                  "content": [blob.hex()]}]}, sort_keys=True, separators=(",", ":")).encode()
    tree = w.save(repo_mod.TREE, leaf)
    repo.save_index(w.finish())
    return repo.save_file("snapshots", {"version": 1, "time": "2026-01-01T00:00:00+00:00", "hostname": "evil",
                                        "paths": ["/x"], "tree": tree.hex(), "sources": []})


@pytest.mark.parametrize("name", ["../escape", "/etc/evil", "..", "a/../../b", "x\x00y"])
def test_crafted_paths_refused(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_PASSWORD", PW)
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), PW.encode(), kdf=FAST_KDF)
    sid = _crafted(repo, name)
    target = tmp_path / "sandbox" / "target"
    with pytest.raises(UnsafeSnapshot):
        restore(repo, repo.find_snapshot(sid), str(target))
    rc, _, err = run_cli(["backup", "restore", sid[:8], "--repo", str(tmp_path / "repo"), "--target",
                          str(target)], capsys)
    assert rc == 1 and "refusing" in err
    written = [p for p in (tmp_path / "sandbox").rglob("*") if p.is_file()]
    assert written == [] and not (tmp_path / "escape").exists() and not os.path.exists("/etc/evil")


def test_restore_never_writes_through_symlinks(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("data")
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), PW.encode(), kdf=FAST_KDF)
    sid = take_snapshot(repo, [Source("directory", str(src))])["id"]
    target = tmp_path / "target"
    (target / "src").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, target / "src" / "sub")  # a planted symlink where a directory will go
    with pytest.raises(UnsafeSnapshot):
        restore(repo, repo.find_snapshot(sid), str(target))
    assert list(outside.iterdir()) == []
