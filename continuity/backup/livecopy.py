"""Consistent copies of data files that another process may be writing while we read them.

A failover's prepare step copies the old primary's data to the candidate; later
(issue 10) a node copies its own data out for a peer. Either way the writer may
still be running, and a plain file copy of a live SQLite database can tear
between pages: one promote failed with "database disk image is malformed". So
no file is copied raw unless it is a plain file nobody appends to:

* **SQLite**: the online backup API in one step (one read transaction), the copy
  checked with ``PRAGMA integrity_check`` before it replaces anything
  (:func:`continuity.backup.sources.capture_sqlite`, the snapshot path's own capture).
* **Ledgers** (JSON lines): by records. Only complete lines are taken (a line
  still being appended is not a record yet), every one must parse as an object
  carrying an integer ``seq`` and no seq may appear twice; the copy is re-read
  and must hold exactly the records that were read, or it is not used.
* **Other files** (a ``directory`` source's files): copied as bytes, as before.

Every copy goes to a temp name beside the target, is fsynced and renamed over
it, and the directory is fsynced: a crash leaves the old or the new file, never
half of one. :func:`copy_service_files` orders the work so the copies agree with
each other: databases first, ledgers last. The sample service appends to its
ledger before its database, so a database copied earlier never holds a record
the later ledger copy lacks (the service rebuilds missing rows from the ledger).

I/O helpers only: what to copy and when is the caller's decision.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from continuity.backup.sources import SEQ_FIELDS, SourceError, capture_sqlite
from continuity.errors import ContinuityError

Kind = Literal["sqlite", "ledger", "file"]
SQLITE_MAGIC = b"SQLite format 3\x00"
# a database's journal / WAL files belong to the database: the backup API reads through them
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_ORDER: dict[str, int] = {"sqlite": 0, "file": 1, "ledger": 2}


class CopyError(ContinuityError):
    """A source could not be copied consistently; the target was left as it was."""


@dataclass(frozen=True)
class CopiedFile:
    """What one consistent copy wrote: the kind of copy, its size and, for a ledger, what it holds."""

    name: str
    kind: Kind
    bytes: int
    records: int | None = None
    last_seq: int | None = None
    pending_bytes: int = 0  # a ledger's unterminated last line, left out of the copy

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "kind": self.kind, "bytes": self.bytes}
        if self.kind == "ledger":
            out.update({"records": self.records, "last_seq": self.last_seq, "pending_bytes": self.pending_bytes})
        return out


def is_sqlite_side_file(name: str) -> bool:
    return name.endswith(SQLITE_SIDE_FILES)


def kind_of(path: Path, declared: Mapping[str, str] | None = None) -> Kind:
    """How ``path`` must be copied: the blueprint's declared kind for its name, else what its content says."""
    kind = (declared or {}).get(path.name)
    if kind in ("sqlite", "ledger"):
        return kind  # type: ignore[return-value]
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError:
        head = b""
    if head == SQLITE_MAGIC:
        return "sqlite"
    if path.suffix == ".jsonl":
        return "ledger"
    return "file"


def copy_sqlite(src: Path, dst: Path) -> CopiedFile:
    """Copy a (possibly live) SQLite database through the online backup API; ``dst`` replaced only if intact."""
    tmp = _tmp_for(dst)
    _discard(tmp)
    try:
        capture_sqlite(str(src), str(tmp))  # one backup step, integrity_check, rollback-journal mode
    except SourceError as exc:
        _discard(tmp)
        raise CopyError(str(exc)) from None
    size = _install(tmp, dst)
    for side in SQLITE_SIDE_FILES:  # a stale journal beside the new file would be replayed into it
        (dst.parent / (dst.name + side)).unlink(missing_ok=True)
    return CopiedFile(dst.name, "sqlite", size)


def read_ledger_records(data: bytes, name: str = "ledger") -> tuple[list[bytes], int | None, int]:
    """The complete, checked record lines of a JSON-lines ledger: (lines, last seq, bytes of a torn last line).

    Raises :class:`CopyError` naming the line when a complete line is not a JSON object with an integer
    ``seq`` or repeats a seq: such a ledger is damaged, and copying it would spread the damage.
    """
    end = data.rfind(b"\n") + 1
    lines: list[bytes] = []
    seen: dict[int, int] = {}
    last: int | None = None
    for lineno, line in enumerate(data[:end].split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise CopyError(f"{name} line {lineno}: not valid JSON") from None
        seq = next((rec[k] for k in SEQ_FIELDS if k in rec), None) if isinstance(rec, dict) else None
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise CopyError(f"{name} line {lineno}: not a record with an integer seq")
        if seq in seen:
            raise CopyError(f"{name} line {lineno}: seq {seq} already stored at line {seen[seq]}")
        seen[seq] = lineno
        lines.append(line)
        last = seq
    return lines, last, len(data) - end


def copy_ledger(src: Path, dst: Path) -> CopiedFile:
    """Copy a JSON-lines ledger record by record (complete lines only, seqs checked), then prove the copy."""
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise CopyError(f"{src}: {exc.strerror}") from None
    lines, last, pending = read_ledger_records(data, str(src))
    body = b"".join(line + b"\n" for line in lines)
    tmp = _tmp_for(dst)
    with open(tmp, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    again, again_last, again_pending = read_ledger_records(tmp.read_bytes(), str(tmp))
    if len(again) != len(lines) or again_last != last or again_pending:
        _discard(tmp)
        raise CopyError(f"{src}: the copy holds {len(again)} records (last seq {again_last}), "
                        f"expected {len(lines)} (last seq {last})")
    size = _install(tmp, dst)
    return CopiedFile(dst.name, "ledger", size, records=len(lines), last_seq=last, pending_bytes=pending)


def copy_plain(src: Path, dst: Path) -> CopiedFile:
    """Copy a file nobody appends to (a directory source's file) as bytes, through a temp name."""
    tmp = _tmp_for(dst)
    try:
        shutil.copyfile(src, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except OSError as exc:
        _discard(tmp)
        raise CopyError(f"{src}: {exc.strerror}") from None
    return CopiedFile(dst.name, "file", _install(tmp, dst))


COPIERS = {"sqlite": copy_sqlite, "ledger": copy_ledger, "file": copy_plain}


def copy_service_files(src_dir: Path, dst_dir: Path, names: Iterable[str],
                       declared: Mapping[str, str] | None = None) -> list[CopiedFile]:
    """Copy ``names`` from ``src_dir`` to ``dst_dir``, each the consistent way for its kind; databases first.

    ``declared`` maps file names to the blueprint's data kinds. SQLite side files (``-wal``,
    ``-journal``) are never copied on their own. Stops at the first :class:`CopyError`; files
    copied before it stay (each is whole and consistent on its own).
    """
    dst_dir.mkdir(parents=True, exist_ok=True)
    todo = sorted(((kind_of(src_dir / n, declared), n) for n in names if not is_sqlite_side_file(n)),
                  key=lambda kn: (_ORDER[kn[0]], kn[1]))
    done = [COPIERS[kind](src_dir / name, dst_dir / name) for kind, name in todo]
    fsync_dir(dst_dir)
    return done


def fsync_dir(d: Path) -> None:
    fd = os.open(str(d), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_for(dst: Path) -> Path:
    return dst.with_name(f"{dst.name}.{os.getpid()}.tmp")


def _install(tmp: Path, dst: Path) -> int:
    size = tmp.stat().st_size
    os.replace(tmp, dst)
    return size


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
