"""Replication positions and lag in Redis (fakeredis: key-level logic), and how `continuity status` shows them."""

from __future__ import annotations

import json
from dataclasses import asdict

import fakeredis
import yaml

from continuity.blueprint import Blueprint, load_blueprint, parse_blueprint
from continuity.cli import output
from continuity.cli.status import status_table
from continuity.config import parse_text
from continuity.state import keys
from continuity.state import replication as st
from continuity.status import RedisSnapshot, ReplicationSnapshot, build_report
from tests.helpers import ROOT

NOW = 1_800_000_000.0


def lag(standby: str, records: int, primary: str = "core-a", updated: float = NOW) -> st.StandbyLag:
    return st.StandbyLag("ledger", "ledger.jsonl", standby, primary, 4, "streaming" if not records else "catchup",
                         "sync", 100 - records, 10 - records, 100, 10, 0.25 * records, records, records, updated)


def applied(node: str, count: int, updated: float = NOW) -> st.Applied:
    return st.Applied("ledger", "ledger.jsonl", node, count * 10, count, count, None, 4, "core-a", updated)


def test_published_lags_positions_and_modes_read_back_typed() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    st.publish_lags(r, [lag("core-b", 0), lag("core-c", 3)])
    st.publish_applied(r, [applied("core-b", 10)])
    st.write_mode(r, st.SyncMode("ledger", "degraded", "core-a", 4, NOW, "0 of 1 standby(s) connected"))
    assert st.read_lags(r, ["ledger", "keystore"]) == {"ledger": [lag("core-b", 0), lag("core-c", 3)]}
    assert st.read_applied(r, ["ledger"]) == {"ledger": [applied("core-b", 10)]}
    assert st.read_modes(r, ["ledger", "keystore"])["ledger"].mode == "degraded"
    st.publish_lags(r, [lag("core-c", 0)])  # a later publish replaces that standby's entry only
    assert [x.lag_records for x in st.read_lags(r, ["ledger"])["ledger"]] == [0, 0]


def test_garbled_values_are_skipped_not_raised_on() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    st.publish_lags(r, [lag("core-b", 0)])
    r.hset(keys.replication_lag("ledger"), "core-c|ledger.jsonl", "{not json")
    r.hset(keys.replication_lag("ledger"), "core-d|ledger.jsonl", json.dumps({"service": "ledger"}))
    r.set(keys.replication_mode("ledger"), "[]")
    assert [x.standby for x in st.read_lags(r, ["ledger"])["ledger"]] == ["core-b"]
    assert st.read_modes(r, ["ledger"]) == {}


def test_values_of_the_wrong_type_are_skipped_too() -> None:
    """Every key present but a lag of "slow", a null `updated`, a NaN, a boolean count, a list for a node: each
    would reach status's and the metrics' arithmetic (or a label) if it were read as a value."""
    r = fakeredis.FakeRedis(decode_responses=True)
    good = lag("core-b", 3)
    st.publish_lags(r, [good])
    for standby, bad in (("core-c", {"lag_seconds": "slow"}), ("core-d", {"updated": None}),
                         ("core-e", {"lag_seconds": float("nan")}), ("core-f", {"lag_records": True}),
                         ("core-g", {"standby": ["core-g"]})):
        doc = {**asdict(lag(standby, 1)), **bad}
        r.hset(keys.replication_lag("ledger"), f"{standby}|ledger.jsonl", json.dumps(doc))
    r.hset(keys.replication_applied("ledger"), "core-b|ledger.jsonl",
           json.dumps({**asdict(applied("core-b", 10)), "count": "10"}))
    r.set(keys.replication_mode("ledger"), json.dumps({**asdict(st.SyncMode("ledger", "sync", "core-a", 4, NOW, "")),
                                                       "since": "yesterday"}))
    assert st.read_lags(r, ["ledger"]) == {"ledger": [good]}
    assert st.read_applied(r, ["ledger"]) == {}
    assert st.read_modes(r, ["ledger"]) == {}
    # integers where floats are declared are numbers all the same
    r.hset(keys.replication_lag("ledger"), "core-h|ledger.jsonl", json.dumps({**asdict(lag("core-h", 0)),
                                                                               "lag_seconds": 0, "updated": 5}))
    assert [x.standby for x in st.read_lags(r, ["ledger"])["ledger"]] == ["core-b", "core-h"]


def _snap() -> RedisSnapshot:
    return RedisSnapshot(registry={}, seen={}, detector={}, queue_depth={}, mode=None, routes={},
                         epochs={"ledger": "4"}, leases={"ledger": json.dumps({"node": "core-a", "epoch": 4})})


def sync_blueprint() -> Blueprint:
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    doc["domains"]["payments"]["services"]["ledger"]["replication"] = {"mode": "sync"}
    return parse_blueprint(parse_text(yaml.safe_dump(doc), "bp.yml"))


def test_status_shows_the_current_primarys_view_of_each_standby_and_the_sync_mode() -> None:
    bp = sync_blueprint()
    repl = ReplicationSnapshot(lags={"ledger": [lag("core-b", 3), lag("core-a", 0, primary="core-b",
                                                                         updated=NOW - 60)]},
                               modes={"ledger": st.SyncMode("ledger", "degraded", "core-a", 4, NOW, "none")})
    report = build_report(bp, _snap(), now=NOW, repl=repl)
    rows = report["replication"]
    assert [(r["service"], r["standby"], r["lag_records"], r["state"]) for r in rows] == [
        ("ledger", "core-b", 3, "catchup")]  # the old primary's stale row is not shown
    services = {s["id"]: s for s in report["services"]}
    assert services["ledger"]["replication"] == "degraded"
    repl = ReplicationSnapshot(modes={"ledger": st.SyncMode("ledger", "sync", "core-a", 4, NOW, "")})
    assert {s["id"]: s for s in build_report(bp, _snap(), now=NOW, repl=repl)["services"]}["ledger"][
        "replication"] == "sync(1)"
    assert services["keystore"]["replication"] == services["notifier"]["replication"] == "async"
    assert services["reports"]["replication"] == "-"  # no declared data: nothing to replicate
    with output.console.capture() as cap:
        output.console.print(status_table(report))
    text = cap.get()
    assert "replication" in text and "core-b" in text and "750ms" in text and "3 rec" in text


def test_with_the_primary_silent_status_shows_what_each_standby_says_it_holds() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    repl = ReplicationSnapshot(lags={"ledger": [lag("core-b", 0, updated=NOW - 30)]},
                               applied={"ledger": [applied("core-b", 7, updated=NOW - 1)]})
    rows = build_report(bp, _snap(), now=NOW, repl=repl)["replication"]
    assert [(r["standby"], r["state"], r["applied"]) for r in rows] == [("core-b", "holds", [70, 7])]


def test_status_says_how_far_each_standby_is_short_of_the_committed_position() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    committed = st.Committed("ledger", "ledger.jsonl", 4, 10, 100, 10, NOW - 2, "core-a", NOW)
    repl = ReplicationSnapshot(lags={"ledger": [lag("core-b", 0, updated=NOW - 30)]},
                               applied={"ledger": [applied("core-b", 7, updated=NOW - 1)]},
                               committed={"ledger": {"ledger.jsonl": committed}})
    report = build_report(bp, _snap(), now=NOW, repl=repl)
    (row,) = report["replication"]
    assert (row["standby"], row["committed"], row["short"]) == ("core-b", [4, 10], 3)
    with output.console.capture() as cap:
        output.console.print(status_table(report))
    assert "short" in cap.get() and "7 rec │ 3 rec" in cap.get()  # holds 7, lacks 3 of the committed 10
