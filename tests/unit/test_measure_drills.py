"""Measurement is pure: hand-built observations give exact detection, MTTR, data-loss and RPO numbers."""

from __future__ import annotations

import pytest

from continuity.drills.measure import Objectives, Observation, Sample, Write, data_loss, measure, mttr

T0 = 1000.0


def ev(ts: float, kind: str, node: str | None = None, service: str | None = None, **data: object) -> dict:
    return {"ts": ts, "kind": "continuity_layer." + kind, "node": node, "service": service, "data": data}


def rounds(spec: list[tuple[float, str, bool]], name: str = "health", during: str = "recover") -> list[Sample]:
    return [Sample(ts=t, round=i, phase=ph, name=name, ok=ok, during=during) for i, (t, ph, ok) in enumerate(spec)]


def obs(**kw: object) -> Observation:
    base = dict(started=T0 - 5, fault_at=T0, rollback_at=T0 + 8, finished=T0 + 12, target_nodes=("core-a",),
                target_services=("ledger",))
    base.update(kw)
    return Observation(**base)  # type: ignore[arg-type]


def test_failover_drill_numbers() -> None:
    samples = rounds([(T0 - 1, "before", True), (T0 + 0.2, "during", False), (T0 + 3.0, "during", False),
                      (T0 + 4.5, "during", True), (T0 + 6.0, "during", True), (T0 + 9, "after", True)])
    events = [
        ev(T0 - 0.5, "detect.node_dead", node="core-b"),  # before the fault and about another node: ignored
        ev(T0 + 2.6, "detect.node_dead", node="core-a"),
        ev(T0 + 2.7, "failover.started", service="ledger", record="r1", **{"from": "core-a"}),
        ev(T0 + 2.9, "failover.step", service="ledger", record="r1", step="fence", duration=0.01),
        ev(T0 + 4.2, "failover.step", service="ledger", record="r1", step="promote", duration=1.3),
        ev(T0 + 4.4, "failover.completed", service="ledger", record="r1"),
    ]
    writes = [Write(1, T0 - 0.1, True, T0 - 0.09), Write(2, T0 + 0.1, False), Write(2, T0 + 2, False),
              Write(2, T0 + 4.4, True, T0 + 4.6), Write(3, T0 + 5, True, T0 + 5.01)]
    m = measure(obs(samples=samples, events=events, writes=writes, recovered_seqs=[1, 2, 3]),
                Objectives(rto=10, rpo=5, detection=5, failovers="required"))
    assert m.detection_time == pytest.approx(2.6) and m.detection_event == "detect.node_dead"
    assert m.failover_count == 1
    assert [(s["step"], s["duration"]) for s in m.failover_steps] == [("fence", 0.01), ("promote", 1.3)]
    assert abs(m.mttr - 4.6) < 1e-9  # probes back at +4.5, first acknowledged write after the outage at +4.6
    assert m.data_lost == 0 and m.achieved_rpo == 0.0
    assert m.passed, [v for v in m.expectations if not v.ok]


def test_lost_acknowledged_writes_fail_the_drill_and_give_rpo() -> None:
    writes = [Write(1, T0 - 3, True, T0 - 3), Write(2, T0 - 2, True, T0 - 2), Write(3, T0 - 1, True, T0 - 1),
              Write(4, T0 - 0.5, True, T0 - 0.5), Write(5, T0 + 5, True, T0 + 5)]
    lost, seqs, rpo = data_loss(writes, [1, 2, 5])
    assert lost == 2 and seqs == [3, 4]
    assert rpo == pytest.approx(1.5)  # newest surviving state: seq 2 at T0-2; lost data acknowledged up to T0-0.5
    m = measure(obs(writes=writes, recovered_seqs=[1, 2, 5], samples=rounds([(T0 - 1, "before", True),
                                                                             (T0 + 9, "after", True)])),
                Objectives(rto=10, rpo=1, data_lost=0))
    failed = {v.name for v in m.expectations if not v.ok}
    assert failed == {"acknowledged writes lost", "achieved RPO within RPO"}


def test_never_recovered_means_no_mttr_and_failure() -> None:
    samples = rounds([(T0 - 1, "before", True), (T0 + 1, "during", False), (T0 + 9, "after", False)])
    m = measure(obs(samples=samples), Objectives(rto=10))
    assert m.mttr is None and not m.steady_state_after
    assert not m.passed
    assert mttr(samples, [], T0) == (None, True)


def test_no_impact_means_zero_mttr() -> None:
    samples = rounds([(T0 - 1, "before", True), (T0 + 1, "during", True), (T0 + 9, "after", True)])
    assert mttr(samples, [Write(1, T0 + 1, True, T0 + 1.01)], T0) == (0.0, False)


def test_hold_probe_failing_during_the_fault_fails() -> None:
    samples = rounds([(T0 - 1, "before", True), (T0 + 1, "during", False), (T0 + 9, "after", True)], during="hold")
    m = measure(obs(samples=samples), Objectives(rto=None, rpo=None))
    assert [v.name for v in m.expectations if not v.ok] == ["probe health held during the fault"]


def test_detect_probe_must_see_the_fault_and_counts_as_detection() -> None:
    seen = rounds([(T0 - 1, "before", True), (T0 + 0.4, "during", False), (T0 + 9, "after", True)], "integrity",
                  during="detect")
    m = measure(obs(samples=seen), Objectives(rto=5, failovers="forbidden"))
    assert m.passed and m.detection_time == pytest.approx(0.4) and m.detection_event == "probe:integrity"
    assert m.mttr == 0.0  # a detect probe failing is the fault being seen, not an outage
    unseen = rounds([(T0 - 1, "before", True), (T0 + 0.4, "during", True), (T0 + 9, "after", True)], "integrity",
                    during="detect")
    m2 = measure(obs(samples=unseen), Objectives(rto=5))
    assert [v.name for v in m2.expectations if not v.ok] == ["probe integrity detected the fault"]


def test_forbidden_failover_rollback_failure_and_abort_are_failures() -> None:
    samples = rounds([(T0 - 1, "before", True), (T0 + 9, "after", True)])
    events = [ev(T0 + 1, "failover.started", service="ledger", record="x")]
    m = measure(obs(samples=samples, events=events, rollback_ok=False, rollback_errors=["signal: nope"],
                    aborted="stop condition breached: keystore"), Objectives(failovers="forbidden"))
    failed = {v.name for v in m.expectations if not v.ok}
    assert failed == {"no failover", "rollback completed", "no stop condition breached"}


def test_events_about_other_targets_are_not_detection() -> None:
    events = [ev(T0 + 1, "detect.node_suspect", node="sat-1"), ev(T0 + 2, "detect.node_dead", node="core-a")]
    m = measure(obs(events=events), Objectives(rto=None))
    assert m.detection_time == pytest.approx(2)


def test_ignored_probes_do_not_stretch_mttr_but_must_pass_after() -> None:
    samples = (rounds([(T0 - 1, "before", True), (T0 + 1, "during", False), (T0 + 3, "during", True),
                       (T0 + 9, "after", True), (T0 + 12, "after", True)])
               + [Sample(T0 + 9, 3, "after", "node-back", False, "ignore"),
                  Sample(T0 + 12, 4, "after", "node-back", True, "ignore")])
    m = measure(obs(samples=samples), Objectives(rto=5))
    assert m.mttr == pytest.approx(3) and m.steady_state_after and m.passed


def test_an_escalation_with_nowhere_to_go_is_not_a_failover() -> None:
    """A silent satellite's standby-less service opens a record with no candidate: a person is told, no role can
    move, so a drill that forbids failovers still passes; a record naming a candidate is counted."""
    from continuity.drills.measure import failovers

    escalated = [ev(T0 + 1, "failover.started", "core-a", "telemetry", record="r1", to=None),
                 ev(T0 + 1.1, "failover.escalated", "core-a", "telemetry", record="r1")]
    assert failovers(escalated, T0)[0] == 0
    moved = [*escalated, ev(T0 + 2, "failover.started", "core-a", "ledger", record="r2", to="core-b")]
    assert failovers(moved, T0)[0] == 1


def test_node_loss_rpo_is_the_loss_the_failover_prepare_step_reported() -> None:
    """A node loss: the client saw nothing lost (its writes were replicated), but prepare reports the new primary
    started 2 records / 1.5 s behind the committed position. The drill's RPO is that report; the RPO verdict
    sees it (1.5 s against a 1 s objective fails), and a redelivered prepare step counts once (its latest)."""
    samples = rounds([(T0 - 1, "before", True), (T0 + 3, "during", True), (T0 + 9, "after", True)])
    events = [
        ev(T0 - 3, "failover.step", service="ledger", record="r0", step="prepare", ok=True, duration=0.1,
           source="snapshot", loss_records=99, loss_seconds=60.0),  # an earlier failover: not this drill's
        ev(T0 + 2.0, "failover.started", service="ledger", record="r1", **{"from": "core-a"}),
        ev(T0 + 2.5, "failover.step", service="ledger", record="r1", step="prepare", ok=True, duration=0.2,
           source="replica", loss_records=3, loss_seconds=2.0),
        ev(T0 + 2.6, "failover.step", service="ledger", record="r1", step="prepare", ok=True, duration=0.2,
           source="standby", loss_records=2, loss_seconds=1.5),  # redelivered: the newest report wins
        ev(T0 + 2.7, "failover.step", service="ledger", record="r1", step="promote", duration=0.3),
    ]
    writes = [Write(1, T0 - 0.1, True, T0 - 0.09), Write(2, T0 + 4, True, T0 + 4.01)]
    m = measure(obs(samples=samples, events=events, writes=writes, recovered_seqs=[1, 2]),
                Objectives(rto=10, rpo=1, failovers="required"))
    assert m.data_lost == 0
    assert [(e["service"], e["source"], e["loss_records"], e["loss_seconds"]) for e in m.failover_loss] == [
        ("ledger", "standby", 2.0, 1.5)]
    assert m.achieved_rpo == 1.5
    rpo = next(v for v in m.expectations if v.name == "achieved RPO within RPO")
    assert not rpo.ok and rpo.measured == 1.5
    lossless = measure(obs(samples=samples, events=events[:2], writes=writes, recovered_seqs=[1, 2]),
                       Objectives(rto=10, rpo=1, failovers="required"))
    assert lossless.failover_loss == [] and lossless.achieved_rpo == 0.0
