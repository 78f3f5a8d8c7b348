"""The drill runner: guards, steady state, inject, observe, rollback, re-check, measure, record.

Order is the safety argument (DESIGN invariant 6):

1. refuse while another drill runs, an incident is open, the mode is not normal, the environment is not
   allowed, failover is paused for what the drill hits, a satellite is outside its contact window, or the
   steward approvals the drill needs (``ops/stewards.yml``, verified against the stewards' keys) are missing —
   before anything is touched, not even a pending rollback (a refused drill has no effect at all);
2. finish any rollback a crashed runner left on this host (``recover_pending``: only this host's own
   rollback files run, never what Redis lists), under the drill lock;
3. steady state must hold before injection, else nothing is injected;
4. every rollback is registered durably, *then* the fault is injected;
5. rollbacks run on success, failure, abort and exception (``finally``); a kill -9 of the runner
   is covered by step 1 of the next run;
6. steady state is re-checked after rollback: a system that does not come back fails the drill;
7. a halt request (``continuity drill halt``) is polled before injection and at every probe round: the drill
   stops there and its rollbacks run as in 5.

The record (Redis, no expiry) and ``drill.*`` pulse events are the drill's journal; the
numbers come from :mod:`continuity.drills.measure`, which is pure.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from continuity import halt_auth, paths, report, settings, task_auth
from continuity.blueprint import Blueprint
from continuity.drills import faults, load, measure, probes, procs, targets
from continuity.drills.rollbacks import RollbackOutcome, RollbackRegistry
from continuity.drills.scenarios import ProbeSpec, Scenario, Scenarios
from continuity.errors import ContinuityError, UsageError
from continuity.events import (
    DRILL_FAULT_INJECTED,
    DRILL_FINISHED,
    DRILL_HALTED,
    DRILL_REFUSED,
    DRILL_ROLLBACK,
    DRILL_ROLLBACK_FAILED,
    DRILL_ROLLBACK_RECOVERED,
    DRILL_STARTED,
    EventKind,
)
from continuity.pulse import Pulse, read_events
from continuity.state import approvals as approval_state
from continuity.state import backups, controls, incidents, pulse_stream, routes
from continuity.state import drills as drill_state
from continuity.state import mode as modes
from continuity.stewardship import Stewardship, load_stewardship, subject

LOCK_TTL = 30.0
FROM_OPS: Any = object()  # Runner(stewardship=FROM_OPS): read ops/stewards.yml (the default)
Progress = Callable[[str, dict[str, Any]], None]


class DrillRefused(UsageError):
    """A guard said no; nothing was touched."""


def environment() -> str:
    return settings.ENV.get()


def drills_state() -> Path:
    return paths.state_dir() / "drills"


def _now_id(name: str, now: float) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(now))}-{name}-{uuid.uuid4().hex[:6]}"


def live_primaries(client: Any, bp: Blueprint) -> dict[str, str]:
    """Where each service runs now, by the fleet's one rule (so a drill aims where failover would)."""
    try:
        return {sid: p.node for sid, p in routes.read_primaries(client, bp).items()}
    except Exception:  # noqa: BLE001 - unreadable state: targets fall back to the blueprint
        return {}


def objectives(sc: Scenario, bp: Blueprint, plan: targets.TargetPlan) -> measure.Objectives:
    """Expectations with ``default`` replaced by the strictest objective among the services the drill hits."""
    services = set(plan.services) | ({sc.load.service} if sc.load else set())
    e = sc.expectations

    def pick(value: Any, attr: str) -> float | None:
        if value == "default":
            vals = [getattr(bp.services[s], attr) for s in services]
            return min(vals) if vals else None
        return value

    return measure.Objectives(rto=pick(e.rto, "rto"), rpo=pick(e.rpo, "rpo"), detection=e.detection,
                              data_lost=e.data_lost, failovers=e.failovers, integrity=e.integrity)


def lock_token(drill_id: str) -> str:
    return f"{drill_id}|{socket.gethostname()}|{os.getpid()}"


def _dead_runner_here(token: str) -> bool:
    """Whether a lock token names a runner on this host whose process is gone (its lock may be taken at once)."""
    parts = token.split("|")
    return len(parts) == 3 and parts[1] == socket.gethostname() and parts[2].isdigit() and not procs.alive(
        int(parts[2]))


def acquire_lock(client: Any, drill_id: str) -> bool:
    return drill_state.take_lock(client, lock_token(drill_id), LOCK_TTL, _dead_runner_here)


def release_lock(client: Any, drill_id: str) -> None:
    try:
        drill_state.release_lock(client, lock_token(drill_id))
    except Exception:  # noqa: BLE001 - it expires on its own
        pass


class Runner:
    def __init__(self, client: Any, bp: Blueprint, scenarios: Scenarios, state: Path | None = None,
                 pulse: Pulse | None = None, progress: Progress | None = None,
                 clock: Callable[[], float] = time.time, stewardship: Stewardship | None = FROM_OPS) -> None:
        self.client = client
        if stewardship is FROM_OPS:
            stewardship = load_stewardship(paths.stewards_path(), scenarios.names())
        self.stewardship: Stewardship | None = stewardship
        self.bp = bp
        self.scenarios = scenarios
        self.state = Path(state) if state else drills_state()
        self.pulse = pulse or Pulse(client=client, path=paths.pulse_file(), node=settings.NODE.get())
        self.progress = progress or (lambda _phase, _info: None)
        self.clock = clock
        self.fault_ctx = faults.FaultContext(client=client, bp=bp, state=self.state)
        self.registry = RollbackRegistry(client, self.state / "rollbacks", faults.executors(self.fault_ctx), clock)

    # --- pieces ----------------------------------------------------------------------------------------------
    def _emit(self, kind: EventKind, drill_id: str, data: dict[str, Any]) -> None:
        try:
            self.pulse.emit(kind, data={"drill": drill_id, **data})
        except Exception:  # noqa: BLE001 - the file copy is written first; never let history kill a drill
            pass

    def _save(self, record: dict[str, Any]) -> None:
        """Record without expiry; also mirrored to a local file so a Redis outage mid-drill loses nothing."""
        body = json.dumps(record, default=str, sort_keys=True)
        local = self.state / "records" / f"{record['id']}.json"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(body, encoding="utf-8")
        try:
            drill_state.save_record(self.client, record)
        except Exception:  # noqa: BLE001 - synced on the next save / recovery
            pass

    def plan(self, name: str, game_day: bool = False) -> dict[str, Any]:
        """The dry run: what would be hit, how, and what must hold — touching nothing."""
        sc = self.scenarios.get(name)
        try:
            plan = targets.resolve(sc.target, self.bp, live_primaries(self.client, self.bp))
        except ValueError as exc:
            raise DrillRefused(f"drill {name!r}: {exc}") from None
        out: dict[str, Any] = {
            "scenario": name, "title": sc.title, "environment": environment(),
            "allowed_environments": self.scenarios.environments(name), "target": plan.as_dict(),
            "fault": {"type": sc.fault.type, "params": sc.fault.params}, "duration": sc.duration,
            "steady_state": [p.name for p in sc.steady_state], "stop_conditions": [p.name for p in sc.stop_conditions],
            "load": sc.load.model_dump() if sc.load else None,
            "expectations": asdict(objectives(sc, self.bp, plan)),
            "refusal": None, "approvals": [],
        }
        try:
            out["approvals"] = self.guards(name, sc, plan, game_day)
        except DrillRefused as exc:
            out["refusal"] = str(exc)
        try:
            prepared = faults.prepare(sc.fault.type, self.fault_ctx, plan, sc.fault.params)
            out["fault"]["action"] = prepared.description
            out["rollbacks"] = [{k: v for k, v in r.items() if k not in ("env", "original_b64", "corrupt_b64")}
                                for r in prepared.rollbacks]
        except ContinuityError as exc:
            out["fault"]["action"] = None
            out["fault"]["error"] = str(exc)
        return out

    def guards(self, name: str, sc: Scenario, plan: targets.TargetPlan,
               game_day: bool = False) -> list[dict[str, Any]]:
        """Refuse (:class:`DrillRefused`, one line saying why) or return the steward approvals the drill runs under."""
        env = environment()
        allowed = self.scenarios.environments(name)
        if env not in allowed:
            raise DrillRefused(f"drill {name!r} is not allowed in environment {env!r} "
                               f"(allowed: {', '.join(allowed)}; set {settings.ENV.name})")
        open_ = incidents.ids(self.client)
        if open_:
            raise DrillRefused(f"drill {name!r} refused: {len(open_)} incident(s) open "
                               f"({', '.join(sorted(open_))}); close them before rehearsing")
        doc = modes.read(self.client)
        if doc is not None:
            mode = modes.name(doc, missing="normal")
            if mode != "normal":
                raise DrillRefused(f"drill {name!r} refused: continuity mode is {mode!r}, drills run only in normal")
        when = dt.datetime.fromtimestamp(self.clock(), dt.UTC)
        self._not_paused(name, plan)
        if sc.expectations.failovers == "required":
            self._failover_possible(name, plan, when)
        for node in plan.nodes:
            if self.bp.nodes[node].kind != "core" and not self.bp.in_contact(node, when):
                raise DrillRefused(f"drill {name!r} refused: satellite {node!r} is outside its contact window")
        return self._approved(name, sc, game_day)

    def _approved(self, name: str, sc: Scenario, game_day: bool) -> list[dict[str, Any]]:
        """The k distinct valid steward approvals a destructive scenario or game day needs; each statement is
        verified against the keys in ops/stewards.yml now (Redis only stores them)."""
        st = self.stewardship
        if st is None or not st.drill_needs_approval(name, sc.fault.type, game_day):
            return []
        subj = subject("game-day" if game_day else "drill", name)
        tally = st.tally(subj, approval_state.read(self.client, subj), self.clock())
        if not tally.ok:
            flag = " --game-day" if game_day else ""
            raise DrillRefused(f"drill {name!r} refused: {st.missing(tally, f'continuity drill approve {name}{flag}')}")
        return tally.approvers()

    def _not_paused(self, name: str, plan: targets.TargetPlan) -> None:
        """A maintenance pause (fleet-wide, or of a service the drill hits) means people are working on the fleet:
        no drill starts, whether or not it needs a failover."""
        ctl = controls.read(self.client, plan.services, now=self.clock())
        if ctl.global_pause or ctl.paused:
            scope = "the whole fleet" if ctl.global_pause else ", ".join(sorted(ctl.paused))
            raise DrillRefused(f"drill {name!r} refused: failover is paused for {scope} (maintenance; "
                               "`continuity failover resume` ends it)")

    def _failover_possible(self, name: str, plan: targets.TargetPlan, when: dt.datetime) -> None:
        """A drill that needs a failover cannot pass while failover is paused or cooling down for its services:
        refuse, saying until when, instead of injecting a fault nothing will recover from."""
        ctl = controls.read(self.client, plan.services)
        now = when.timestamp()
        cooling = {s: t for s, t in ctl.cooldowns.items() if t > now}
        if cooling:
            until = max(cooling.values())
            stamp = dt.datetime.fromtimestamp(until, dt.UTC).strftime("%H:%M:%SZ")
            raise DrillRefused(f"drill {name!r} refused: {', '.join(sorted(cooling))} in failover cool-down until "
                               f"{stamp} ({until - now:.0f}s): no automatic failover would happen before then")

    def _acquire(self, drill_id: str) -> bool:
        """Take the drill lock; a lock left by a dead runner on this host is taken over at once (not after
        its TTL), so the next start can finish that runner's rollbacks immediately."""
        return acquire_lock(self.client, drill_id)

    def _keep_lock(self, drill_id: str, stop: threading.Event) -> None:
        token = lock_token(drill_id)
        while not stop.wait(LOCK_TTL / 4):
            try:
                drill_state.keep_lock(self.client, token, LOCK_TTL)
            except Exception:  # noqa: BLE001 - Redis away (broker drill): retry next tick
                continue

    def _release(self, drill_id: str) -> None:
        release_lock(self.client, drill_id)

    # --- recovery --------------------------------------------------------------------------------------------
    def recover(self) -> list[dict[str, Any]]:
        """Finish rollbacks left by a crashed (or failed) drill; call only while holding the drill lock."""
        out = []
        for outcome in self.registry.recover_pending():
            info = {"drill": outcome.drill_id, "ran": outcome.ran, "errors": outcome.errors, "ok": outcome.ok}
            self._emit(DRILL_ROLLBACK_RECOVERED if outcome.ok else DRILL_ROLLBACK_FAILED, outcome.drill_id, info)
            record = self.get_record(outcome.drill_id)
            if record is not None:
                if record.get("status") == "running":
                    record["status"] = "failed"
                    record["reason"] = "runner died during the drill"
                record.setdefault("recovery", []).append({"at": self.clock(), **info})
                if outcome.ok:
                    record["rollback_completed_at"] = self.clock()
                self._save(record)
            out.append(info)
        return out

    def _pending_hint(self) -> str:
        pending = self.registry.pending()
        return (f" ({len(pending)} rollback(s) of an earlier drill pending on this host: "
                "`continuity drill recover` runs them)") if pending else ""

    def get_record(self, drill_id: str) -> dict[str, Any] | None:
        try:
            record = drill_state.read_record(self.client, drill_id)
        except Exception:  # noqa: BLE001 - Redis away: the local mirror has it
            record = None
        if record is None:
            local = self.state / "records" / f"{drill_id}.json"
            raw = local.read_text(encoding="utf-8") if local.exists() else None
            record = json.loads(raw) if raw else None
        return record

    # --- the drill ---------------------------------------------------------------------------------------------
    def run(self, name: str, dry_run: bool = False, game_day: bool = False) -> dict[str, Any]:
        sc = self.scenarios.get(name)
        if dry_run:
            return {"dry_run": True, **self.plan(name, game_day)}
        started = self.clock()
        drill_id = _now_id(name, started)
        if not self._acquire(drill_id):
            other = drill_state.lock_holder(self.client) or "?"
            raise DrillRefused(f"drill {name!r} refused: drill {other} is running")
        stop = threading.Event()
        keeper = threading.Thread(target=self._keep_lock, args=(drill_id, stop), daemon=True)
        keeper.start()
        try:
            try:
                plan = targets.resolve(sc.target, self.bp, live_primaries(self.client, self.bp))
                approvals = self.guards(name, sc, plan, game_day)
            except ValueError as exc:
                raise DrillRefused(f"drill {name!r}: {exc}{self._pending_hint()}") from None
            except DrillRefused as exc:
                self._emit(DRILL_REFUSED, drill_id, {"scenario": name, "reason": str(exc)})
                raise DrillRefused(f"{exc}{self._pending_hint()}") from None
            recovered = self.recover()
            if recovered:  # the fleet changed under the first resolution (a node thawed, a service restarted)
                plan = targets.resolve(sc.target, self.bp, live_primaries(self.client, self.bp))
            return self._run(drill_id, name, sc, plan, started, recovered, approvals)
        finally:
            stop.set()
            self._release(drill_id)
            try:
                drill_state.clear_halt(self.client, drill_id)
            except Exception:  # noqa: BLE001 - it lapses on its own
                pass

    def _probe_round(self, specs: list[ProbeSpec], ctx: probes.ProbeContext, phase: str, rnd: int,
                     samples: list[measure.Sample]) -> list[probes.ProbeResult]:
        results = [probes.run_probe(s, ctx) for s in specs]
        ts = self.clock()
        for spec, res in zip(specs, results, strict=True):
            samples.append(measure.Sample(ts=ts, round=rnd, phase=phase, name=res.name, ok=res.ok,
                                          during=spec.during, detail=res.detail))
        return results

    def _poll_steady(self, specs: list[ProbeSpec], ctx: probes.ProbeContext, phase: str, rnd: int,
                     samples: list[measure.Sample], deadline: float,
                     interval: float) -> tuple[list[probes.ProbeResult], int]:
        """Probe rounds until all pass or the (monotonic) deadline; every round is kept as samples."""
        while True:
            rnd += 1
            res = self._probe_round(specs, ctx, phase, rnd, samples)
            if all(r.ok for r in res) or time.monotonic() >= deadline:
                return res, rnd
            time.sleep(interval)

    def _halted(self, drill_id: str, phase: str) -> str | None:
        """``halted by WHO: REASON`` when an operator asked this drill to stop (``continuity drill halt``)."""
        try:
            req = drill_state.halt_request(self.client, drill_id)
        except Exception:  # noqa: BLE001 - Redis away (broker drill): the drill's own window still ends it
            return None
        if req is None:
            return None
        who, reason = str(req.get("who", "?")), str(req.get("reason") or "no reason given")
        # honoured even unverified (halting is the safe direction, :mod:`continuity.halt_auth`); the record says
        # which trusted operator key signed it, or why none did
        signer, unverified = halt_auth.signer(req, self._operators())
        self._emit(DRILL_HALTED, drill_id, {"who": who, "reason": reason, "phase": phase, "signer": signer,
                                            "unverified": unverified})
        if signer is None:
            return f"halted by {who} (unverified): {reason}"
        return f"halted by {who}: {reason}"

    def _operators(self) -> dict[str, Any]:
        """Trusted operator keys: the files (:func:`continuity.task_auth.operator_keys`) and this runner's
        stewards."""
        ops = dict(task_auth.operator_keys())
        for member in self.stewardship.members if self.stewardship is not None else ():
            ops.setdefault(member.key_id, member.key)
        return ops

    def _run(self, drill_id: str, name: str, sc: Scenario, plan: targets.TargetPlan, started: float,
             recovered: list[dict[str, Any]], approvals: list[dict[str, Any]]) -> dict[str, Any]:
        interval = self.scenarios.defaults.probe_interval
        record: dict[str, Any] = {
            "id": drill_id, "scenario": name, "title": sc.title, "status": "running", "started": started,
            "environment": environment(), "target": plan.as_dict(), "fault": sc.fault.model_dump(),
            "duration": sc.duration, "services": sorted(set(plan.services) | ({sc.load.service} if sc.load else set())),
            "recovered_before_start": recovered, "approvals": approvals,
        }
        self._save(record)
        self._emit(DRILL_STARTED, drill_id, {"scenario": name, "target": plan.as_dict(), "fault": sc.fault.type,
                                             "approvals": approvals})
        self.progress("steady-state-before", {"drill": drill_id})
        ctx = probes.ProbeContext(self.client, self.bp, target_nodes=plan.nodes)
        samples: list[measure.Sample] = []
        rnd = 0
        before_specs = [s for s in sc.steady_state if s.before]
        deadline = time.monotonic() + min(15.0, self.scenarios.recovery_timeout(name))
        res, rnd = self._poll_steady(before_specs, ctx, "before", rnd, samples, deadline, interval)
        fault_at: float | None = None
        rollback_at: float | None = None
        aborted: str | None = None
        generator: load.LoadGenerator | None = None
        start_seq = 0
        rollback_ok = True
        rollback_errors: list[str] = []
        injected: dict[str, Any] = {}
        error: str | None = None
        if not all(r.ok for r in res):
            bad = [f"{r.name}: {r.detail}" for r in res if not r.ok]
            aborted = "steady state not met before injection: " + "; ".join(bad)
        halted = self._halted(drill_id, "before-inject") if aborted is None else None
        aborted = aborted or halted
        registered = False
        try:
            if aborted is None:
                self.fault_ctx.hold = sc.duration + self.scenarios.recovery_timeout(name) + 30
                prepared = faults.prepare(sc.fault.type, self.fault_ctx, plan, sc.fault.params)
                # extra rollbacks are registered first so they run last (after the fault's own undo)
                actions = faults.extra_rollbacks(self.fault_ctx, plan, sc.rollbacks) + prepared.rollbacks
                for action in actions:
                    self.registry.register(drill_id, action)
                registered = True
                record["rollbacks"] = [a["kind"] for a in actions]
                if sc.load is not None:
                    start_seq = load.next_free_seq(self.client, self.bp, sc.load.service, sc.load.timeout)
                    writer = load.http_writer(self.client, self.bp, sc.load.service, sc.load.timeout)
                    generator = load.LoadGenerator(writer, start_seq, sc.load.interval, self.clock).start()
                self.progress("inject", {"drill": drill_id, "fault": prepared.description})
                fault_at = self.clock()
                injected = prepared.inject()
                record.update(status="running", fault_at=fault_at, injected=injected, action=prepared.description)
                self._save(record)
                self._emit(DRILL_FAULT_INJECTED, drill_id, {"fault": sc.fault.type, "action": prepared.description,
                                                            "detail": injected, "nodes": list(plan.nodes),
                                                            "services": list(plan.services)})
                aborted = self._observe(drill_id, sc, ctx, samples, rnd, fault_at, interval)
                if aborted is not None and aborted.startswith("halted by "):
                    halted = aborted
                rnd = max((s.round for s in samples), default=rnd)
        except Exception as exc:  # noqa: BLE001 - any failure is the drill's result; rollbacks run below
            error = f"{type(exc).__name__}: {exc}"
            if fault_at is None:
                aborted = aborted or f"fault could not be injected: {exc}"
        except BaseException as exc:  # noqa: BLE001 - time limit, Ctrl-C: roll back, then let it propagate
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if registered:
                rollback_at = self.clock()
                self.progress("rollback", {"drill": drill_id})
                outcome = self._finish_rollback(drill_id, registered)
                rollback_ok, rollback_errors = outcome.ok, outcome.errors
        after_specs = [s for s in sc.steady_state if s.after]
        if fault_at is not None:
            self.progress("steady-state-after", {"drill": drill_id})
            deadline = time.monotonic() + self.scenarios.recovery_timeout(name)
            res, rnd = self._poll_steady(after_specs, ctx, "after", rnd, samples, deadline, interval)
            if generator is not None:
                self._wait_writes_flow(generator, deadline)
        writes = generator.stop() if generator is not None else []
        recovered_seqs = None
        integrity: list[dict[str, Any]] = []
        if sc.load is not None and fault_at is not None:
            try:
                recovered_seqs = load.recovered_seqs(self.client, self.bp, sc.load.service, start_seq - 1)
                integrity.append({"name": f"{sc.load.service} records readable", "ok": True,
                                  "detail": f"{len(recovered_seqs)} records since seq {start_seq}"})
            except Exception as exc:  # noqa: BLE001
                integrity.append({"name": f"{sc.load.service} records readable", "ok": False, "detail": str(exc)})
        last_after = {s.name: s for s in samples if s.phase == "after"}
        for spec in after_specs:
            if spec.probe in ("ledger-integrity", "ledger-count", "command") and spec.name in last_after:
                s = last_after[spec.name]
                integrity.append({"name": spec.name, "ok": s.ok, "detail": s.detail})
        finished = self.clock()
        events = self.events(started, finished)
        obs = measure.Observation(
            started=started, fault_at=fault_at, rollback_at=rollback_at, finished=finished,
            target_nodes=plan.nodes, target_services=plan.services, samples=samples, writes=writes,
            recovered_seqs=recovered_seqs, events=events, integrity=integrity, rollback_ok=rollback_ok,
            rollback_errors=rollback_errors, aborted=aborted, backup_age=self._backup_age(sc, fault_at),
        )
        m = measure.measure(obs, objectives(sc, self.bp, plan))
        status = "passed" if m.passed and fault_at is not None and not error else "failed"
        if fault_at is None and aborted:
            status = "aborted"
        if halted:
            status = "halted"
        record.update(
            status=status, finished=finished, fault_at=fault_at, rollback_at=rollback_at, aborted=aborted,
            error=error, rollback_ok=rollback_ok, rollback_errors=rollback_errors,
            metrics={k: v for k, v in m.as_dict().items() if k != "expectations"},
            expectations=[asdict(v) for v in m.expectations],
            objectives=asdict(objectives(sc, self.bp, plan)),
            samples=[asdict(s) for s in samples[-400:]],
            writes={"sent": len(writes), "acked": sum(1 for w in writes if w.acked), "start_seq": start_seq,
                    "lost_seqs": m.lost_seqs[:100]},
        )
        self._save(record)
        self._emit(DRILL_FINISHED, drill_id, {"scenario": name, "status": status, "mttr": m.mttr,
                                              "detection": m.detection_time, "data_lost": m.data_lost,
                                              "achieved_rpo": m.achieved_rpo, "failovers": m.failover_count})
        try:
            record["postmortem"] = str(report.write_postmortem(record, events))
            self._save(record)
        except Exception as exc:  # noqa: BLE001 - a missing draft must not hide the drill's result
            record["postmortem_error"] = str(exc)
        return record

    def _finish_rollback(self, drill_id: str, registered: bool) -> Any:
        if not registered:
            return RollbackOutcome(drill_id)
        outcome = self.registry.run(drill_id)
        self._emit(DRILL_ROLLBACK, drill_id, {"ok": outcome.ok, "ran": outcome.ran, "errors": outcome.errors})
        return outcome

    def _observe(self, drill_id: str, sc: Scenario, ctx: probes.ProbeContext, samples: list[measure.Sample],
                 rnd: int, fault_at: float, interval: float) -> str | None:
        """Sample steady state and stop conditions until the fault window ends; a breached stop condition or a
        halt request aborts."""
        specs = sc.steady_state
        end = fault_at + sc.duration
        while self.clock() < end:
            halted = self._halted(drill_id, "during")
            if halted:
                return halted
            rnd += 1
            self._probe_round([s for s in specs if s.during != "ignore"], ctx, "during", rnd, samples)
            stops = [probes.run_probe(s, ctx) for s in sc.stop_conditions]
            breached = [f"{r.name}: {r.detail}" for r in stops if not r.ok]
            if breached:
                return "stop condition breached: " + "; ".join(breached)
            time.sleep(min(interval, max(0.0, end - self.clock())))
        return None

    def _wait_writes_flow(self, generator: load.LoadGenerator, deadline: float) -> None:
        """After recovery, let a few writes succeed so 'back in service' is proven by the client too."""
        target = len(generator.writes) + 3
        while time.monotonic() < deadline:
            recent = generator.writes[-3:]
            if len(generator.writes) >= target and recent and all(w.acked for w in recent):
                return
            time.sleep(0.05)

    def events(self, since: float, until: float) -> list[dict[str, Any]]:
        """Pulse events of the drill window: the shared stream (all nodes), else the local history file."""
        out: list[dict[str, Any]] = []
        try:
            out = [ev for _sid, ev in pulse_stream.between(self.client, since - 1, until + 1)]
        except Exception:  # noqa: BLE001
            out = []
        if not out:
            out = [e for e in read_events(self.pulse.path) if since - 1 <= float(e.get("ts", 0)) <= until + 1]
        seen: set[str] = set()
        unique = []
        for e in sorted(out, key=lambda e: float(e.get("ts", 0))):
            if e.get("id") in seen:
                continue
            seen.add(str(e.get("id")))
            unique.append(e)
        return unique

    def _backup_age(self, sc: Scenario, fault_at: float | None) -> float | None:
        """Age of the newest verified-restorable snapshot at fault time (the RPO a restore would achieve)."""
        if sc.fault.type != "backup-corruption" or fault_at is None:
            return None
        sets = sc.fault.params.get("sets") or []
        ages = []
        for set_id in sets:
            try:
                raw = backups.field(self.client, str(set_id), "last_verified_snapshot_time")
            except Exception:  # noqa: BLE001
                raw = None
            if raw:
                try:
                    ages.append(max(0.0, fault_at - float(raw)))
                except ValueError:
                    continue
        return min(ages) if ages else None

