"""Satellite passes: absolute windows, pass-schedule files, weekly windows as passes, and the pass gate."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from continuity.backup.scheduling import MIN_PASS_PACK, pass_copy, pass_to_start
from continuity.errors import ConfigError
from continuity.passes import Pass, Schedule, load_pass_file, parse_duration_iso, parse_interval, parse_time

T0 = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC).timestamp()  # a Tuesday


def test_iso_intervals() -> None:
    p = parse_interval("2026-12-01T03:10Z/PT9M")
    assert (p.start, p.length) == (T0 + 600, 540)
    assert parse_interval("2026-12-01T03:10Z/2026-12-01T03:19:30Z") == Pass(T0 + 600, T0 + 1170)
    assert parse_interval("2026-12-01T05:10+02:00/PT90S").start == T0 + 600
    assert parse_duration_iso("P1DT1H1M1.5S") == 86400 + 3661.5
    assert Pass(T0, T0 + 90).iso() == "2026-12-01T03:00:00Z/PT90S"
    for bad in ("2026-12-01T03:10/PT9M", "2026-12-01T03:10Z", "2026-12-01T03:10Z/PT", "2026-12-01T03:10Z/P1W",
                "2026-12-01T03:10Z/2026-12-01T03:00Z", "yesterday/PT9M", "2026-12-01T03:10Z/PT0S"):
        with pytest.raises(ValueError):
            parse_interval(bad)
    with pytest.raises(ValueError, match="no zone"):
        parse_time("2026-12-01T03:10")


def test_csv_pass_schedule_keeps_this_nodes_rows(tmp_path: Path) -> None:
    f = tmp_path / "passes.csv"
    f.write_text("# exported from the ground segment\n"
                 "Satellite,Start,Duration,Station\n"
                 "sat-1,2026-12-01T03:20Z,PT90S,gs-a\n"
                 "sat-2,2026-12-01T03:25Z,PT90S,gs-a\n"
                 "sat-1,2026-12-01T03:10Z,540,gs-b\n")
    assert load_pass_file(f, "sat-1") == (Pass(T0 + 600, T0 + 1140), Pass(T0 + 1200, T0 + 1290))
    assert load_pass_file(f, "sat-2") == (Pass(T0 + 1500, T0 + 1590),)


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("start,duration\n2026-12-01T03:10Z,PT9M\n2026-12-01T03:30,PT9M\n", 3, "has no zone"),
    ("start,duration\n\n2026-12-01T03:10Z,soon\n", 3, "duration 'soon'"),
    ("start,end,duration\n2026-12-01T03:10Z,,\n", 2, "exactly one of end or duration"),
    ("start,end\n2026-12-01T03:10Z,2026-12-01T03:00Z\n", 2, "ends"),
    ("start,duration\n2026-12-01T03:10Z,PT9M,extra\n", 2, "3 fields where the header has 2"),
    ("when,duration\n2026-12-01T03:10Z,PT9M\n", 1, "must name the columns"),
])
def test_bad_csv_names_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    f = tmp_path / "passes.csv"
    f.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_pass_file(f, "sat-1")
    assert exc.value.line == line and exc.value.file == str(f)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)
    assert str(exc.value).startswith(f"{f}:{line}:")


def test_json_pass_schedule_and_its_errors(tmp_path: Path) -> None:
    f = tmp_path / "passes.json"
    f.write_text('{"passes": [\n  {"node": "sat-1", "start": "2026-12-01T03:10Z", "duration": 540},\n'
                 '  {"start": "2026-12-01T04:10Z", "end": "2026-12-01T04:12Z"}\n]}\n')
    assert load_pass_file(f, "sat-1") == (Pass(T0 + 600, T0 + 1140), Pass(T0 + 4200, T0 + 4320))
    f.write_text('[\n  {"start": "2026-12-01T03:10Z", "duration": "PT9M"},\n\n  {"start": "03:10"}\n]\n')
    with pytest.raises(ConfigError) as exc:
        load_pass_file(f, "sat-1")
    assert exc.value.line == 4 and exc.value.key_path == "[1]"
    f.write_text('[{"start": "2026-12-01T03:10Z",\n "duration": 5,}]')
    with pytest.raises(ConfigError) as exc:
        load_pass_file(f, "sat-1")
    assert exc.value.line == 2 and "not valid JSON" in str(exc.value)


def test_weekly_windows_and_absolute_passes_merge_into_one_schedule() -> None:
    # daily 03:15-03:20, Tuesdays 23:50-00:10 (crosses midnight), plus a one-off pass touching the daily one
    s = Schedule(weekly=(("03:15", "03:20", ("mon", "tue", "wed", "thu", "fri", "sat", "sun")),
                         ("23:50", "00:10", ("tue",))),
                 absolute=(Pass(T0 + 1200, T0 + 1260),))
    assert s.intermittent and not Schedule().intermittent
    assert s.current(T0) is None
    assert s.next_pass(T0) == Pass(T0 + 900, T0 + 1260)  # 03:15-03:20 joined with 03:20-03:21
    assert s.current(T0 + 1250) == Pass(T0 + 900, T0 + 1260)
    late = T0 + 20 * 3600 + 50 * 60
    assert s.next_pass(T0 + 1300) == Pass(late, late + 1200)
    assert s.current(late + 1100) == Pass(late, late + 1200)  # 00:05 Wednesday, inside Tuesday's window
    # next Wednesday 00:05: Wednesday has no late window
    assert s.current(late + 1100 + 7 * 86400 + 86400) is None
    # a one-off pass far beyond the weekly horizon is still found
    far = Schedule(absolute=(Pass(T0 + 40 * 86400, T0 + 40 * 86400 + 60),))
    assert far.next_pass(T0) == Pass(T0 + 40 * 86400, T0 + 40 * 86400 + 60)
    assert far.next_pass(T0 + 41 * 86400) is None


def test_the_pass_gate_fires_once_per_pass_at_its_start_and_never_outside() -> None:
    s = Schedule(absolute=tuple(Pass(T0 + 600 * k, T0 + 600 * k + 90) for k in range(3)))
    margin = 10.0
    assert pass_to_start(s, None, T0 - 1, margin) is None  # before the first pass
    assert pass_to_start(s, None, T0, margin) == Pass(T0, T0 + 90)  # at its start
    assert pass_to_start(s, T0, T0 + 5, margin) is None  # already sent for this pass
    assert pass_to_start(s, T0 + 5, T0 + 300, margin) is None  # between passes
    assert pass_to_start(s, T0 + 300, T0 + 600, margin) == Pass(T0 + 600, T0 + 690)  # the next pass
    # beat was down at the start: sent as soon as it is back, if the pass has more than the margin left
    assert pass_to_start(s, T0 + 5, T0 + 630, margin) == Pass(T0 + 600, T0 + 690)
    assert pass_to_start(s, T0 + 5, T0 + 681, margin) is None

    # a long contact (a ground station in view for hours): sent again at the copy interval while it lasts
    long = Schedule(absolute=(Pass(T0, T0 + 6 * 3600),))
    assert pass_to_start(long, T0, T0 + 299, margin, every=300) is None
    assert pass_to_start(long, T0, T0 + 300, margin, every=300) == Pass(T0, T0 + 6 * 3600)
    assert pass_to_start(long, T0, T0 + 300, margin) is None  # no interval: once per pass


def test_pass_copy_sizes_packs_to_the_link_and_refuses_a_closing_pass() -> None:
    plan = pass_copy(T0 + 90, 10.0, 1024 * 1024.0, T0, 16 * 1024 * 1024)
    assert plan is not None and plan.deadline == T0 + 80
    assert plan.pack_size == 10 * 1024 * 1024  # 80 s at 1 MiB/s, eight packs a pass
    assert pass_copy(T0 + 90, 10.0, None, T0, 16 * 1024 * 1024).pack_size is None  # no limit: default packs
    assert pass_copy(T0 + 90, 10.0, 1024.0, T0, 16 * 1024 * 1024).pack_size == MIN_PASS_PACK
    assert pass_copy(T0 + 90, 10.0, 1024.0, T0 + 80, 16 * 1024 * 1024) is None
