"""The failure detector: which nodes are alive, suspect, dead or planned-offline — decided purely.

Input is data only: the previous per-node state, the heartbeats verified since
the last sweep (with the time Redis stamped their arrival), the blueprint,
``now`` on the same clock, and a :class:`View`: what the sweeping process
measured about its own watch (its monotonic gap since its previous sweep, how
long Redis has answered it without a failure, whether it just became leader).
Output is the new state, the transitions, and the dead nodes handed to
failover. No Redis, no wall clock: every rule below is unit-tested by moving
an injected clock.

Rules, each from a failure seen in the field:

* Timeout plus hysteresis. A node goes *suspect* after ``suspect_after`` of
  silence and *dead* after ``dead_after``; silence is measured between beat
  arrivals, so a slow sweeper does not make nodes look silent. Coming back takes
  ``recover_beats`` consecutive timely beats, so a flapping node does not
  bounce between dead and alive on every beat.
* Planned blackouts. A satellite silent outside its contact windows is
  *expected-offline*, never dead; when contact resumes its silence is counted
  from the start of contact, not from its last beat before the blackout.
* A gap in our view is not a node failure. Beats are stamped by Redis on
  arrival, so silence is only evidence while Redis was taking beats and we
  were watching. After Redis was unreachable for the detector, after a new
  leader took over without having watched Redis all through the gap (it just
  started), or after the detector's own pause (TILT below), every node gets a *grace*
  (``dead_after`` + two heartbeat intervals, from the first sweep after the
  gap, on Redis time) to beat again before it can be suspected, and nothing
  fails over meanwhile. A Redis restart is then a pause in detection, never a
  fleet of false deaths.
* TILT (as Sentinel) judges the detector's *own* pauses: when the time between
  this process's consecutive sweeps (its monotonic clock) exceeds ``tilt_gap``
  while Redis kept answering (the process was stopped, starved or swapped), or
  Redis's clock moved differently from ours by more than ``tilt_gap`` (a clock
  jump), our timing evidence is suspect: for ``tilt_grace`` nobody is declared
  dead and nothing fails over. A slow round trip of some other worker has no
  say: only the process that sweeps measures, and only its own sweeps.
* Storm brake (as Kubernetes' eviction limit). When more than
  ``storm_fraction`` of the fleet is dead at once, the likelier story is that
  *we* are cut off: automatic failover halts and an incident is raised. Dead
  nodes that were held back become eligible once the storm clears, if still dead.

Pure decider: no Redis, no disk, no clock of its own. Its I/O shell is
:mod:`continuity.detect.sweep` (reads the beats, writes the states back), run
by the leader's :mod:`continuity.detect.loop` (which measures the :class:`View`).
"""

from __future__ import annotations

import datetime as dt
import math
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
class View:
    """What the sweeping process measured about its own watch, on its own monotonic clock (the shell's part).

    ``own_gap``: seconds since this process's previous sweep in the same leader term (None on a term's first
    sweep). ``watched``: seconds Redis has answered this process without a failure (every leader claim and
    sweep since; from the process's first answer after a start or a failure). ``lost_redis``: the last
    interruption of that watch was a Redis failure (not the process starting). ``new_term``: this process took
    the leader lease since its previous sweep. The default is a watcher that never missed anything, the view
    of a caller that sweeps by hand (tests, benchmarks).
    """

    own_gap: float | None = None
    watched: float = math.inf
    lost_redis: bool = False
    new_term: bool = False


GRACE_REASONS = ("redis-unreachable", "leader-changed", "paused", "clock-jump")


def grace_for(p: Policy) -> float:
    """How long every node has to beat again after a gap in the detector's view: its dead time plus two beats."""
    return p.dead_after + 2 * p.heartbeat_interval


def tilt_reason(view: View, gap: float | None, p: Policy) -> str | None:
    """Why our own timing evidence is suspect, or None: ``paused`` (this process stood still between two of its
    sweeps while Redis kept answering) or ``clock-jump`` (Redis time moved unlike our monotonic clock)."""
    if gap is not None and gap < -p.tilt_gap:
        return "clock-jump"  # Redis time went backwards
    if view.own_gap is None:
        return None  # a term's first sweep: the gap before it is not ours to judge
    if gap is not None and abs(gap - view.own_gap) > p.tilt_gap:
        return "clock-jump"
    if view.own_gap > p.tilt_gap and view.watched >= view.own_gap:
        return "paused"  # with failures in between it was an outage (grace), not a pause
    return None


def grace_reason(view: View, gap: float | None, tilt: str | None, p: Policy) -> str | None:
    """Why nodes get a grace to beat again now, or None (see the module docstring)."""
    if gap is None:
        return None  # no sweep on record: nothing to protect (every node starts unknown)
    if view.watched < gap:
        # part of the gap this process cannot vouch Redis was taking beats
        return "redis-unreachable" if view.lost_redis else "leader-changed"
    # A gap this process watched through (Redis answered it all along) needs no grace, however long: beats
    # were stamped as they arrived, so a new leader that took over from a dead or stalled one judges the same
    # evidence the old one would have. Our own pause is another matter (TILT): grace as well.
    return tilt


@dataclass(frozen=True)
class Meta:
    last_sweep: float | None = None
    tilt_until: float | None = None
    grace_until: float | None = None  # no suspicion, no death, no failover before this (a gap in our view)
    grace_reason: str | None = None
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
    tilt_reason: str | None = None
    sweep_gap: float | None = None  # Redis time since the last sweep anyone made
    own_gap: float | None = None    # this process's monotonic time since its own previous sweep
    grace: bool = False
    grace_started: bool = False
    grace_ended: bool = False
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
        cached = frozenset(n for n, spec in bp.nodes.items() if spec.kind == "core" or not spec.scheduled)
        bp.__dict__["_always_in_contact"] = cached
    return cached


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.UTC)


def _silence(s: NodeState, now: float) -> float | None:
    ref = s.last_arrival
    if s.contact_since is not None and (ref is None or s.contact_since > ref):
        ref = s.contact_since
    return None if ref is None else max(0.0, now - ref)


def _next_status(s: NodeState, silence: float | None, in_contact: bool, p: Policy, tilt: bool,
                 grace: bool = False) -> str:
    if silence is None:
        return UNKNOWN
    fresh = silence <= p.suspect_after
    recovered = fresh and s.good_beats >= p.recover_beats
    can_die = silence > p.dead_after and not tilt and not grace
    status = s.state
    if status == UNKNOWN:
        # first evidence about this node: no history to distrust, classify it directly
        if fresh:
            return ALIVE
        if not in_contact:
            return EXPECTED_OFFLINE
        if grace:
            return UNKNOWN  # stale evidence from before a gap in our view: wait for a beat
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
        return SUSPECT if not fresh and not grace else ALIVE
    # SUSPECT
    if can_die:
        return DEAD
    return ALIVE if recovered else SUSPECT


def _step_node(node: str, s: NodeState, beat: Beat | None, p: Policy, in_contact: bool, now: float,
               tilt: bool, grace: bool = False) -> tuple[NodeState, Transition | None]:
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
    new = _next_status(cur, silence, in_contact, p, tilt, grace)
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
          meta: Meta | None = None, view: View | None = None) -> Outcome:
    """One detector step for the whole fleet at time ``now`` (seconds, the clock beats were stamped with)."""
    p = bp.policy
    meta = meta or Meta()
    view = view or View()
    out_meta = meta
    gap = None if meta.last_sweep is None else now - meta.last_sweep
    why_tilt = tilt_reason(view, gap, p)
    tilt_started = False
    if why_tilt is not None:
        tilt_started = meta.tilt_until is None or now >= meta.tilt_until
        out_meta = replace(out_meta, tilt_until=now + p.tilt_grace)
    tilt = out_meta.tilt_until is not None and now < out_meta.tilt_until
    tilt_ended = False
    if not tilt and out_meta.tilt_until is not None:
        tilt_ended = True
        out_meta = replace(out_meta, tilt_until=None)
    why_grace = grace_reason(view, gap, why_tilt, p)
    grace_started = False
    if why_grace is not None:
        grace_started = meta.grace_until is None or now >= meta.grace_until
        until = now + grace_for(p)
        if meta.grace_until is not None and meta.grace_until > until and not grace_started:
            until = meta.grace_until
        out_meta = replace(out_meta, grace_until=until,
                           grace_reason=why_grace if grace_started else (meta.grace_reason or why_grace))
    grace = out_meta.grace_until is not None and now < out_meta.grace_until
    grace_ended = False
    if not grace and out_meta.grace_until is not None:
        grace_ended = True
        out_meta = replace(out_meta, grace_until=None, grace_reason=None)

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
        new, tr = _step_node(node, s if s is not None else blank, beat, p, in_contact, now, tilt, grace)
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
        if tilt or grace or storm:
            held_back.append(node)
            continue
        eligible.append(node)
        states[node] = s._replace(handed_over=True)
        touched.add(node)
    return Outcome(states=states, meta=out_meta, transitions=transitions, eligible=eligible, tilt=tilt,
                   tilt_started=tilt_started, tilt_ended=tilt_ended, tilt_reason=why_tilt, sweep_gap=gap,
                   own_gap=view.own_gap, grace=grace, grace_started=grace_started, grace_ended=grace_ended,
                   storm_started=storm_started,
                   storm_cleared=storm_cleared, dead=dead, dead_fraction=fraction, held_back=held_back,
                   touched=touched)
