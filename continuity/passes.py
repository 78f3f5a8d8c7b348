"""Satellite passes: when an intermittent node can talk to the fleet, as absolute spans of time.

A satellite's contact comes from three places, all turned into the same thing here (a :class:`Pass`, a
start and an end in epoch seconds, UTC):

* weekly windows (``contact:`` in the blueprint, ``HH:MM`` ranges on weekdays) — ground stations with a
  fixed timetable;
* absolute passes written inline (``passes: ["2026-12-01T03:10Z/PT9M"]``, ISO 8601 ``start/duration`` or
  ``start/end``) — one-off passes, as orbital mechanics produce them;
* a pass-schedule file the operators already have (``pass_schedule: passes.csv``, CSV or JSON), with a
  ``start`` column and an ``end`` or ``duration`` column; an optional ``node`` (or ``satellite``) column
  keeps only that node's rows, so one file can serve a constellation.

Pure (no clock, no Redis): every function takes ``now`` from its caller, which is what lets the pass
scheduler and the store-and-forward acceptance test run on a simulated clock. Bad input raises
:class:`~continuity.errors.ConfigError` naming the file and line, which the CLI prints as one line (exit 2).
"""

from __future__ import annotations

import bisect
import csv
import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from continuity.errors import ConfigError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY = 86400.0
_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


@dataclass(frozen=True, order=True)
class Pass:
    """One contact span [start, end) in epoch seconds (UTC)."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start

    def contains(self, t: float) -> bool:
        return self.start <= t < self.end

    def iso(self) -> str:
        """``2026-12-01T03:10:00Z/PT540S``: the form this module reads back."""
        return f"{iso_time(self.start)}/PT{self.length:g}S"


def iso_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_duration_iso(text: str) -> float:
    """ISO 8601 duration ``PnDTnHnMnS`` (weeks, months and years are not pass lengths) → seconds."""
    m = _DURATION.match(text.strip())
    if not m or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(f"not an ISO 8601 duration: {text!r} (e.g. PT9M, PT90S, PT1H30M)")
    d, h, mi, s = (m.group(k) for k in ("d", "h", "m", "s"))
    return int(d or 0) * DAY + int(h or 0) * 3600.0 + int(mi or 0) * 60.0 + float(s or 0)


def parse_time(text: str) -> float:
    """An ISO 8601 instant with an explicit zone (``2026-12-01T03:10Z``, ``...+02:00``) → epoch seconds.

    A time without a zone is refused: a pass schedule read as local time would be off by hours."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-12-01T03:10Z)") from None
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone: write it in UTC with a trailing Z")
    return when.timestamp()


def make_pass(start: float, end: float) -> Pass:
    if end <= start:
        raise ValueError(f"the pass ends ({iso_time(end)}) before it starts ({iso_time(start)})")
    return Pass(start, end)


def parse_interval(text: str) -> Pass:
    """``START/DURATION`` or ``START/END`` (ISO 8601 intervals) → a :class:`Pass`."""
    if not isinstance(text, str) or text.count("/") != 1:
        raise ValueError(f"not an ISO 8601 interval: {text!r} (use START/DURATION, e.g. 2026-12-01T03:10Z/PT9M)")
    a, b = text.split("/")
    start = parse_time(a)
    if b.strip().startswith("P"):
        return make_pass(start, start + parse_duration_iso(b))
    return make_pass(start, parse_time(b))


def _row_pass(row: dict[str, object]) -> Pass:
    start = row.get("start")
    if start in (None, ""):
        raise ValueError("missing start")
    s = parse_time(str(start))
    end, length = row.get("end"), row.get("duration")
    if (end in (None, "")) == (length in (None, "")):
        raise ValueError("give exactly one of end or duration")
    if end not in (None, ""):
        return make_pass(s, parse_time(str(end)))
    if isinstance(length, int | float) and not isinstance(length, bool):
        return make_pass(s, s + float(length))  # JSON: a number of seconds
    text = str(length).strip()
    secs = parse_duration_iso(text) if text.startswith("P") else _seconds(text)
    return make_pass(s, s + secs)


def _seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"duration {text!r}: use seconds (540) or ISO 8601 (PT9M)") from None


def _row_node(row: dict[str, object]) -> str | None:
    for key in ("node", "satellite"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return None


def load_pass_file(path: str | Path, node: str) -> tuple[Pass, ...]:
    """The passes of ``node`` in a CSV (header row) or JSON (a list, or ``{"passes": [...]}``) file.

    Rows naming another node are skipped; rows naming none are the node's. Each error names the file and
    the line it was found on."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), None, "", f"cannot read the pass schedule: {exc.strerror}") from None
    if p.suffix.lower() == ".json":
        rows = _json_rows(str(p), text)
    else:
        rows = _csv_rows(str(p), text)
    out: list[Pass] = []
    for line, key, row in rows:
        other = _row_node(row)
        if other is not None and other != node:
            continue
        try:
            out.append(_row_pass(row))
        except ValueError as exc:
            raise ConfigError(str(p), line, key, str(exc)) from None
    return tuple(sorted(out))


def _csv_rows(file: str, text: str) -> list[tuple[int, str, dict[str, object]]]:
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    rows = []
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [f.strip().lower() for f in fields]
            if "start" not in header:
                raise ConfigError(file, line, "", "the first row must name the columns: start and end or duration "
                                  f"(found {', '.join(header)})")
            continue
        if len(fields) != len(header):
            raise ConfigError(file, line, "", f"{len(fields)} fields where the header has {len(header)}")
        rows.append((line, "", {h: v.strip() for h, v in zip(header, fields, strict=True)}))
    return rows


def _json_rows(file: str, text: str) -> list[tuple[int, str, dict[str, object]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(file, exc.lineno, "", f"not valid JSON: {exc.msg}") from None
    if isinstance(data, dict) and isinstance(data.get("passes"), list):
        data = data["passes"]
    if not isinstance(data, list):
        raise ConfigError(file, 1, "", 'a JSON pass schedule is a list of passes, or {"passes": [...]}')
    starts = _object_lines(text)
    rows = []
    for i, item in enumerate(data):
        line = starts[i] if i < len(starts) else None
        if not isinstance(item, dict):
            raise ConfigError(file, line, f"[{i}]", "each pass is an object with start and end or duration")
        rows.append((line or 0, f"[{i}]", item))
    return rows


def _object_lines(text: str) -> list[int]:
    """Line of each top-level pass object's opening brace (the list's items, in order)."""
    lines, depth, line, in_str, esc = [], 0, 1, False, False
    list_depth: int | None = None
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            if ch == "[" and list_depth is None:
                list_depth = depth + 1
            elif ch == "{" and list_depth is not None and depth == list_depth:
                lines.append(line)
            depth += 1
        elif ch in "]}":
            depth -= 1
    return lines


def _hhmm(value: str) -> float:
    if value == "24:00":
        return DAY
    hh, mm = value.split(":")
    return int(hh) * 3600.0 + int(mm) * 60.0


def weekly_passes(windows: Iterable[tuple[str, str, Sequence[str]]], after: float, until: float) -> list[Pass]:
    """Weekly ``(start HH:MM, end HH:MM, days)`` windows as passes overlapping [after, until).

    A window crossing midnight belongs to the day it starts on (the blueprint's rule)."""
    out = []
    day0 = dt.datetime.fromtimestamp(after, dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    n_days = int((until - day0.timestamp()) // DAY) + 2
    for start, end, days in windows:
        a, b = _hhmm(start), _hhmm(end)
        for k in range(-1, n_days):
            day = day0 + dt.timedelta(days=k)
            if WEEKDAYS[day.weekday()] not in days:
                continue
            base = day.timestamp()
            p = Pass(base + a, base + (b if b > a else b + DAY))
            if p.end > after and p.start < until:
                out.append(p)
    return out


def merged(passes: Iterable[Pass]) -> list[Pass]:
    """Sorted, with overlapping or touching passes joined (two stations back to back are one contact)."""
    out: list[Pass] = []
    for p in sorted(passes):
        if out and p.start <= out[-1].end:
            if p.end > out[-1].end:
                out[-1] = Pass(out[-1].start, p.end)
        else:
            out.append(p)
    return out


@dataclass(frozen=True)
class Schedule:
    """A node's contact: weekly windows plus absolute passes; empty means always in contact."""

    weekly: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    absolute: tuple[Pass, ...] = ()

    @property
    def intermittent(self) -> bool:
        return bool(self.weekly or self.absolute)

    def between(self, after: float, until: float) -> list[Pass]:
        """Merged passes overlapping [after, until)."""
        i = bisect.bisect_left([p.end for p in self.absolute], after)
        absolute = [p for p in self.absolute[i:] if p.start < until]
        return merged([*weekly_passes(self.weekly, after, until), *absolute])

    def current(self, now: float) -> Pass | None:
        """The (merged) pass ``now`` is inside, or None."""
        for p in self.between(now - DAY, now + DAY):
            if p.contains(now):
                return p
        return None

    def next_pass(self, now: float, horizon: float = 8 * DAY) -> Pass | None:
        """The pass ``now`` is in, else the next one starting within ``horizon`` (else the next absolute one)."""
        for p in self.between(now - DAY, now + horizon):
            if p.end > now:
                return p
        later = [p for p in self.absolute if p.start >= now]
        return later[0] if later else None
