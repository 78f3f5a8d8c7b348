"""Turn what a drill observed into numbers and verdicts: detection, failover steps, MTTR, data lost, RPO.

This is the part the chaos tools leave to the reader (litmus#2838): given the
pulse events of the drill window, the runner's probe samples and the load
generator's writes, compute how long the system took to notice, to fail over
step by step, to be back in steady state, and which acknowledged writes it
lost — then hold each number against the declared objective. Pure: every
input is data, every time comes from the observation, so a journal replayed
later gives the same verdict.

Pure decider: no Redis, no disk, no clock of its own. Its I/O shell is
:mod:`continuity.drills.runner`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from continuity.events import (
    DETECT_FAILOVER_LAUNCH_FAILED,
    DETECT_NODE_DEAD,
    DETECT_NODE_EXPECTED_OFFLINE,
    DETECT_NODE_SUSPECT,
    FAILOVER_STARTED,
    FAILOVER_STEP,
    RECORD,
    short,
)

# The detector's events that count as "the fault was noticed" (detection time runs up to the first one about
# the target). These are the emitted kinds the former word match (dead|suspect|offline|failed|... in a
# detect.* kind) recognised, kept as they were so measurements of existing drills do not move: a node going
# silent in a planned gap is still the detector noticing it, and a failed launch follows a dead verdict.
DETECTION_KINDS = frozenset({DETECT_NODE_SUSPECT, DETECT_NODE_DEAD, DETECT_NODE_EXPECTED_OFFLINE,
                             DETECT_FAILOVER_LAUNCH_FAILED})
# one event per failover: opening its record (records.open_record); it names the record in ``data.record``
FAILOVER_START = FAILOVER_STARTED


@dataclass(frozen=True)
class Write:
    """One load-generator write: acknowledged means the service answered 2xx for that sequence number."""

    seq: int
    sent: float
    acked: bool
    ack_ts: float | None = None
    node: str | None = None
    status: int | None = None


@dataclass(frozen=True)
class Sample:
    """One probe result; ``round`` groups the probes evaluated together in one polling pass."""

    ts: float
    round: int
    phase: str  # before | during | after
    name: str
    ok: bool
    during: str = "recover"
    detail: str = ""


@dataclass
class Observation:
    started: float
    fault_at: float | None
    rollback_at: float | None
    finished: float
    target_nodes: Sequence[str] = ()
    target_services: Sequence[str] = ()
    samples: Sequence[Sample] = ()
    writes: Sequence[Write] = ()
    recovered_seqs: Iterable[int] | None = None
    events: Sequence[Mapping[str, Any]] = ()
    integrity: Sequence[Mapping[str, Any]] = ()
    rollback_ok: bool = True
    rollback_errors: Sequence[str] = ()
    aborted: str | None = None
    backup_age: float | None = None


@dataclass
class Objectives:
    rto: float | None = None
    rpo: float | None = None
    detection: float | None = None
    data_lost: int | None = 0
    failovers: str = "any"
    integrity: bool = True


@dataclass
class Verdict:
    name: str
    expected: Any
    measured: Any
    ok: bool
    note: str = ""


@dataclass
class Measurement:
    detection_time: float | None
    detection_event: str | None
    failover_count: int
    failover_steps: list[dict[str, Any]]
    mttr: float | None
    impact: bool
    writes_sent: int
    writes_acked: int
    data_lost: int | None
    lost_seqs: list[int]
    achieved_rpo: float | None
    steady_state_before: bool
    steady_state_after: bool
    integrity_ok: bool
    # the data loss each failover's prepare step declared (source, loss_records, loss_seconds per service):
    # what the layer itself says it lost, beside what the load client counted
    failover_loss: list[dict[str, Any]] = field(default_factory=list)
    expectations: list[Verdict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(v.ok for v in self.expectations)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["passed"] = self.passed
        return out


def _concerns(ev: Mapping[str, Any], nodes: Sequence[str], services: Sequence[str]) -> bool:
    """Does the event talk about the drill's target (node or service)? Untargeted drills take any event."""
    if not nodes and not services:
        return True
    data = ev.get("data") or {}
    ev_nodes = {ev.get("node"), data.get("node"), data.get("target"), data.get("old_primary"), data.get("from")}
    ev_services = {ev.get("service"), data.get("service")}
    for key in ("nodes", "dead", "services"):
        val = data.get(key)
        if isinstance(val, list):
            (ev_nodes if key != "services" else ev_services).update(str(v) for v in val)
    return bool(ev_nodes & set(nodes)) or bool(ev_services & set(services))


def detection(events: Sequence[Mapping[str, Any]], fault_at: float, nodes: Sequence[str],
              services: Sequence[str]) -> tuple[float | None, str | None]:
    """Time from injection to the first detector verdict (or failover start) about the target."""
    for ev in sorted(events, key=lambda e: float(e.get("ts", 0))):
        ts = float(ev.get("ts", 0))
        if ts < fault_at:
            continue
        kind = short(str(ev.get("kind", "")))
        if (kind in DETECTION_KINDS or kind == FAILOVER_START) and _concerns(ev, nodes, services):
            return ts - fault_at, kind
    return None, None


def _record_id(ev: Mapping[str, Any]) -> str | None:
    """The failover record a ``failover.*`` event belongs to (the emitters' ``record`` field)."""
    val = (ev.get("data") or {}).get(RECORD.name)
    return str(val) if isinstance(val, str | int) else None


def failovers(events: Sequence[Mapping[str, Any]], since: float) -> tuple[int, list[dict[str, Any]]]:
    """Failovers started after ``since`` (one ``failover.started`` per record that names a candidate) and each
    ``failover.step``'s timing. A record opened with no candidate at all (the service declares no standby) only
    escalates to a person: no role moved or could move, so it is not counted as a failover."""
    started: set[str] = set()
    anonymous = 0
    steps: list[dict[str, Any]] = []
    for ev in sorted(events, key=lambda e: float(e.get("ts", 0))):
        ts = float(ev.get("ts", 0))
        kind = short(str(ev.get("kind", "")))
        if ts < since or not kind.startswith("failover."):
            continue
        data = ev.get("data") or {}
        if kind == FAILOVER_START and data.get("candidate", data.get("to", "")) is None:
            continue  # nowhere to go (no standby declared): an escalation for a person, not a failover
        if kind == FAILOVER_START:
            rid = _record_id(ev)
            if rid is None:
                anonymous += 1
            else:
                started.add(rid)
        # only failover.step times a step: failover.superseded also names a step, but its duration is the record's
        step = data.get("step")
        duration = data.get("duration")
        if kind == FAILOVER_STEP and step and isinstance(duration, int | float):
            steps.append({"step": str(step), "duration": float(duration), "ts": ts,
                          "service": ev.get("service") or data.get("service"),
                          "node": data.get("node") or ev.get("node"), "ok": data.get("ok", True)})
    return len(started) + anonymous, steps


def _rounds(samples: Sequence[Sample], service_only: bool = False) -> list[tuple[float, str, bool]]:
    """(time, phase, all-ok) per polling round. During the fault, detect/ignore probes do not count; for
    MTTR (``service_only``) they never do: they watch the fault itself (the killed node coming back after
    rollback), not the service the users see."""
    rounds: dict[int, list[Sample]] = {}
    for s in samples:
        if s.during in ("detect", "ignore") and (s.phase == "during" or service_only):
            continue
        rounds.setdefault(s.round, []).append(s)
    out = []
    for _, group in sorted(rounds.items()):
        out.append((max(s.ts for s in group), group[0].phase, all(s.ok for s in group)))
    return out


def mttr(samples: Sequence[Sample], writes: Sequence[Write], fault_at: float) -> tuple[float | None, bool]:
    """Fault -> steady state again, and whether the fault had any visible impact at all.

    Steady state is back at the first passing round after the last failing one (probes) and at the
    first acknowledged write after the last refused one (load); MTTR is the later of the two. A drill
    that never broke steady state has MTTR 0; one that never got it back has None.
    """
    rounds = [r for r in _rounds(samples, service_only=True) if r[0] >= fault_at and r[1] != "before"]
    probe_back: float | None = fault_at
    impact = False
    last_fail = None
    for i, (_, _, ok) in enumerate(rounds):
        if not ok:
            last_fail = i
    if last_fail is not None:
        impact = True
        later = rounds[last_fail + 1:]
        probe_back = later[0][0] if later else None
    write_back: float | None = fault_at
    after = [w for w in writes if w.sent >= fault_at]
    last_refused = None
    for i, w in enumerate(after):
        if not w.acked:
            last_refused = i
    if last_refused is not None:
        impact = True
        acked_later = [w for w in after[last_refused + 1:] if w.acked]
        write_back = (acked_later[0].ack_ts or acked_later[0].sent) if acked_later else None
    if probe_back is None or write_back is None:
        return None, impact
    return max(probe_back, write_back) - fault_at, impact


def data_loss(writes: Sequence[Write], recovered: Iterable[int] | None) -> tuple[int | None, list[int], float | None]:
    """Acknowledged writes missing after recovery, and the achieved RPO (the span of acknowledged data lost).

    The newest restorable state is the last acknowledged write that survived before the first lost one;
    everything acknowledged after it and lost is the window the system failed to protect.
    """
    if recovered is None:
        return None, [], None
    present = set(recovered)
    acked = sorted((w for w in writes if w.acked), key=lambda w: w.seq)
    lost = [w for w in acked if w.seq not in present]
    if not lost:
        return 0, [], 0.0
    first_lost = lost[0]
    survivors = [w for w in acked if w.seq < first_lost.seq and w.seq in present]
    newest_ok = (survivors[-1].ack_ts or survivors[-1].sent) if survivors else (first_lost.ack_ts or first_lost.sent)
    last_lost = max((w.ack_ts or w.sent) for w in lost)
    return len(lost), [w.seq for w in lost], max(0.0, last_lost - newest_ok)


def prepare_losses(events: Sequence[Mapping[str, Any]], since: float) -> list[dict[str, Any]]:
    """The data loss each failover after ``since`` reported at its prepare step, one entry per record and service.

    Prepare states where the new primary's data came from (its own replica, a standby's copy, a snapshot) and
    how far that is behind the service's committed position (``failover/steps.py``); a redelivered step
    reports again, and the newest report of a record wins."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for ev in sorted(events, key=lambda e: float(e.get("ts", 0))):
        data = ev.get("data") or {}
        if (float(ev.get("ts", 0)) < since or short(str(ev.get("kind", ""))) != FAILOVER_STEP
                or data.get("step") != "prepare" or not data.get("ok", True)):
            continue
        service = str(ev.get("service") or data.get("service") or "")
        out[(str(data.get("record") or ""), service)] = {
            "service": service, "record": data.get("record"), "node": data.get("node") or ev.get("node"),
            "source": data.get("source"), "loss_records": _num(data.get("loss_records")),
            "loss_seconds": _num(data.get("loss_seconds")), "ts": float(ev.get("ts", 0))}
    return sorted(out.values(), key=lambda e: e["ts"])


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def service_rpo(metrics: Mapping[str, Any], service: str) -> float | None:
    """The RPO one drill measured for ``service``: the worst of the loss its failovers reported (prepare) and
    the span of acknowledged writes the load client found missing; None when neither was measured."""
    values = [e.get("loss_seconds") for e in metrics.get("failover_loss") or [] if e.get("service") == service]
    values.append(metrics.get("achieved_rpo"))
    found = [float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(found) if found else None


def _phase_ok(samples: Sequence[Sample], phase: str) -> bool:
    rounds = [r for r in _rounds(samples) if r[1] == phase]
    return bool(rounds) and rounds[-1][2]


def measure(obs: Observation, objectives: Objectives) -> Measurement:
    fault_at = obs.fault_at if obs.fault_at is not None else obs.started
    det, det_kind = detection(obs.events, fault_at, obs.target_nodes, obs.target_services)
    detect_samples = [s for s in obs.samples if s.phase == "during" and s.during == "detect" and not s.ok]
    if detect_samples:
        first = min(s.ts for s in detect_samples) - fault_at
        if det is None or first < det:
            det, det_kind = max(0.0, first), f"probe:{detect_samples[0].name}"
    count, steps = failovers(obs.events, fault_at)
    recovery, impact = mttr(obs.samples, obs.writes, fault_at)
    lost, lost_seqs, rpo = data_loss(obs.writes, obs.recovered_seqs)
    if rpo is None or (not obs.writes and obs.backup_age is not None):
        rpo = obs.backup_age if obs.backup_age is not None else rpo
    reported = prepare_losses(obs.events, fault_at)
    reported_seconds = [e["loss_seconds"] for e in reported if e["loss_seconds"] is not None]
    if reported_seconds:  # the drill's RPO verdict sees the loss the failover declared, not only the client's
        rpo = max([*reported_seconds, *([rpo] if rpo is not None else [])])
    before = _phase_ok(obs.samples, "before")
    after = _phase_ok(obs.samples, "after")
    integrity_ok = all(bool(r.get("ok")) for r in obs.integrity)
    m = Measurement(
        detection_time=det, detection_event=det_kind, failover_count=count, failover_steps=steps,
        mttr=recovery, impact=impact, writes_sent=len(obs.writes), writes_acked=sum(1 for w in obs.writes if w.acked),
        data_lost=lost, lost_seqs=lost_seqs, achieved_rpo=rpo, steady_state_before=before,
        steady_state_after=after, integrity_ok=integrity_ok, failover_loss=reported,
    )
    m.expectations = judge(m, obs, objectives)
    return m


def judge(m: Measurement, obs: Observation, o: Objectives) -> list[Verdict]:
    out: list[Verdict] = []
    out.append(Verdict("steady state before", True, m.steady_state_before, m.steady_state_before))
    if obs.aborted:
        out.append(Verdict("no stop condition breached", "none", obs.aborted, False))
    out.append(Verdict("rollback completed", True, obs.rollback_ok, obs.rollback_ok,
                       "; ".join(obs.rollback_errors)))
    out.append(Verdict("steady state after rollback", True, m.steady_state_after, m.steady_state_after))
    holds = {s.name for s in obs.samples if s.phase == "during" and s.during == "hold" and not s.ok}
    for name in sorted(holds):
        out.append(Verdict(f"probe {name} held during the fault", True, False, False))
    detects = {s.name for s in obs.samples if s.during == "detect"}
    for name in sorted(detects):
        seen = any(not s.ok for s in obs.samples if s.name == name and s.phase == "during")
        out.append(Verdict(f"probe {name} detected the fault", True, seen, seen))
    if o.rto is not None:
        ok = m.mttr is not None and m.mttr <= o.rto
        out.append(Verdict("MTTR within RTO", o.rto, m.mttr, ok))
    if o.rpo is not None:
        ok = m.achieved_rpo is None or m.achieved_rpo <= o.rpo
        out.append(Verdict("achieved RPO within RPO", o.rpo, m.achieved_rpo, ok,
                           "" if m.achieved_rpo is not None else "no data path measured"))
    if o.detection is not None:
        ok = m.detection_time is not None and m.detection_time <= o.detection
        out.append(Verdict("detected in time", o.detection, m.detection_time, ok))
    if o.data_lost is not None and m.data_lost is not None:
        out.append(Verdict("acknowledged writes lost", f"<= {o.data_lost}", m.data_lost, m.data_lost <= o.data_lost))
    if o.failovers == "required":
        out.append(Verdict("failover happened", ">= 1", m.failover_count, m.failover_count >= 1))
    elif o.failovers == "forbidden":
        out.append(Verdict("no failover", 0, m.failover_count, m.failover_count == 0))
    if o.integrity and obs.integrity:
        bad = [str(r.get("name")) for r in obs.integrity if not r.get("ok")]
        out.append(Verdict("integrity checks", "all ok", "ok" if not bad else ", ".join(bad), not bad))
    return out
