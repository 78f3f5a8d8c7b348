"""The failover steps as plain functions: fence, demote, prepare, promote, repoint, verify, record.

Each step takes the chain context (a :class:`~continuity.failover.context.FailoverContext`, checked
against the blueprint when the task received it; its JSON form travels with the tasks) and
does its effect exactly once per (service, new epoch): a ``step_done`` marker is
set after the effect, checked before it, and the effects themselves are
idempotent for the window in between (the fence bump and its marker are one
Lua script; start hooks and lease acquisition accept a repeat of the same
epoch; the route is compare-and-set by epoch). So at-least-once delivery of a
task — a worker killed mid-step — yields exactly-once effects.

Steps raise :class:`NotYet` when they must wait (the old lease is still
running) and :class:`StepFailed` when the candidate cannot take the role; the
Celery shell turns those into a retry or into the next candidate.

I/O shell: the effects. The choices they follow are made by the pure deciders
:mod:`continuity.failover.planner` (which candidate, not before when) and
:mod:`continuity.failover.prepare` (where the candidate's data comes from).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from continuity import paths, settings
from continuity.backup import api, livecopy
from continuity.backup.records import SnapshotInfo
from continuity.blueprint import Blueprint
from continuity.errors import ContinuityError
from continuity.events import FAILOVER_DEMOTED, FAILOVER_FENCED, FAILOVER_PROMOTED
from continuity.failover import records
from continuity.failover.context import FailoverContext
from continuity.failover.prepare import DataState, decide, loss, needs_more
from continuity.replication import catchup
from continuity.replication.ledger import LedgerError, LedgerLog
from continuity.replication.wire import WireError
from continuity.services import hooks
from continuity.services.layout import RUNTIME_FILES, routes_file, service_dir
from continuity.services.probes import probe_service
from continuity.state import backups, epochs, failover_records, leases, locks, routes, step_markers
from continuity.state import replication as replication_state
from continuity.state.durability import Unconfirmed

log = logging.getLogger("continuity.failover")
Ctx = FailoverContext  # the chain context, typed; its JSON form is FailoverContext.to_dict()
MARKER_TTL = None  # markers are part of the record of what happened: they do not expire


class StepFailed(ContinuityError):
    """The candidate could not complete this step; try the next candidate or escalate."""


class NotYet(ContinuityError):
    """Too early (the old primary's lease, plus the margin, has not run out): retry after ``wait`` seconds."""

    def __init__(self, message: str, wait: float) -> None:
        self.wait = wait
        super().__init__(message)


class Superseded(ContinuityError):
    """The epoch moved on without us (another failover won, or the old primary kept its lease)."""


def marker(ctx: Ctx, step: str) -> str:
    return step_markers.key(ctx.service, ctx.epoch, step)


class AlreadyHandled(ContinuityError):
    """A duplicate delivery of a step that already failed and whose failure was already acted on."""


class RecordClosed(AlreadyHandled):
    """The failover this step belongs to is over (superseded, escalated, failed or done): nothing more of it runs."""


@contextlib.contextmanager
def step_lock(client: Any, ctx: Ctx, step: str, ttl: float = 3.0, wait: float = 120.0) -> Iterator[None]:
    """One copy of a step at a time: a duplicate delivery waits for the running copy instead of racing it.

    The lock is short-lived and kept alive while held, so a copy killed with its worker frees it within
    ``ttl`` for the redelivery (:func:`continuity.state.step_markers.held`).
    """
    try:
        with step_markers.held(client, ctx.service, ctx.epoch, step, ttl=ttl, wait=wait):
            yield
    except locks.LockTimeout as exc:
        raise StepFailed(f"another copy of {step} of {ctx.service} epoch {ctx.epoch} ran for {wait:.0f}s") from exc


def _refuse_if_closed(client: Any, ctx: Ctx, step: str) -> None:
    """A superseded (or otherwise closed) failover is terminal for its (service, epoch): a step still queued, resent
    by the watchdog or redelivered after the close must not fence, promote or repoint anything."""
    if failover_records.is_closed(client, ctx.record_id):
        raise RecordClosed(f"{step} of {ctx.service} epoch {ctx.epoch}: failover {ctx.record_id} is already closed")


def run_step(client: Any, ctx: Ctx, step: str, node: str | None, effect: Callable[[], dict[str, Any]],
             now: Callable[[], float] = time.time, self_marking: bool = False) -> dict[str, Any]:
    """Run ``effect`` once per (service, epoch, step), recording start/end in the failover record."""
    rid, attempt = ctx.record_id, ctx.attempt
    _refuse_if_closed(client, ctx, step)
    records.step_started(client, rid, attempt, step, node, now(), epoch=ctx.epoch)
    with step_lock(client, ctx, step):
        done = step_markers.done(client, ctx.service, ctx.epoch, step)
        if done is not None:
            return {"skipped": "already done for this epoch", **done}
        _refuse_if_closed(client, ctx, step)  # closed while we waited for a running copy
        if step_markers.failed(client, ctx.service, ctx.epoch, step):
            raise AlreadyHandled(f"{step} of {ctx.service} epoch {ctx.epoch} already failed and was handled")
        try:
            detail = effect()
        except NotYet:
            raise
        except Superseded as exc:
            records.step_finished(client, rid, attempt, step, False, now(), {"error": str(exc)},
                                  service=ctx.service, epoch=ctx.epoch)
            raise
        except Exception as exc:
            step_markers.mark_failed(client, ctx.service, ctx.epoch, step, str(exc))
            records.step_finished(client, rid, attempt, step, False, now(), {"error": str(exc)[:500]},
                                  service=ctx.service, epoch=ctx.epoch)
            if isinstance(exc, StepFailed):
                raise
            raise StepFailed(f"{step} on {node}: {exc}") from exc
        if not self_marking:
            step_markers.mark_done(client, ctx.service, ctx.epoch, step, detail)
    records.step_finished(client, rid, attempt, step, True, now(), detail, service=ctx.service,
                          epoch=ctx.epoch)
    return detail


# --- demote (switchover only: on the old primary's own queue) ---------------------------------------------------
def demote(client: Any, bp: Blueprint, ctx: Ctx) -> dict[str, Any]:
    """Stop acting as primary *before* anyone else starts: stop hook, then give the lease back."""
    service, node = ctx.service, ctx.old_primary
    result = hooks.run_service_hook(bp, service, node, "demote", ctx.expected_epoch)
    if result is not None and not result.ok:
        raise StepFailed(f"demote hook on {node} exited {result.returncode}: {result.output.strip()[-300:]}")
    lease = leases.read(client, service)
    released = False
    if lease is not None and lease.node == node:
        released = bool(leases.release(client, service, node, lease.epoch))
    records.pulse_for(client).emit(FAILOVER_DEMOTED, node=node, service=service,
                                   epoch=ctx.expected_epoch,
                                   data={"record": ctx.record_id, "released": released, "how": "switchover"})
    return {"node": node, "released": released, "hook_rc": None if result is None else result.returncode}


# --- fence (control) -----------------------------------------------------------------------------------------------
def fence(client: Any, bp: Blueprint, ctx: Ctx, now: float) -> dict[str, Any]:
    """Wait out the old lease (+ margin), then move the epoch forward; stale writers are refused from here on."""
    service, candidate = ctx.service, ctx.candidate
    if step_markers.done(client, service, ctx.epoch, "fence") is None:
        lease = leases.read(client, service)
        if lease is not None and lease.node != candidate:
            if lease.node != ctx.old_primary:
                raise Superseded(f"{service}: {lease.node} holds the role now (epoch {lease.epoch})")
            give_up = float(ctx.not_before or now) + 2 * bp.policy.lease_ttl + bp.policy.lease_margin
            if now > give_up:
                raise Superseded(f"{service}: {lease.node} keeps renewing its lease, so it is alive;"
                                 " failover abandoned")
            raise NotYet(f"{service}: {lease.node} still holds the lease for {lease.ttl:.1f}s",
                         wait=float(lease.ttl) + bp.policy.lease_margin)
        not_before = float(ctx.not_before or 0)
        if now < not_before:
            raise NotYet(f"{service}: waiting {not_before - now:.1f}s (lease margin)", wait=not_before - now)
    if ctx.expected_epoch is None:
        raise StepFailed(f"{service}: the chain context has no expected epoch to fence from")
    try:
        new = epochs.bump_epoch(client, service, ctx.expected_epoch, marker=marker(ctx, "fence"),
                                 candidate=candidate)
    except epochs.StaleEpoch as exc:
        raise Superseded(str(exc)) from None
    except epochs.LeaseHeld:  # the holder renewed between our read and the bump: look again shortly
        raise NotYet(f"{service}: the lease was taken again just now", wait=bp.policy.lease_margin) from None
    except Unconfirmed as exc:  # on the master, not yet on its replicas: retried (the bump is idempotent)
        raise NotYet(str(exc), wait=bp.policy.lease_margin) from None
    records.pulse_for(client).emit(FAILOVER_FENCED, service=service, epoch=new,
                                   data={"record": ctx.record_id, "from_epoch": ctx.expected_epoch,
                                         "old_primary": ctx.old_primary})
    return {"epoch": new}


# --- prepare (candidate) -------------------------------------------------------------------------------------------
def _data_files(d: Path) -> dict[str, os.stat_result]:
    if not d.is_dir():
        return {}
    return {p.name: p.stat() for p in d.iterdir() if p.is_file() and p.name not in RUNTIME_FILES
            and not p.name.endswith(".tmp")}


def _ledger_source(bp: Blueprint, service: str) -> str | None:
    """The name of the service's (first) ledger source: what record positions and the committed position count."""
    return next((Path(ds.path).name for ds in bp.services[service].spec.data if ds.kind == "ledger"), None)


def _last_line(data: bytes) -> dict[str, Any] | None:
    end = data.rfind(b"\n")
    if end < 0:
        return None
    line = data[data.rfind(b"\n", 0, end) + 1:end]
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None


def _data_state(bp: Blueprint, service: str, d: Path) -> DataState | None:
    """Freshness of the candidate's own copy of ``service``'s data: its ledger's record count, last seq and the
    time of its newest record (else the newest file's mtime). None when there is no data there. Only ever
    called on the candidate's own directory."""
    try:
        files = _data_files(d)
        if not files:
            return None
        name = _ledger_source(bp, service)
        if name is None or name not in files:
            return DataState(None, max(st.st_mtime for st in files.values()))
        data = (d / name).read_bytes()
        rec = _last_line(data)
        seq = rec.get("seq") if rec else None
        ts = rec.get("ts") if rec else None
        return DataState(seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
                         float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool)
                         else files[name].st_mtime, data.count(b"\n"))
    except OSError:
        return None


def _verified_snapshot(client: Any, service: str) -> tuple[Any, str, SnapshotInfo] | None:
    """(backup config, set, snapshot info) of the latest verified snapshot of ``service``'s live data, or None.

    ``last_verified`` is written by the verify task only after a restore drill passed, so what prepare
    restores has already been restored once and proven.
    """
    cfg_path = paths.backup_config_path()
    if not cfg_path.exists():
        return None
    cfg = api.load_fleet_backup_config(cfg_path, root=paths.root())
    set_name = api.service_set_for(cfg, service)
    if set_name is None:
        return None
    verified = backups.field(client, set_name, "last_verified")
    if not verified:
        return None
    return cfg, set_name, api.snapshot_info(set_name, cfg, "latest-verified", verified=verified)


def _committed(client: Any, service: str, source: str | None) -> replication_state.Committed | None:
    if source is None:
        return None
    try:
        return replication_state.read_committed(client, [service]).get(service, {}).get(source)
    except Exception:  # noqa: BLE001 - unreadable: the failover goes on, and cannot say what it lost
        return None


def _synced(client: Any, service: str, source: str | None, holder: str | None,
            committed: replication_state.Committed | None) -> float | None:
    """When ``holder``'s copy last held everything the primary of the committed position had written (what it
    published as a standby of that very primary and epoch), else None."""
    if source is None or holder is None or committed is None:
        return None
    try:
        found = replication_state.read_applied(client, [service]).get(service, [])
    except Exception:  # noqa: BLE001 - a measurement only: without it the window starts at the newest record
        return None
    return next((a.synced for a in found if a.node == holder and a.source == source
                 and a.primary == committed.node and a.epoch == committed.epoch), None)


def prepare(client: Any, bp: Blueprint, ctx: Ctx, now: Callable[[], float] = time.time) -> dict[str, Any]:
    """Bring the candidate's copy up to what survives before it starts serving (issue 10 item 6).

    The choice is :func:`continuity.failover.prepare.decide`'s, among what this node can reach without
    touching another node's disk: its own replica; the freshest reachable standby's copy, fetched over the
    replication protocol and checked record by record against the hash chain
    (:mod:`continuity.replication.catchup`); the latest verified snapshot through the backup engine (staged,
    proven, swapped in). The old primary is asked (over the network, like a standby) only in a switchover:
    in a failover it is dead, cut off, or being replaced.
    ``$CONTINUITY_FAILOVER_PREPARE=backup`` goes to the snapshot when it is fresher than the own copy.

    The detail names the source (``replica``, ``standby`` with the node, ``snapshot`` with its id and age),
    the position the new epoch starts from, the role's committed position, and the measured loss against it
    (records and seconds). The committed position is then re-based at the new epoch to where it starts, so
    the new primary is not behind it, and what was lost is said once, here.
    """
    service, node, old = ctx.service, ctx.candidate, ctx.old_primary
    dest = service_dir(node, service)
    dest.mkdir(parents=True, exist_ok=True)
    force = ctx.prepare or settings.FAILOVER_PREPARE.get()
    source = _ledger_source(bp, service)
    committed = _committed(client, service, source)
    committed_state = (DataState(committed.last_seq, committed.at, committed.count) if committed is not None
                       else None)
    local = _data_state(bp, service, dest)
    out: dict[str, Any] = {}
    offers: list[catchup.Offer] = []
    standbys: dict[str, DataState] = {}
    copy: LedgerLog | None = None
    found = None
    try:
        if source is not None and needs_more(local, committed_state) and (force or "").strip().lower() != "backup":
            # the old primary only in a switchover: it demoted itself and is alive by construction; in a failover it
            # is dead, cut off or being replaced, and asking it would only cost the connect timeout
            nodes = [n for n in (bp.services[service].primary, *bp.services[service].standbys)
                     if n != node and (n != old or ctx.kind == "switchover")]
            if nodes:
                copy = LedgerLog(dest / source, writable=True).open()
                offers, unreachable = catchup.survey(catchup.context(bp, node, client), service, source, copy,
                                                     nodes)
                standbys = {o.node: DataState(None, None, o.head.count) for o in offers}
                if unreachable:
                    out["unreachable"] = unreachable
        backup = None
        if needs_more(local, committed_state, force):
            try:
                found = _verified_snapshot(client, service)
            except ContinuityError as exc:  # a broken backup config or repository must not block the failover
                out["note"] = f"backup unavailable: {exc}"
            if found is not None:
                info = found[2]
                backup = DataState(info.ledger_last_seq, info.snapshot_ts, info.ledger_records)
        decision = decide(local, standbys, backup, committed_state, force)
        out.update({"source": decision.source, "reason": decision.reason})
        if decision.source == "standby":
            offer = next(o for o in offers if o.node == decision.node)
            assert copy is not None
            try:
                fetched = catchup.fetch(offer, copy, dest / ".replica" / "diverged")
                out.update({"mode": "fetch", "from": offer.node, "fetch": fetched.as_dict()})
            except (WireError, LedgerError, OSError) as exc:  # what arrived is kept (each frame was checked)
                out.update({"mode": "fetch", "from": offer.node, "note": f"fetch from {offer.node} broke: {exc}"})
    finally:
        for o in offers:
            o.close()
        if copy is not None:
            copy.close()
    if decision.source == "snapshot":
        assert found is not None
        cfg, set_name, info = found
        res = api.restore_service_data(set_name, cfg, dest, snapshot=info.snapshot)
        at = now()
        age = round(at - res.snapshot_ts, 3) if res.snapshot_ts is not None else None
        out.update({"mode": "restore", "set": set_name, "snapshot": res.snapshot,
                    "snapshot_time": res.snapshot_time, "snapshot_node": res.source_node,
                    "rpo_achieved": age, "files": res.files, "bytes": res.bytes,
                    "ledger_records": res.ledger_records, "restore_seconds": res.duration})
    elif decision.source == "replica":
        out["mode"] = "local"
    if not old or old == node:
        out["reason"] = "no previous primary"
    start = _data_state(bp, service, dest)
    out["ledger_last_seq"] = start.last_seq if start else None
    out["starts_from"] = {"records": start.count if start else 0, "last_seq": start.last_seq if start else None}
    held_by = node if decision.source == "replica" else out.get("from") if decision.source == "standby" else None
    records_lost, seconds_lost = loss(start, committed_state, _synced(client, service, source, held_by, committed))
    out.update({"committed": None if committed is None else {
                    "epoch": committed.epoch, "records": committed.count, "last_seq": committed.last_seq,
                    "node": committed.node},
                "loss_records": records_lost, "loss_seconds": seconds_lost})
    if source is not None and ctx.epoch:
        _rebase(client, service, source, node, ctx.epoch, dest / source, start, now())
    return out


def _rebase(client: Any, service: str, source: str, node: str, epoch: int, path: Path, start: DataState | None,
            at: float) -> None:
    """The committed position travels with the epoch: the new epoch starts from what the candidate holds."""
    count = (start.count or 0) if start is not None else 0
    try:
        size = path.stat().st_size if count else 0
        replication_state.advance_committed(client, replication_state.Committed(
            service, source, int(epoch), count, size, start.last_seq if start else None,
            start.time if start else None, node, at, how="rebased"))
    except Exception as exc:  # noqa: BLE001 - the new primary's replicator raises it at the new epoch anyway
        log.warning("%s: committed position not re-based at epoch %s: %s", service, epoch, exc)


# --- promote (candidate) -------------------------------------------------------------------------------------------
def promote(client: Any, bp: Blueprint, ctx: Ctx, hook_timeout: float = 30.0) -> dict[str, Any]:
    """Claim the role (lease with the new epoch), then start the service with that epoch."""
    service, node, epoch = ctx.service, ctx.candidate, ctx.epoch
    try:
        # the epoch must be on the replicas before anyone acts on it (a redelivered fence skips its own wait)
        epochs.confirm_epoch(client, service, epoch)
    except epochs.StaleEpoch:
        raise Superseded(f"{service}: epoch is no longer {epoch}") from None
    except Unconfirmed as exc:
        raise NotYet(str(exc), wait=bp.policy.lease_margin) from None
    lease = leases.read(client, service)
    if lease is None or lease.node != node or int(lease.epoch) != epoch:
        if not leases.acquire(client, service, node, epoch, bp.policy.lease_ttl):
            holder = leases.read(client, service)
            raise StepFailed(f"could not acquire the lease of {service} on {node}"
                             f" (held by {getattr(holder, 'node', None)})")
    records.pulse_for(client).emit(FAILOVER_PROMOTED, node=node, service=service, epoch=epoch,
                                   data={"record": ctx.record_id, "lease_ttl": bp.policy.lease_ttl})
    result = hooks.run_service_hook(bp, service, node, "start", epoch, timeout=hook_timeout)
    if result is not None and not result.ok:
        raise StepFailed(f"start hook on {node} exited {result.returncode}: {result.output.strip()[-300:]}")
    return {"node": node, "epoch": epoch, "hook_rc": None if result is None else result.returncode,
            "hook_seconds": None if result is None else round(result.duration, 3)}


def undo_promote(client: Any, bp: Blueprint, ctx: Ctx, *, local: bool = True) -> None:
    """Best effort after a failed attempt: stop what we started and give the lease back (the epoch fences it anyway).

    Not ``local`` (the watchdog of another node gave the attempt up) the stop hook is not ours to run, but the
    lease is still given back: otherwise a slow candidate's agent keeps renewing a role the chain has given up.
    """
    service, node = ctx.service, ctx.candidate
    if local:
        try:
            hooks.run_service_hook(bp, service, node, "stop", ctx.epoch, timeout=15)
        except Exception:  # noqa: BLE001 - cleanup must never mask the failure being handled
            pass
    try:
        lease = leases.read(client, service)
        # the lease may have lapsed during a slow failing start: then its holder record still names the
        # candidate, and its agent would take the role back by itself after the chain gave it up
        leases.release(client, service, node, lease.epoch if lease is not None and lease.node == node
                       else ctx.epoch)
    except Exception:  # noqa: BLE001 - the lease lapses on its own; the epoch fences the candidate anyway
        pass


# --- repoint (control) ---------------------------------------------------------------------------------------------
def publish_route(client: Any, bp: Blueprint, service: str, node: str, epoch: int, now: float,
                  record_id: str | None = None) -> dict[str, Any] | None:
    """Route key (compare-and-set: never back to an older epoch) + pub/sub message + routes file.

    Returns the route, or None when the key already points at a newer epoch.
    Also what the node agent calls after bootstrapping a service's first epoch.
    """
    route = routes.Route(service=service, node=node, epoch=int(epoch), url=hooks.base_url(bp, service, node),
                         updated=now, record=record_id)
    if not routes.publish(client, route):
        return None
    doc = route.as_dict()
    write_routes_file({service: doc})
    return doc


def repoint(client: Any, bp: Blueprint, ctx: Ctx, now: float) -> dict[str, Any]:
    """Point clients at the new primary."""
    route = publish_route(client, bp, ctx.service, ctx.candidate, ctx.epoch, now, ctx.record_id)
    if route is None:
        raise Superseded(f"{ctx.service}: the route already points at a newer epoch")
    return {"route": route}


def write_routes_file(updates: dict[str, dict[str, Any]], path: Path | None = None) -> dict[str, Any]:
    """Merge routes into the routes file atomically (lock, temp file, fsync, rename); older epochs never win."""
    path = path or routes_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(str(path) + ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        doc = read_routes_file(path)
        services = doc.setdefault("services", {})
        for svc, route in updates.items():
            cur = services.get(svc)
            if cur and int(cur.get("epoch", 0)) > int(route.get("epoch", 0)):
                continue
            services[svc] = route
        doc["updated"] = time.time()
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, sort_keys=True, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        livecopy.fsync_dir(path.parent)
        return doc
    finally:
        fcntl.flock(lock_fd, fcntl.LOCK_UN)
        os.close(lock_fd)


def read_routes_file(path: Path | None = None) -> dict[str, Any]:
    path = path or routes_file()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


# --- verify (candidate) --------------------------------------------------------------------------------------------
def verify(client: Any, bp: Blueprint, ctx: Ctx, timeout: float = 10.0) -> dict[str, Any]:
    """Probe the new primary until it answers healthy *with the new epoch*, or fail at the deadline.

    A verified primary also ends a ``service-failed`` episode: the marker an old primary left when it
    gave the service up is cleared here (only if older than this epoch), so the sweep stops acting on it.
    """
    out = _verify(bp, ctx, timeout)
    if leases.clear_failed(client, ctx.service, ctx.epoch):
        out["service_failed_cleared"] = True
    return out


def _verify(bp: Blueprint, ctx: Ctx, timeout: float) -> dict[str, Any]:
    service, node, epoch = ctx.service, ctx.candidate, ctx.epoch
    probe = bp.services[service].spec.probe
    if probe is None:
        return {"probe": None, "note": "no probe declared; promotion is the last evidence"}
    deadline = time.monotonic() + timeout
    last = "no answer"
    tries = 0
    while time.monotonic() < deadline:
        tries += 1
        ok, last = _probe_once(bp, service, node, epoch, probe.timeout)
        if ok:
            return {"probe": probe.kind, "tries": tries, "answer": last}
        time.sleep(0.05)
    raise StepFailed(f"{service} on {node} not healthy with epoch {epoch} after {timeout:.0f}s: {last}")


def _probe_once(bp: Blueprint, service: str, node: str, epoch: int, timeout: float) -> tuple[bool, str]:
    probe = bp.services[service].spec.probe
    assert probe is not None
    if probe.kind == "http":
        url = hooks.probe_url(bp, service, node, epoch)
        assert url is not None
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own http probe
                body = resp.read(65536).decode(errors="replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return False, f"{url}: {exc}"
        try:
            doc = json.loads(body)
        except ValueError:
            return True, body[:200]
        if isinstance(doc, dict) and doc.get("epoch") is not None and int(doc["epoch"]) != epoch:
            return False, f"answers with epoch {doc['epoch']}, expected {epoch}"
        return True, body[:200]
    res = probe_service(bp, service, node, epoch)
    return res.healthy, res.detail


# --- record (control) ----------------------------------------------------------------------------------------------
def record(client: Any, bp: Blueprint, ctx: Ctx, now: float) -> dict[str, Any]:
    """The record step's own effect: clear this service's failover incident (a human no longer needs to act).

    Closing the record (:func:`close_record`) happens after this step's timing is written, so a reader that
    sees the outcome also sees every step's duration.
    """
    return {"incident_closed": records.close_incident(client, ctx.service)}


def close_record(client: Any, ctx: Ctx, now: float) -> bool:
    """Mark the record succeeded (once; a redelivered record step changes nothing)."""
    return records.finish(client, ctx.record_id, "succeeded", now,
                          {"node": ctx.candidate, "epoch": ctx.epoch, "attempt": ctx.attempt},
                          service=ctx.service, epoch=ctx.epoch)
