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

``cfg`` is a :class:`continuity.backup.config.LoadedConfig`
(``load_fleet_backup_config("ops/backup/continuity.yml")`` checks node names
against the project's blueprint; ``load_backup_config`` alone checks none).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
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
from continuity.backup.replicate import copy
from continuity.backup.repository import Repository
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage import open_backend
from continuity.backup.verify import check, restore_drill
from continuity.errors import RepositoryMissing, UsageError

Progress = Callable[[int, int], None]

__all__ = ["copy_set", "forget_set", "load_backup_config", "load_fleet_backup_config", "open_repository",
           "restore_drill_set", "run_backup_set", "verify_set"]


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


def run_backup_set(set_name: str, cfg: LoadedConfig, *, task_key: str | None = None,
                   progress: Progress | None = None, create_repo: bool = True) -> dict[str, Any]:
    s = _set(cfg, set_name)
    repo = _repo(cfg, s, create=create_repo)
    sources = [Source(src.kind, cfg.resolve(src.path), src.name) for src in s.sources]
    summary = take_snapshot(repo, sources, set_name=set_name, node_name=s.node, tags=list(s.tags),
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
