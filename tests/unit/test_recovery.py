"""The local-recovery ladder on a fake clock: restart in place after N failed probes, give up after the budget."""

from __future__ import annotations

from continuity.blueprint import parse_blueprint
from continuity.config import parse_text
from continuity.detect.recovery import RecoveryPolicy, Tracker

POL = RecoveryPolicy(restart_after_failures=3, max_local_restarts=2, restart_window=60.0)


def feed(tr: Tracker, results: list[bool], start: float = 0.0, step: float = 1.0) -> list[str]:
    return [tr.observe(ok, start + i * step, "down").action for i, ok in enumerate(results)]


def test_n_consecutive_failures_restart_once_then_count_again_from_zero() -> None:
    tr = Tracker(POL)
    assert feed(tr, [False, False, False]) == ["none", "none", "restart"]
    assert tr.failures == 0 and len(tr.restarts) == 1
    # the restarted instance gets the same patience before the next decision
    assert feed(tr, [False, False], start=10) == ["none", "none"]


def test_restarts_exhausted_gives_up_and_stays_given_up() -> None:
    tr = Tracker(POL)
    actions = feed(tr, [False] * 9)
    assert actions == ["none", "none", "restart", "none", "none", "restart", "none", "none", "give_up"]
    d = tr.observe(False, 20.0)
    assert d.action == "none" and tr.gave_up, "the role is released once; later probes change nothing"
    assert tr.observe(True, 21.0).action == "none"


def test_give_up_reason_says_why() -> None:
    tr = Tracker(RecoveryPolicy(restart_after_failures=1, max_local_restarts=0))
    d = tr.observe(False, 5.0, "connection refused")
    assert d.action == "give_up" and "connection refused" in d.reason and "0 local restart" in d.reason


def test_a_healthy_probe_resets_the_streak_not_the_restart_budget() -> None:
    tr = Tracker(POL)
    assert feed(tr, [False, False, True, False, False, True]) == ["none"] * 6, "never 3 in a row"
    assert tr.failing_since is None
    assert feed(tr, [False, False, False, True], start=10) == ["none", "none", "restart", "none"]
    # crash-looping: healthy for a moment between crashes still spends the budget
    assert feed(tr, [False, False, False, True, False, False, False], start=20) == \
        ["none", "none", "restart", "none", "none", "none", "give_up"]


def test_restarts_outside_the_window_are_forgotten() -> None:
    tr = Tracker(RecoveryPolicy(restart_after_failures=1, max_local_restarts=1, restart_window=30.0))
    assert tr.observe(False, 0.0).action == "restart"
    assert tr.observe(True, 1.0).action == "none"
    assert tr.observe(False, 29.0).action == "give_up", "still inside the window"
    tr2 = Tracker(RecoveryPolicy(restart_after_failures=1, max_local_restarts=1, restart_window=30.0))
    assert tr2.observe(False, 0.0).action == "restart"
    assert tr2.observe(False, 31.0).action == "restart", "the first restart left the window"


def test_no_start_hook_gives_up_at_once() -> None:
    tr = Tracker(POL, has_start_hook=False)
    assert feed(tr, [False, False]) == ["none", "none"]
    d = tr.observe(False, 2.0)
    assert d.action == "give_up" and "no start hook" in d.reason


def test_failing_since_marks_the_start_of_the_outage() -> None:
    tr = Tracker(POL)
    feed(tr, [True, False, False, False], start=100.0)
    assert tr.failing_since == 101.0, "kept across the restart: the outage did not end with it"


def test_policy_comes_from_the_blueprint_with_defaults() -> None:
    text = """\
version: 1
fleet: r
policy: {restart_after_failures: 2, max_local_restarts: 5, restart_window: 2m}
nodes: {a: {kind: core}}
domains: {d: {rto: 10s, rpo: 5s, services: {s: {tier: 2, placement: {primary: a}}}}}
"""
    bp = parse_blueprint(parse_text(text, "r.yml"))
    assert RecoveryPolicy.from_blueprint(bp) == RecoveryPolicy(2, 5, 120.0)
    bare = parse_blueprint(parse_text(text.replace(
        "policy: {restart_after_failures: 2, max_local_restarts: 5, restart_window: 2m}\n", ""), "r.yml"))
    assert RecoveryPolicy.from_blueprint(bare) == RecoveryPolicy()
