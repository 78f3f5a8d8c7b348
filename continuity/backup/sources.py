"""Source kinds that need more than reading a file: SQLite databases and JSON ledgers.

* SQLite: a live database (WAL or not) is copied with the online backup API in
  one step, i.e. inside one read transaction, so the copy is exactly the
  database as of the moment the copy began, whatever writers do meanwhile; the
  copy must pass ``PRAGMA integrity_check`` before the snapshot can commit, and
  is switched to rollback-journal mode so a restore needs no ``-wal`` file.
* Ledgers (JSON Lines or a JSON array): every record is parsed; the manifest
  stores the record count and the last sequence number so a restore drill can
  prove nothing was lost. A JSONL line still being appended (no trailing
  newline yet) is not part of the ledger yet and is left out, so a snapshot
  never stores half a record.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from typing import Any

SEQ_FIELDS = ("seq", "sequence", "seqno")


class SourceError(Exception):
    """A source could not be captured consistently (the snapshot reports it, exit 3)."""


@dataclass
class LedgerCapture:
    data: bytes
    manifest: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _seq_of(record: dict[str, Any]) -> Any:
    for key in SEQ_FIELDS:
        if key in record:
            return record[key]
    return None


def inspect_ledger(data: bytes, fmt: str | None = None) -> LedgerCapture:
    """Validate ledger bytes; ``fmt`` is ``jsonl``/``json`` or None to detect from the content."""
    stripped = data.lstrip()
    if fmt is None:
        fmt = "json" if stripped[:1] == b"[" else "jsonl"
    errors: list[str] = []
    count = 0
    last_seq: Any = None
    if fmt == "json":
        try:
            records = json.loads(data) if stripped else []
        except ValueError as exc:
            return LedgerCapture(data, {"format": "json", "records": 0, "last_seq": None, "valid": False},
                                 [f"not valid JSON: {exc}"])
        if not isinstance(records, list):
            errors.append("a JSON ledger must be an array of records")
            records = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                errors.append(f"record {i}: not a JSON object")
                continue
            count += 1
            last_seq = _seq_of(rec) if _seq_of(rec) is not None else last_seq
    else:
        end = data.rfind(b"\n") + 1
        pending = len(data) - end
        data = data[:end]
        for lineno, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                errors.append(f"line {lineno}: not valid JSON ({exc.args[0] if exc.args else exc})")
                continue
            if not isinstance(rec, dict):
                errors.append(f"line {lineno}: not a JSON object")
                continue
            count += 1
            seq = _seq_of(rec)
            if seq is not None:
                if isinstance(seq, int) and isinstance(last_seq, int) and seq <= last_seq:
                    errors.append(f"line {lineno}: sequence {seq} does not follow {last_seq}")
                last_seq = seq
        if pending:
            errors_note = f"{pending} bytes of an unterminated last line left for the next snapshot"
            return LedgerCapture(data, {"format": fmt, "records": count, "last_seq": last_seq,
                                        "valid": not errors, "pending_bytes": pending,
                                        "note": errors_note}, errors)
    return LedgerCapture(data, {"format": fmt, "records": count, "last_seq": last_seq, "valid": not errors},
                         errors)


def capture_ledger(path: str, fmt: str | None = None) -> LedgerCapture:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror}") from None
    return inspect_ledger(data, fmt)


def capture_sqlite(path: str, dest: str) -> dict[str, Any]:
    """Copy a live database to ``dest`` consistently; raise SourceError unless the copy is intact."""
    if not os.path.isfile(path):
        raise SourceError(f"{path}: no such database file")
    try:
        src = sqlite3.connect(path, timeout=60)
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: cannot open ({exc})") from None
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: one step under one read transaction → a point-in-time copy
            dst.execute("PRAGMA journal_mode=DELETE")
            result = [r[0] for r in dst.execute("PRAGMA integrity_check").fetchall()]
            if result != ["ok"]:
                raise SourceError(f"{path}: integrity_check failed on the copy: {'; '.join(result[:5])}")
            tables = {}
            for (name,) in dst.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                       "AND name NOT LIKE 'sqlite_%' ORDER BY name"):
                tables[name] = dst.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
            page_count = dst.execute("PRAGMA page_count").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: backup failed ({exc})") from None
    finally:
        src.close()
    return {"integrity": "ok", "tables": tables, "page_count": page_count}


def check_sqlite(path: str) -> dict[str, Any]:
    """integrity_check + row counts of a restored database (used by restore drills)."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        result = [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
        tables = {}
        for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                   "AND name NOT LIKE 'sqlite_%' ORDER BY name"):
            tables[name] = con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]
    finally:
        con.close()
    return {"integrity": "ok" if result == ["ok"] else "; ".join(result[:5]), "tables": tables}
