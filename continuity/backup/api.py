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
    duration, errors: [..], warnings: [..], hooks: [..], partial: bool,
    reused: bool}``. The set's ``before``/``after`` hooks run around it
    (:mod:`continuity.backup.hooks`); a failing command source or an aborting
    ``before`` hook raises :class:`~continuity.backup.commands.CommandFailed`
    (exit 1) and no snapshot is recorded (an aborting ``after`` hook raises
    it too, with the snapshot saved).
``restore_drill_set(set_name, cfg, *, snapshot="latest", sandbox=None, progress=None) -> dict``
    Restore into a sandbox and prove it. Result: ``{snapshot, set,
    snapshot_time, source_node, ok, files, bytes, files_hashed, damaged: [..],
    hash_mismatches: [..], sqlite: [..], ledgers: [..], checks: [..],
    duration}``; ``checks`` are the command sources' declared checks, run on
    their restored files.
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

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from continuity import paths
from continuity.backup import crypto, excludes, hooks, logship
from continuity.backup.config import (
    DEFAULT_CHECK_TIMEOUT,
    DEFAULT_COMMAND_TIMEOUT,
    BackupSet,
    LoadedConfig,
    load_backup_config,
    load_fleet_backup_config,
    read_password,
)
from continuity.backup.prune import forget, prune
from continuity.backup.records import (
    PitrServiceRestore,
    ServiceRestore,
    SnapshotInfo,
    ledger_manifest,
    timestamp,
)
from continuity.backup.replicate import copy
from continuity.backup.repository import DamagedError, Repository
from continuity.backup.snapshot import Source, find_by_task_key, take_snapshot
from continuity.backup.storage import open_backend
from continuity.backup.storage.local import fsync_dir
from continuity.backup.throttle import REAL_CLOCK, Clock, Limits, PassClosing, throttled
from continuity.backup.verify import Check, check, restore_drill
from continuity.errors import ContinuityError, RepositoryMissing, UsageError
from continuity.services.layout import RUNTIME_FILES, service_dir  # import-light: where a service's files live

Progress = Callable[[int, int], None]

__all__ = ["RestoreRefused", "copy_set", "forget_set", "load_backup_config", "load_fleet_backup_config",
           "open_repository", "repository_bytes", "restore_drill_set", "restore_service_at",
           "restore_service_data", "run_backup_set",
           "service_set_for", "set_repository", "snapshot_info", "verify_set"]


class RestoreRefused(ContinuityError):
    """The snapshot did not prove intact in the staging directory: nothing was swapped in."""


def open_repository(url: str, password: bytes, *, create: bool = False,
                    params_from: Repository | None = None, limits: Limits = Limits(),
                    clock: Clock = REAL_CLOCK, deadline: float | None = None) -> Repository:
    """Open ``url``; with ``create`` (or ``params_from``) initialise it when missing.

    ``params_from`` shares that repository's content-ID key and chunker seed
    (never its data keys), so copies between the two move only missing blobs.
    ``limits`` and ``deadline`` hold every transfer to the repository (:mod:`continuity.backup.throttle`).
    """
    backend = throttled(open_backend(url), limits, clock=clock, deadline=deadline)
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
    return open_repository(cfg.resolve(s.repository), cfg.password(s.key), create=create,
                           limits=cfg.set_limits(s))


def set_repository(cfg: LoadedConfig, set_name: str) -> Repository:
    """The repository a set writes to, opened with the set's key reference."""
    return _repo(cfg, _set(cfg, set_name))


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
        if src.kind == "command":
            out.append(Source.command(src.name or "", src.command or [], cwd=str(cfg.root),
                                      timeout=src.timeout or DEFAULT_COMMAND_TIMEOUT))
            continue
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


# what a repository stores: packs, their indexes, the snapshot records and the shipped ledger log (keys and
# locks are a few bytes)
STORED = ("data", "index", "snapshots", logship.KIND)


def repository_bytes(repo: Repository) -> int:
    """Bytes the repository holds (one listing of its objects: sizes come with the listing, nothing is read)."""
    return sum(size for prefix in STORED for _name, size in repo.backend.list(prefix))


def run_backup_set(set_name: str, cfg: LoadedConfig, *, task_key: str | None = None,
                   progress: Progress | None = None, create_repo: bool = True,
                   node: str | None = None) -> dict[str, Any]:
    """Snapshot a set; ``node`` is where a service set's service runs now (its primary).

    The summary also says how big the repository is afterwards (``repository_bytes``): capacity is what an
    operator watches, and the listing is cheap next to the snapshot it follows."""
    s = _set(cfg, set_name)
    repo = _repo(cfg, s, create=create_repo)
    done = find_by_task_key(repo.load_snapshots()[0], set_name, task_key)
    if done is not None:  # a redelivered task: no hooks, no dump, the snapshot it already made
        return {**done.get("summary", {}), "id": done["id"], "reused": True, "partial": bool(
            (done.get("summary") or {}).get("errors"))}
    sources = resolve_sources(cfg, s, node)
    excluder = set_excluder(cfg, set_name, s)
    summary = hooks.around(set_name, s.before, s.after, str(cfg.root), lambda: take_snapshot(
        repo, sources, set_name=set_name, node_name=node or s.node, tags=list(s.tags), task_key=task_key,
        progress=progress, excluder=excluder))
    summary["partial"] = bool(summary.get("errors"))
    summary["repository_bytes"] = repository_bytes(repo)
    return summary


def set_excluder(cfg: LoadedConfig, set_name: str, s: BackupSet) -> excludes.Excluder | None:
    """The set's restic-style excludes; patterns in the config expand ``$VAR`` as an exclude file's do."""
    opts = excludes.ExcludeOptions(
        exclude=tuple(excludes.expand_env(p) for p in s.exclude),
        iexclude=tuple(excludes.expand_env(p) for p in s.iexclude),
        exclude_file=tuple(cfg.resolve(f) for f in s.exclude_file),
        iexclude_file=tuple(cfg.resolve(f) for f in s.iexclude_file),
        exclude_caches=s.exclude_caches, exclude_if_present=tuple(s.exclude_if_present),
        one_file_system=s.one_file_system)
    try:
        return excludes.build(opts)
    except excludes.BadPattern as exc:
        raise UsageError(f"{cfg.file}: sets.{set_name}: {exc}") from None


def drill_checks(s: BackupSet) -> dict[str, Check]:
    """What a restore drill runs on each command source's restored file (by its name in the snapshot)."""
    return {src.name: Check(tuple(src.check), src.check_timeout or DEFAULT_CHECK_TIMEOUT)
            for src in s.sources if src.kind == "command" and src.check and src.name}


def restore_drill_set(set_name: str, cfg: LoadedConfig, *, snapshot: str = "latest", sandbox: str | None = None,
                      progress: Progress | None = None) -> dict[str, Any]:
    s = _set(cfg, set_name)
    repo = _repo(cfg, s)
    if snapshot == "latest":
        snaps = [x for x in repo.load_snapshots()[0] if x.get("set") == set_name]
        if not snaps:
            raise UsageError(f"set {set_name!r} has no snapshots yet")
        snapshot = snaps[-1]["id"]
    result = restore_drill(repo, snapshot, sandbox, progress=progress, checks=drill_checks(s))
    if s.ship_log or logship.has_segments(repo):
        from continuity.backup.pitr import pitr_drill

        result["pitr"] = pitr_drill(repo, set_name)
        if result["pitr"] is not None and not result["pitr"]["ok"]:
            result["ok"] = False
    return result


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
    result["log_segments_removed"] = 0 if dry_run else forget_log(repo, set_name)
    result["prune"] = prune(repo, dry_run=dry_run) if prune_after else None
    result["repository_bytes"] = repository_bytes(repo)
    return result


def forget_log(repo: Repository, set_name: str) -> int:
    """Delete the set's shipped log segments its oldest kept snapshot covers (see :func:`logship.expired`).

    Runs after ``forget``, so "oldest kept" is what the policy kept; a set with no snapshot left keeps its log
    (it is then the only copy)."""
    snaps = [x for x in repo.load_snapshots()[0] if x.get("set") == set_name]
    if not snaps:
        return 0
    oldest = snaps[0]
    man = ledger_manifest(oldest)
    segs, _bad = logship.load_segments(repo, set_name)
    return logship.delete_segments(repo, logship.expired(segs, timestamp(oldest.get("time")), man.get("records")))


def copy_set(set_name: str, cfg: LoadedConfig, *, progress: Progress | None = None,
             deadline: float | None = None, pack_size: int | None = None,
             clock: Clock = REAL_CLOCK) -> dict[str, Any]:
    """Copy a set to its targets under its link's limits; with ``deadline`` (a pass's end less its margin)
    no object is started that could not arrive by then, and the result says what is still ``pending``."""
    s = _set(cfg, set_name)
    with _one_copy(set_name) as mine:
        if not mine:
            return {"set": set_name, "targets": [], "ok": True, "complete": False,
                    "skipped": "another copy of this set is running"}
        return _copy_targets(set_name, cfg, s, progress=progress, deadline=deadline, pack_size=pack_size,
                             clock=clock)


@contextlib.contextmanager
def _one_copy(set_name: str) -> Iterator[bool]:
    """True while this process is the set's only copy (an exclusive ``flock`` under the state directory).

    Two copies of one set at once would both send the blobs the destination lacks: a repeat fired while a
    long copy still runs, or a redelivered task beside the original. The second one steps aside instead."""
    d = paths.state_dir() / "backup-copy"
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f"{set_name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


def _copy_targets(set_name: str, cfg: LoadedConfig, s: BackupSet, *, progress: Progress | None,
                  deadline: float | None, pack_size: int | None, clock: Clock) -> dict[str, Any]:
    src = open_repository(cfg.resolve(s.repository), cfg.password(s.key))  # local: read at disk speed
    out: list[dict[str, Any]] = []
    for target in s.replicate_to:
        url = cfg.resolve(target.repository)
        try:
            dst = open_repository(url, read_password(target.key or s.key, cfg.root), params_from=src,
                                  limits=cfg.set_limits(s, target), clock=clock, deadline=deadline)
            res = copy(src, dst, set_name=set_name, progress=progress, pack_size=pack_size)
            out.append({"repository": url, **res})
        except PassClosing as exc:  # the pass ended before the target could even be opened
            out.append({"repository": url, "complete": False, "stopped": str(exc)})
        except Exception as exc:  # one unreachable target must not stop the others
            out.append({"repository": url, "error": str(exc)})
    return {"set": set_name, "targets": out, "ok": all("error" not in t for t in out),
            "complete": all(t.get("complete", True) and "error" not in t for t in out)}


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
                         progress: Progress | None = None,
                         finish: Callable[[Path], None] | None = None) -> ServiceRestore:
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
    ``finish`` runs on the proven staging directory before the swap (a
    point-in-time restore writes the recovered ledger there).
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
            drill = restore_drill(repo, snap["id"], str(staging), keep=True, progress=progress,
                                  checks=drill_checks(s))
        except DamagedError as exc:  # a tree (directory listing) that cannot be read: nothing to prove
            raise RestoreRefused(f"snapshot {snap['id'][:8]} of {set_name} is damaged, {target} untouched: "
                                 f"{exc}") from None
        if not drill["ok"]:
            problems = [f"{d['path']}: {d['reason']}" for d in drill["damaged"] + drill["hash_mismatches"]]
            problems += [f"{c['name']}: integrity {c.get('integrity')}" for c in drill["sqlite"] if not c["ok"]]
            problems += [f"{c['name']}: {c['reason']}" for c in drill["checks"] if not c["ok"]]
            problems += [f"{c['name']}: {c['records']} records / last seq {c['last_seq']}, expected "
                         f"{c['expected_records']} / {c['expected_last_seq']}" for c in drill["ledgers"] if not c["ok"]]
            raise RestoreRefused(f"snapshot {snap['id'][:8]} of {set_name} failed its checks, {target} untouched: "
                                 + "; ".join(problems[:10]))
        if finish is not None:
            finish(staging)
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


def restore_service_at(set_name: str, cfg: LoadedConfig, target_dir: str | Path, *, seq: int | None = None,
                       at: float | None = None, progress: Progress | None = None) -> PitrServiceRestore:
    """Replace a service directory's data with its state at ``seq`` / ``at`` (neither: the newest recoverable).

    The last-resort source of a failover's prepare when no copy of the ledger survives on a reachable node: the
    newest snapshot ending at or before the target (proven in a staging directory, as
    :func:`restore_service_data` does), then the shipped log up to exactly the target, written into the staging
    directory before the swap. Nothing is swapped in unless both hold. Raises
    :class:`continuity.backup.pitr.PitrUnavailable` when the repository cannot reach the target.
    """
    from continuity.backup.pitr import recover_ledger, write_ledger

    started = time.time()
    s = _set(cfg, set_name)
    repo = _repo(cfg, s)
    rec = recover_ledger(repo, set_name, seq=seq, at=at)
    base: ServiceRestore | None = None
    if rec.base_snapshot is not None:
        base = restore_service_data(set_name, cfg, target_dir, snapshot=rec.base_snapshot, progress=progress,
                                    finish=lambda staging: _write_recovered(write_ledger, rec, staging))
    else:  # the log alone reaches back to the first line: the ledger is all there is to restore
        target = Path(target_dir)
        recover_interrupted_swap(target)
        staging = target.parent / f".{target.name}.restore-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            _write_recovered(write_ledger, rec, staging)
            if target.is_dir():
                for name in RUNTIME_FILES:
                    if (target / name).exists():
                        shutil.copy2(target / name, staging / name)
            old = target.parent / f".{target.name}.restore-old"
            if target.exists():
                os.rename(target, old)
            os.rename(staging, target)
            fsync_dir(str(target.parent))
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return PitrServiceRestore(set_name=set_name, base=base, ledger=rec.source, base_snapshot=rec.base_snapshot,
                              base_records=rec.base_records, records=rec.records,
                              records_from_log=rec.records_from_log, segments=rec.segments, last_seq=rec.last_seq,
                              last_ts=rec.last_ts, newest_seq=rec.newest_seq, newest_ts=rec.newest_ts,
                              target=str(target_dir), duration=round(time.time() - started, 3))


def _write_recovered(write: Callable[..., int], rec: Any, staging: Path) -> None:
    # the base snapshot's other ledger lines are replaced whole; the SQLite file stays the base's (it never holds
    # a record past the base ledger's end, which is at or before the target; the service rebuilds rows from the
    # ledger)
    write(rec, staging / rec.source)
