"""SQLite images and the standby's staging: consistent images, changed pages only, nothing half applied."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from continuity.replication import sqlite as rsql
from continuity.replication.wire import WireError


def make_db(path: Path, rows: int = 3000, wal: bool = False) -> sqlite3.Connection:
    db = sqlite3.connect(path)
    if wal:
        db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    db.execute("CREATE INDEX t_v ON t (v)")
    db.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"{i:06d}" * 20) for i in range(rows)])
    db.commit()
    return db


def changed_pages(old: bytes, new: bytes, ps: int) -> list[int]:
    a, b = rsql.page_hashes(old, ps), rsql.page_hashes(new, ps)
    return [i for i, h in enumerate(b) if i >= len(a) or a[i] != h]


def apply(replica: Path, image: bytes, pages: list[int]) -> None:
    ps = rsql.page_size(image)
    st = rsql.Staging(replica)
    st.write(pages, ps, b"".join(image[i * ps:(i + 1) * ps] for i in pages))
    st.commit(len(image), rsql.digest(image))


def integrity(path: Path) -> list[tuple[str]]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("PRAGMA integrity_check").fetchall()


@pytest.mark.parametrize("wal", [False, True])
def test_images_are_taken_only_when_the_database_changed_and_open_without_a_wal(tmp_path: Path, wal: bool) -> None:
    db = make_db(tmp_path / "src.db", wal=wal)
    images = rsql.Images(tmp_path / "src.db")
    assert images.changed()
    image = images.capture()
    assert not images.changed()
    db.execute("UPDATE t SET v = 'z' WHERE k = 5")
    db.commit()
    assert images.changed()
    assert image[18:20] == b"\x01\x01"  # rollback-journal mode: the replica is one file
    (tmp_path / "copy.db").write_bytes(image)
    assert integrity(tmp_path / "copy.db") == [("ok",)]


def replicated(tmp_path: Path) -> tuple[sqlite3.Connection, rsql.Images, bytes, Path]:
    """A source database, its images, the first one, and a replica holding it."""
    db = make_db(tmp_path / "src.db")
    images = rsql.Images(tmp_path / "src.db")
    images.changed()
    first = images.capture()
    replica = tmp_path / "replica.db"
    apply(replica, first, list(range(len(first) // rsql.page_size(first))))
    return db, images, first, replica


def test_a_round_ships_only_changed_pages_and_rebuilds_the_image_exactly(tmp_path: Path) -> None:
    db, images, first, replica = replicated(tmp_path)
    db.execute("UPDATE t SET v = 'short' WHERE k IN (10, 2000)")
    db.commit()
    images.changed()
    second = images.capture()
    ps = rsql.page_size(second)
    pages = changed_pages(first, second, ps)
    assert 0 < len(pages) < len(second) // ps // 5
    apply(replica, second, pages)
    assert replica.read_bytes() == second and integrity(replica) == [("ok",)]


def test_a_round_cut_short_leaves_the_replica_as_it_was(tmp_path: Path) -> None:
    """A kill -9 mid-round: whatever was written went to the staging file, never to the replica."""
    db, images, first, replica = replicated(tmp_path)
    db.executemany("UPDATE t SET v = ? WHERE k = ?", [("n" * (k % 300), k) for k in range(0, 3000, 3)])
    db.commit()
    images.changed()
    second = images.capture()
    ps = rsql.page_size(second)
    pages = changed_pages(first, second, ps)
    st = rsql.Staging(replica)
    st.write(pages[: len(pages) // 2], ps, b"".join(second[i * ps:(i + 1) * ps] for i in pages[: len(pages) // 2]))
    # killed here: no commit
    assert replica.read_bytes() == first and integrity(replica) == [("ok",)]
    st.abort()
    apply(replica, second, pages)  # the next round starts again from the replica
    assert replica.read_bytes() == second


def test_a_staged_image_that_is_not_the_primarys_is_never_swapped_in(tmp_path: Path) -> None:
    make_db(tmp_path / "src.db")
    image = (tmp_path / "src.db").read_bytes()
    replica = tmp_path / "replica.db"
    replica.write_bytes(image)
    st = rsql.Staging(replica)
    st.write([1], rsql.page_size(image), b"\0" * rsql.page_size(image))
    with pytest.raises(WireError, match="apply-failed"):
        st.commit(len(image), rsql.digest(image))
    assert replica.read_bytes() == image and not st.tmp.exists()


def test_a_stale_journal_beside_the_replica_is_removed_before_the_swap(tmp_path: Path) -> None:
    make_db(tmp_path / "src.db")
    image = (tmp_path / "src.db").read_bytes()
    replica = tmp_path / "replica.db"
    replica.write_bytes(image)
    journal = Path(str(replica) + "-journal")
    journal.write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" + b"\0" * 4096)  # a hot journal's magic
    apply(replica, image, [])
    assert not journal.exists() and integrity(replica) == [("ok",)]


def test_what_a_standby_holds_is_described_page_by_page(tmp_path: Path) -> None:
    make_db(tmp_path / "src.db")
    have = rsql.describe(tmp_path / "src.db")
    assert have is not None
    digest, ps, pages = rsql._known(have)
    data = (tmp_path / "src.db").read_bytes()
    assert digest == rsql.digest(data) and ps == rsql.page_size(data) and len(pages) == len(data) // ps
    assert rsql.describe(tmp_path / "missing.db") is None
    (tmp_path / "junk.db").write_bytes(b"not sqlite")
    assert rsql.describe(tmp_path / "junk.db") is None
