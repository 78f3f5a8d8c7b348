"""Game days: beat entries from the scenarios calendar, never outside a satellite's contact window."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from continuity.blueprint import load_blueprint
from continuity.drills.scenarios import load_scenarios
from tests.helpers import ROOT

SCEN = """\
version: 1
calendar: {days: [mon, wed], window: {start: "22:00", end: "23:59"}}
scenarios:
  core:
    title: core outage
    target: {kind: node, service: ledger, role: primary}
    fault: {type: node-kill}
    game_day: true
  sat:
    title: satellite blackout
    target: {kind: node, node_kind: satellite}
    fault: {type: satellite-blackout}
    game_day: true
  manual:
    title: not a game day
    target: {kind: service, service: ledger}
    fault: {type: service-crash}
"""


@pytest.fixture
def files(tmp_path: Path):
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")  # sat-1 is in contact 00:00-23:00 only
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(SCEN))
    return bp, load_scenarios(p, bp)


def test_entries_are_staggered_expire_and_skip_satellites_out_of_contact(files, monkeypatch) -> None:
    monkeypatch.delenv("CONTINUITY_GAME_DAYS", raising=False)
    from workers.drills import RUN_TASK, beat_entries

    bp, sc = files
    entries = beat_entries(bp, sc)
    core = entries[f"{RUN_TASK}:core"]
    assert core["options"]["queue"] == "continuity.control" and core["options"]["expires"] > 0
    assert core["kwargs"] == {"game_day": True} and core["args"] == ["core"]
    assert (core["schedule"].hour, core["schedule"].minute) == ({22}, {0})
    # 22:00-23:00 is in contact, so the satellite drill gets the next slot inside contact (22:20)
    sat = entries[f"{RUN_TASK}:sat"]
    assert (sat["schedule"].hour, sat["schedule"].minute) == ({22}, {20})
    assert f"{RUN_TASK}:manual" not in entries


def test_no_slot_inside_contact_means_no_entry(files, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CONTINUITY_GAME_DAYS", raising=False)
    from workers.drills import RUN_TASK, beat_entries

    bp, _ = files
    late = tmp_path / "late.yaml"
    late.write_text(textwrap.dedent(SCEN).replace('start: "22:00"', 'start: "23:10"'))
    entries = beat_entries(bp, load_scenarios(late, bp))
    assert f"{RUN_TASK}:core" in entries and f"{RUN_TASK}:sat" not in entries


def test_game_days_can_be_switched_off(files, monkeypatch) -> None:
    from workers.drills import beat_entries

    monkeypatch.setenv("CONTINUITY_GAME_DAYS", "off")
    assert beat_entries(*files) == {}


def test_shipped_calendar_schedules_something(monkeypatch) -> None:
    monkeypatch.delenv("CONTINUITY_GAME_DAYS", raising=False)
    from workers.drills import beat_entries

    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    sc = load_scenarios(ROOT / "ops" / "drills" / "continuity_scenarios.yaml", bp)
    entries = beat_entries(bp, sc)
    assert entries and all(e["options"]["expires"] for e in entries.values())
    assert yaml.safe_load(yaml.safe_dump(sorted(entries)))  # names are plain strings


def test_the_allocation_is_decided_in_the_core(files) -> None:
    import datetime as dt

    from continuity.drills import gamedays

    bp, sc = files
    plan = gamedays.allocate(bp, sc)
    assert [(g.scenario, g.at) for g in plan.slots] == [("core", dt.time(22, 0)), ("sat", dt.time(22, 20))]
    assert plan.slots[0].days == ("mon", "wed") and plan.slots[0].expires == (dt.timedelta(hours=1, minutes=59)
                                                                              .total_seconds())
    assert plan.skipped == ()
    assert gamedays.in_game_day(sc, "core", dt.datetime(2024, 1, 1, 22, 30, tzinfo=dt.UTC))  # a Monday
    assert not gamedays.in_game_day(sc, "core", dt.datetime(2024, 1, 2, 22, 30, tzinfo=dt.UTC))  # a Tuesday
