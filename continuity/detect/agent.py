"""The node agent: heartbeats, lease renewal and self-fencing for the services this node is primary of.

It runs inside each node's worker process (see ``workers/agent.py``) as three
small threads, so that no single blocking call can silence the others:

* **beat** — every ``heartbeat_interval``: one Lua call that stores the signed
  heartbeat, stamps its arrival with Redis's clock, and renews every lease this
  node holds (one round trip: at 10,000 nodes a second, round trips are the cost);
* **probe** — runs the local health probes of held services concurrently, each
  with its own timeout; the beat carries the latest results;
* **watchdog** — if a held lease has not been renewed for ``lease_ttl - safety``
  on this node's *monotonic* clock, demotes the service locally.
  The renewal that counts is timed from when it was *sent*, so the lease at
  Redis (timed from when it *arrived*) always outlives our decision to stop:
  we are demoted before anyone may be promoted. This is the case that matters
  most when Redis itself is unreachable, so nothing here waits on Redis.

**Redis down is not "cut off".** Every failed beat is explained (:func:`continuity.redisd.diagnose`, then
the pure :func:`continuity.detect.outage.classify`): a refused connection, Redis loading or read-only, or
sentinels reporting the master down or replaced mean Redis itself is down or failing over — nobody can take
a lease or move an epoch meanwhile — and the primary keeps serving, retrying its renewal every
``interval / 4`` so it renews the moment Redis answers (then ``detect.redis_outage`` is recorded). Timeouts,
no sentinel answering, or sentinels that see the master healthy mean this node is cut off, and it stops
after ``lease_ttl - safety`` as before. Why that is safe, and where it ends, is in
:mod:`continuity.detect.outage`; the decision is :func:`~continuity.detect.outage.must_stop`. A Sentinel
promotion (about 3 s, more than the 2.25 s self-fence limit of a 3 s lease) no longer demotes every primary.

The probe thread also runs **local recovery** (:mod:`continuity.detect.recovery`): a held
service that fails ``restart_after_failures`` probes in a row is started again in place
(same epoch, ``failover.service_restarted``); one still failing after ``max_local_restarts``
is stopped, its lease released and marked failed (``failover.service_failed``), and the
detector's sweep fails it over to a standby. Without this a crashed service on a live node
would stay down for good: the node keeps beating, so it never looks dead.

A role lost while this node looked away (its lease is now someone else's, or
gone) is demoted at once. A role this node self-demoted but which nobody took
over (Redis came back before a failover fenced it) is reclaimed with the same
epoch: the epoch check in :func:`leases.acquire` makes that safe.

**A node never serves less than was acknowledged** (issue 10 item 5). Before it
takes a role it finds in its name (a lease still live after a fast restart, a
reclaim, a restart in place), the agent compares the records its own files hold
with the role's committed position (:mod:`continuity.services.survivors`). A node
behind it — the replaced machine back at once on an empty disk — does not serve:
it abandons the role (lease released or its record dropped, service marked
failed, :func:`leases.abandon`), so the detector moves it to a node that holds
everything, and this node's replicator catches it up as a standby.

None of these threads runs a service hook: start, demote and stop hooks go to the
service's lane (:mod:`continuity.detect.lanes`), one serial queue per service with a
deadline per hook. A start taking seconds therefore never delays a beat or a renewal
(before, it did, and the watchdog demoted the very role being started), and two hooks
of one service never overlap (a local restart and a demote 0.3 s apart once left two
instances of one service on one node). The threads decide and change the role state
(``held``, ``demoting``, ``started``) under :attr:`Agent.lock`; the lane runs the hook,
then finishes the bookkeeping. A start is re-checked when its lane reaches it and
dropped if a demote made it obsolete meanwhile.

I/O shell: threads, hooks, probes and Redis. The restart-or-give-up choice is the
pure decider :mod:`continuity.detect.recovery`'s; hooks and probes come from
:mod:`continuity.services`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from continuity.blueprint import Blueprint
from continuity.detect import outage
from continuity.detect.lanes import TIMED_OUT, HookLanes, Job
from continuity.detect.recovery import Decision, RecoveryPolicy, Tracker
from continuity.events import (
    DETECT_HOOK_TIMED_OUT,
    DETECT_LEASE_RETAKEN,
    DETECT_REDIS_OUTAGE,
    DETECT_ROLE_BOOTSTRAPPED,
    FAILOVER_SELF_DEMOTED,
    FAILOVER_SELF_REPROMOTED,
    FAILOVER_SERVICE_FAILED,
    FAILOVER_SERVICE_RESTARTED,
    EventKind,
    EventSink,
)
from continuity.services import survivors
from continuity.services.hooks import run_service_hook
from continuity.services.layout import service_dir
from continuity.services.probes import ProbeResult, probe_service
from continuity.state import heartbeats, leases
from continuity.state import replication as replication_state

log = logging.getLogger("continuity.agent")

HookRunner = Callable[..., Any]
Prober = Callable[[Blueprint, str, str, int | None], ProbeResult]
# explains a failed round trip: returns something with ``symptom`` and ``sentinels`` (continuity.redisd.Diagnosis)
Diagnose = Callable[[BaseException], Any]
# what this node holds of a service (source -> complete records), and the role's committed positions
Holdings = Callable[[Blueprint, str, str], dict[str, int | None]]


def held_records(bp: Blueprint, node: str, service: str) -> dict[str, int | None]:
    """Complete records of each ledger source in ``node``'s own copy of ``service`` (0: no file). Only this
    node's own directory is read."""
    out: dict[str, int | None] = {}
    for ds in bp.services[service].spec.data:
        if ds.kind != "ledger":
            continue
        name = ds.path.rsplit("/", 1)[-1]
        try:
            with open(service_dir(node, service) / name, "rb") as fh:
                out[name] = sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b""))
        except FileNotFoundError:
            out[name] = 0
    return out


@dataclass
class Outage:
    """The agent's view of an ongoing stretch of failed beats."""

    since: float  # monotonic time the first failed beat was sent
    since_wall: float
    verdict: outage.Verdict
    attempts: int = 1
    causes: set[str] | None = None


@dataclass
class Held:
    epoch: int
    renewed_at: float  # monotonic time the last successful renewal was sent


def default_safety(bp: Blueprint) -> float:
    """How long before the lease's end we stop: room for the demote hook and scheduling delays."""
    return max(0.5, bp.policy.lease_ttl / 4)


class Agent:
    """One node's agent state and steps; the threads in :class:`AgentRunner` just call these."""

    def __init__(self, bp: Blueprint, node: str, client: Any, key: heartbeats.Signer, *, pulse: EventSink | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 run_hook: HookRunner | None = None, prober: Prober = probe_service,
                 safety: float | None = None, hook_timeout: float = 10.0, hook_grace: float = 5.0,
                 diagnose: Diagnose | None = None, holdings: Holdings = held_records) -> None:
        self.bp = bp
        self.node = node
        self.client = client
        self.key = key
        # the beat's one-time tokens: a slot every half heartbeat interval, so a beat is never late for its slot
        self.signer = heartbeats.HeartbeatSigner(node, key, step=min(1.0, bp.policy.heartbeat_interval) / 2)
        self.pulse = pulse
        self.clock = clock
        self.wall = wall
        self.run_hook = run_service_hook if run_hook is None else run_hook
        self.prober = prober
        self.safety = default_safety(bp) if safety is None else safety
        self.diagnose = diagnose or _symptom_only
        self.holdings = holdings
        self.tolerance = bp.policy.redis_outage_tolerance
        self.outage: Outage | None = None
        # when the latest failed beat was sent, if it proved Redis down (None: it read as cut off, or no failure)
        self.down_at: float | None = None
        self.hook_timeout = hook_timeout
        self.services = sorted(s for s, v in bp.services.items() if node == v.primary or node in v.standbys)
        self.held: dict[str, Held] = {}
        self.demoted: dict[str, int] = {}  # self-demoted service -> epoch we may reclaim
        self.demoting: set[str] = set()  # stop hook queued or running: not reclaimed until it finished
        self.started: dict[str, int] = {}  # service -> epoch its start hook last ran for (until a demote)
        self.health: dict[str, ProbeResult] = {}
        self.recovery = RecoveryPolicy.from_blueprint(bp)
        self.trackers: dict[str, tuple[int, Tracker]] = {}  # held service -> (epoch, its probe history)
        self.seq = 0
        self.bootstrapped = False
        self.unsure: set[str] = set()  # services whose bootstrap failed after it may have written
        self.redis_ok = True
        self.lock = threading.RLock()
        # a hook may wait up to its timeout for the node's lock of the service's hooks (a failover step may hold
        # it, see services.hooks.hook_lock) before its own timeout starts: the lane allows for both
        self.lanes = HookLanes(on_timeout=self._hook_timed_out, grace=hook_timeout + hook_grace)
        self._beat = heartbeats.BEAT.load(client)

    # --- heartbeat ---------------------------------------------------------------------------
    def _report(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for svc in self.services:
            held = self.held.get(svc)
            if held is None:
                out[svc] = {"role": "standby", "epoch": None, "healthy": None, "detail": "not primary here"}
                continue
            res = self.health.get(svc)
            out[svc] = {"role": "primary", "epoch": held.epoch, "healthy": None if res is None else res.healthy,
                        "detail": "probe pending" if res is None else res.detail[:200]}
        return out

    def next_seq(self) -> int:
        """Grows within a process and across restarts (time-based floor), so old beats read as replays."""
        self.seq = max(self.seq + 1, int(self.wall() * 1000))
        return self.seq

    def beat_once(self) -> bool:
        """Send one heartbeat and renew held leases; False when Redis could not be reached.

        A connection that broke mid-way says nothing about why: one more attempt at once, on a fresh
        connection, tells a refused (Redis down) from a timed-out (cut off) one.
        """
        ok = self._beat_attempt()
        if ok is None:
            ok = self._beat_attempt()
        return bool(ok)

    def _beat_attempt(self) -> bool | None:
        """One heartbeat; None when it failed on a broken connection (worth one immediate retry)."""
        if not self.bootstrapped:
            self._bootstrap()
        # A process that was frozen (SIGSTOP, a long GC or fork stall) past its renewal limit must demote
        # before anything else: its lease may have lapsed while it could not act, so it cannot renew its
        # way back into a role it has been running without cover. The watchdog thread would get there too,
        # but after a freeze every thread wakes at once and the beat could win the race.
        self.check_fence()
        sent = self.clock()
        with self.lock:
            hb = heartbeats.Heartbeat(node=self.node, seq=self.next_seq(), ts=self.wall(), services=self._report(),
                                     nonce=secrets.token_hex(6))
        raw = self.signer.encode(hb)
        lease_keys = heartbeats.service_keys(self.services)
        try:
            res = self._beat(keys=[*heartbeats.beat_keys(), *lease_keys],
                             args=[self.node, raw, max(1, int(self.bp.policy.lease_ttl * 1000))], client=self.client)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: keep beating, let the watchdog decide
            return self._beat_failed(exc, sent)
        holders = {svc: (_text(res[1 + 3 * i]), int(float(_text(res[2 + 3 * i]))), int(float(_text(res[3 + 3 * i]))))
                   for i, svc in enumerate(self.services)}
        with self.lock:
            kept = sorted(self.held)  # what rode the outage out (before the answer re-takes or reclaims roles)
        self._apply_holders(holders, sent)
        self._reached(sent, kept)
        return True

    def _beat_failed(self, exc: BaseException, sent: float) -> bool | None:
        """Explain the failure and remember whether it proved Redis down; None for a broken connection."""
        try:
            diagnosis = self.diagnose(exc)
        except Exception as why:  # noqa: BLE001 - a failing diagnosis proves nothing: cut off
            log.warning("agent %s: could not diagnose %r: %s", self.node, exc, why)
            diagnosis = _Diagnosis("other")
        verdict = outage.classify(diagnosis.symptom, diagnosis.sentinels)
        with self.lock:
            first = self.outage is None
            if first:
                self.outage = Outage(sent, self.wall(), verdict, causes={verdict.cause})
            else:
                assert self.outage is not None
                changed = self.outage.verdict.cause != verdict.cause
                self.outage.verdict = verdict
                self.outage.attempts += 1
                self.outage.causes = (self.outage.causes or set()) | {verdict.cause}
                first = changed
            self.down_at = sent if verdict.cause == outage.REDIS_DOWN else None
        self.redis_ok = False
        if first:
            log.warning("agent %s: heartbeat failed (%s): %s: %s", self.node, verdict.cause, verdict.why, exc)
        if diagnosis.symptom == "reset" and self.outage is not None and self.outage.attempts == 1:
            self._drop_connections()
            return None
        return False

    def _drop_connections(self) -> None:
        """Close every pooled connection: after a server died they are all broken, and a retry on another stale
        one would read as a second reset instead of what a fresh connection meets (refused, or silence)."""
        pool = getattr(self.client, "connection_pool", None)
        try:
            if pool is not None:
                pool.disconnect()
        except Exception as exc:  # noqa: BLE001 - best effort: the retry tells what it meets either way
            log.debug("agent %s: could not drop pooled connections: %s", self.node, exc)

    def _reached(self, sent: float, kept: list[str]) -> None:
        """Redis answered: close the outage (if any) and record that it was ridden out."""
        with self.lock:
            was, self.outage, self.down_at = self.outage, None, None
        self.redis_ok = True
        if was is None:
            return
        seconds = sent - was.since
        log.warning("agent %s: Redis reachable again after %.2fs (%s)", self.node, seconds, was.verdict.why)
        self._emit(DETECT_REDIS_OUTAGE, data={"since": was.since_wall, "seconds": round(seconds, 3),
                                              "causes": sorted(was.causes or ()), "attempts": was.attempts,
                                              "last": was.verdict.why, "kept": kept, "at": self.wall()})

    def _apply_holders(self, holders: dict[str, tuple[str, int, int]], sent: float) -> None:
        """Act on who holds each role, as the beat script saw it: ``(holder, epoch, orphan epoch)``.

        A role whose lease vanished while its record still names us at the current epoch (our lease
        expired across a worker restart, or Redis lost the key) is taken back at that epoch: without
        this nobody would ever hold it again, since failover only starts for dead primaries. Taking it
        back goes through :func:`leases.acquire`, refused once a fence moved the epoch on or another
        node holds the lease, so it can never make a second holder.
        """
        limit = self.bp.policy.lease_ttl - self.safety
        if self.clock() - sent > limit:
            # the answer comes from before a freeze (the round trip outlasted the renewal limit): what it
            # says about our leases is too old to act on, and our own clock says we must demote
            self.check_fence()
            return
        lost: list[tuple[str, Held, str]] = []
        reclaim: list[tuple[str, int]] = []
        retake: list[tuple[str, Held]] = []
        fresh: list[tuple[str, int]] = []
        with self.lock:
            for svc, (holder, epoch, orphan) in holders.items():
                if svc in self.demoting:
                    continue  # its stop hook still runs: a start now could finish before that stop
                held = self.held.get(svc)
                if holder == self.node:
                    if held is None or held.epoch != epoch:
                        fresh.append((svc, epoch))  # a role found in our name: ours only if we hold enough
                        continue
                    self.held[svc] = Held(epoch, sent)
                    if self.demoted.pop(svc, None) == epoch:  # our lease outlived our self-demotion
                        reclaim.append((svc, epoch))
                elif held is not None:
                    if not holder and orphan == held.epoch and self._may_hold(held, sent) is None:
                        # renewing all along, or riding out a Redis outage: only the lease key is gone
                        retake.append((svc, held))
                        continue
                    del self.held[svc]
                    self.demoting.add(svc)
                    lost.append((svc, held, f"lease now held by {holder}" if holder else "lease expired or released"))
                elif svc in self.demoted and not holder:
                    reclaim.append((svc, self.demoted[svc]))
                elif svc in self.demoted and holder:
                    self.demoted.pop(svc, None)  # someone else took over: nothing to reclaim
                elif not holder and orphan:
                    reclaim.append((svc, orphan))  # ours before this process started (fast restart)
        for svc, epoch in fresh:
            why = self.behind(svc)
            if why is not None:
                self._abandon(svc, epoch, why)
                continue
            log.info("agent %s: primary of %s at epoch %s", self.node, svc, epoch)
            with self.lock:
                if svc in self.demoting:
                    continue
                self.held[svc] = Held(epoch, sent)
                if self.demoted.pop(svc, None) == epoch:  # our lease outlived our self-demotion
                    reclaim.append((svc, epoch))
        for svc, held in retake:
            self._retake(svc, held, sent)
        for svc, held, why in lost:
            self._demote(svc, held.epoch, why)
        for svc, epoch in reclaim:
            why = self.behind(svc)
            if why is not None:
                self._abandon(svc, epoch, why)
                continue
            self._reclaim(svc, epoch)

    # --- a node never serves less than was acknowledged ------------------------------------------------------------
    def behind(self, svc: str) -> str | None:
        """Why this node must not serve ``svc`` with what its own files hold (behind the role's committed
        position), or None. An unreadable committed position guards nothing: the role-taking that follows
        needs the same Redis, and the replicas' hash chains check every byte a promotion fetches."""
        try:
            committed = replication_state.read_committed(self.client, [svc]).get(svc, {})
        except Exception as exc:  # noqa: BLE001 - Redis flapping: the lease operations that follow fail alike
            log.warning("agent %s: committed position of %s unreadable: %s", self.node, svc, exc)
            return None
        if not committed:
            return None
        try:
            held = self.holdings(self.bp, self.node, svc)
        except OSError as exc:  # its own disk unreadable: it holds nothing it can serve
            log.warning("agent %s: cannot read its copy of %s: %s", self.node, svc, exc)
            held = {}
        return survivors.shortfall(held, committed)

    def _abandon(self, svc: str, epoch: int, why: str) -> None:
        """Give up a role we hold too little for: stop whatever runs of it, drop the lease (or its record) and mark
        the service failed here, so the detector moves it; we stay a standby and catch up."""
        with self.lock:
            if svc in self.demoting:
                return
            self.held.pop(svc, None)
            self.demoted.pop(svc, None)
            self.demoting.add(svc)
            self.health.pop(svc, None)
            self.started.pop(svc, None)
        log.warning("agent %s: not serving %s (epoch %s): %s", self.node, svc, epoch, why)

        def then(result: Any) -> None:
            released: bool | None = None
            try:
                released = leases.abandon(self.client, svc, self.node, epoch,
                                          {"at": self.wall(), "since": None, "reason": why, "restarts": 0},
                                          sign=lambda claim: heartbeats.sign_claim(self.key, claim))
            except Exception as exc:  # noqa: BLE001 - the lease lapses on its own; the next beat decides again
                log.warning("agent %s: could not abandon %s: %s", self.node, svc, exc)
            finally:
                with self.lock:
                    self.demoting.discard(svc)
                    self.trackers.pop(svc, None)
            self._emit(FAILOVER_SERVICE_FAILED, service=svc, epoch=epoch,
                       data={"reason": why, "restarts": 0, "released": released, "since": None, "at": self.wall()})

        self._submit(svc, "demote", epoch, then)

    def _retake(self, svc: str, held: Held, sent: float) -> None:
        """Re-create the lease of a role we still run, at the same epoch; demote if that is refused."""
        try:
            ok, why = leases.acquire_ex(self.client, svc, self.node, held.epoch, self.bp.policy.lease_ttl)
        except Exception as exc:  # noqa: BLE001 - Redis flapping: the watchdog decides, as for a failed renewal
            log.warning("agent %s: re-taking the lease of %s deferred: %s", self.node, svc, exc)
            return
        if ok:
            with self.lock:
                if self.held.get(svc) is held:
                    self.held[svc] = Held(held.epoch, sent)
            log.warning("agent %s: lease of %s (epoch %s) had vanished; taken back", self.node, svc, held.epoch)
            self._emit(DETECT_LEASE_RETAKEN, service=svc, epoch=held.epoch, data={"reason": "lease key vanished"})
            return
        with self.lock:
            if self.held.get(svc) is not held:
                return
            del self.held[svc]
            self.demoting.add(svc)
        self._demote(svc, held.epoch, f"lease vanished and could not be taken back: {why}")

    # --- roles ---------------------------------------------------------------------------------
    def _bootstrap(self) -> None:
        """First start of the fleet: the blueprint's primary takes epoch 1 of services never placed.

        A bootstrap that failed after it may have written (not confirmed by the replicas, or the answer
        lost) is retried as such: epoch 1 still ours is confirmed again, and only then started.
        """
        for svc in self.services:
            if self.bp.services[svc].primary != self.node:
                continue
            try:
                took = leases.bootstrap(self.client, svc, self.node, self.bp.policy.lease_ttl,
                                        retry=svc in self.unsure)
            except Exception as exc:  # noqa: BLE001 - retried on the next beat
                self.unsure.add(svc)
                log.warning("agent %s: bootstrap of %s deferred: %s", self.node, svc, exc)
                return
            self.unsure.discard(svc)
            if took:
                with self.lock:
                    self.held[svc] = Held(1, self.clock())
                    self.started[svc] = 1
                self._start(svc, 1, self._bootstrapped(svc))
        self.bootstrapped = True

    def _reclaim(self, svc: str, epoch: int) -> None:
        """Start again a service we stopped only because Redis was out of reach, if the role is still ours."""
        try:
            ok, why = leases.acquire_ex(self.client, svc, self.node, epoch, self.bp.policy.lease_ttl)
        except Exception as exc:  # noqa: BLE001 - Redis flapping: try on the next beat
            with self.lock:
                self.demoted[svc] = epoch
            log.warning("agent %s: reclaim of %s deferred: %s", self.node, svc, exc)
            return
        if not ok:
            log.info("agent %s: not reclaiming %s (epoch %s): %s", self.node, svc, epoch, why)
            return
        with self.lock:
            self.held[svc] = Held(epoch, self.clock())
            self.demoted.pop(svc, None)
            if self.started.get(svc) == epoch:
                return  # another path reclaimed it a moment ago: one start hook per reclaim
            self.started[svc] = epoch

        def then(result: Any) -> None:
            self._emit(FAILOVER_SELF_REPROMOTED, service=svc, epoch=epoch, data={"hook_rc": _rc(result)})

        self._start(svc, epoch, then)

    def _may_hold(self, held: Held, now: float) -> str | None:
        """Why ``held`` must be given up at ``now`` (see :func:`outage.must_stop`), or None."""
        return outage.must_stop(now, held.renewed_at, self.down_at, self.bp.policy.lease_ttl - self.safety,
                                self.tolerance)

    def check_fence(self) -> list[str]:
        """Demote every held service whose lease we could not renew in time; returns their ids.

        "In time" is ``lease_ttl - safety`` since the last renewal, unless the latest failed renewal proved
        Redis itself down (then the primary keeps serving, see :mod:`continuity.detect.outage`).
        """
        now = self.clock()
        due: list[tuple[str, Held, str]] = []
        with self.lock:
            for svc, held in list(self.held.items()):
                why = self._may_hold(held, now)
                if why is not None:
                    del self.held[svc]
                    self.demoted[svc] = held.epoch
                    self.demoting.add(svc)
                    due.append((svc, held, why))
        for svc, held, why in due:
            self._demote(svc, held.epoch, f"{why}; a {self.bp.policy.lease_ttl:g}s lease")
        return [svc for svc, _, _ in due]

    def demote_all(self, reason: str) -> list[str]:
        """Stop every held role (worker shutdown): a primary nobody watches must not keep running.

        Waits for the demote hooks (and any hook queued before them): the worker exits next.
        """
        with self.lock:
            held, self.held = self.held, {}
            self.demoting.update(held)
        for svc, h in held.items():
            self._demote(svc, h.epoch, reason)
        if not self.wait_idle(self.hook_timeout + self.lanes.grace):
            log.error("agent %s: hooks still running at shutdown", self.node)
        return sorted(held)

    def _demote(self, svc: str, epoch: int, reason: str) -> None:
        """Queue the demote hook; the caller has already taken the role away and marked it ``demoting``."""
        log.warning("agent %s: demoting %s (epoch %s): %s", self.node, svc, epoch, reason)
        decided = self.wall()
        with self.lock:
            self.health.pop(svc, None)
            self.started.pop(svc, None)

        def then(result: Any) -> None:
            with self.lock:
                self.demoting.discard(svc)  # stopped: a reclaim may start it again from now on
            self._emit(FAILOVER_SELF_DEMOTED, service=svc, epoch=epoch,
                       data={"reason": reason, "hook_rc": _rc(result), "at": self.wall(), "decided_at": decided})

        self._submit(svc, "demote", epoch, then)

    # --- hook lanes ----------------------------------------------------------------------------
    def _submit(self, svc: str, which: str, epoch: int, then: Callable[[Any], None],
                ready: Callable[[], bool] = lambda: True) -> None:
        """Queue one hook of ``svc`` on its lane: it runs after every hook of ``svc`` decided before it."""
        def call() -> Any:
            return self.run_hook(self.bp, svc, self.node, which, epoch, timeout=self.hook_timeout)

        self.lanes.submit(Job(svc, which, call, self.hook_timeout, then, ready, epoch))

    def _start(self, svc: str, epoch: int, then: Callable[[Any], None]) -> None:
        """Queue a start hook, run only if ``svc`` is still ours at ``epoch`` when its lane gets to it."""
        self._submit(svc, "start", epoch, then, ready=lambda: self._still_primary(svc, epoch))

    def _still_primary(self, svc: str, epoch: int) -> bool:
        """A start decided before a demote (or a new epoch) made it obsolete must not run after that demote."""
        with self.lock:
            held = self.held.get(svc)
            return held is not None and held.epoch == epoch and svc not in self.demoting

    def _bootstrapped(self, svc: str) -> Callable[[Any], None]:
        def then(result: Any) -> None:
            self._emit(DETECT_ROLE_BOOTSTRAPPED, service=svc, epoch=1, data={"hook_rc": _rc(result)})

        return then

    def _hook_timed_out(self, job: Job) -> None:
        self._emit(DETECT_HOOK_TIMED_OUT, service=job.service, epoch=job.epoch,
                   data={"hook": job.what, "timeout": job.timeout, "at": self.wall()})

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no hook is queued or running (tests, shutdown); False if ``timeout`` ran out first."""
        return self.lanes.wait_idle(timeout)

    # --- probes --------------------------------------------------------------------------------
    def probe_once(self, pool: ThreadPoolExecutor | None = None) -> dict[str, ProbeResult]:
        with self.lock:
            targets = {svc: h.epoch for svc, h in self.held.items()}
        if not targets:
            return {}
        if pool is None:
            results = {svc: self.prober(self.bp, svc, self.node, epoch) for svc, epoch in targets.items()}
        else:
            futures = {svc: pool.submit(self.prober, self.bp, svc, self.node, epoch) for svc, epoch in targets.items()}
            results = {svc: f.result() for svc, f in futures.items()}
        with self.lock:
            for svc, res in results.items():
                if svc in self.held:
                    self.health[svc] = res
        return results

    # --- local recovery ------------------------------------------------------------------------------
    def tend(self, pool: ThreadPoolExecutor | None = None) -> dict[str, ProbeResult]:
        """One probe round followed by its recovery actions (the probe thread's step)."""
        results = self.probe_once(pool)
        self.recover_once(results)
        return results

    def recover_once(self, results: dict[str, ProbeResult]) -> list[tuple[str, str]]:
        """Feed probe results to each held service's tracker and act on its decision; returns (service, action).

        Runs on the probe thread and only queues hooks: a start hook takes up to ``hook_timeout`` and
        the heartbeat and lease renewal must go on meanwhile (a restart is not a reason to be failed over).
        A service with a hook queued or running is not judged: a probe failing while its own start or
        stop hook runs says nothing about a crash, and would queue a second restart behind the first.
        """
        now = self.clock()
        due: list[tuple[str, int, Decision, float | None]] = []
        with self.lock:
            for svc in [s for s in self.trackers if s not in self.held]:
                del self.trackers[svc]  # role gone: a new role starts with a clean slate
            for svc, res in results.items():
                held = self.held.get(svc)
                if held is None or svc in self.demoting or self.lanes.busy(svc):
                    continue
                entry = self.trackers.get(svc)
                if entry is None or entry[0] != held.epoch:
                    has_start = self.bp.services[svc].spec.hooks.start is not None
                    entry = (held.epoch, Tracker(self.recovery, has_start_hook=has_start))
                    self.trackers[svc] = entry
                decision = entry[1].observe(res.healthy, now, res.detail[:200])
                if decision.action != "none":
                    due.append((svc, held.epoch, decision, entry[1].failing_since))
        done = []
        for svc, epoch, decision, since in due:
            since_wall = None if since is None else self.wall() - (self.clock() - since)
            if decision.action == "restart":
                self._restart(svc, epoch, decision, since_wall)
            else:
                self._give_up(svc, epoch, decision, since_wall)
            done.append((svc, decision.action))
        return done

    def _restart(self, svc: str, epoch: int, decision: Decision, since: float | None) -> None:
        """Start hook again at the same epoch: the hooks are idempotent, and the role never left this node.

        Not when this node's copy is behind the committed position (its disk lost data): then the role goes."""
        why = self.behind(svc)
        if why is not None:
            self._give_up(svc, epoch, Decision("give_up", why, decision.failures, decision.restarts), since)
            return
        with self.lock:
            held = self.held.get(svc)
            if held is None or held.epoch != epoch or svc in self.demoting:
                return  # demoted meanwhile: starting now would race the stop hook
            self.started[svc] = epoch
        log.warning("agent %s: restarting %s in place (epoch %s): %s", self.node, svc, epoch, decision.reason)

        def then(result: Any) -> None:
            # a demote decided while this start ran is queued behind it on the lane and stops what it started
            self._emit(FAILOVER_SERVICE_RESTARTED, service=svc, epoch=epoch,
                       data={"reason": decision.reason, "failures": decision.failures, "restarts": decision.restarts,
                             "max_local_restarts": self.recovery.max_local_restarts, "since": since,
                             "at": self.wall(), "hook_rc": _rc(result)})

        self._start(svc, epoch, then)

    def _give_up(self, svc: str, epoch: int, decision: Decision, since: float | None) -> None:
        """Stop the service, release its lease and mark it failed here, so the detector moves it elsewhere.

        The stop hook runs first and the service stays in ``demoting`` until the lease is gone: the beat
        keeps renewing every lease naming this node, and would otherwise hand the role straight back.
        """
        with self.lock:
            held = self.held.get(svc)
            if held is None or held.epoch != epoch or svc in self.demoting:
                return
            del self.held[svc]
            self.demoting.add(svc)
            self.demoted.pop(svc, None)
            self.health.pop(svc, None)
            self.started.pop(svc, None)
        log.warning("agent %s: giving %s up (epoch %s): %s", self.node, svc, epoch, decision.reason)
        self._submit(svc, "demote", epoch, lambda result: self._gave_up(svc, epoch, decision, since, result))

    def _gave_up(self, svc: str, epoch: int, decision: Decision, since: float | None, result: Any) -> None:
        """After the stop hook of a given-up service (on its lane): record it, release the lease, mark it failed."""
        given: bool | None = None
        try:
            # stopped: our hold on the role ends here, before anyone may be promoted (the release is next)
            self._emit(FAILOVER_SELF_DEMOTED, service=svc, epoch=epoch,
                       data={"reason": f"service failed: {decision.reason}", "at": self.wall(),
                             "hook_rc": _rc(result)})
            info = {"at": self.wall(), "since": since, "reason": decision.reason, "restarts": decision.restarts}
            try:
                # signed by this node's heartbeat key: the detector fails a service over on a node's own word
                # only, never on a marker anyone with Redis access could SET
                given = leases.give_up(self.client, svc, self.node, epoch, info,
                                       sign=lambda claim: heartbeats.sign_claim(self.key, claim))
            except Exception as exc:  # noqa: BLE001 - the lease lapses on its own; the ladder starts again
                log.warning("agent %s: could not release %s after giving it up: %s", self.node, svc, exc)
        finally:
            with self.lock:
                self.demoting.discard(svc)
                self.trackers.pop(svc, None)
        self._emit(FAILOVER_SERVICE_FAILED, service=svc, epoch=epoch,
                   data={"reason": decision.reason, "restarts": decision.restarts, "released": given,
                         "since": since, "at": self.wall()})

    def _emit(self, kind: EventKind, **kwargs: Any) -> None:
        if self.pulse is None:
            return
        try:
            self.pulse.emit(kind, node=self.node, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the history must never stop the agent
            log.warning("agent %s: could not record %s: %s", self.node, kind, exc)


@dataclass(frozen=True)
class _Diagnosis:
    symptom: str
    sentinels: Any = None


def _symptom_only(exc: BaseException) -> _Diagnosis:
    """The default diagnosis: what the error itself proves (no sentinels asked)."""
    from continuity.redisd import symptom_of  # redis-py's exception classes

    return _Diagnosis(symptom_of(exc))


def _rc(result: Any) -> int | None:
    """The hook's exit code for events: None when no hook is declared, 124 (as a killed hook) on a lane timeout."""
    if result is TIMED_OUT:
        return 124
    return None if result is None else result.returncode


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class AgentRunner:
    """Drives an :class:`Agent` with three daemon threads until :meth:`stop`."""

    def __init__(self, agent: Agent, interval: float | None = None) -> None:
        self.agent = agent
        self.interval = interval or agent.bp.policy.heartbeat_interval
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(8, len(agent.services))),
                                        thread_name_prefix="continuity-probe")

    def start(self) -> AgentRunner:
        for name, target in (("beat", self._beat_loop), ("probe", self._probe_loop), ("watchdog", self._watch_loop)):
            t = threading.Thread(target=target, name=f"continuity-agent-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _every(self, period: float, step: Callable[[], Any], retry: float | None = None) -> None:
        """Run ``step`` every ``period``; every ``retry`` instead after it returned False (a failed beat)."""
        next_at = time.monotonic()
        while not self._stop.is_set():
            ok: Any = True
            try:
                ok = step()
            except Exception:  # noqa: BLE001 - a bug in one step must not end the loop
                log.exception("agent %s: %s failed", self.agent.node, getattr(step, "__name__", step))
            step_period = retry if retry is not None and ok is False else period
            next_at += step_period
            now = time.monotonic()
            if next_at < now:  # we were paused or starved: do not fire a burst to catch up
                next_at = now + step_period
            self._stop.wait(next_at - now)

    def _beat_loop(self) -> None:
        # through an outage the renewal is retried four times as often: the role is renewed as soon as Redis
        # answers, well inside the grace the detector gives nodes after a Redis outage
        self._every(self.interval, self.agent.beat_once, retry=max(0.05, self.interval / 4))

    def _probe_loop(self) -> None:
        self._every(self.interval, lambda: self.agent.tend(self._pool))

    def _watch_loop(self) -> None:
        self._every(min(0.1, self.agent.safety / 4), self.agent.check_fence)
