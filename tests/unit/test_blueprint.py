"""What the blueprint derives: graph, minimal continuity set, degradation order, contact windows."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from continuity.blueprint import Blueprint, load_blueprint, parse_blueprint
from continuity.config import parse_text
from tests.helpers import ROOT

FLEET = """\
version: 1
fleet: derive
nodes:
  a: {kind: core}
  b: {kind: core, queue: custom.b}
  sat:
    kind: satellite
    contact:
      - {start: "22:00", end: "02:00", days: [fri]}
      - {start: "09:00", end: "10:30"}
  edge-1: {kind: edge}
domains:
  money:
    rto: 10s
    rpo: 5s
    services:
      vault: {tier: 0, placement: {primary: b, standbys: [a]}}
      ledger: {tier: 0, depends_on: [vault], placement: {primary: a, standbys: [b]}}
      gateway: {tier: 0, depends_on: [ledger], rto: 3s, placement: {primary: a, standbys: [b]}}
  ops:
    rto: 2m
    rpo: 10m
    services:
      notify: {tier: 1, depends_on: [ledger, audit], placement: {primary: b, standbys: [a]}}
      audit: {tier: 2, rpo: 1h, placement: {primary: a}}
      stats: {tier: 3, depends_on: [audit], placement: {primary: sat}}
      logs: {tier: 3, placement: {primary: edge-1}}
"""


def bp_from(text: str) -> Blueprint:
    return parse_blueprint(parse_text(text, "test.yml"))


@pytest.fixture(scope="module")
def bp() -> Blueprint:
    return bp_from(FLEET)


def utc(y: int, mo: int, d: int, h: int, mi: int = 0) -> dt.datetime:
    return dt.datetime(y, mo, d, h, mi, tzinfo=dt.UTC)


def test_objectives_are_inherited_from_the_domain_unless_overridden(bp: Blueprint) -> None:
    assert (bp.services["ledger"].rto, bp.services["ledger"].rpo) == (10.0, 5.0)
    assert (bp.services["gateway"].rto, bp.services["gateway"].rpo) == (3.0, 5.0)
    assert (bp.services["audit"].rto, bp.services["audit"].rpo) == (120.0, 3600.0)
    assert bp.services["notify"].domain == "ops"


def test_dependency_graph_and_transitive_dependencies(bp: Blueprint) -> None:
    graph = bp.dependency_graph()
    assert graph["notify"] == ("ledger", "audit")
    assert graph["vault"] == ()
    assert bp.transitive_deps("gateway") == {"ledger", "vault"}
    assert bp.transitive_deps("notify") == {"ledger", "vault", "audit"}
    assert bp.transitive_deps("logs") == set()


def test_topological_order_starts_dependencies_first(bp: Blueprint) -> None:
    order = bp.topo_order()
    assert sorted(order) == sorted(bp.services)
    for sid, deps in bp.dependency_graph().items():
        for dep in deps:
            assert order.index(dep) < order.index(sid), f"{dep} must start before {sid}"


def test_minimal_continuity_set_is_tier0_and_what_it_needs(bp: Blueprint) -> None:
    assert bp.minimal_continuity_set() == ["gateway", "ledger", "vault"]


def test_degradation_order_sheds_lowest_tier_first_and_never_the_core(bp: Blueprint) -> None:
    assert bp.degradation_order() == [["logs", "stats"], ["audit"], ["notify"]]
    shed = {s for group in bp.degradation_order() for s in group}
    assert not shed & set(bp.minimal_continuity_set())
    assert shed | set(bp.minimal_continuity_set()) == set(bp.services)


def test_degradation_order_skips_empty_tiers() -> None:
    text = FLEET.replace("      audit: {tier: 2, rpo: 1h,", "      audit: {tier: 3, rpo: 1h,")
    assert bp_from(text).degradation_order() == [["audit", "logs", "stats"], ["notify"]]


def test_queues_and_placement(bp: Blueprint) -> None:
    assert bp.queue("a") == "node.a"
    assert bp.queue("b") == "custom.b"
    assert bp.queues() == {"a": "node.a", "b": "custom.b", "sat": "node.sat", "edge-1": "node.edge-1"}
    assert bp.services_on("a") == ["audit", "gateway", "ledger"]
    assert bp.services_on("edge-1") == ["logs"]
    assert bp.tier_services([0, 1]) == ["gateway", "ledger", "notify", "vault"]


def test_core_and_windowless_nodes_are_always_in_contact(bp: Blueprint) -> None:
    for when in (utc(2025, 1, 3, 0), utc(2025, 1, 4, 23, 59), utc(2025, 1, 5, 12)):
        assert bp.in_contact("a", when)
        assert bp.in_contact("edge-1", when)


# 2025-01-03 is a Friday
@pytest.mark.parametrize(("when", "expected"), [
    (utc(2025, 1, 3, 21, 59), False),   # Friday just before the night window
    (utc(2025, 1, 3, 22, 0), True),     # start is inclusive
    (utc(2025, 1, 3, 23, 59), True),
    (utc(2025, 1, 4, 0, 0), True),      # Saturday after midnight: still Friday's window
    (utc(2025, 1, 4, 1, 59), True),
    (utc(2025, 1, 4, 2, 0), False),     # end is exclusive
    (utc(2025, 1, 4, 22, 30), False),   # Saturday night: the window only starts on Fridays
    (utc(2025, 1, 3, 1, 0), False),     # Friday early morning belongs to Thursday's (absent) window
    (utc(2025, 1, 2, 23, 0), False),    # Thursday night
    (utc(2025, 1, 5, 9, 0), True),      # the daily morning window, any day
    (utc(2025, 1, 5, 10, 29), True),
    (utc(2025, 1, 5, 10, 30), False),
    (dt.datetime(2025, 1, 4, 0, 30, tzinfo=dt.timezone(dt.timedelta(hours=2))), True),  # = Fri 22:30 UTC
])
def test_satellite_contact_windows_including_across_midnight(bp: Blueprint, when: dt.datetime,
                                                              expected: bool) -> None:
    assert bp.in_contact("sat", when) is expected


def test_window_ending_at_24_00_covers_the_last_minute() -> None:
    text = FLEET.replace('{start: "09:00", end: "10:30"}', '{start: "23:00", end: "24:00"}')
    bp = bp_from(text)
    assert bp.in_contact("sat", dt.datetime(2025, 1, 5, 23, 59, 59, 900000, tzinfo=dt.UTC))
    assert not bp.in_contact("sat", utc(2025, 1, 5, 22, 59))


def test_sample_fleet_loads_and_derives() -> None:
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    assert bp.minimal_continuity_set() == ["keystore", "ledger"]
    assert bp.degradation_order() == [["telemetry"], ["reports"], ["notifier"]]
    assert bp.nodes["sat-1"].kind == "satellite"
    assert not bp.in_contact("sat-1", utc(2025, 1, 3, 23, 30))  # the planned blackout
    assert bp.in_contact("sat-1", utc(2025, 1, 3, 12, 0))


@st.composite
def dag_fleets(draw: st.DrawFn) -> str:
    """Random acyclic fleets respecting the tier rules (edges only to earlier services)."""
    n = draw(st.integers(min_value=1, max_value=9))
    tiers = [draw(st.integers(min_value=0, max_value=3)) for _ in range(n)]
    lines = ["version: 1", "fleet: prop", "nodes:", "  a: {}", "  b: {}", "domains:", "  d:",
             "    rto: 1m", "    rpo: 1m", "    services:"]
    for i in range(n):
        allowed = [j for j in range(i) if tiers[i] != 0 or tiers[j] == 0]
        deps = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=3)) if allowed else []
        dep_list = ", ".join(f"s{j}" for j in deps)
        lines.append(f"      s{i}: {{tier: {tiers[i]}, depends_on: [{dep_list}], "
                     "placement: {primary: a, standbys: [b]}}")
    return "\n".join(lines) + "\n"


@settings(max_examples=60, deadline=None)
@given(dag_fleets())
def test_derived_views_hold_for_any_valid_fleet(text: str) -> None:
    bp = bp_from(text)
    order = bp.topo_order()
    for sid, deps in bp.dependency_graph().items():
        assert all(order.index(d) < order.index(sid) for d in deps)
    mcs = set(bp.minimal_continuity_set())
    for sid in mcs:
        assert bp.transitive_deps(sid) <= mcs
    assert {s for s, v in bp.services.items() if v.tier == 0} <= mcs
    groups = bp.degradation_order()
    tiers = [bp.services[g[0]].tier for g in groups]
    assert tiers == sorted(tiers, reverse=True)
    assert all(len({bp.services[s].tier for s in g}) == 1 for g in groups)
    assert {s for g in groups for s in g} == set(bp.services) - mcs
