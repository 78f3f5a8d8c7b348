"""The continuity mode follows from service health where the leases say services run."""

from __future__ import annotations

from continuity.blueprint import load_blueprint
from continuity.detect import mode as m
from continuity.detect.detector import ALIVE, DEAD, EXPECTED_OFFLINE, SUSPECT, NodeState
from tests.helpers import ROOT

BP = load_blueprint(ROOT / "ops" / "blueprint.yml")
HOLDERS = {s: v.primary for s, v in BP.services.items()}


def node(state: str, *services: str, healthy: bool = True) -> NodeState:
    return NodeState(state=state, services={s: {"healthy": healthy, "role": "primary", "detail": "x"}
                                            for s in services})


def fleet(**overrides: NodeState) -> dict[str, NodeState]:
    base = {n: node(ALIVE, *BP.services_on(n)) for n in BP.nodes}
    base.update(overrides)
    return base


def test_all_healthy_is_normal_and_since_carries_over() -> None:
    first = m.compute(BP, HOLDERS, fleet(), now=100.0)
    assert first.mode == m.NORMAL and first.unhealthy == [] and first.shed_tiers == []
    again = m.compute(BP, HOLDERS, fleet(), now=200.0, previous=first.as_dict())
    assert again.since == 100.0


def test_lower_tier_down_is_degraded_and_sheds_the_lowest_tiers() -> None:
    res = m.compute(BP, HOLDERS, fleet(**{"core-a": node(ALIVE, "ledger")}), now=1.0)
    assert res.mode == m.DEGRADED and res.unhealthy == ["reports"]
    assert res.shed_tiers == [3, 2] and res.shed_services == ["telemetry", "reports"]


def test_minimal_continuity_set_down_is_critical() -> None:
    res = m.compute(BP, HOLDERS, fleet(**{"core-b": node(ALIVE, "notifier", "keystore", healthy=False)}), now=1.0)
    assert res.mode == m.CRITICAL and "keystore" in res.unhealthy
    assert res.shed_tiers == [3, 2, 1]
    assert "ledger" not in res.shed_services and "keystore" not in res.shed_services


def test_dead_holder_and_missing_lease_are_unhealthy() -> None:
    res = m.compute(BP, {**HOLDERS, "notifier": None}, fleet(**{"core-a": node(DEAD, "ledger", "reports")}), now=1)
    assert res.services["ledger"].reason == "core-a is dead"
    assert res.services["notifier"].reason == "no primary holds the lease"
    assert res.mode == m.CRITICAL


def test_suspect_holder_still_counts_and_blackout_is_dormant_not_down() -> None:
    res = m.compute(BP, HOLDERS, fleet(**{"core-a": node(SUSPECT, "ledger", "reports"),
                                          "sat-1": NodeState(state=EXPECTED_OFFLINE)}), now=1.0)
    assert res.mode == m.NORMAL
    assert res.dormant == ["telemetry"]
