"""The failure detector, driven by an injected clock: hysteresis, blackouts, TILT, storm brake."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.config import parse_text
from continuity.detect import detector as d

# sat-1 is in contact 00:00-12:00 UTC every day; core nodes always
FLEET = """\
version: 1
fleet: detect
policy:
  heartbeat_interval: 1s
  lease_ttl: 3s
  suspect_after: 1.5s
  dead_after: 2.5s
  storm_fraction: 0.5
  tilt_gap: 2s
  tilt_grace: 10s
  recover_beats: 3
nodes:
  core-a: {kind: core}
  core-b: {kind: core}
  core-c: {kind: core}
  sat-1:
    kind: satellite
    contact: [{start: "00:00", end: "12:00"}]
domains:
  d:
    rto: 10s
    rpo: 5s
    services:
      svc: {tier: 0, placement: {primary: core-a, standbys: [core-b]}}
"""

IN_CONTACT = dt.datetime(2030, 1, 7, 6, 0, tzinfo=dt.UTC).timestamp()   # 06:00 UTC
BLACKOUT = dt.datetime(2030, 1, 7, 18, 0, tzinfo=dt.UTC).timestamp()    # 18:00 UTC
CONTACT_RESUMES = dt.datetime(2030, 1, 8, 0, 0, tzinfo=dt.UTC).timestamp()


def fleet(text: str = FLEET) -> Blueprint:
    return parse_blueprint(parse_text(text, "test.yml"))


BP = fleet()
NODES = sorted(BP.nodes)


class Sim:
    """A fleet on a fake clock: nodes beat when told, the detector sweeps when told.

    ``now`` is Redis time (beats are stamped with it); ``mono`` is the sweeping process's monotonic clock, which
    the sweeper measures its :class:`~continuity.detect.detector.View` with. Both move together unless a test
    makes Redis's clock jump.
    """

    def __init__(self, bp: Blueprint = BP, start: float = IN_CONTACT) -> None:
        self.bp = bp
        self.now = start
        self.mono = 1000.0
        self.last_sweep_mono: float | None = None  # this process's previous sweep in its term
        self.watch_since = self.mono - 3600.0      # Redis has answered this process for an hour
        self.lost_redis = False
        self.states: dict[str, d.NodeState] = {}
        self.meta = d.Meta()
        self.seq = 0
        self.pending: dict[str, d.Beat] = {}
        self.log: list[d.Outcome] = []

    def beat(self, *nodes: str) -> None:
        for n in nodes:
            self.seq += 1
            self.pending[n] = d.Beat(seq=self.seq, arrival=self.now, services={})

    def view(self) -> d.View:
        own = None if self.last_sweep_mono is None else self.mono - self.last_sweep_mono
        return d.View(own_gap=own, watched=self.mono - self.watch_since, lost_redis=self.lost_redis,
                      new_term=self.last_sweep_mono is None)

    def sweep(self) -> d.Outcome:
        out = d.sweep(self.states, self.pending, self.bp, self.now, self.meta, self.view())
        self.states, self.meta, self.pending = out.states, out.meta, {}
        self.last_sweep_mono = self.mono
        self.log.append(out)
        return out

    def advance(self, dt_: float) -> None:
        self.now += dt_
        self.mono += dt_

    def tick(self, dt_: float = 1.0, beating: tuple[str, ...] | None = None) -> d.Outcome:
        """Advance time, let ``beating`` nodes (default: all) beat, then sweep."""
        self.advance(dt_)
        self.beat(*(NODES if beating is None else beating))
        return self.sweep()

    def redis_outage(self, seconds: float) -> None:
        """Redis is gone for ``seconds``: no beat is stored, no sweep runs, the sweeper sees its calls fail."""
        self.advance(seconds)
        self.watch_since = self.mono  # it answers again from now on
        self.lost_redis = True

    def new_leader(self, after: float, watched: float) -> None:
        """Another process takes over ``after`` seconds later; Redis has answered it for ``watched`` seconds."""
        self.advance(after)
        self.last_sweep_mono = None
        self.watch_since = self.mono - watched
        self.lost_redis = False

    def state(self, node: str) -> str:
        return self.states[node].state


def test_first_beat_makes_a_node_alive_and_silence_never_seen_stays_unknown() -> None:
    sim = Sim()
    sim.beat("core-a")
    out = sim.sweep()
    assert sim.state("core-a") == d.ALIVE
    assert sim.state("core-b") == d.UNKNOWN
    assert [(t.node, t.new) for t in out.transitions] == [("core-a", d.ALIVE)]
    for _ in range(10):
        sim.tick(beating=("core-a",))
    assert sim.state("core-b") == d.UNKNOWN, "a node never heard from is not declared dead"
    assert all(not o.eligible for o in sim.log)


def test_silent_node_goes_suspect_then_dead_and_is_handed_over_once() -> None:
    sim = Sim()
    sim.tick()
    others = tuple(n for n in NODES if n != "core-a")
    sim.now += 1.0
    sim.beat(*others)
    assert not sim.sweep().transitions                  # 1.0 s of silence: still alive
    out = sim.tick(0.75, others)                        # 1.75 s: suspect
    assert sim.state("core-a") == d.SUSPECT and out.transitions[0].new == d.SUSPECT
    assert not out.eligible
    out = sim.tick(1.0, others)                         # 2.75 s: dead
    assert sim.state("core-a") == d.DEAD
    assert out.eligible == ["core-a"]
    for _ in range(5):
        assert sim.tick(1.0, others).eligible == [], "a death is handed to failover once"
    assert sim.states["core-a"].handed_over


def test_jump_from_alive_straight_to_dead_when_sweeps_are_sparse_but_not_tilted() -> None:
    sim = Sim()
    sim.tick()
    out = sim.tick(1.9, beating=("core-b", "core-c", "sat-1"))
    assert sim.state("core-a") == d.SUSPECT
    out = sim.tick(1.9, beating=("core-b", "core-c", "sat-1"))
    assert out.eligible == ["core-a"] and not out.tilt


def test_recovery_needs_consecutive_good_beats() -> None:
    sim = Sim()
    sim.tick()
    others = ("core-b", "core-c", "sat-1")
    for _ in range(4):
        sim.tick(1.0, others)
    assert sim.state("core-a") == d.DEAD
    sim.tick(1.0)
    assert sim.state("core-a") == d.DEAD, "one beat is not a recovery"
    sim.tick(1.0)
    assert sim.state("core-a") == d.DEAD
    out = sim.tick(1.0)
    assert sim.state("core-a") == d.ALIVE
    assert [(t.node, t.old, t.new) for t in out.transitions] == [("core-a", d.DEAD, d.ALIVE)]
    assert not sim.states["core-a"].handed_over
    # dies again later: handed over again
    for _ in range(3):
        out = sim.tick(1.0, others)
    assert out.eligible == ["core-a"] or any(o.eligible == ["core-a"] for o in sim.log[-3:])


def test_suspect_node_that_resumes_returns_to_alive_without_dying() -> None:
    sim = Sim()
    sim.tick()
    sim.tick(1.8, ("core-b", "core-c", "sat-1"))
    assert sim.state("core-a") == d.SUSPECT
    for _ in range(3):
        sim.tick(0.5)
    assert sim.state("core-a") == d.ALIVE
    assert all(not o.eligible for o in sim.log)


def test_satellite_silent_inside_blackout_is_expected_offline_never_dead() -> None:
    sim = Sim(start=BLACKOUT)
    sim.tick()
    cores = ("core-a", "core-b", "core-c")
    for _ in range(30):
        sim.tick(1.0, cores)
    assert sim.state("sat-1") == d.EXPECTED_OFFLINE
    assert all(not o.eligible for o in sim.log)
    kinds = [(t.node, t.new) for o in sim.log for t in o.transitions]
    assert ("sat-1", d.EXPECTED_OFFLINE) in kinds and ("sat-1", d.DEAD) not in kinds
    assert ("sat-1", d.SUSPECT) not in kinds


def test_satellite_silent_in_contact_is_dead() -> None:
    sim = Sim(start=IN_CONTACT)
    sim.tick()
    for _ in range(4):
        sim.tick(1.0, ("core-a", "core-b", "core-c"))
    assert sim.state("sat-1") == d.DEAD
    assert any(o.eligible == ["sat-1"] for o in sim.log)


def test_satellite_beating_during_blackout_stays_alive() -> None:
    sim = Sim(start=BLACKOUT)
    for _ in range(5):
        sim.tick()
    assert sim.state("sat-1") == d.ALIVE


def test_silence_after_contact_resumes_counts_from_the_window_start() -> None:
    sim = Sim(start=CONTACT_RESUMES - 5)
    sim.tick()
    cores = ("core-a", "core-b", "core-c")
    while sim.now < CONTACT_RESUMES - 1:
        sim.tick(1.0, cores)
    assert sim.state("sat-1") == d.EXPECTED_OFFLINE
    sim.tick(1.0, cores)   # contact resumes now (00:00)
    sim.tick(1.0, cores)   # 1 s into contact
    sim.tick(1.0, cores)   # 2 s
    assert sim.state("sat-1") == d.EXPECTED_OFFLINE, "it gets dead_after from the start of contact"
    sim.tick(1.0, cores)   # 3 s > dead_after
    assert sim.state("sat-1") == d.DEAD


def test_satellite_back_from_blackout_becomes_alive_after_good_beats() -> None:
    sim = Sim(start=CONTACT_RESUMES - 10)
    sim.tick()
    cores = ("core-a", "core-b", "core-c")
    while sim.now < CONTACT_RESUMES:
        sim.tick(1.0, cores)
    assert sim.state("sat-1") == d.EXPECTED_OFFLINE
    for _ in range(3):
        sim.tick(1.0)
    assert sim.state("sat-1") == d.ALIVE
    assert all(not o.eligible for o in sim.log)


def test_tilt_after_a_long_pause_suppresses_deaths_for_the_grace_period() -> None:
    sim = Sim()
    sim.tick()
    sim.tick()
    out = sim.tick(5.0, ("core-b", "core-c", "sat-1"))  # the sweeper was paused for 5 s; Redis answered all along
    assert out.tilt and out.tilt_started and out.sweep_gap == 5.0 and out.own_gap == 5.0
    assert out.grace_started and out.meta.grace_reason == "paused"
    assert sim.state("core-a") == d.ALIVE, "within the grace nobody is even suspected"
    grace_end = out.meta.grace_until
    while sim.now + 1.0 < grace_end:
        out = sim.tick(1.0, ("core-b", "core-c", "sat-1"))
        assert sim.state("core-a") == d.ALIVE and not out.eligible
    out = sim.tick(1.0, ("core-b", "core-c", "sat-1"))
    assert out.grace_ended and sim.state("core-a") == d.SUSPECT, "no one is declared dead in TILT"
    while sim.now < sim.log[-1].meta.tilt_until - 1:
        out = sim.tick(1.0, ("core-b", "core-c", "sat-1"))
        assert out.tilt and not out.eligible and not out.tilt_started
    out = sim.tick(1.0, ("core-b", "core-c", "sat-1"))
    out = sim.tick(1.0, ("core-b", "core-c", "sat-1")) if out.tilt else out
    assert out.tilt_ended and not out.tilt
    assert out.eligible == ["core-a"]


def test_tilt_node_that_was_only_starved_recovers_without_failover() -> None:
    sim = Sim()
    sim.tick()
    sim.tick(4.0, ())  # whole host starved: nobody beat, sweeper late
    for _ in range(12):
        sim.tick()
    assert all(s.state == d.ALIVE for s in sim.states.values())
    assert all(not o.eligible for o in sim.log)


def test_clock_jumping_backwards_tilts() -> None:
    sim = Sim()
    sim.tick()
    out = sim.tick(-30.0)
    assert out.tilt_started and out.tilt_reason == "clock-jump"


def test_redis_clock_jumping_forward_tilts_instead_of_killing_everyone() -> None:
    sim = Sim()
    sim.tick()
    sim.tick()
    sim.now += 30.0  # Redis's clock stepped forward; our own process only saw one interval pass
    out = sim.tick(1.0, ())
    assert out.tilt_started and out.tilt_reason == "clock-jump" and out.grace_started
    assert not any(t.new in (d.SUSPECT, d.DEAD) for t in out.transitions) and not out.eligible


def test_slow_round_trips_of_the_sweeper_are_not_a_pause() -> None:
    """Sweeps 1.9 s apart (a sweeper with a slow link) under a 2 s tilt_gap: no TILT, no grace, silence judged."""
    sim = Sim()
    sim.tick()
    outs = [sim.tick(1.9, ("core-b", "core-c", "sat-1")) for _ in range(3)]
    assert not any(o.tilt or o.grace for o in outs)
    assert sum(len(o.eligible) for o in outs) == 1 and sim.state("core-a") == d.DEAD


# --- a gap in the detector's view is not a node failure ------------------------------------------------------
def test_after_a_redis_outage_every_node_gets_a_grace_to_beat_again() -> None:
    sim = Sim()
    for _ in range(4):
        sim.tick()
    sim.redis_outage(5.0)  # nothing stored, no sweep: every node's last beat is now 6 s old
    out = sim.tick(0.2, ())  # first sweep after Redis is back, before anyone has beaten again
    assert out.grace_started and out.meta.grace_reason == "redis-unreachable" and not out.tilt
    assert out.meta.grace_until == sim.now + BP.policy.dead_after + 2 * BP.policy.heartbeat_interval
    assert all(s.state == d.ALIVE for s in sim.states.values()) and not out.transitions
    others = ("core-b", "core-c", "sat-1")
    while sim.now + 1.0 < out.meta.grace_until:
        step = sim.tick(1.0, others)  # core-a's node really died during the outage
        assert not step.transitions and not step.eligible, "no suspicion, no failover inside the grace"
    end = sim.tick(1.0, others)
    assert end.grace_ended and not end.grace
    assert sim.state("core-a") == d.DEAD and end.eligible == ["core-a"], "judged as soon as the grace ends"
    assert all(sim.state(n) == d.ALIVE for n in others)


def test_a_healthy_fleet_makes_no_failover_across_repeated_redis_outages() -> None:
    sim = Sim()
    sim.tick()
    for outage in (3.0, 5.0, 4.2, 5.0, 3.5, 5.0, 4.8, 5.0, 3.1, 5.0):
        sim.redis_outage(outage)
        for _ in range(8):
            sim.tick(0.5)
    assert not any(t.new in (d.SUSPECT, d.DEAD) for o in sim.log for t in o.transitions)
    assert not any(o.eligible for o in sim.log)
    assert sum(o.grace_started for o in sim.log) == 10


def test_a_standby_that_watched_through_the_takeover_judges_at_once() -> None:
    """Leader killed with its node: the standby saw Redis answer all along, so the dead node is not given a grace."""
    sim = Sim()
    for _ in range(3):
        sim.tick()
    others = ("core-b", "core-c", "sat-1")
    sim.new_leader(after=1.8, watched=600.0)
    sim.beat(*others)
    out = sim.sweep()
    assert not out.grace and not out.tilt
    out = sim.tick(1.0, others)
    assert sim.state("core-a") == d.DEAD and out.eligible == ["core-a"]


def test_a_new_leader_that_was_not_watching_gives_a_grace() -> None:
    sim = Sim()
    for _ in range(3):
        sim.tick()
    sim.new_leader(after=8.0, watched=0.5)  # every control worker was down; one just started
    out = sim.tick(0.1, ())
    assert out.grace_started and out.meta.grace_reason == "leader-changed" and not out.tilt
    assert not out.transitions


def test_an_outage_is_not_a_pause_of_the_detector() -> None:
    """Its own sweeps 6 s apart because Redis was gone: a grace, but no TILT (that is for its own stalls)."""
    sim = Sim()
    sim.tick()
    sim.redis_outage(6.0)
    out = sim.tick(0.1, ())
    assert out.grace and not out.tilt


def test_a_grace_extends_but_never_shortens() -> None:
    sim = Sim()
    sim.tick()
    sim.redis_outage(5.0)
    first = sim.tick(0.2).meta.grace_until
    sim.redis_outage(0.3)
    out = sim.tick(0.2)
    assert out.grace and not out.grace_started and out.meta.grace_until > first


def test_dead_share_equal_to_storm_fraction_is_not_a_storm() -> None:
    sim = Sim()
    sim.tick()
    for _ in range(4):
        sim.tick(1.0, ("core-c", "sat-1"))
    assert sim.state("core-a") == d.DEAD and sim.state("core-b") == d.DEAD
    assert not any(o.storm_started for o in sim.log), "2 of 4 dead is not more than storm_fraction 0.5"
    assert sorted(n for o in sim.log for n in o.eligible) == ["core-a", "core-b"]


def test_storm_brake_with_three_of_four_dead() -> None:
    sim = Sim()
    sim.tick()
    for _ in range(4):
        sim.tick(1.0, ("core-c",))
    out = sim.log[-1]
    assert out.meta.storm and sorted(out.held_back) == ["core-a", "core-b", "sat-1"]
    assert any(o.storm_started for o in sim.log)
    # two come back: one dead of four is no storm; the one still dead is now handed over
    for _ in range(4):
        out = sim.tick(1.0, ("core-a", "core-b", "core-c"))
        if out.storm_cleared:
            break
    assert out.storm_cleared and not out.meta.storm
    assert out.eligible == ["sat-1"] or sim.tick(1.0, ("core-a", "core-b", "core-c")).eligible == ["sat-1"]


def test_state_round_trips_through_dicts() -> None:
    sim = Sim()
    sim.tick()
    for n, s in sim.states.items():
        assert d.NodeState.from_dict(s.as_dict()) == s, n
    assert d.Meta.from_dict(sim.meta.as_dict()) == sim.meta
    assert d.NodeState.from_dict({"state": "bogus"}).state == d.UNKNOWN


def test_node_removed_from_blueprint_is_dropped() -> None:
    sim = Sim()
    sim.tick()
    sim.states = {**sim.states, "ghost": d.NodeState(state=d.DEAD)}
    sim.tick()
    assert "ghost" not in sim.states


@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.05, 1.45), min_size=5, max_size=60), st.lists(st.floats(0.05, 1.95), min_size=5,
                                                                           max_size=60))
def test_regular_beats_with_jitter_are_never_suspected(beat_gaps: list[float], sweep_gaps: list[float]) -> None:
    """Beats never more than suspect_after apart, sweeps at independent times under tilt_gap: no suspicion."""
    sim = Sim()
    sim.beat(*NODES)
    sim.sweep()
    t0 = sim.now
    events = []
    t = t0
    for g in beat_gaps:
        t += g
        events.append((t, "beat"))
    end = t
    t = t0
    for g in sweep_gaps:
        t += g
        if t > end:
            break
        events.append((t, "sweep"))
    for at, what in sorted(events):
        sim.advance(at - sim.now)
        if what == "beat":
            sim.beat(*NODES)
        else:
            sim.sweep()
    bad = [(t.node, t.new) for o in sim.log for t in o.transitions if t.new != d.ALIVE]
    assert not bad
    assert not any(o.tilt for o in sim.log)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0.1, 3.5), st.lists(st.sampled_from(NODES), max_size=4)), min_size=1,
                max_size=80))
def test_invariants_under_arbitrary_histories(steps: list[tuple[float, list[str]]]) -> None:
    sim = Sim()
    handed: dict[str, int] = {n: 0 for n in NODES}
    for dt_, beating in steps:
        out = sim.tick(dt_, tuple(beating))
        if out.grace:
            assert not any(t.new in (d.SUSPECT, d.DEAD) for t in out.transitions), "no suspicion inside a grace"
        for n in out.eligible:
            assert out.states[n].state == d.DEAD
            assert not out.tilt and not out.grace and not out.meta.storm
            handed[n] += 1
        for t in out.transitions:
            if t.new == d.ALIVE and t.old != d.UNKNOWN:
                handed[t.node] = 0
        assert all(v <= 1 for v in handed.values()), "a death is handed over at most once until recovery"
        for n in out.eligible:
            s = out.states[n]
            assert sim.now - max(s.last_arrival or 0, s.contact_since or 0) > BP.policy.dead_after, \
                "only a node silent right now is failed over (not one already beating again)"
        for s in out.states.values():
            assert s.state in d.STATUSES
            if s.state == d.ALIVE and not out.grace:  # a grace holds silent nodes alive until it ends
                assert sim.now - max(s.last_arrival or 0, s.contact_since or 0) <= BP.policy.dead_after
