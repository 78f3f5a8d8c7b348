"""The failure detector: which nodes are alive, suspect, dead or planned-offline — decided purely.

Input is data only: the previous per-node state, the heartbeats verified since
the last sweep (with the time Redis stamped their arrival), the blueprint and
``now`` on the same clock. Output is the new state, the transitions, and the
dead nodes handed to failover. No Redis, no wall clock: every rule below is
unit-tested by moving an injected clock.

Rules, each from a failure seen in the field:

* Timeout plus hysteresis. A node goes *suspect* after ``suspect_after`` of
  silence and *dead* after ``dead_after``; silence is measured between beat
  arrivals, so a slow sweeper does not make nodes look silent. Coming back takes
  ``recover_beats`` consecutive timely beats, so a flapping node does not
  bounce between dead and alive on every beat.
* Planned blackouts. A satellite silent outside its contact windows is
  *expected-offline*, never dead; when contact resumes its silence is counted
  from the start of contact, not from its last beat before the blackout.
* TILT (as Sentinel). If the gap since the previous sweep exceeds ``tilt_gap``
  (our own process was paused, the clock jumped), our timing evidence is
  worthless: for ``tilt_grace`` nobody is declared dead and nothing fails over.
* Storm brake (as Kubernetes' eviction limit). When more than
  ``storm_fraction`` of the fleet is dead at once, the likelier story is that
  *we* are cut off: automatic failover halts and an incident is raised. Dead
  nodes that were held back become eligible once the storm clears, if still dead.

Pure decider: no Redis, no disk, no clock of its own. Its I/O shell is
:mod:`continuity.detect.sweep` (reads the beats, writes the states back).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, NamedTuple

from continuity.blueprint import Blueprint, Policy

UNKNOWN = "unknown"
ALIVE = "alive"
SUSPECT = "suspect"
DEAD = "dead"
EXPECTED_OFFLINE = "expected-offline"
STATUSES = (UNKNOWN, ALIVE, SUSPECT, DEAD, EXPECTED_OFFLINE)


class NodeState(NamedTuple):
    """One node's classification and the evidence behind it.

    A named tuple, not a dataclass: the sweep builds 10,000 of these a second and a tuple costs a
    fifth of a frozen dataclass to construct. Immutable all the same; ``services`` is never mutated.
    """

    state: str = UNKNOWN
    since: float = 0.0                 # when the state last changed
    last_seq: int | None = None        # last accepted heartbeat sequence (replay guard)
    last_arrival: float | None = None  # when Redis stamped the last accepted beat
    good_beats: int = 0                # timely beats in a row (recovery hysteresis)
    contact: bool = True               # inside a contact window at the last sweep
    contact_since: float | None = None  # when contact last resumed after a blackout
    handed_over: bool = False          # this death was already given to failover
    services: dict[str, Any] = {}      # noqa: RUF012 - last reported service health; never mutated

    def as_dict(self) -> dict[str, Any]:
        return {**self._asdict(), "services": dict(self.services)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeState:
        known = {f: data[f] for f in cls._fields if f in data}
        state = cls(**known)
        if state.state not in STATUSES:
            state = state._replace(state=UNKNOWN)
        return state


class Beat(NamedTuple):
    """A heartbeat that passed verification and is newer than the node's last accepted one."""

    seq: int
    arrival: float
    services: dict[str, Any] = {}  # noqa: RUF012 - never mutated


@dataclass(frozen=True)
class Meta:
    last_sweep: float | None = None
    tilt_until: float | None = None
    storm: bool = False
    storm_since: float | None = None
    rejected: dict[str, str] = field(default_factory=dict)  # node -> fingerprint of its last reported bad beat

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Meta:
        return cls(**{f: data[f] for f in cls.__dataclass_fields__ if f in data})


@dataclass(frozen=True)
class Transition:
    node: str
    old: str
    new: str
    at: float
    silence: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "from": self.old, "to": self.new, "at": self.at,
                "silence": None if self.silence is None else round(self.silence, 3)}


@dataclass
class Outcome:
    states: dict[str, NodeState]
    meta: Meta
    transitions: list[Transition] = field(default_factory=list)
    eligible: list[str] = field(default_factory=list)  # dead nodes handed to failover by this sweep
    tilt: bool = False
    tilt_started: bool = False
    tilt_ended: bool = False
    sweep_gap: float | None = None
    storm_started: bool = False
    storm_cleared: bool = False
    dead: list[str] = field(default_factory=list)
    dead_fraction: float = 0.0
    held_back: list[str] = field(default_factory=list)  # dead, not handed over because of tilt/storm
    # nodes whose state may differ from ``prev`` in more than arrival/sequence (None: any may);
    # the shell persists only these, so an alive fleet costs no per-node comparison
    touched: set[str] | None = None


def always_in_contact(bp: Blueprint) -> frozenset[str]:
    """Nodes with no contact windows (core nodes, satellites without a schedule); cached per blueprint
    object, because asking 10,000 node models every second costs more than the rest of the step."""
    cached = bp.__dict__.get("_always_in_contact")
    if cached is None:
        cached = frozenset(n for n, spec in bp.nodes.items() if spec.kind == "core" or not spec.contact)
        bp.__dict__["_always_in_contact"] = cached
    return cached


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _silence(s: NodeState, now: float) -> float | None:
    ref = s.last_arrival
    if s.contact_since is not None and (ref is None or s.contact_since > ref):
        ref = s.contact_since
    return None if ref is None else max(0.0, now - ref)


def _next_status(s: NodeState, silence: float | None, in_contact: bool, p: Policy, tilt: bool) -> str:
    if silence is None:
        return UNKNOWN
    fresh = silence <= p.suspect_after
    recovered = fresh and s.good_beats >= p.recover_beats
    can_die = silence > p.dead_after and not tilt
    status = s.state
    if status == UNKNOWN:
        # first evidence about this node: no history to distrust, classify it directly
        if fresh:
            return ALIVE
        if not in_contact:
            return EXPECTED_OFFLINE
        return DEAD if can_die else SUSPECT
    if status == DEAD:
        return ALIVE if recovered else DEAD
    if not in_contact and not fresh:
        return EXPECTED_OFFLINE
    if status == EXPECTED_OFFLINE:
        if recovered:
            return ALIVE
        return DEAD if can_die else EXPECTED_OFFLINE
    if status == ALIVE:
        if can_die:
            return DEAD
        return SUSPECT if not fresh else ALIVE
    # SUSPECT
    if can_die:
        return DEAD
    return ALIVE if recovered else SUSPECT


def _step_node(node: str, s: NodeState, beat: Beat | None, p: Policy, in_contact: bool, now: float,
               tilt: bool) -> tuple[NodeState, Transition | None]:
    # locals, one construction at the end: this runs for every node every second (10,000 at scale)
    contact_since = now if (in_contact and not s.contact) else s.contact_since
    last_seq, last_arrival, good, services = s.last_seq, s.last_arrival, s.good_beats, s.services
    if beat is not None:
        arrival = beat.arrival if beat.arrival < now else now
        if last_arrival is not None:
            if arrival < last_arrival:
                arrival = last_arrival
            good = good + 1 if (arrival - last_arrival) <= p.dead_after else 1
        else:
            good = 1
        if good > p.recover_beats:
            good = p.recover_beats  # enough to recover; bounded so an alive node's state stops changing
        last_seq, last_arrival, services = beat.seq, arrival, beat.services
    ref = last_arrival
    if contact_since is not None and (ref is None or contact_since > ref):
        ref = contact_since
    silence = None if ref is None else max(0.0, now - ref)
    if silence is not None and silence > p.suspect_after:
        good = 0
    cur = NodeState(s.state, s.since, last_seq, last_arrival, good, in_contact, contact_since, s.handed_over,
                    services)
    new = _next_status(cur, silence, in_contact, p, tilt)
    if new == cur.state:
        return cur, None
    changed = cur._replace(state=new, since=now, handed_over=False if new == ALIVE else cur.handed_over)
    return changed, Transition(node, cur.state, new, now, silence)


def same_persisted(a: NodeState, b: NodeState) -> bool:
    """``persisted_view(a) == persisted_view(b)``, cheaply for the common case (nothing but a new beat)."""
    if (a.state != b.state or a.since != b.since or a.good_beats != b.good_beats or a.contact != b.contact
            or a.contact_since != b.contact_since or a.handed_over != b.handed_over):
        return False
    return a.services == b.services or persisted_view(a) == persisted_view(b)


def persisted_view(s: NodeState) -> tuple[Any, ...]:
    """What must reach Redis when it changes; arrival and sequence alone do not (they change every beat).

    A sweeper that lost its in-memory state re-reads them from the heartbeats themselves.
    """
    services = tuple(sorted((k, v.get("role"), v.get("epoch"), v.get("healthy")) if isinstance(v, Mapping)
                            else (k, None, None, None) for k, v in s.services.items()))
    return (s.state, s.since, s.good_beats, s.contact, s.contact_since, s.handed_over, services)


def sweep(prev: Mapping[str, NodeState], beats: Mapping[str, Beat], bp: Blueprint, now: float,
          meta: Meta | None = None) -> Outcome:
    """One detector step for the whole fleet at time ``now`` (seconds, the clock beats were stamped with)."""
    p = bp.policy
    meta = meta or Meta()
    out_meta = meta
    gap = None if meta.last_sweep is None else now - meta.last_sweep
    tilt_started = False
    if gap is not None and (gap > p.tilt_gap or gap < -p.tilt_gap):
        tilt_started = meta.tilt_until is None or now >= meta.tilt_until
        out_meta = replace(out_meta, tilt_until=now + p.tilt_grace)
    tilt = out_meta.tilt_until is not None and now < out_meta.tilt_until
    tilt_ended = False
    if not tilt and out_meta.tilt_until is not None:
        tilt_ended = True
        out_meta = replace(out_meta, tilt_until=None)

    states: dict[str, NodeState] = {}
    transitions: list[Transition] = []
    touched: set[str] = set()
    when: dt.datetime | None = None
    blank = NodeState()
    nodes = bp.nodes
    always = always_in_contact(bp)
    rb, suspect_after, dead_after = p.recover_beats, p.suspect_after, p.dead_after
    prev_get, beat_get = prev.get, beats.get
    for node in nodes:
        s = prev_get(node)
        beat = beat_get(node)
        # Fast path, the steady state of nearly every node every second: an alive, always-reachable node
        # that stays alive. Same result as _step_node (a property test holds them equal), minus the cost.
        if s is not None and s.state == ALIVE and s.contact and s.good_beats == rb and node in always \
                and s.last_arrival is not None:
            last = s.last_arrival
            cs = s.contact_since
            if beat is None:
                ref = cs if cs is not None and cs > last else last
                if now - ref <= suspect_after:
                    states[node] = s
                    continue
            else:
                arrival = beat.arrival if beat.arrival < now else now
                if arrival < last:
                    arrival = last
                ref = cs if cs is not None and cs > arrival else arrival
                if arrival - last <= dead_after and now - ref <= suspect_after:
                    services = beat.services
                    states[node] = NodeState(ALIVE, s.since, beat.seq, arrival, rb, True, cs, s.handed_over, services)
                    if services is not s.services:
                        touched.add(node)
                    continue
        touched.add(node)
        if node in always:
            in_contact = True
        else:
            if when is None:
                when = _utc(now)
            in_contact = bp.in_contact(node, when)
        new, tr = _step_node(node, s if s is not None else blank, beat, p, in_contact, now, tilt)
        states[node] = new
        if tr is not None:
            transitions.append(tr)

    dead = sorted(n for n, s in states.items() if s.state == DEAD)
    fraction = len(dead) / len(states) if states else 0.0
    storm = fraction > p.storm_fraction
    storm_started = storm and not meta.storm
    storm_cleared = meta.storm and not storm
    out_meta = replace(out_meta, storm=storm, storm_since=(meta.storm_since if meta.storm else now) if storm else None,
                       last_sweep=now)

    eligible: list[str] = []
    held_back: list[str] = []
    for node in dead:
        s = states[node]
        silence = _silence(s, now)
        if s.handed_over or silence is None or silence <= p.dead_after:
            continue  # already failed over, or beating again (recovering)
        if tilt or storm:
            held_back.append(node)
            continue
        eligible.append(node)
        states[node] = s._replace(handed_over=True)
        touched.add(node)
    return Outcome(states=states, meta=out_meta, transitions=transitions, eligible=eligible, tilt=tilt,
                   tilt_started=tilt_started, tilt_ended=tilt_ended, sweep_gap=gap, storm_started=storm_started,
                   storm_cleared=storm_cleared, dead=dead, dead_fraction=fraction, held_back=held_back,
                   touched=touched)
