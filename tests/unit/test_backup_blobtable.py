"""The compact blob table behaves as the dict it replaces: first record wins, growth keeps every entry."""

from __future__ import annotations

import os
import random

import pytest

from continuity.backup import spilltable
from continuity.backup.blobtable import BlobTable
from continuity.backup.repository import Index
from continuity.backup.spilltable import SpilledTable


def test_table_matches_a_dict_through_growth_and_removal() -> None:
    rnd = random.Random(5)
    table, model = BlobTable(3), {}
    ids = [rnd.randbytes(32) for _ in range(5000)]
    for i, bid in enumerate(ids + ids[:100]):  # the repeats must not replace the first record
        added = table.add(bid, (i % 256).to_bytes(1, "big") * 3)
        assert added == (bid not in model)
        model.setdefault(bid, (i % 256).to_bytes(1, "big") * 3)
    for bid in ids[::7]:
        table.remove(bid)
        del model[bid]
    assert len(table) == len(model)
    assert dict(table.items()) == model
    for bid in ids:
        assert (bid in table) == (bid in model)
        assert table.get(bid) == model.get(bid)
    assert os.urandom(32) not in table and b"short" not in table and table.get(b"short") is None
    with pytest.raises(ValueError):
        table.add(os.urandom(32), b"wrong size")


def test_index_views_decode_what_was_added() -> None:
    idx = Index()
    a, b = os.urandom(32), os.urandom(32)
    idx.add("11" * 32, [(0, a, 0, 10, 20), (1, b, 10, 5, 5)])
    idx.add("22" * 32, [(0, a, 0, 10, 20)])  # a duplicate: the pack lists it, the id keeps its first location
    assert idx.get(a).pack == "11" * 32 and idx.entries[b].type == 1 and len(idx) == 2
    assert idx.packs["22" * 32] == [(0, a, 0, 10, 20)] and set(idx.packs) == {"11" * 32, "22" * 32}
    lean = Index(pack_entries=False)
    lean.add("11" * 32, [(0, a, 0, 10, 20)])
    lean.reload = lambda: idx
    assert lean.get(a).raw_length == 20 and "11" * 32 in lean.packs
    assert lean.packs["22" * 32] == [(0, a, 0, 10, 20)]  # the first use of an entry list reads them in full


@pytest.mark.parametrize("expected", [0, 1, 700, 5000, 100_000])  # buckets sized well, too few and too many
def test_spilled_table_answers_as_the_in_memory_one(expected: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spilltable, "BLOCK", 4096)  # several flushes and several read blocks when sealing
    rnd = random.Random(expected)
    table, model = SpilledTable(3, expected), BlobTable(3)
    ids = [rnd.randbytes(32) for _ in range(3000)]
    # ids that agree in the bytes the bucket is chosen by
    ids += [ids[0][:8] + rnd.randbytes(24) for _ in range(20)]
    # and a byte string that is no id but stands in the bucket at an unaligned offset: inside record y, the
    # value after it and the start of record w (a match must start at a record)
    p, r16 = ids[1][:8], rnd.randbytes(16)
    y, w = p + p + r16, p + rnd.randbytes(24)
    ids += [y, w]
    y_value = ((len(ids) - 2) % 256).to_bytes(1, "big") * 3
    unaligned = p + r16 + y_value + w[:5]
    for i, bid in enumerate(ids + ids[:50]):  # the repeats must not replace the first record
        value = (i % 256).to_bytes(1, "big") * 3
        table.add(bid, value)
        model.add(bid, value)
    table.seal()
    for bid in ids:
        assert table.get(bid) == model.get(bid)
        assert bid in table
    assert unaligned not in table and table.get(unaligned) is None
    assert os.urandom(32) not in table and table.get(b"short") is None
    assert dict(table.items()) == dict(model.items())
    late = os.urandom(32)  # added after sealing (a pack recovered later): found too
    assert table.add(late, b"zzz") and table.get(late) == b"zzz" and not table.add(ids[0], b"qqq")
    assert table.get(ids[0]) == model.get(ids[0])
    with pytest.raises(ValueError):
        table.add(os.urandom(32), b"wrong size")
    table.close()


def test_a_lean_index_keeps_its_locations_out_of_memory() -> None:
    # what a restore loads: ids to locations, in a file; a table of records in memory costs ~80 bytes a blob
    import tracemalloc

    entries = [(0, os.urandom(32), i * 100, 100, 200) for i in range(20_000)]
    tracemalloc.start()
    lean = Index(pack_entries=False, expected=len(entries))
    lean.add("11" * 32, entries)
    lean.loaded()
    held = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert held < 2 * 20_000, held
    assert all(lean.get(bid).offset == off for _, bid, off, _, _ in entries[::97])


def test_a_full_temporary_directory_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    monkeypatch.setattr(spilltable, "BLOCK", 64)
    table = SpilledTable(3, 100)

    class Full:
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    table._arrivals = Full()  # what a full $TMPDIR answers
    with pytest.raises(spilltable.SpillFailed, match="No space left on device.*TMPDIR"):
        for _ in range(10):
            table.add(os.urandom(32), b"abc")
