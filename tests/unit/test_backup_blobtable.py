"""The compact blob table behaves as the dict it replaces: first record wins, growth keeps every entry."""

from __future__ import annotations

import os
import random

import pytest

from continuity.backup.blobtable import BlobTable
from continuity.backup.repository import Index


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
