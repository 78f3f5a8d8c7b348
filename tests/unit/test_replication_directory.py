"""Directory replication: manifests of content-defined chunks, only missing chunks travel, files swapped whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from continuity.replication import directory as rdir
from continuity.replication.wire import WireError

CHUNKER = rdir.chunker_for("fleet", "keystore", "files")


def sync(src: Path, mirror: rdir.Mirror) -> int:
    """One round as the two sides run it (no network); returns the bytes that travelled."""
    files = rdir.Scanner(src, CHUNKER).scan()
    need = mirror.need(files)
    where = rdir.locate(files)
    received = {c: rdir.read_chunk(src, where[c]) for c in need}
    mirror.apply(files, received, rdir.manifest_digest(files))
    return sum(len(v) for v in received.values())


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def src(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    (d / "sub" / "deep").mkdir(parents=True)
    (d / "a.key").write_bytes(os.urandom(2000))
    (d / "sub" / "big.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    (d / "sub" / "deep" / "c.txt").write_text("hello")
    os.chmod(d / "a.key", 0o600)
    return d


def test_the_first_round_copies_everything_and_the_next_only_what_changed(src: Path, tmp_path: Path) -> None:
    mirror = rdir.Mirror(tmp_path / "dst", tmp_path / "state" / "m.json", CHUNKER)
    mirror.load()
    total = sync(src, mirror)
    assert tree(tmp_path / "dst") == tree(src) and total >= 4 * 1024 * 1024
    assert os.stat(tmp_path / "dst" / "a.key").st_mode & 0o777 == 0o600
    big = bytearray((src / "sub" / "big.bin").read_bytes())
    big[2_000_000:2_000_000] = b"inserted in the middle"  # shifts everything after it
    (src / "sub" / "big.bin").write_bytes(bytes(big))
    (src / "sub" / "deep" / "c.txt").unlink()
    (src / "new.txt").write_text("new")
    sent = sync(src, mirror)
    assert tree(tmp_path / "dst") == tree(src)
    assert sent < 1.5 * 1024 * 1024, f"{sent} bytes for a 22-byte insertion into 4 MiB"
    assert not (tmp_path / "dst" / "sub" / "deep").exists()  # emptied directories go too
    assert sync(src, mirror) == 0  # nothing changed, nothing travels


def test_a_standby_that_lost_its_manifest_cuts_its_own_files_instead_of_copying_them_again(src: Path,
                                                                                          tmp_path: Path) -> None:
    state = tmp_path / "state" / "m.json"
    first = rdir.Mirror(tmp_path / "dst", state, CHUNKER)
    first.load()
    sync(src, first)
    state.unlink()
    (src / "a.key").write_bytes(os.urandom(2000))
    again = rdir.Mirror(tmp_path / "dst", state, CHUNKER)
    again.load()
    assert sync(src, again) == 2000
    assert tree(tmp_path / "dst") == tree(src)


def test_a_round_that_cannot_complete_changes_no_file(src: Path, tmp_path: Path) -> None:
    mirror = rdir.Mirror(tmp_path / "dst", tmp_path / "state" / "m.json", CHUNKER)
    mirror.load()
    sync(src, mirror)
    before = tree(tmp_path / "dst")
    (src / "a.key").write_bytes(os.urandom(2000))
    (src / "sub" / "deep" / "c.txt").write_text("changed")
    files = rdir.Scanner(src, CHUNKER).scan()
    need = mirror.need(files)
    where = rdir.locate(files)
    partial = {c: rdir.read_chunk(src, where[c]) for c in need[:1]}  # the link dropped after one chunk
    with pytest.raises(WireError, match="neither sent nor held"):
        mirror.apply(files, partial, rdir.manifest_digest(files))
    assert tree(tmp_path / "dst") == before
    assert not list((tmp_path / "dst").rglob(f"*{rdir.TMP_SUFFIX}"))


def test_leftovers_of_a_killed_round_are_removed_and_never_listed(src: Path, tmp_path: Path) -> None:
    (src / f".a.key.x{rdir.TMP_SUFFIX}").write_text("half a file")
    assert f".a.key.x{rdir.TMP_SUFFIX}" not in rdir.Scanner(src, CHUNKER).scan()
    mirror = rdir.Mirror(src, tmp_path / "m.json", CHUNKER)
    mirror.load()
    assert not (src / f".a.key.x{rdir.TMP_SUFFIX}").exists()


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "a/../../b", "", "a//b", "./a"])
def test_a_manifest_path_that_leaves_the_directory_is_refused(rel: str) -> None:
    with pytest.raises(WireError, match="unsafe path"):
        rdir.safe_rel(rel)


def test_a_manifest_entry_whose_chunks_do_not_add_up_is_refused() -> None:
    with pytest.raises(WireError, match="add up"):
        rdir.FileEntry.from_json({"size": 10, "mode": 0o644, "mtime_ns": 1, "chunks": [["ab", 5]]})


def test_received_chunks_must_be_the_ones_the_manifest_names() -> None:
    a, b = b"a" * 100, b"b" * 50
    sizes = {rdir.chunk_id(a): 100, rdir.chunk_id(b): 50}
    got = rdir.take_chunks([rdir.chunk_id(a), rdir.chunk_id(b)], a + b, sizes)
    assert got == {rdir.chunk_id(a): a, rdir.chunk_id(b): b}
    with pytest.raises(WireError, match="does not hash to its id"):
        rdir.take_chunks([rdir.chunk_id(a)], b"x" + a[1:], sizes)
    with pytest.raises(WireError, match="in no file of the manifest"):
        rdir.take_chunks([rdir.chunk_id(b"other")], b"other", sizes)
    with pytest.raises(WireError, match="belong to no chunk"):
        rdir.take_chunks([rdir.chunk_id(a)], a + b"extra", sizes)
