"""Notifications, the pure parts: the config file's errors, which events become which notices, the payloads each
receiver expects, the backoff."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuity.errors import ConfigError, ContinuityError
from continuity.events import PREFIX
from continuity.notify import topics
from continuity.notify.config import NONE, TOPICS, Retry, load_notifications, url_of
from continuity.notify.deliver import backoff
from continuity.notify.payloads import idempotency_key, render
from continuity.notify.topics import Notice, notice_for

ROOT = Path(__file__).resolve().parents[2]


def ev(kind: str, data: dict, **top: object) -> dict:
    return {"id": "e1", "ts": 1_750_000_000.0, "kind": PREFIX + kind, "data": data, **top}


# --- config ------------------------------------------------------------------------------------------------------
def test_shipped_file_loads_with_no_webhooks() -> None:
    cfg = load_notifications(ROOT / "ops" / "notifications.yml")
    assert cfg.webhooks == {} and cfg.retry.initial == 5 and cfg.retry.give_up_after == 86400


def test_missing_file_means_no_webhooks(tmp_path: Path) -> None:
    assert load_notifications(tmp_path / "absent.yml") is NONE


@pytest.mark.parametrize("body, where, words", [
    ("webhooks:\n  a:\n    url: ftp://x\n", ":4: webhooks.a.url:", "not an http(s) URL"),
    ("webhooks:\n  a:\n    url: http://x\n    url_env: X\n", ":3: webhooks.a:", "exactly one of url or url_env"),
    ("webhooks:\n  a: {url: 'http://x', topics: [failover.done]}\n", ":3: webhooks.a.topics:",
     "unknown topic 'failover.done'"),
    ("webhooks:\n  a: {url: 'http://x', topics: []}\n", ":3: webhooks.a:", "never be told anything"),
    ("webhooks:\n  a: {url: 'http://x', format: teams}\n", ":3: webhooks.a.format:", "must be one of"),
    ("webhooks:\n  Ops Team: {url: 'http://x'}\n", ":3: webhooks.Ops Team:", "invalid webhook name"),
    ("retry: {initial: 1m, max: 5s}\n", ":2: retry:", "max must not be shorter"),
    ("retry: {initial: soon}\n", ":2: retry.initial:", "not a duration"),
    ("webhook:\n  a: {url: 'http://x'}\n", ":2: webhook:", "unknown key"),
])
def test_mistakes_name_file_line_and_key(tmp_path: Path, body: str, where: str, words: str) -> None:
    path = tmp_path / "notifications.yml"
    path.write_text("version: 1\n" + body)
    with pytest.raises(ConfigError) as err:
        load_notifications(path)
    text = str(err.value)
    assert text.startswith(f"{path}{where}"), text
    assert words in text, text
    assert err.value.exit_code == 2


def test_url_env_is_resolved_when_posting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "n.yml"
    path.write_text("version: 1\nwebhooks:\n  slack: {url_env: MY_HOOK, format: slack}\n")
    hook = load_notifications(path).webhooks["slack"]
    with pytest.raises(ContinuityError, match="MY_HOOK is not set"):
        url_of("slack", hook)
    monkeypatch.setenv("MY_HOOK", "https://hooks.example/T/B/x")
    assert url_of("slack", hook) == "https://hooks.example/T/B/x"


# --- topics ------------------------------------------------------------------------------------------------------
def test_every_topic_has_a_builder_and_the_config_accepts_each() -> None:
    made = {
        notice_for(ev("failover.completed", {"record": "r", "from": "a", "to": "b"}, service="s")).topic,
        notice_for(ev("failover.escalated", {"record": "r"}, service="s")).topic,
        notice_for(ev("drill.finished", {"drill": "d", "scenario": "x", "status": "failed"})).topic,
        notice_for(ev("detect.node_dead", {"node": "n"})).topic,
        notice_for(ev("detect.mode_changed", {"from": "normal", "to": "degraded"})).topic,
        notice_for(ev("backup.snapshot_failed", {"set": "s", "error": "locked"})).topic,
    }
    assert made == set(TOPICS) - set(topics.CONDITIONS)  # the rest are watched: test_notify_conditions.py


def test_failover_notice_says_what_moved_where_and_how_fast() -> None:
    n = notice_for(ev("failover.completed", {"record": "r1", "from": "core-a", "to": "core-b", "mttr": 4.25,
                                             "detection": 1.5, "who": "detector"}, service="ledger", epoch=7))
    assert n.topic == "failover.completed" and n.severity == "warning"
    assert n.title == "ledger failed over: core-a → core-b"
    assert "4.2s" in n.text and "1.5s" in n.text and "epoch 7" in n.text and "r1" in n.text
    assert n.labels == {"service": "ledger"} and n.event_id == "e1"


def test_events_nobody_is_told_about() -> None:
    assert notice_for(ev("drill.finished", {"scenario": "x", "status": "passed"})) is None
    assert notice_for(ev("detect.mode_changed", {"from": None, "to": "normal"})) is None  # first sweep
    assert notice_for(ev("node.ping", {})) is None
    assert notice_for(ev("failover.completed", {}) | {"id": ""}) is None  # no id: cannot be deduplicated
    assert notice_for({"kind": "garbage"}) is None


def test_mode_back_to_normal_is_a_resolution() -> None:
    back = notice_for(ev("detect.mode_changed", {"from": "degraded", "to": "normal"}))
    assert back.severity == "info" and back.resolved
    worse = notice_for(ev("detect.mode_changed", {"from": "degraded", "to": "critical"}))
    assert worse.severity == "critical" and not worse.resolved


def test_notice_round_trips_through_its_stored_form() -> None:
    n = notice_for(ev("detect.node_dead", {"node": "sat-1", "silence": 9.0, "from": "suspect"}))
    assert Notice.from_dict(n.as_dict()) == n


# --- payloads ----------------------------------------------------------------------------------------------------
NOTICE = Notice("drill.failed", "warning", "drill x failed", "MTTR 9.0s", "ev-1", 1_750_000_000.0,
                "drill.finished", {"scenario": "x"})


def test_json_payload_carries_the_notice_and_its_idempotency_key() -> None:
    body = render("json", NOTICE, "ops", "prod")
    assert body["id"] == idempotency_key("ops", "ev-1") and body["fleet"] == "prod"
    assert body["topic"] == "drill.failed" and body["labels"] == {"scenario": "x"}
    assert body["time"] == "2025-06-15T15:06:40.000000Z"
    assert idempotency_key("ops", "ev-1") != idempotency_key("pager", "ev-1")  # per webhook


def test_slack_payload_is_an_incoming_webhook_message() -> None:
    body = render("slack", NOTICE, "ops", "prod")
    assert set(body) == {"text", "attachments"}
    assert "*drill x failed*" in body["text"] and "prod" in body["text"]
    (att,) = body["attachments"]
    assert att["color"] == "#e8a000" and att["text"] == "MTTR 9.0s" and att["ts"] == 1_750_000_000
    assert {"title": "scenario", "value": "x", "short": True} in att["fields"]


def test_alertmanager_payload_is_the_webhook_v4_body() -> None:
    body = render("alertmanager", NOTICE, "ops", "prod")
    assert body["version"] == "4" and body["status"] == "firing" and body["receiver"] == "ops"
    assert set(body) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                         "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    (alert,) = body["alerts"]
    assert alert["labels"]["alertname"] == "ContinuityDrillFailed" and alert["labels"]["scenario"] == "x"
    assert alert["labels"]["severity"] == "warning" and alert["labels"]["fleet"] == "prod"
    assert alert["annotations"] == {"summary": "drill x failed", "description": "MTTR 9.0s"}
    assert alert["fingerprint"] == idempotency_key("ops", "ev-1")
    assert alert["startsAt"] == "2025-06-15T15:06:40.000000Z" and alert["endsAt"].startswith("0001-01-01")
    resolved = render("alertmanager", topics.Notice("mode.changed", "info", "t", "x", "e", 1.0, "k", {},
                                                    resolved=True), "ops", "prod")
    assert resolved["status"] == "resolved" and resolved["alerts"][0]["endsAt"] != alert["endsAt"]


def test_backoff_doubles_up_to_its_cap() -> None:
    retry = Retry(initial=2, max=30, give_up_after=3600)
    assert [backoff(retry, n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
