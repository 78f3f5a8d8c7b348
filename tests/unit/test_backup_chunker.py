"""Keyed chunker properties: lossless, deterministic per key, key-dependent boundaries."""

from __future__ import annotations

import io
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from continuity.backup.chunker import SPLIT_THRESHOLD, Chunker


def _data(seed: int, size: int) -> bytes:
    # half-random, half-repetitive: realistic enough to exercise both cut paths
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < size:
        if rnd.random() < 0.5:
            out += rnd.randbytes(rnd.randint(1, 64 * 1024))
        else:
            out += bytes([rnd.randint(0, 255)]) * rnd.randint(1, 64 * 1024)
    return bytes(out[:size])


def _cuts(c: Chunker, data: bytes) -> list[int]:
    return [len(x) for x in c.chunks(data)]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(1, 2**63 - 1), dseed=st.integers(0, 2**32), size=st.integers(0, 6 * 2**20))
def test_reassembly_is_identity(seed: int, dseed: int, size: int) -> None:
    data = _data(dseed, size)
    c = Chunker(seed)
    assert b"".join(bytes(x) for x in c.chunks(data)) == data
    assert b"".join(c.stream(io.BytesIO(data))) == data or size < SPLIT_THRESHOLD


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(1, 2**63 - 1), dseed=st.integers(0, 2**32))
def test_boundaries_deterministic_per_key(seed: int, dseed: int) -> None:
    data = _data(dseed, 5 * 2**20)
    assert _cuts(Chunker(seed), data) == _cuts(Chunker(seed), data)
    assert [len(x) for x in Chunker(seed).stream(io.BytesIO(data))] == _cuts(Chunker(seed), data)


@settings(max_examples=15, deadline=None)
@given(a=st.integers(1, 2**63 - 1), b=st.integers(1, 2**63 - 1), dseed=st.integers(0, 2**32))
def test_different_keys_give_different_boundaries(a: int, b: int, dseed: int) -> None:
    if a == b:
        return
    data = random.Random(dseed).randbytes(16 * 2**20)  # ~16 cuts: identical by chance is negligible
    assert _cuts(Chunker(a), data) != _cuts(Chunker(b), data)


def test_small_files_are_not_split() -> None:
    data = _data(1, SPLIT_THRESHOLD - 1)
    assert _cuts(Chunker(7), data) == [len(data)]
    assert _cuts(Chunker(7), b"") == []


def test_zero_seed_refused() -> None:
    try:
        Chunker(0)
    except ValueError:
        return
    raise AssertionError("seed 0 (public gear table) must be refused")
