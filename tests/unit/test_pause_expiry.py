"""A failover pause with a declared end: parsed from ``--for``/``--until``, honoured by what the planner reads,
kept visible (as expired) until someone resumes."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import fakeredis
import pytest

from continuity.blueprint import load_blueprint
from continuity.errors import UsageError
from continuity.failover import control
from continuity.failover.planner import plan_failovers
from continuity.state import controls, keys
from continuity.status import build_report, read_snapshot

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_750_000_000.0


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeRedis:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))  # the pause's pulse event goes to this test's history
    return fakeredis.FakeRedis(decode_responses=True)


def test_for_and_until_become_an_expiry() -> None:
    assert control.pause_expiry("30m", None, NOW) == NOW + 1800
    assert control.pause_expiry(None, None, NOW) is None
    later = dt.datetime.fromtimestamp(NOW + 3600, dt.UTC)
    # a time without a zone is UTC, like every time the fleet shows
    assert control.pause_expiry(None, later.strftime("%Y-%m-%dT%H:%M:%S"), NOW) == NOW + 3600
    assert control.pause_expiry(None, later.isoformat(), NOW) == NOW + 3600


@pytest.mark.parametrize("for_, until, words", [
    ("30m", "2099-01-01T00:00", "not both"),
    ("soon", None, "--for: not a duration"),
    ("0s", None, "longer than zero"),
    (None, "tomorrow", "--until: not a time"),
    (None, "2001-01-01T00:00", "already past"),
])
def test_bad_expiry_is_a_usage_error(for_: str | None, until: str | None, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        control.pause_expiry(for_, until, NOW)


def test_an_expired_pause_no_longer_blocks_but_stays_visible(client: fakeredis.FakeRedis) -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    control.pause(client, "ledger", "ops@host", "disk swap", now=NOW, until=NOW + 60)
    dead = {"core-a": {"state": "dead"}, "core-b": {"state": "alive"}, "sat-1": {"state": "alive"}}

    def planned(now: float) -> set[str]:
        paused, global_pause, cooldowns = control.read_controls(client, bp, now)
        return {p.service for p in plan_failovers(bp, {"core-a"}, dead, {}, now, paused, global_pause, cooldowns)}

    assert "ledger" not in planned(NOW + 59)  # inside the window: the planner skips the paused service
    assert "ledger" in planned(NOW + 60)  # past it: the pause is no longer in force
    # ... but the note stays, marked expired, for status, failover status and the metrics
    note = control.read_pauses(client, bp, NOW + 61)["ledger"]
    assert note["expired"] is True and note["until"] == NOW + 60 and note["who"] == "ops@host"
    assert control.read_pauses(client, bp, NOW + 1)["ledger"]["expired"] is False
    report = build_report(bp, read_snapshot(client, bp), NOW + 61)
    assert report["pauses"]["ledger"]["expired"] is True


def test_fleet_wide_pause_expires_the_same_way(client: fakeredis.FakeRedis) -> None:
    control.pause(client, None, "ops@host", now=NOW, until=NOW + 10)
    assert controls.read(client, ["ledger"], NOW + 9).global_pause is True
    assert controls.read(client, ["ledger"], NOW + 10).global_pause is False


def test_pause_without_expiry_and_unreadable_notes_block(client: fakeredis.FakeRedis) -> None:
    control.pause(client, "ledger", "ops@host", now=NOW)
    client.set(keys.failover_pause("keystore"), "{garbled")
    client.set(keys.failover_pause("notifier"), json.dumps({"until": "whenever"}))
    got = controls.read(client, ["ledger", "keystore", "notifier"], NOW + 10 ** 6)
    # a garbled value must never lift a pause
    assert got.paused == frozenset({"ledger", "keystore", "notifier"})
