"""The watched conditions, pure: each topic fires once when its condition begins, says nothing while it lasts,
resolves once when it ends, and a new episode after that is a new notification. On an injected clock (each step's
``now``), from the same typed values the metrics compute (:mod:`continuity.metrics.compute`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from continuity.blueprint import Blueprint, load_blueprint
from continuity.metrics.compute import BackupSchedule, backup_checks, pause_checks, standby_views
from continuity.notify import conditions
from continuity.notify.conditions import Episode, Limits, Watch, evaluate
from continuity.notify.config import Checks, load_notifications
from continuity.notify.payloads import render
from continuity.notify.topics import BACKUP_STALE, PAUSE_OVERDUE, REPLICATION_LAG, Notice
from continuity.state import controls
from continuity.state.replication import StandbyLag
from continuity.status import ReplicationSnapshot

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_750_000_000.0
H = 3600.0


class Judge:
    """The episodes Redis would keep, in memory: what :meth:`Notifier.check` does, minus Redis."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.open: dict[str, Episode] = {}

    def step(self, w: Watch) -> tuple[list[Notice], list[Notice]]:
        begin, end = conditions.changes(self.open, evaluate(w, self.limits), w.now)
        for key, n in begin:
            self.open[key] = conditions.episode_of(key, json.loads(json.dumps(conditions.episode_body(n))))
        for ep, _ in end:
            del self.open[ep.key]
        return [n for _, n in begin], [n for _, n in end]


# --- backup.stale ------------------------------------------------------------------------------------------------
def backups(now: float, *, snap: float | None, rpo: float | None = None, every: float | None = 600.0,
            verified: float | None = None, verify_every: float | None = None) -> Watch:
    """One set ``db`` as ops/backup and its status hash say it, judged by the metrics' own computation."""
    status: dict[str, Any] = {}
    if snap is not None:
        status["last_snapshot_time"] = str(snap)
    if verified is not None:
        status.update(last_verify_time=str(verified), last_verify_ok="1", last_verified_time=str(verified))
    checks = backup_checks({"db": {"paths": [], "services": [], "rpo": rpo}}, {"db": status},
                           {"db": BackupSchedule(every, verify_every)}, now)
    return Watch(now, backups=checks)


def test_backup_past_its_rpo_fires_once_and_resolves_once() -> None:
    j = Judge()
    assert j.step(backups(T0, snap=T0 - 3000, rpo=H)) == ([], [])  # 50 min old, RPO 1 h: fine
    (fired,), () = j.step(backups(T0 + 700, snap=T0 - 3000, rpo=H))  # 61 min old
    assert fired.topic == BACKUP_STALE and fired.severity == "critical" and not fired.resolved
    assert fired.labels == {"set": "db", "check": "snapshot"} and "RPO 1h" in fired.text
    for later in (800, 5000, 90000):  # still stale: the same episode, nothing more
        assert j.step(backups(T0 + later, snap=T0 - 3000, rpo=H)) == ([], [])
    (), (resolved,) = j.step(backups(T0 + 90060, snap=T0 + 90000, rpo=H))  # a new snapshot
    assert resolved.resolved and resolved.episode == fired.episode and resolved.since == fired.at
    assert resolved.event_id != fired.event_id and resolved.severity == "info"
    assert j.step(backups(T0 + 90100, snap=T0 + 90000, rpo=H)) == ([], [])
    (again,), () = j.step(backups(T0 + 95000, snap=T0 + 90000, rpo=H))  # stale again: a new episode
    assert again.episode != fired.episode


def test_backup_without_an_rpo_is_stale_past_n_schedules() -> None:
    j = Judge()
    assert j.step(backups(T0, snap=T0 - 1799, every=600)) == ([], [])  # under 3 x 10 min
    (fired,), () = j.step(backups(T0 + 2, snap=T0 - 1799, every=600))
    assert fired.labels["check"] == "snapshot" and fired.severity == "warning" and "3x its 10m" in fired.text
    # N comes from the config: 2 schedules fire sooner
    assert [n.topic for n in Judge(Limits(snapshot_schedules=2)).step(backups(T0, snap=T0 - 1201))[0]] == [BACKUP_STALE]
    # a cron schedule (no interval) or a set never snapshotted is not judged: its age means nothing here
    assert Judge().step(backups(T0, snap=T0 - 10 * H, every=None)) == ([], [])
    assert Judge().step(backups(T0, snap=None)) == ([], [])


def test_no_verified_restore_within_n_drill_schedules() -> None:
    j = Judge()
    w = dict(snap=T0 - 60, rpo=H, verify_every=H)
    assert j.step(backups(T0, verified=T0 - 3 * H, **w)) == ([], [])  # exactly 3 intervals: not beyond
    (fired,), () = j.step(backups(T0 + 1, verified=T0 - 3 * H, **w))
    assert fired.labels == {"set": "db", "check": "restore"} and "restore drill" in fired.text
    assert j.step(backups(T0 + 600, verified=T0 - 3 * H, **w)) == ([], [])
    (), (resolved,) = j.step(backups(T0 + 700, verified=T0 + 650, **w))
    assert resolved.episode == fired.episode
    # stale snapshot and unverified restore are two episodes of one set, each told and resolved on its own
    both = Judge().step(backups(T0, snap=T0 - 2 * H, rpo=H, verified=T0 - 4 * H, verify_every=H))[0]
    assert sorted(n.labels["check"] for n in both) == ["restore", "snapshot"]
    assert len({n.episode for n in both}) == 2


# --- pause.overdue -----------------------------------------------------------------------------------------------
def pauses(now: float, **notes: dict[str, Any]) -> Watch:
    """Pause notes as Redis holds them, folded as the status report does (``expired`` from controls)."""
    folded = {scope: {**note, "expired": not controls.pause_in_force(json.dumps(note), now)}
              for scope, note in notes.items()}
    return Watch(now, pauses=pause_checks(folded))


def test_a_pause_past_its_declared_expiry_fires_once_and_resolves_when_resumed() -> None:
    j = Judge()
    note = {"who": "ops", "at": T0, "reason": "upgrade", "until": T0 + H}
    assert j.step(pauses(T0 + H - 1, ledger=note)) == ([], [])
    (fired,), () = j.step(pauses(T0 + H + 1, ledger=note))
    assert fired.topic == PAUSE_OVERDUE and fired.labels == {"scope": "ledger"} and "declared end" in fired.text
    assert j.step(pauses(T0 + 2 * H, ledger=note)) == ([], [])
    (), (resolved,) = j.step(pauses(T0 + 2 * H + 5))  # resumed: the note is gone
    assert resolved.resolved and resolved.labels == {"scope": "ledger"}


def test_a_pause_without_expiry_fires_past_the_configured_limit() -> None:
    j = Judge(Limits(pause_without_expiry=2 * H))
    note = {"who": "ops", "at": T0}
    assert j.step(pauses(T0 + 2 * H, **{"*": note})) == ([], [])
    (fired,), () = j.step(pauses(T0 + 2 * H + 1, **{"*": note}))
    assert fired.labels == {"scope": "all"} and "no declared end" in fired.text
    assert j.step(pauses(T0 + 3 * H, **{"*": note})) == ([], [])
    # paused again, this time with a future end: no longer overdue
    (), (resolved,) = j.step(pauses(T0 + 3 * H, **{"*": {**note, "until": T0 + 4 * H}}))
    assert resolved.episode == fired.episode


# --- replication.lag ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bp() -> Blueprint:
    return load_blueprint(ROOT / "ops" / "blueprint.yml")  # ledger: primary core-a, standby core-b, RPO 5 s


def lags(bp: Blueprint, now: float, *rows: tuple[str, float], by: str = "core-a",
         updated: float | None = None) -> Watch:
    """Lag rows (source, seconds) about standby core-b published by ``by``; ledger's primary is core-a."""
    repl = ReplicationSnapshot({"ledger": [StandbyLag("ledger", src, "core-b", by, 3, "catchup", "async", 0, None, 100,
                                                      None, secs, None, 100, now - 1 if updated is None else updated)
                                           for src, secs in rows]})
    return Watch(now, standbys=standby_views(bp, "ledger", "core-a", repl, now),
                 rpo={sid: view.rpo for sid, view in bp.services.items()})


def test_a_standby_lagging_past_its_rpo_fires_once_and_resolves(bp: Blueprint) -> None:
    j = Judge()
    assert j.step(lags(bp, T0, ("ledger.jsonl", 5.0))) == ([], [])  # at the RPO: met
    (fired,), () = j.step(lags(bp, T0 + 1, ("ledger.jsonl", 1.0), ("ledger.db", 7.5)))  # the worst source counts
    assert fired.topic == REPLICATION_LAG and fired.labels == {"service": "ledger", "node": "core-b"}
    assert fired.severity == "critical" and "7.5s behind" in fired.text
    assert j.step(lags(bp, T0 + 30, ("ledger.jsonl", 60.0))) == ([], [])
    (), (resolved,) = j.step(lags(bp, T0 + 40, ("ledger.jsonl", 0.2)))
    assert resolved.resolved and resolved.episode == fired.episode


def test_lag_rows_that_do_not_speak_for_now_are_not_judged(bp: Blueprint) -> None:
    """Rows the metrics ignore (:func:`continuity.status.current_lags`) raise nothing either."""
    assert [n.topic for n in Judge().step(lags(bp, T0, ("ledger.jsonl", 60.0)))[0]] == [REPLICATION_LAG]
    assert Judge().step(lags(bp, T0, ("ledger.jsonl", 60.0), updated=T0 - 60)) == ([], [])  # replicator stopped
    assert Judge().step(lags(bp, T0, ("ledger.jsonl", 60.0), by="core-b")) == ([], [])  # a former primary's row


# --- the rules, the config, the payloads -------------------------------------------------------------------------
def test_defaults_are_the_alert_rules_thresholds() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load((ROOT / "ops/alerts/continuity.rules.yml").read_text())["groups"]
             for r in g["rules"]}
    n = re.search(r">\s*(\d+)\s*\*\s*max by \(set\) \(continuity_backup_verify_interval_seconds\)",
                  rules["ContinuityRestoreNotVerified"]["expr"])
    assert n and float(n.group(1)) == Checks().verify_schedules
    limit = re.search(r"continuity_failover_pause_started_timestamp_seconds\)\s*>\s*(\d+)",
                      rules["ContinuityFailoverPausedLong"]["expr"])
    assert limit and float(limit.group(1)) == Checks().pause_without_expiry
    assert "continuity_backup_rpo_met) == 0" in rules["ContinuityBackupRPOBreached"]["expr"]
    assert "continuity_service_rpo_objective_seconds" in rules["ContinuityReplicationLagOverRPO"]["expr"]


def test_checks_are_configured_in_the_notifications_file(tmp_path: Path) -> None:
    path = tmp_path / "n.yml"
    path.write_text("version: 1\nchecks: {every: 1m, snapshot_schedules: 2, verify_schedules: 4, "
                    "pause_without_expiry: 2h}\nwebhooks:\n  a: {url: 'http://x', topics: [pause.overdue]}\n")
    cfg = load_notifications(path)
    assert cfg.checks.every == 60 and cfg.checks.limits() == Limits(2, 4, 7200)
    assert cfg.subscribers(PAUSE_OVERDUE) == ["a"] and cfg.subscribers(BACKUP_STALE) == []
    shipped = load_notifications(ROOT / "ops" / "notifications.yml")
    assert shipped.checks.limits() == Limits()


def test_alertmanager_sees_one_alert_firing_then_resolved() -> None:
    j = Judge()
    (fired,), () = j.step(pauses(T0 + 2, ledger={"at": T0, "until": T0 + 1}))
    (), (resolved,) = j.step(pauses(T0 + 600))
    a = render("alertmanager", fired, "pager", "f")["alerts"][0]
    b = render("alertmanager", resolved, "pager", "f")["alerts"][0]
    assert (a["status"], b["status"]) == ("firing", "resolved")
    assert a["fingerprint"] == b["fingerprint"] and a["startsAt"] == b["startsAt"]
    assert a["labels"]["alertname"] == "ContinuityFailoverPauseOverdue" and b["endsAt"] != a["endsAt"]
    # the JSON body carries the episode, so any receiver can pair them too
    assert render("json", resolved, "hook", "f")["episode"] == fired.episode
    assert Notice.from_dict(resolved.as_dict()) == resolved
