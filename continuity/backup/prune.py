"""forget (drop snapshot records by policy) and prune (reclaim space), the only deleting operations.

Prune is the one operation that takes the exclusive lock. Its write order
mirrors a snapshot's: repacked packs first, then one new index covering
everything kept, then old index files are deleted, and packs last, so a
crash at any point leaves a repository where every remaining snapshot is
complete (at worst with duplicate or unreferenced data the next prune removes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from continuity.backup.locks import Lock
from continuity.backup.repository import TREE, DamagedError, PackWriter, Repository, pack_name
from continuity.backup.retention import Policy, Snap, apply_policy, group_key
from continuity.errors import ContinuityError

Progress = Callable[[int, int], None]


def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def forget(repo: Repository, policy: Policy, *, now: datetime | None = None, set_name: str | None = None,
           dry_run: bool = False) -> dict[str, Any]:
    """Remove snapshot records the policy does not keep (only within ``set_name`` when given)."""
    snaps, _bad = repo.load_snapshots()
    if set_name is not None:
        snaps = [s for s in snaps if s.get("set") == set_name]
    items = [Snap(s["id"], parse_time(s["time"]), group_key(s)) for s in snaps]
    keep, remove, reasons = apply_policy(items, policy, now or datetime.now(UTC))
    if not dry_run:
        repo.require_deletable("forget")
    if not dry_run and remove:
        with Lock(repo.backend, exclusive=False, operation="forget"):
            for s in remove:
                repo.backend.delete(f"snapshots/{s.id}")
    return {"keep": [{"id": s.id, "time": s.time.isoformat(), "group": s.group, "reasons": reasons[s.id]}
                     for s in keep],
            "remove": [{"id": s.id, "time": s.time.isoformat(), "group": s.group} for s in remove],
            "dry_run": dry_run}


def used_blobs(repo: Repository, snaps: list[dict[str, Any]]) -> set[bytes]:
    used: set[bytes] = set()
    seen: set[str] = set()
    stack = [s["tree"] for s in snaps]
    while stack:
        tid = stack.pop()
        if tid in seen:
            continue
        seen.add(tid)
        used.add(bytes.fromhex(tid))
        try:
            nodes = repo.load_tree(tid)
        except DamagedError as exc:
            raise ContinuityError(f"prune refused: {exc}; run `continuity backup verify` first") from None
        for n in nodes:
            if n.get("subtree"):
                stack.append(n["subtree"])
            for c in n.get("content") or ():
                used.add(bytes.fromhex(c))
    return used


def prune(repo: Repository, *, dry_run: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    started = time.time()
    if not dry_run:
        repo.require_deletable("prune")
    with Lock(repo.backend, exclusive=True, operation="prune"):
        index = repo.load_index()
        repo._index = index
        snaps, bad = repo.load_snapshots()
        if bad:
            raise ContinuityError(f"prune refused: {len(bad)} damaged snapshot record(s) "
                                  f"({', '.join(k[:8] for k in bad)}); remove them or restore the files first")
        used = used_blobs(repo, snaps)
        missing = [b for b in used if b not in index]
        if missing:
            raise ContinuityError(f"prune refused: {len(missing)} referenced blob(s) missing; run verify")
        stored = repo.list_packs()
        keep, repack, delete = [], [], []
        for pack in stored:
            ents = index.packs.get(pack)
            if not ents:
                delete.append(pack)
                continue
            live = [e for e in ents if e[1] in used and index.entries[e[1]].pack == pack]
            if len(live) == len(ents):
                keep.append(pack)
            elif live:
                repack.append((pack, live))
            else:
                delete.append(pack)
        freed = sum(stored[p] for p in delete) + sum(stored[p] for p, _ in repack)
        result = {"packs_kept": len(keep), "packs_repacked": len(repack), "packs_deleted": len(delete),
                  "bytes_freed_max": freed, "dry_run": dry_run}
        if dry_run:
            return result
        writer = PackWriter(repo)
        writer._known = type(index)()  # copy sealed blobs verbatim, even though the old index knows them
        for i, (pack, live) in enumerate(repack):
            raw = repo.read_pack(pack)
            for typ, bid, off, length, raw_len in live:
                sealed = raw[off:off + length]
                repo.open_blob(bid, typ, sealed, raw_len)  # never carry damaged bytes into a new pack
                if writer.reserve(bid):
                    writer.add(bid, typ, sealed, raw_len)
            if progress:
                progress(i + 1, len(repack))
        new_packs = writer.finish()
        packs = {p: index.packs[p] for p in keep}
        packs.update(new_packs)
        old_index_files = list(index.files) + list(index.damaged_files)
        repo.save_index(packs, adopt_recovered=False)
        for fid in old_index_files:
            repo.backend.delete(f"index/{fid}")
        for pack in delete + [p for p, _ in repack]:
            repo.backend.delete(pack_name(pack))
        repo._index = None
        result["duration"] = round(time.time() - started, 3)
        return result


__all__ = ["TREE", "forget", "prune", "used_blobs"]
