"""Python entry points for the Celery tasks (``workers/backup.py``) and other callers.

Every function takes plain data, returns a JSON-serialisable dict, accepts an
optional ``progress(done, total)`` callback (for task state / Flower), and
never puts a key in its arguments or result: passwords are resolved from the
set's key *reference* on the node that runs the task.

``run_backup_set(set_name, cfg, *, task_key=None, progress=None) -> dict``
    Snapshot one backup set. Idempotent per (set, task_key): a redelivered
    task returns the existing snapshot (``reused: true``). Result:
    ``{id, short_id, set, time, files, files_new, files_changed,
    files_unmodified, bytes_read, bytes_total, data_added, packs_added,
    duration, errors: [..], partial: bool, reused: bool}``.
``restore_drill_set(set_name, cfg, *, snapshot="latest", sandbox=None, progress=None) -> dict``
    Restore into a sandbox and prove it. Result: ``{snapshot, set,
    snapshot_time, source_node, ok, files, bytes, files_hashed, damaged: [..],
    hash_mismatches: [..], sqlite: [..], ledgers: [..], duration}``.
``verify_set(set_name, cfg, *, read_data_subset=None, progress=None) -> dict``
    Repository check (see :func:`continuity.backup.verify.check`).
``forget_set(set_name, cfg, *, now=None, prune=False, dry_run=False) -> dict``
    Apply the set's retention. Result: ``{keep: [..], remove: [..], prune: {..}|None}``.
``copy_set(set_name, cfg, *, progress=None) -> dict``
    Replicate to every target. Result: ``{targets: [{repository, copied, skipped,
    blobs_added, bytes_added} | {repository, error}], ok}``.

``restore_service_data(set_name, cfg, target_dir, *, snapshot="latest-verified", verified=None, progress=None)``
    Restore a service set's data into a node's service directory, atomically:
    restore into a temp directory beside it, prove it (hashes, SQLite
    ``integrity_check``, ledger counts), then swap. Result: ``{snapshot,
    snapshot_time, snapshot_ts, source_node, files, bytes, ledger_last_seq,
    ledger_records, target, duration}`` as a :class:`~continuity.backup.records.ServiceRestore`. A damaged
    snapshot raises
    :class:`RestoreRefused` naming the damage; the target is left untouched.
``snapshot_info(set_name, cfg, snapshot) -> SnapshotInfo``
    ``{snapshot, snapshot_time, snapshot_ts, source_node, ledger_last_seq, ledger_records}`` from the record alone
    (no data read).

A set with a ``kind: service`` source snapshots that service's live data on the
node passed as ``node=`` (the service's current primary, which the Celery shell
looks up): the core never asks Redis where a service runs.

``cfg`` is a :class:`continuity.backup.config.LoadedConfig`
(``load_fleet_backup_config("ops/backup/continuity.yml")`` checks node names
against the project's blueprint; ``load_backup_config`` alone checks none).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from continuity.backup import crypto
from continuity.backup.config import (
    BackupSet,
    LoadedConfig,
    load_backup_config,
    load_fleet_backup_config,
    read_password,
)
from continuity.backup.prune import forget, prune
from continuity.backup.records import ServiceRestore, SnapshotInfo
from continuity.backup.replicate import copy
from continuity.backup.repository import DamagedError, Repository
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage import open_backend
from continuity.backup.storage.local import fsync_dir
from continuity.backup.verify import check, restore_drill
from continuity.errors import ContinuityError, RepositoryMissing, UsageError
from continuity.services.layout import RUNTIME_FILES, service_dir  # import-light: where a service's files live

Progress = Callable[[int, int], None]

__all__ = ["RestoreRefused", "copy_set", "forget_set", "load_backup_config", "load_fleet_backup_config",
           "open_repository", "restore_drill_set", "restore_service_data", "run_backup_set", "service_set_for",
           "snapshot_info", "verify_set"]


class RestoreRefused(ContinuityError):
    """The snapshot did not prove intact in the staging directory: nothing was swapped in."""


def open_repository(url: str, password: bytes, *, create: bool = False,
                    params_from: Repository | None = None) -> Repository:
    """Open ``url``; with ``create`` (or ``params_from``) initialise it when missing.

    ``params_from`` shares that repository's content-ID key and chunker seed
    (never its data keys), so copies between the two move only missing blobs.
    """
    backend = open_backend(url)
    try:
        return Repository.open(backend, password)
    except RepositoryMissing:
        if not (create or params_from):
            raise
        ring = crypto.Keyring.new()
        if params_from is not None:
            ring.id_key = params_from.keyring.id_key
            ring.chunker_seed = params_from.keyring.chunker_seed
        return Repository.init(backend, password, keyring=ring)


def _set(cfg: LoadedConfig, name: str) -> BackupSet:
    try:
        return cfg.sets[name]
    except KeyError:
        raise UsageError(f"no backup set {name!r} in {cfg.file}") from None


def _repo(cfg: LoadedConfig, s: BackupSet, *, create: bool = False) -> Repository:
    return open_repository(cfg.resolve(s.repository), cfg.password(s.key), create=create)


def service_set_for(cfg: LoadedConfig, service: str) -> str | None:
    """The (first, by name) backup set protecting ``service``'s live data, or None."""
    for name, s in sorted(cfg.sets.items()):
        if service in s.services():
            return name
    return None


def resolve_sources(cfg: LoadedConfig, s: BackupSet, node: str | None) -> list[Source]:
    """The set's sources as paths; a service source becomes its data files in ``node``'s service directory.

    Each service file keeps its own name at the snapshot's top level (``ledger.jsonl``,
    ``ledger.db``), so a restore into a service directory needs no renaming.
    """
    out: list[Source] = []
    for src in s.sources:
        if src.kind != "service":
            out.append(Source(src.kind, cfg.resolve(src.path or ""), src.name))
            continue
        if node is None:
            raise UsageError(f"set protects service {src.service!r}: the snapshot needs the node it runs on")
        if cfg.service_data is None or src.service not in cfg.service_data:
            raise UsageError(f"service {src.service!r}: its data files are unknown (no blueprint declares it)")
        base = service_dir(node, src.service or "")
        out.extend(Source(kind, str(base / fname), fname) for kind, fname in cfg.service_data[src.service or ""])
    return out


def run_backup_set(set_name: str, cfg: LoadedConfig, *, task_key: str | None = None,
                   progress: Progress | None = None, create_repo: bool = True,
                   node: str | None = None) -> dict[str, Any]:
    """Snapshot a set; ``node`` is where a service set's service runs now (its primary)."""
    s = _set(cfg, set_name)
    repo = _repo(cfg, s, create=create_repo)
    sources = resolve_sources(cfg, s, node)
    summary = take_snapshot(repo, sources, set_name=set_name, node_name=node or s.node, tags=list(s.tags),
                            task_key=task_key, progress=progress)
    summary["partial"] = bool(summary.get("errors"))
    return summary


def restore_drill_set(set_name: str, cfg: LoadedConfig, *, snapshot: str = "latest", sandbox: str | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
    s = _set(cfg, set_name)
    repo = _repo(cfg, s)
    if snapshot == "latest":
        snaps = [x for x in repo.load_snapshots()[0] if x.get("set") == set_name]
        if not snaps:
            raise UsageError(f"set {set_name!r} has no snapshots yet")
        snapshot = snaps[-1]["id"]
    return restore_drill(repo, snapshot, sandbox, progress=progress)


def verify_set(set_name: str, cfg: LoadedConfig, *, read_data_subset: str | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    s = _set(cfg, set_name)
    subset = read_data_subset or (s.verify.read_data_subset if s.verify else None)
    return check(_repo(cfg, s), read_data=subset is not None, subset=subset, progress=progress)


def forget_set(set_name: str, cfg: LoadedConfig, *, now: datetime | None = None, prune_after: bool = False,
               dry_run: bool = False) -> dict[str, Any]:
    s = _set(cfg, set_name)
    repo = _repo(cfg, s)
    result = forget(repo, s.retention.policy(), now=now, set_name=set_name, dry_run=dry_run)
    result["prune"] = prune(repo, dry_run=dry_run) if prune_after else None
    return result


def copy_set(set_name: str, cfg: LoadedConfig, *, progress: Progress | None = None) -> dict[str, Any]:
    s = _set(cfg, set_name)
    src = _repo(cfg, s)
    out: list[dict[str, Any]] = []
    for target in s.replicate_to:
        url = cfg.resolve(target.repository)
        try:
            dst = open_repository(url, read_password(target.key or s.key, cfg.root), params_from=src)
            res = copy(src, dst, set_name=set_name, progress=progress)
            out.append({"repository": url, **res})
        except Exception as exc:  # one unreachable target must not stop the others
            out.append({"repository": url, "error": str(exc)})
    return {"set": set_name, "targets": out, "ok": all("error" not in t for t in out)}


def _pick(repo: Repository, set_name: str, snapshot: str, verified: str | None) -> dict[str, Any]:
    if snapshot == "latest-verified":
        if not verified:
            raise UsageError(f"set {set_name!r} has no verified snapshot yet (no restore drill has passed)")
        snapshot = verified
    if snapshot == "latest":
        snaps = [x for x in repo.load_snapshots()[0] if x.get("set") == set_name]
        if not snaps:
            raise UsageError(f"set {set_name!r} has no snapshots yet")
        snapshot = snaps[-1]["id"]
    return repo.find_snapshot(snapshot)


def snapshot_info(set_name: str, cfg: LoadedConfig, snapshot: str = "latest",
                  verified: str | None = None) -> SnapshotInfo:
    """What a snapshot holds, from its record: time and last ledger seq (what prepare compares freshness by)."""
    s = _set(cfg, set_name)
    return SnapshotInfo.of(_pick(_repo(cfg, s), set_name, snapshot, verified))


def recover_interrupted_swap(target: Path) -> bool:
    """A crash between the two renames of a swap leaves only ``.<name>.restore-old``: put it back."""
    old = target.parent / f".{target.name}.restore-old"
    if not target.exists() and old.is_dir():
        os.rename(old, target)
        return True
    if target.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return False


def restore_service_data(set_name: str, cfg: LoadedConfig, target_dir: str | Path, *,
                         snapshot: str = "latest-verified", verified: str | None = None,
                         progress: Progress | None = None) -> ServiceRestore:
    """Replace a service directory's data with a proven snapshot, all or nothing.

    Why staged: a failover candidate must never start on half a restore. The
    snapshot is restored into ``.<name>.restore-<pid>`` beside the target (same
    filesystem, so the swap is a rename), proven there by the restore-drill
    checks, and only then swapped in: target → ``.restore-old``, staging →
    target, old removed. Runtime files (pid, log) of the target are carried
    over; its other files are not (the snapshot *is* the data). A crash
    between the renames is undone by :func:`recover_interrupted_swap`, which
    runs first. ``verified`` is the id the verify task recorded (the shell
    reads it from Redis) and is what ``snapshot="latest-verified"`` means.
    """
    started = time.time()
    s = _set(cfg, set_name)
    target = Path(target_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_swap(target)
    repo = _repo(cfg, s)
    snap = _pick(repo, set_name, snapshot, verified)
    staging = target.parent / f".{target.name}.restore-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)  # leftover of an interrupted attempt by this pid
    try:
        try:
            drill = restore_drill(repo, snap["id"], str(staging), keep=True, progress=progress)
        except DamagedError as exc:  # a tree (directory listing) that cannot be read: nothing to prove
            raise RestoreRefused(f"snapshot {snap['id'][:8]} of {set_name} is damaged, {target} untouched: "
                                 f"{exc}") from None
        if not drill["ok"]:
            problems = [f"{d['path']}: {d['reason']}" for d in drill["damaged"] + drill["hash_mismatches"]]
            problems += [f"{c['name']}: integrity {c.get('integrity')}" for c in drill["sqlite"] if not c["ok"]]
            problems += [f"{c['name']}: {c['records']} records / last seq {c['last_seq']}, expected "
                         f"{c['expected_records']} / {c['expected_last_seq']}" for c in drill["ledgers"] if not c["ok"]]
            raise RestoreRefused(f"snapshot {snap['id'][:8]} of {set_name} failed its checks, {target} untouched: "
                                 + "; ".join(problems[:10]))
        if target.is_dir():
            for name in RUNTIME_FILES:
                if (target / name).exists() and not (staging / name).exists():
                    shutil.copy2(target / name, staging / name)
        for p in staging.iterdir():
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        fsync_dir(str(staging))
        old = target.parent / f".{target.name}.restore-old"
        if target.exists():
            os.rename(target, old)
        os.rename(staging, target)
        fsync_dir(str(target.parent))
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ServiceRestore(**SnapshotInfo.of(snap).as_dict(), files=int(drill["files"]), bytes=int(drill["bytes"]),
                          target=str(target), duration=round(time.time() - started, 3))
