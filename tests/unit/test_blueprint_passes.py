"""Satellites on real pass schedules in the blueprint: inline ISO passes and a pass-schedule file beside weekly
windows; what the detector, the status report and `blueprint check` make of them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from continuity.backup.config import load_backup_config
from continuity.backup.scheduling import PASS_POLL, backup_jobs
from continuity.blueprint import load_blueprint
from continuity.detect.detector import always_in_contact
from continuity.state.fleet import RedisSnapshot
from continuity.status import build_report
from tests.helpers import run_cli

T0 = dt.datetime(2026, 12, 1, 3, 0, tzinfo=dt.UTC)

BLUEPRINT = """\
version: 1
fleet: t
nodes:
  ground:
    kind: core
  sat-1:
    kind: satellite
    passes: ["2026-12-01T03:10Z/PT9M"]
    pass_schedule: passes.csv
  sat-2:
    kind: satellite
    contact:
      - {start: "22:00", end: "23:00"}
domains:
  ops:
    rto: 1m
    rpo: 1m
    services:
      telemetry:
        tier: 3
        placement: {primary: sat-1}
"""

PASSES = """\
satellite,start,duration
sat-1,2026-12-01T04:00Z,PT90S
sat-2,2026-12-01T04:30Z,PT90S
"""


def _write(tmp_path: Path, blueprint: str = BLUEPRINT, passes: str = PASSES) -> Path:
    (tmp_path / "passes.csv").write_text(passes)
    f = tmp_path / "blueprint.yml"
    f.write_text(blueprint)
    return f


def test_absolute_and_scheduled_passes_decide_contact(tmp_path: Path) -> None:
    bp = load_blueprint(_write(tmp_path))
    at = lambda h, m, s=0: T0.replace(hour=h, minute=m, second=s)  # noqa: E731
    assert not bp.in_contact("sat-1", at(3, 9))
    assert bp.in_contact("sat-1", at(3, 10)) and bp.in_contact("sat-1", at(3, 18, 59))
    assert not bp.in_contact("sat-1", at(3, 19))
    assert bp.in_contact("sat-1", at(4, 1)) and not bp.in_contact("sat-1", at(4, 30, 30))  # sat-2's row
    assert bp.in_contact("sat-2", at(22, 30)) and not bp.in_contact("sat-2", at(4, 30, 30))
    assert bp.in_contact("ground", at(4, 30))
    # a satellite with passes only is intermittent: silence between passes is a planned blackout
    assert always_in_contact(bp) == frozenset({"ground"})
    assert [p.start for p in bp.contact_schedule("sat-1").absolute] == [
        at(3, 10).timestamp(), at(4, 0).timestamp()]


def test_status_shows_the_next_pass_per_satellite(tmp_path: Path) -> None:
    bp = load_blueprint(_write(tmp_path))
    snap = RedisSnapshot({}, {}, {}, {}, None, {}, {}, {})
    report = build_report(bp, snap, now=T0.timestamp())
    nodes = {n["id"]: n for n in report["nodes"]}
    assert nodes["ground"]["next_pass"] is None
    assert nodes["sat-1"]["next_pass"] == {"start": T0.timestamp() + 600, "end": T0.timestamp() + 1140,
                                           "length": 540.0, "in_pass": False, "starts_in": 600.0}
    inside = build_report(bp, snap, now=T0.timestamp() + 700)
    assert next(n for n in inside["nodes"] if n["id"] == "sat-1")["next_pass"]["in_pass"] is True
    assert next(n for n in report["nodes"] if n["id"] == "sat-2")["next_pass"]["start"] == \
        T0.replace(hour=22).timestamp()


def test_a_satellites_copy_is_pass_driven_a_core_nodes_stays_on_its_interval(tmp_path: Path) -> None:
    bp = load_blueprint(_write(tmp_path))
    cfg_file = tmp_path / "continuity.yml"
    cfg_file.write_text("""\
version: 1
links:
  sat-1: {limit_upload: 1024, pass_margin: 20s}
sets:
  telemetry:
    node: sat-1
    sources: [{kind: directory, path: /data}]
    repository: /var/lib/repo
    key: {password_env: PW}
    replicate_to: [{repository: "s3://ground/t"}]
  archive:
    node: ground
    sources: [{kind: directory, path: /data}]
    repository: /var/lib/archive
    schedule: 6h
    key: {password_env: PW}
    replicate_to: [{repository: "s3://offsite/a"}]
""")
    cfg = load_backup_config(cfg_file, blueprint_nodes=bp.nodes)
    copies = {j.set_name: j for j in backup_jobs(bp, cfg) if j.task == "continuity.backup.copy"}
    sat, core = copies["telemetry"], copies["archive"]
    assert (sat.pass_node, sat.pass_margin, sat.every, sat.pass_every) == ("sat-1", 20.0, PASS_POLL, 3600.0)
    assert sat.kwargs == {"pass_start": None, "pass_end": None}
    assert (core.pass_node, core.every) == (None, 6 * 3600.0)


def _check(path: Path) -> tuple[int, str]:
    res = run_cli("blueprint", "check", "--file", str(path))
    return res.returncode, res.stderr.strip()


def test_bad_passes_are_one_line_naming_the_file_and_line_exit_2(tmp_path: Path) -> None:
    f = _write(tmp_path, passes=PASSES + "sat-1,2026-12-01T05:00,PT90S\n")
    rc, err = _check(f)
    assert rc == 2 and err.count("\n") == 0, err
    assert f"{tmp_path / 'passes.csv'}:4:" in err and "has no zone" in err and "Traceback" not in err

    f = _write(tmp_path, blueprint=BLUEPRINT.replace("PT9M", "9 minutes"))
    rc, err = _check(f)
    assert rc == 2 and err.count("\n") == 0, err
    assert f"{f}:8: nodes.sat-1.passes[0]:" in err and "not an ISO 8601 time: '9 minutes'" in err

    f = _write(tmp_path, blueprint=BLUEPRINT.replace("passes.csv", "gone.csv"))
    rc, err = _check(f)
    assert rc == 2 and err.count("\n") == 0, err
    assert f"{f}:9: nodes.sat-1.pass_schedule:" in err and "gone.csv' not found" in err

    f = _write(tmp_path, blueprint=BLUEPRINT.replace("kind: core\n", "kind: core\n    passes: "
                                                     "[\"2026-12-01T03:10Z/PT9M\"]\n"))
    rc, err = _check(f)
    assert rc == 2 and "contact windows are for satellite/edge nodes" in err


def test_the_copy_task_plans_its_pass_from_the_sets_link(tmp_path: Path) -> None:
    from continuity.backup.scheduling import set_pass_copy

    bp = load_blueprint(_write(tmp_path))
    cfg_file = tmp_path / "continuity.yml"
    cfg_file.write_text("""\
version: 1
links:
  sat-1: {limit_upload: 1024, pass_margin: 20s}
sets:
  telemetry:
    node: sat-1
    sources: [{kind: directory, path: /data}]
    repository: /var/lib/repo
    key: {password_env: PW}
    replicate_to: [{repository: "s3://ground/t", limit_upload: 512}]
""")
    cfg = load_backup_config(cfg_file, blueprint_nodes=bp.nodes)
    end = T0.timestamp() + 90
    plan = set_pass_copy(cfg, "telemetry", end, T0.timestamp())
    assert plan is not None and plan.deadline == end - 20  # the link's margin
    assert plan.pack_size == int(512 * 1024 * 70 / 8)  # the target's (tighter) rate over what is left
    assert set_pass_copy(cfg, "telemetry", end, end - 20) is None  # inside the margin: too late to start
