"""Replication in the blueprint: per service or per tier, resolved for each service; mistakes name file and line."""

from __future__ import annotations

import pytest

from continuity.blueprint import parse_blueprint
from continuity.config import parse_text
from continuity.errors import ConfigError

FLEET = """\
version: 1
fleet: repl
policy:
  replication:
    port: 48000
    tiers:
      0: {{mode: sync, standbys: 1, on_no_standby: degrade}}
nodes:
  a: {{kind: core}}
  b: {{kind: core}}
  c: {{kind: core}}
domains:
  money:
    rto: 10s
    rpo: 5s
    services:
      ledger:
        tier: 0
        data:
          - {{kind: ledger, path: data/ledger.jsonl}}
          - {{kind: sqlite, path: data/ledger.db, interval: 500ms}}
          - {{kind: directory, path: data/files}}
        placement: {{primary: a, standbys: [b, c]}}
{ledger_extra}
      vault:
        tier: 1
        data: [{{kind: ledger, path: v.jsonl}}]
        placement: {{primary: b, standbys: [a]}}
"""


def load(ledger_extra: str = "", **swap: str):
    text = FLEET.format(ledger_extra=ledger_extra)
    for old, new in swap.items():
        text = text.replace(old.replace("_", " "), new)
    return parse_blueprint(parse_text(text, "bp.yml"))


def test_a_service_takes_its_own_replication_else_its_tiers_else_async() -> None:
    bp = load()
    led, vault = bp.services["ledger"].replication, bp.services["vault"].replication
    assert (led.mode, led.need, led.policy) == ("sync", 1, "degrade")
    assert (vault.mode, vault.need) == ("async", 0)
    bp = load("        replication: {mode: sync, standbys: 2, timeout: 500ms}")
    led = bp.services["ledger"].replication
    assert (led.mode, led.need, led.policy, led.timeout) == ("sync", 2, "refuse", 0.5)
    assert bp.policy.replication.port == 48000 and not bp.policy.replication.encrypt


def test_sources_have_a_cadence_except_ledgers_which_stream() -> None:
    data = load().services["ledger"].spec.data
    assert [d.every() for d in data] == [0.0, 0.5, 10.0]


@pytest.mark.parametrize(("extra", "line", "where", "says"), [
    ("        replication: {mode: sync, standbys: 3}", 24, "domains.money.services.ledger.replication.standbys",
     "waits for 3 standby(s) but 'ledger' declares 2"),
    ("        replication: {mode: async, standbys: 1}", 24, "domains.money.services.ledger.replication",
     "standbys only applies to mode: sync"),
    ("        replication: {mode: async, on_no_standby: refuse}", 24, "domains.money.services.ledger.replication",
     "on_no_standby only applies to mode: sync"),
    ("        replication: {mode: sync, on_no_standby: wait}", 24,
     "domains.money.services.ledger.replication.on_no_standby", "refuse"),
    ("        replication: {mode: sometimes}", 24, "domains.money.services.ledger.replication.mode", "sync"),
    ("        replication: {mode: sync, standbys: 0}", 24, "domains.money.services.ledger.replication.standbys", "1"),
    ("        replication: {mode: sync, quorum: 2}", 24, "domains.money.services.ledger.replication.quorum", ""),
])
def test_a_wrong_service_replication_names_file_line_and_key(extra: str, line: int, where: str, says: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(extra)
    assert (exc.value.file, exc.value.line, exc.value.key_path) == ("bp.yml", line, where), str(exc.value)
    assert says in exc.value.message


def test_a_tier_default_that_asks_more_standbys_than_a_service_has_is_named_where_it_is_declared() -> None:
    with pytest.raises(ConfigError) as exc:
        load(**{"0: {mode: sync, standbys: 1": "0: {mode: sync, standbys: 3"})
    assert (exc.value.line, exc.value.key_path) == (7, "policy.replication.tiers.0.standbys")
    assert "tier 0's default, for service 'ledger'" in exc.value.message


def test_a_ledger_with_a_cadence_and_an_unknown_tier_are_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        load(**{"path: data/ledger.jsonl}": "path: data/ledger.jsonl, interval: 1s}"})
    assert exc.value.line == 20 and "shipped to its standbys as it is written" in exc.value.message
    with pytest.raises(ConfigError) as exc:
        load(**{"      0: {mode": "      7: {mode"})
    assert exc.value.line == 6 and "tiers are 0 to 3" in exc.value.message
