"""A ledger as a replication log: positions, continuity checks, resume by probes, divergence kept aside."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from continuity.replication.ledger import GENESIS, LedgerError, LedgerLog, Position, probe_counts


def lines(*seqs: int, epoch: int = 1) -> bytes:
    return b"".join(json.dumps({"seq": s, "epoch": epoch}).encode() + b"\n" for s in seqs)


def make(path: Path, data: bytes) -> LedgerLog:
    path.write_bytes(data)
    return LedgerLog(path).open()


def replicate(primary: LedgerLog, copy: LedgerLog, max_bytes: int = 1 << 20) -> int:
    """Ship everything the copy lacks, frame by frame, as a sender and follower would; returns frames sent."""
    frames = 0
    while copy.count < primary.count:
        data, end = primary.read(copy.end, max_bytes)
        copy.apply(copy.end, data, end)
        frames += 1
    return frames


def test_positions_count_complete_lines_and_chain_their_bytes(tmp_path: Path) -> None:
    log = make(tmp_path / "a.jsonl", lines(1, 2, 3) + b'{"seq": 4')  # a line still being written
    assert log.count == 3 and log.torn == len(b'{"seq": 4')
    assert log.end.offset == len(lines(1, 2, 3)) and log.last_seq == 3
    same = make(tmp_path / "b.jsonl", lines(1, 2, 3))
    assert same.end == log.end  # same bytes, same chain
    other = make(tmp_path / "c.jsonl", lines(1, 2, 9))
    assert other.end.offset == log.end.offset and other.end.count == 3
    assert other.end != log.end  # same size and count, other history: the chain tells them apart
    assert log.position(0) == GENESIS


def test_the_primary_picks_up_appends_and_a_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    log = make(path, lines(1))
    with open(path, "ab") as fh:
        fh.write(lines(2, 3))
    assert log.refresh() and log.count == 3
    assert not log.refresh()
    tmp = tmp_path / "swap"
    tmp.write_bytes(lines(7))
    os.replace(tmp, path)  # a restore swapped another file in
    gen = log.generation
    assert log.refresh() and log.count == 1 and log.generation == gen + 1


def test_a_copy_replicates_in_frames_and_ends_identical(tmp_path: Path) -> None:
    primary = make(tmp_path / "p.jsonl", lines(*range(1, 501)))
    copy = LedgerLog(tmp_path / "s.jsonl", writable=True).open()
    assert replicate(primary, copy, max_bytes=1000) > 10
    assert copy.end == primary.end and copy.last_seq == 500
    assert (tmp_path / "s.jsonl").read_bytes() == (tmp_path / "p.jsonl").read_bytes()


def test_a_frame_that_does_not_continue_the_copy_exactly_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    primary = make(tmp_path / "p.jsonl", lines(1, 2, 3, 4))
    copy = LedgerLog(tmp_path / "s.jsonl", writable=True).open()
    data, end = primary.read(primary.position(0), 1 << 20)
    two = primary.position(2)
    with pytest.raises(LedgerError, match="discontinuity"):  # a gap: starts after records the copy lacks
        copy.apply(two, *primary.read(two, 1 << 20))
    copy.apply(GENESIS, *primary.read(GENESIS, len(lines(1, 2))))
    with pytest.raises(LedgerError, match="discontinuity"):  # an overlap: starts before the copy's end
        copy.apply(GENESIS, data, end)
    forged = Position(two.offset, two.count, "00" * 12)  # right place, other history
    with pytest.raises(LedgerError, match="discontinuity"):
        copy.apply(forged, *primary.read(two, 1 << 20))
    rest, rest_end = primary.read(two, 1 << 20)
    with pytest.raises(LedgerError, match="discontinuity"):  # the bytes do not make the end the primary claims
        copy.apply(two, rest.replace(b'"seq": 3', b'"seq": 8'), rest_end)
    with pytest.raises(LedgerError, match="discontinuity"):  # a torn line
        copy.apply(two, rest[:-3], rest_end)
    assert (tmp_path / "s.jsonl").read_bytes() == lines(1, 2)
    copy.apply(two, rest, rest_end)
    assert copy.end == primary.end


def test_a_copy_changed_by_someone_else_is_not_written_to(tmp_path: Path) -> None:
    primary = make(tmp_path / "p.jsonl", lines(1, 2))
    copy = LedgerLog(tmp_path / "s.jsonl", writable=True).open()
    with open(tmp_path / "s.jsonl", "ab") as fh:
        fh.write(lines(99))
    with pytest.raises(LedgerError, match="replaced"):
        copy.apply(GENESIS, *primary.read(GENESIS, 1 << 20))


def test_a_torn_tail_left_by_a_killed_replicator_is_cut_when_the_copy_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(lines(1, 2) + b'{"seq": 3, "ep')
    copy = LedgerLog(path, writable=True).open()
    assert copy.count == 2 and path.read_bytes() == lines(1, 2)


def test_resume_finds_the_copys_own_end_in_one_probe(tmp_path: Path) -> None:
    primary = make(tmp_path / "p.jsonl", lines(*range(1, 1001)))
    copy_path = tmp_path / "s.jsonl"
    copy_path.write_bytes(lines(*range(1, 701)))
    copy = LedgerLog(copy_path, writable=True).open()
    probes = copy.probes(0, copy.count)
    assert primary.best_match(probes) == copy.end  # no full copy: continue from 700


def test_divergence_is_found_exactly_even_deep_and_the_tail_is_kept_aside(tmp_path: Path) -> None:
    shared = lines(*range(1, 401))
    primary = make(tmp_path / "p.jsonl", shared + lines(*range(401, 451), epoch=3))
    copy_path = tmp_path / "s.jsonl"
    copy_path.write_bytes(shared + lines(*range(401, 701), epoch=2))  # a tail the new primary never had
    copy = LedgerLog(copy_path, writable=True).open()
    probes = copy.probes(0, copy.count)
    rounds = 1
    while True:  # the follower's search, round by round
        at = primary.best_match(probes)
        above = [p.count for p in probes if p.count > at.count]
        if not above or min(above) == at.count + 1:
            break
        probes = copy.probes(at.count, min(above))
        rounds += 1
    assert at.count == 400 and rounds <= 3
    kept, records, size = copy.cut(at, tmp_path / "aside", "test")
    assert records == 300 and kept.read_bytes() == lines(*range(401, 701), epoch=2) and size == len(kept.read_bytes())
    assert copy.end == primary.position(400)
    replicate(primary, copy)
    assert copy_path.read_bytes() == (tmp_path / "p.jsonl").read_bytes()


def test_probe_counts_are_dense_near_the_end_then_sparse() -> None:
    counts = probe_counts(0, 10_000)
    assert counts[:64] == list(range(9999, 9935, -1))
    assert len(counts) < 64 + 20 and counts == sorted(counts, reverse=True) and min(counts) > 0
    assert probe_counts(5, 7) == [6]
    assert probe_counts(5, 6) == []


def test_lines_that_are_not_json_are_replicated_as_written(tmp_path: Path) -> None:
    primary = make(tmp_path / "p.jsonl", lines(1) + b"not json\n\n" + lines(2))
    copy = LedgerLog(tmp_path / "s.jsonl", writable=True).open()
    replicate(primary, copy)
    assert copy.end == primary.end and copy.last_seq == 2
    assert (tmp_path / "s.jsonl").read_bytes() == (tmp_path / "p.jsonl").read_bytes()


@pytest.mark.parametrize("bad", [None, [1, 2], [-1, 0, ""], [0, 3, ""], [5, 0, ""], ["1", 1, "x"]])
def test_malformed_positions_are_refused(bad: object) -> None:
    with pytest.raises(LedgerError, match="malformed"):
        Position.from_list(bad)
