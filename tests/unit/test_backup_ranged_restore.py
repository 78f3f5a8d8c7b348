"""Restore reads only the blobs it needs, in bounded windows, and still authenticates every byte it uses."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from continuity.backup.repository import TREE, Repository, pack_name
from continuity.backup.restore import read_windows, restore
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from tests.unit.test_backup_engine import FAST_KDF, make_tree, tree_bytes


class RecordingBackend(LocalBackend):
    """A local backend that remembers every ranged read (name, offset, length)."""

    def __init__(self, root: str, window: int, gap: int) -> None:
        super().__init__(root)
        self.read_window, self.read_gap = window, gap
        self.ranges: list[tuple[str, int, int]] = []

    def read_range(self, name: str, offset: int, length: int) -> bytes:
        self.ranges.append((name, offset, length))
        return super().read_range(name, offset, length)


def _disjoint(holes_and_lengths: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Blobs in a pack never overlap: lay them end to end with the given holes between them."""
    out, pos = [], 0
    for hole, length in holes_and_lengths:
        out.append((pos + hole, length))
        pos += hole + length
    return out


@given(st.lists(st.tuples(st.integers(0, 3_000), st.integers(1, 3_000)), max_size=40).map(_disjoint),
       st.randoms(use_true_random=False), st.integers(1, 5_000), st.integers(0, 2_000))
def test_windows_cover_every_span_whole_and_stay_bounded(spans: list[tuple[int, int]], rnd: random.Random,
                                                         window: int, gap: int) -> None:
    rnd.shuffle(spans)  # the index hands blobs over in any order
    windows = read_windows(spans, window, gap)
    seen = sorted(i for _, _, members in windows for i in members)
    assert seen == list(range(len(spans)))  # every span read exactly once
    for start, end, members in windows:
        for i in members:
            off, length = spans[i]
            assert start <= off and off + length <= end  # never split: a blob is authenticated whole
        # a window exceeds the limit only when it is a single span longer than the limit
        assert end - start <= window or (len(members) == 1 and end - start == spans[members[0]][1])
    # windows are in offset order and do not overlap, so no byte is fetched twice
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:], strict=False))


def test_adjacent_blobs_share_a_read_and_far_ones_do_not() -> None:
    spans = [(0, 100), (100, 50), (150, 10), (10_000, 10)]
    assert read_windows(spans, window=1_000, gap=64) == [(0, 160, [0, 1, 2]), (10_000, 10_010, [3])]
    assert read_windows(spans, window=120, gap=64) == [(0, 100, [0]), (100, 160, [1, 2]), (10_000, 10_010, [3])]


@pytest.fixture
def packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, dict[str, object]]:
    """Many small files and one multi-blob file, in packs of ~1 MiB so a pack holds many blobs."""
    monkeypatch.setenv("CONTINUITY_PACK_SIZE", str(1024 * 1024))
    src = tmp_path / "src"
    make_tree(src, files=200)
    (src / "more.bin").write_bytes(random.Random(9).randbytes(1_500_000))
    repo = Repository.init(LocalBackend(str(tmp_path / "repo")), b"pw", kdf=FAST_KDF)
    snap = take_snapshot(repo, [Source("directory", str(src))])
    return src, tmp_path / "repo", snap


def _open(path: Path, window: int, gap: int) -> tuple[Repository, RecordingBackend]:
    backend = RecordingBackend(str(path), window, gap)
    return Repository.open(backend, b"pw"), backend


def test_full_restore_reads_bounded_windows_and_is_exact(packed: tuple[Path, Path, dict[str, object]],
                                                         tmp_path: Path) -> None:
    src, path, snap = packed
    repo, backend = _open(path, window=64 * 1024, gap=4 * 1024)
    largest_blob = max(e.length for e in repo.index.entries.values())
    backend.ranges.clear()
    res = restore(repo, repo.find_snapshot(str(snap["id"])), str(tmp_path / "out"))
    assert res["damaged"] == []
    assert tree_bytes(tmp_path / "out" / "src") == tree_bytes(src)
    # trees are read by both walks of a restore (names and sizes checked first, then restored streaming);
    # file contents are read once
    trees = {(pack_name(e.pack), e.offset, e.length) for e in repo.index.entries.values() if e.type == TREE}
    data_reads = [r for r in backend.ranges if r[0].startswith("data/") and r not in trees]
    assert data_reads and max(length for _, _, length in data_reads) <= max(64 * 1024, largest_blob)
    # no byte of file content was fetched twice
    per_pack: dict[str, list[tuple[int, int]]] = {}
    for name, off, length in data_reads:
        per_pack.setdefault(name, []).append((off, off + length))
    for spans in per_pack.values():
        spans.sort()
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_partial_restore_reads_far_less_than_the_packs(packed: tuple[Path, Path, dict[str, object]],
                                                       tmp_path: Path) -> None:
    src, path, snap = packed
    repo, backend = _open(path, window=2 * 1024 * 1024, gap=1024)
    snapshot = repo.find_snapshot(str(snap["id"]))
    include = "src/a/f1.json"
    backend.ranges.clear()
    res = restore(repo, snapshot, str(tmp_path / "out"), includes=[include])
    assert res["damaged"] == [] and res["files"] == 1
    restored = tmp_path / "out" / include
    assert restored.read_bytes() == (src / "a" / "f1.json").read_bytes()
    data_bytes = sum(length for name, _, length in backend.ranges if name.startswith("data/"))
    # the tree blobs on the way plus one small file's blob: a sliver of what a full restore reads
    assert 0 < data_bytes < sum(repo.list_packs().values()) // 50


def test_corrupt_byte_inside_a_batched_blob_is_named(packed: tuple[Path, Path, dict[str, object]],
                                                     tmp_path: Path) -> None:
    """Batching reads must not weaken authentication: a flipped byte in one small blob damages that file only."""
    src, path, snap = packed
    repo, _ = _open(path, window=1024 * 1024, gap=64 * 1024)
    snapshot = repo.find_snapshot(str(snap["id"]))
    tree = dict(_walk(repo, snapshot["tree"]))
    victim_rel, victim = next((rel, n) for rel, n in sorted(tree.items())
                              if rel == "src/a/f7.json")
    e = repo.index.get(bytes.fromhex(victim["content"][0]))
    assert e is not None
    pack_file = path / pack_name(e.pack)
    raw = bytearray(pack_file.read_bytes())
    raw[e.offset + e.length // 2] ^= 0x01
    pack_file.chmod(0o644)
    pack_file.write_bytes(bytes(raw))
    repo, _ = _open(path, window=1024 * 1024, gap=64 * 1024)
    res = restore(repo, repo.find_snapshot(str(snap["id"])), str(tmp_path / "out"))
    assert [d["path"] for d in res["damaged"]] == [victim_rel]
    assert not (tmp_path / "out" / victim_rel).exists()
    assert (tmp_path / "out" / victim_rel.replace("f7.json", "f8.json")).exists()


def _walk(repo: Repository, tree_id: str, prefix: str = "") -> list[tuple[str, dict[str, object]]]:
    from continuity.backup.restore import walk

    return list(walk(repo, tree_id, prefix))
