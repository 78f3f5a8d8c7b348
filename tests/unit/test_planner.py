"""The failover planner: pure decisions over plain data and an injected clock."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from continuity.blueprint import Blueprint, load_blueprint
from continuity.errors import UsageError
from continuity.failover.planner import (
    STEPS,
    SWITCHOVER_STEPS,
    FailoverPlan,
    decide,
    plan_failovers,
    plan_forced,
    plan_switchover,
)
from continuity.state.routes import Route

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_000_000.0


@dataclass(frozen=True)
class L:
    node: str
    epoch: int
    ttl: float


@pytest.fixture(scope="module")
def bp() -> Blueprint:
    return load_blueprint(ROOT / "ops" / "blueprint.yml")


def alive(*nodes: str) -> dict[str, dict]:
    return {n: {"state": "alive"} for n in nodes}


def plans(bp: Blueprint, dead: set[str], states: dict, leases: dict | None = None, **kw) -> list[FailoverPlan]:
    return plan_failovers(bp, dead, states, leases or {}, NOW, kw.pop("paused", set()), kw.pop("global_pause", False),
                          kw.pop("cooldowns", {}), **kw)


def test_dead_primary_moves_its_services_to_the_standby(bp: Blueprint) -> None:
    out = plans(bp, {"core-a"}, {"core-a": {"state": "dead"}, **alive("core-b", "sat-1")})
    assert {p.service for p in out} == {"ledger", "reports"}
    for p in out:
        assert p.candidate == "core-b" and p.old_primary == "core-a" and p.action == "failover"
        assert p.steps == STEPS
    # dependencies first: ledger before reports (reports depends on ledger)
    assert [p.service for p in out] == ["ledger", "reports"]


def test_live_primary_is_left_alone(bp: Blueprint) -> None:
    assert plans(bp, set(), alive("core-a", "core-b", "sat-1")) == []


def test_promotion_waits_for_lease_expiry_plus_margin(bp: Blueprint) -> None:
    leases = {"ledger": L("core-a", 4, ttl=0.7)}
    (ledger,) = [p for p in plans(bp, {"core-a"}, alive("core-b"), leases) if p.service == "ledger"]
    assert ledger.not_before == pytest.approx(NOW + 0.7 + bp.policy.lease_margin)
    assert ledger.expected_epoch == 4
    assert ledger.wait(NOW) == pytest.approx(0.7 + bp.policy.lease_margin)
    assert ledger.wait(NOW + 10) == 0.0


def test_expired_lease_still_waits_the_margin(bp: Blueprint) -> None:
    (ledger,) = [p for p in plans(bp, {"core-a"}, alive("core-b")) if p.service == "ledger"]
    assert ledger.not_before == pytest.approx(NOW + bp.policy.lease_margin)


def test_current_primary_comes_from_the_lease_not_the_blueprint(bp: Blueprint) -> None:
    # ledger already failed over to core-b; core-a dying now must not touch it
    leases = {"ledger": L("core-b", 2, 2.0)}
    out = plans(bp, {"core-a"}, alive("core-b"), leases)
    assert "ledger" not in {p.service for p in out}
    # and core-b dying moves it back to core-a
    out = plans(bp, {"core-b"}, alive("core-a"), leases)
    (ledger,) = [p for p in out if p.service == "ledger"]
    assert ledger.old_primary == "core-b" and ledger.candidate == "core-a"


def test_route_names_the_primary_when_no_lease_is_left(bp: Blueprint) -> None:
    routes = {"ledger": Route("ledger", "core-b", 3)}
    out = plans(bp, {"core-b"}, alive("core-a"), routes=routes)
    (ledger,) = [p for p in out if p.service == "ledger"]
    assert ledger.old_primary == "core-b" and ledger.expected_epoch == 3


def test_pause_and_global_pause_skip_with_a_reason(bp: Blueprint) -> None:
    assert [p.service for p in plans(bp, {"core-a"}, alive("core-b"), paused={"ledger"})] == ["reports"]
    assert plans(bp, {"core-a"}, alive("core-b"), global_pause=True) == []
    ds = decide(bp, {"core-a"}, alive("core-b"), {}, NOW, set(), True, {})
    assert {d.action for d in ds} == {"skip"} and all("paused" in d.reason for d in ds)


def test_cooldown_blocks_until_it_ends(bp: Blueprint) -> None:
    assert "ledger" not in {p.service for p in plans(bp, {"core-a"}, alive("core-b"),
                                                     cooldowns={"ledger": NOW + 5})}
    assert "ledger" in {p.service for p in plans(bp, {"core-a"}, alive("core-b"), cooldowns={"ledger": NOW - 1})}


def test_no_live_candidate_escalates_instead_of_dropping(bp: Blueprint) -> None:
    out = plans(bp, {"core-a"}, {"core-b": {"state": "suspect"}})
    assert {p.action for p in out} == {"escalate"}
    assert all(p.candidate is None and "core-b: node is suspect" in p.reason for p in out)


def test_service_without_standby_escalates(bp: Blueprint) -> None:
    out = plans(bp, {"sat-1"}, alive("core-a", "core-b"))
    assert [(p.service, p.action) for p in out] == [("telemetry", "escalate")]
    assert "no standby is declared" in out[0].reason


def _three_node_bp(tmp_path: Path) -> Blueprint:
    """The sample fleet as shipped: the ledger on core-a with standbys core-b then core-c."""
    bp = load_blueprint(ROOT / "ops" / "blueprint.yml")
    assert bp.services["ledger"].standbys == ("core-b", "core-c")
    return bp


def test_candidates_follow_standby_order_with_fallbacks(tmp_path: Path) -> None:
    bp3 = _three_node_bp(tmp_path)
    (ledger,) = [p for p in plans(bp3, {"core-a"}, alive("core-b", "core-c")) if p.service == "ledger"]
    assert ledger.candidate == "core-b" and ledger.fallbacks == ("core-c",)
    (ledger,) = [p for p in plans(bp3, {"core-a"}, {"core-b": "dead", **alive("core-c")}) if p.service == "ledger"]
    assert ledger.candidate == "core-c" and ledger.fallbacks == ()


def test_unhealthy_or_lagging_candidates_go_last(tmp_path: Path) -> None:
    bp3 = _three_node_bp(tmp_path)
    states = {"core-b": {"state": "alive", "healthy": False}, **alive("core-c")}
    (ledger,) = [p for p in plans(bp3, {"core-a"}, states) if p.service == "ledger"]
    assert (ledger.candidate, ledger.fallbacks) == ("core-c", ("core-b",))
    rpo = bp3.services["ledger"].rpo
    fresh = {"ledger": {"core-b": NOW - rpo - 1, "core-c": NOW - 1}}
    (ledger,) = [p for p in plans(bp3, {"core-a"}, alive("core-b", "core-c"), freshness=fresh)
                 if p.service == "ledger"]
    assert ledger.candidate == "core-c"


def test_a_node_behind_the_committed_position_is_never_chosen_while_one_holding_everything_is_alive(
        tmp_path: Path) -> None:
    """Issue 10 item 5: core-b comes first by placement, is healthy and fresh by the RPO rule, but lacks committed
    records (a replaced machine still catching up): core-c, holding everything, takes the role; core-b stays a
    fallback. Among nodes all behind, the one lacking least goes first (its prepare catches it up)."""
    bp3 = _three_node_bp(tmp_path)
    ds = decide(bp3, {"core-a"}, alive("core-b", "core-c"), {}, NOW, set(), False, {},
                behind={"ledger": {"core-a": 0, "core-b": 12, "core-c": 0}})
    (ledger,) = [d for d in ds if d.service == "ledger"]
    assert ledger.plan.candidate == "core-c" and ledger.plan.fallbacks == ("core-b",)
    assert ledger.details["behind"] == {"core-b": 12}
    unhealthy = {"core-c": {"state": "alive", "healthy": False}, **alive("core-b")}
    (ledger,) = [p for p in plans(bp3, {"core-a"}, unhealthy, behind={"ledger": {"core-b": 1, "core-c": 0}})
                 if p.service == "ledger"]
    assert ledger.candidate == "core-c", "holding every committed record comes before a healthy report"
    (ledger,) = [p for p in plans(bp3, {"core-a"}, alive("core-b", "core-c"),
                                  behind={"ledger": {"core-b": 9, "core-c": 2}}) if p.service == "ledger"]
    assert (ledger.candidate, ledger.fallbacks) == ("core-c", ("core-b",))
    (ledger,) = [p for p in plans(bp3, {"core-a"}, alive("core-b", "core-c"), behind={"ledger": {}})
                 if p.service == "ledger"]
    assert ledger.candidate == "core-b", "nothing known behind: declared order"


def test_plan_round_trips_through_json(bp: Blueprint) -> None:
    import json

    (p,) = [p for p in plans(bp, {"core-a"}, alive("core-b"), {"ledger": L("core-a", 1, 1.0)})
            if p.service == "ledger"]
    assert FailoverPlan.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_switchover_validates_and_demotes_first(bp: Blueprint) -> None:
    p = plan_switchover(bp, "ledger", "core-b", "core-a", alive("core-a", "core-b"), NOW, 3)
    assert p.steps == SWITCHOVER_STEPS and p.steps[0] == "demote" and p.kind == "switchover"
    with pytest.raises(UsageError, match="unknown service"):
        plan_switchover(bp, "nope", "core-b", "core-a", alive("core-a", "core-b"), NOW)
    with pytest.raises(UsageError, match="unknown node"):
        plan_switchover(bp, "ledger", "core-z", "core-a", alive("core-a", "core-b"), NOW)
    with pytest.raises(UsageError, match="not a placement node"):
        plan_switchover(bp, "ledger", "sat-1", "core-a", alive("core-a", "sat-1"), NOW)
    with pytest.raises(UsageError, match="already the primary"):
        plan_switchover(bp, "ledger", "core-a", "core-a", alive("core-a", "core-b"), NOW)
    with pytest.raises(UsageError, match="is dead"):
        plan_switchover(bp, "ledger", "core-b", "core-a", {"core-a": "alive", "core-b": "dead"}, NOW)
    with pytest.raises(UsageError, match="--force"):
        plan_switchover(bp, "ledger", "core-b", "core-a", {"core-a": "dead", "core-b": "alive"}, NOW)


def test_forced_failover_still_waits_out_the_lease(bp: Blueprint) -> None:
    p = plan_forced(bp, "ledger", "core-b", "core-a", {"core-a": "dead", "core-b": "alive"},
                    L("core-a", 2, 1.5), NOW, 2)
    assert p.kind == "forced" and p.steps == STEPS
    assert p.not_before == pytest.approx(NOW + 1.5 + bp.policy.lease_margin)


@settings(max_examples=200, deadline=None)
@given(dead=st.sets(st.sampled_from(["core-a", "core-b", "sat-1"])),
       states=st.dictionaries(st.sampled_from(["core-a", "core-b", "sat-1"]),
                              st.sampled_from(["alive", "suspect", "dead", "expected-offline", "unknown"])),
       ttl=st.floats(min_value=0, max_value=30), paused=st.booleans())
def test_invariants_hold_for_any_fleet_state(bp: Blueprint, dead: set[str], states: dict, ttl: float,
                                             paused: bool) -> None:
    leases = {s: L(v.primary, 1, ttl) for s, v in bp.services.items()}
    for p in plans(bp, dead, states, leases, global_pause=paused):
        assert not paused
        assert p.old_primary in dead
        if p.action == "failover":
            assert p.candidate not in dead and p.candidate != p.old_primary
            assert states.get(p.candidate) == "alive"
            # never before the old lease has expired plus the margin
            assert p.not_before >= NOW + ttl + bp.policy.lease_margin - 1e-9
        else:
            assert p.candidate is None


# --- per-service trigger: a live primary gave its service up (local restarts exhausted) ----------
FAILED = {"ledger": "3 consecutive failed probes after 2 local restart(s) in 60s"}
ROUTES = {"ledger": Route("ledger", "core-a", 1)}


def test_failed_service_moves_alone_to_a_standby_without_waiting(bp: Blueprint) -> None:
    (plan,) = plan_failovers(bp, set(), alive("core-a", "core-b", "sat-1"), {}, NOW, set(), False, {},
                             routes=ROUTES, failed_services=FAILED)
    assert plan.service == "ledger" and plan.old_primary == "core-a" and plan.candidate == "core-b"
    assert plan.not_before == NOW, "the lease was released on purpose: nothing to wait out"
    assert plan.expected_epoch == 1 and plan.kind == "failover" and plan.action == "failover"
    assert plan.reason.startswith("service failed on core-a: 3 consecutive")
    assert "core-a" not in plan.fallbacks


def test_only_the_failed_node_left_gets_a_new_epoch_there(bp: Blueprint) -> None:
    states = {**alive("core-a", "sat-1"), "core-b": {"state": "dead"}}
    (plan,) = plan_failovers(bp, set(), states, {}, NOW, set(), False, {}, routes=ROUTES, failed_services=FAILED)
    assert plan.candidate == "core-a" and plan.action == "failover"


def test_no_candidate_at_all_escalates(bp: Blueprint) -> None:
    states = {"core-a": {"state": "suspect"}, "core-b": {"state": "dead"}, **alive("sat-1")}
    (plan,) = plan_failovers(bp, set(), states, {}, NOW, set(), False, {}, routes=ROUTES, failed_services=FAILED)
    assert plan.action == "escalate" and plan.candidate is None


def test_pause_cooldown_and_a_new_holder_are_respected(bp: Blueprint) -> None:
    states = alive("core-a", "core-b", "sat-1")
    kw = {"routes": ROUTES, "failed_services": FAILED}
    (d,) = decide(bp, set(), states, {}, NOW, {"ledger"}, False, {}, **kw)
    assert d.action == "skip" and "paused" in d.reason
    (d,) = decide(bp, set(), states, {}, NOW, set(), True, {}, **kw)
    assert d.action == "skip" and "fleet-wide" in d.reason
    (d,) = decide(bp, set(), states, {}, NOW, set(), False, {"ledger": NOW + 30}, **kw)
    assert d.action == "skip" and "cooling down" in d.reason
    (d,) = decide(bp, set(), states, {"ledger": L("core-b", 2, 2.5)}, NOW, set(), False, {}, **kw)
    assert d.action == "skip" and "core-b holds the role again" in d.reason


def test_a_dead_primary_still_takes_the_usual_path(bp: Blueprint) -> None:
    states = {"core-a": {"state": "dead"}, **alive("core-b", "sat-1")}
    out = plan_failovers(bp, {"core-a"}, states, {"ledger": L("core-a", 1, 1.5)}, NOW, set(), False, {},
                         routes=ROUTES, failed_services=FAILED)
    ledger = next(p for p in out if p.service == "ledger")
    assert ledger.reason == "primary core-a is dead" and ledger.not_before == NOW + 1.5 + bp.policy.lease_margin


def test_without_failed_services_nothing_changes(bp: Blueprint) -> None:
    states = alive("core-a", "core-b", "sat-1")
    assert plan_failovers(bp, set(), states, {}, NOW, set(), False, {}, routes=ROUTES) == []
    assert plan_failovers(bp, set(), states, {}, NOW, set(), False, {}, routes=ROUTES, failed_services={}) == []
