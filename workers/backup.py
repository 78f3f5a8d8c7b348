"""Backup tasks: snapshot, restore-drill verify, forget and copy, each on the right node's queue.

Thin: each task resolves the set from ops/backup/continuity.yml, calls the
engine in ``continuity.backup.api``, reports percent to Flower, records the
outcome per set in Redis (last snapshot, last verified-restorable snapshot and
its age against the RPO) and in the pulse history. Keys never travel: the task
carries only the set name; the node resolves the set's key reference locally.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from celery.schedules import crontab

from continuity import paths, pulse
from continuity.backup import api, forwarding
from continuity.backup.config import LoadedConfig, load_backup_config, load_fleet_backup_config
from continuity.backup.records import timestamp
from continuity.backup.scheduling import PassCopy, backup_jobs, set_pass_copy
from continuity.blueprint import Blueprint
from continuity.errors import ContinuityError
from continuity.events import (
    BACKUP_COPY,
    BACKUP_COPY_FAILED,
    BACKUP_FORGET,
    BACKUP_FORGET_FAILED,
    BACKUP_SNAPSHOT,
    BACKUP_SNAPSHOT_FAILED,
    BACKUP_VERIFIED,
    BACKUP_VERIFY_FAILED,
)
from continuity.state import backups, routes
from workers.node import node_id
from workers.task import blueprint, continuity_task, progress_reporter, redis_client


def _progress(task: Any, step: str, set_name: str) -> Any:
    """The engine's ``progress(done, total)`` as Flower-visible progress, at most twice a second."""
    last = [0.0]
    report = progress_reporter(task)  # made here: the engine calls back from threads without a request

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.5 and done < total:
            return
        last[0] = now
        pct = round(100.0 * done / total, 1) if total else 0.0
        report(f"{step} {set_name}: {pct}% ({done} of {total} bytes)",
               {"set": set_name, "step": step, "done": done, "total": total, "percent": pct})

    return update


def copy_failure(res: dict[str, Any]) -> str | None:
    """Why a copy failed (the targets it could not reach and what they said), None when every target took it."""
    if res.get("ok", True):
        return None
    bad = [f"{t.get('repository')}: {t.get('error')}" for t in res.get("targets") or [] if "error" in t]
    return f"copy of set {res.get('set')} failed for {len(bad)} target(s): " + "; ".join(bad)


def verify_failure(res: dict[str, Any]) -> str | None:
    """Why a restore drill failed (what it found damaged), None when the restore checked out."""
    if res.get("ok", True):
        return None
    found = {k: len(res.get(k) or []) for k in ("damaged", "hash_mismatches")}
    bad = [c for c in [*(res.get("sqlite") or []), *(res.get("ledgers") or [])] if not c.get("ok", True)]
    checks = [f"{c.get('name')}: {c.get('reason')}" for c in res.get("checks") or [] if not c.get("ok", True)]
    pitr = res.get("pitr") or {}
    return (f"restore drill of set {res.get('set')} snapshot {str(res.get('snapshot'))[:8]} failed: "
            f"{found['damaged']} damaged file(s), {found['hash_mismatches']} hash mismatch(es), "
            f"{len(bad)} database/ledger check(s) failed"
            + (f", command check(s) failed: {'; '.join(checks)}" if checks else "")
            + (f", point-in-time check failed: {pitr.get('reason')}" if pitr and not pitr.get("ok", True) else ""))


def _record(client: Any, set_name: str, fields: dict[str, Any]) -> None:
    backups.record(client, set_name, fields)


def _config() -> LoadedConfig:
    """The backup sets, with node names checked against the fleet blueprint (a typo never reaches a queue)."""
    return load_fleet_backup_config(paths.backup_config_path(), root=paths.root())


# the pulse event of each task's failure, by the task's step name
FAILED = {"snapshot": BACKUP_SNAPSHOT_FAILED, "verify": BACKUP_VERIFY_FAILED, "forget": BACKUP_FORGET_FAILED,
          "copy": BACKUP_COPY_FAILED}


def _run(client: Any, kind: str, set_name: str, fn: Any) -> dict[str, Any]:
    started = time.time()
    try:
        result = fn()
    except ContinuityError as exc:
        pulse.emit(FAILED[kind], node=node_id(), data={"set": set_name, "error": str(exc),
                                                       "exit_code": int(exc.exit_code)})
        _record(client, set_name, {f"last_{kind}_error": str(exc), f"last_{kind}_error_time": time.time()})
        raise
    result["task_duration"] = round(time.time() - started, 3)
    return result


def _primary(client: Any, bp: Blueprint, service: str) -> str | None:
    return forwarding.primary_node(routes.read_primary(client, bp, service))


def service_primary(service: str) -> str | None:
    """Where ``service`` runs now, by the fleet's one rule; None when it was never placed (nothing to snapshot)."""
    return _primary(redis_client(), blueprint(), service)


def _site(client: Any, set_name: str, services: list[str], hops: int) -> forwarding.Here | forwarding.Forward:
    """Snapshot here or forward (:func:`continuity.backup.forwarding.snapshot_site`); the blueprint is read only
    for a set that protects a service (a plain set also works where no blueprint exists)."""
    primary = _primary(client, blueprint(), services[0]) if services else None
    return forwarding.snapshot_site(set_name, services, primary, node_id(), hops)


@continuity_task("continuity.backup.snapshot", bind=True, time_limit=3600, soft_time_limit=3500)
def snapshot(self: Any, set_name: str, hops: int = 0, *, client: Any) -> dict[str, Any]:
    """Snapshot one set; keyed by task id so a redelivered message reuses the snapshot it already made.

    A set protecting a service's live data runs on that service's current primary: beat sends it to the
    set's home node, which forwards it (once or twice: the primary may move meanwhile) to the primary's queue.
    """
    cfg = _config()
    s = cfg.sets.get(set_name)
    site = _site(client, set_name, s.services() if s is not None else [], hops)
    if isinstance(site, forwarding.Forward):
        queue = blueprint().queue(site.node)
        fwd = snapshot.apply_async(args=[set_name], kwargs={"hops": site.hops}, queue=queue, routing_key=queue,
                                   expires=forwarding.FORWARD_EXPIRES)
        return {"set": set_name, "forwarded_to": site.node, "task": fwd.id}
    res = _run(client, "snapshot", set_name, lambda: api.run_backup_set(
        set_name, cfg, task_key=self.request.id, progress=_progress(self, "snapshot", set_name), node=site.node))
    _record(client, set_name, {"last_snapshot": res.get("id"), "last_snapshot_time": time.time(),
                               "last_snapshot_files": res.get("files"), "last_snapshot_bytes": res.get("bytes_total"),
                               "last_snapshot_partial": int(bool(res.get("partial"))), "node": node_id(),
                               "last_snapshot_duration": res.get("duration"),
                               "repository_bytes": res.get("repository_bytes")})
    pulse.emit(BACKUP_SNAPSHOT, node=node_id(), data={"set": set_name, **{k: res.get(k) for k in (
        "id", "files", "bytes_total", "data_added", "duration", "partial", "reused")}})
    return res


def verified_status(res: dict[str, Any], rpo: float | None, node: str | None, now: float) -> dict[str, Any]:
    """The status fields a restore drill's result writes for its set (age of the verified snapshot vs the RPO)."""
    snap_ts = timestamp(res.get("snapshot_time"))
    fields: dict[str, Any] = {"last_verify_time": now, "last_verify_ok": int(bool(res.get("ok"))),
                              "last_verify_node": node, "last_verify_duration": res.get("duration")}
    if res.get("ok"):
        fields.update({"last_verified": res.get("snapshot"), "last_verified_snapshot_time": snap_ts,
                       "last_verified_time": now})
        if snap_ts is not None:
            fields["verified_age"] = round(now - snap_ts, 3)
            if rpo:
                fields["rpo"] = rpo
                fields["within_rpo"] = int(now - snap_ts <= rpo)
    return fields


@continuity_task("continuity.backup.verify", bind=True, time_limit=3600, soft_time_limit=3500,
                 failed_when=verify_failure)
def verify(self: Any, set_name: str, snapshot: str = "latest", *, client: Any) -> dict[str, Any]:
    """A restore drill on this node (never the source node): restore into a sandbox and check everything."""
    cfg = _config()
    s = cfg.sets.get(set_name)
    if s is not None and s.node == node_id():
        raise ContinuityError(f"restore drill for {set_name} must not run on its source node {s.node}")
    res = _run(client, "verify", set_name, lambda: api.restore_drill_set(
        set_name, cfg, snapshot=snapshot, progress=_progress(self, "verify", set_name)))
    _record(client, set_name, verified_status(res, s.rpo if s is not None else None, node_id(), time.time()))
    pulse.emit(BACKUP_VERIFIED if res.get("ok") else BACKUP_VERIFY_FAILED, node=node_id(),
               data={"set": set_name, "snapshot": res.get("snapshot"), "ok": res.get("ok"),
                     "files": res.get("files"), "damaged": res.get("damaged"),
                     "hash_mismatches": res.get("hash_mismatches"), "duration": res.get("duration")})
    return res


@continuity_task("continuity.backup.forget", bind=True, time_limit=3600, soft_time_limit=3500)
def forget(self: Any, set_name: str, prune: bool = False, *, client: Any) -> dict[str, Any]:
    cfg = _config()
    res = _run(client, "forget", set_name, lambda: api.forget_set(set_name, cfg, prune_after=prune))
    _record(client, set_name, {"repository_bytes": res.get("repository_bytes")})
    pulse.emit(BACKUP_FORGET, node=node_id(), data={"set": set_name, "removed": len(res.get("remove", []))})
    return res


@continuity_task("continuity.backup.copy", bind=True, time_limit=3600, soft_time_limit=3500,
                 failed_when=copy_failure)
def copy(self: Any, set_name: str, pass_start: float | None = None, pass_end: float | None = None, *,
         client: Any) -> dict[str, Any]:
    """Replicate to the set's targets. A satellite's copy is sent by beat when its pass starts (``pass_end``
    given): it stops starting objects ``pass_margin`` before the pass ends, and the next pass resumes."""
    cfg = _config()
    plan = set_pass_copy(cfg, set_name, pass_end, time.time()) if pass_end is not None else PassCopy(None, None)
    if plan is None:
        return {"set": set_name, "ok": True, "complete": False, "skipped": "the pass is over"}
    res = _run(client, "copy", set_name, lambda: api.copy_set(
        set_name, cfg, progress=_progress(self, "copy", set_name), deadline=plan.deadline, pack_size=plan.pack_size))
    _record(client, set_name, {"last_copy_time": time.time(), "last_copy_ok": int(bool(res.get("ok"))),
                               "last_copy_complete": int(bool(res.get("complete", True)))})
    pulse.emit(BACKUP_COPY, node=node_id(), data={"set": set_name, "ok": res.get("ok"),
                                                    "targets": res.get("targets")})
    return res


def beat_entries(bp: Blueprint) -> dict[str, dict[str, Any]]:
    """Backup jobs from ops/backup/continuity.yml, each on its node's queue with ``expires``.

    No config file means no backups are configured; a broken one raises (exit 2 from
    `continuity beat`) rather than silently scheduling nothing.
    """
    cfg_path = paths.backup_config_path()
    if not cfg_path.exists():
        return {}
    cfg = load_backup_config(cfg_path, root=paths.root(), blueprint_nodes=bp.nodes, blueprint_file=bp.source,
                             blueprint_services=bp.services)
    out: dict[str, dict[str, Any]] = {}
    for job in backup_jobs(bp, cfg):
        if job.node not in bp.nodes:
            continue
        schedule: Any
        if job.every is not None:
            schedule = timedelta(seconds=job.every)
            expires = job.every
        else:
            minute, hour, dom, month, dow = job.cron.split()  # type: ignore[union-attr]
            schedule = crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)
            expires = 3600.0
        opts: dict[str, Any] = {"queue": bp.queue(job.node), "routing_key": bp.queue(job.node),
                                "expires": expires}
        headers: dict[str, Any] = {}
        if job.tier is not None:
            headers["continuity_tier"] = job.tier
        if job.pass_node is not None:  # beat sends it when the node's pass starts (workers/beat.py)
            headers.update({"continuity_pass_node": job.pass_node, "continuity_pass_margin": job.pass_margin,
                            "continuity_pass_every": job.pass_every})
        if headers:
            opts["headers"] = headers
        out[job.name] = {"task": job.task, "schedule": schedule, "args": [job.set_name], "kwargs": job.kwargs,
                         "options": opts}
    return out
