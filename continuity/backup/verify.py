"""Verification: repository checks (restic ``check`` style) and real restore drills.

:func:`check` reads metadata by default (index, snapshots, every tree, every
referenced blob present in the index, every indexed pack present with a
plausible size). ``read_data`` additionally reads packs and authenticates
every blob; a subset (``1/5`` or ``10%``) spreads that cost over runs. When
anything is damaged, the report names the snapshots and the files in them
that depend on it, which is what an operator needs to decide what to do.

:func:`restore_drill` is what none of restic/borg/Kopia ship (restic#2332):
restore a snapshot into a sandbox, re-hash every restored file against the
snapshot, run ``PRAGMA integrity_check`` on restored databases, re-count
ledger records against the manifest, and run each command source's declared
check on its restored file (``pg_restore --list`` on a dump): a dump whose
bytes are intact but which its own tool cannot read is not a backup.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import blake3

from continuity.backup import commands
from continuity.backup import sources as src_mod
from continuity.backup.repository import DamagedError, Repository, file_hash
from continuity.backup.restore import restore, walk
from continuity.backup.storage import NotFound
from continuity.errors import UsageError

Progress = Callable[[int, int], None]
FILE_PLACEHOLDER = "{file}"


@dataclass(frozen=True)
class Check:
    """A command a restore drill runs on a restored command-source file: ``{file}`` in ``argv`` becomes its
    path; without ``{file}`` the file is its stdin. Exit 0 within ``timeout`` seconds passes."""

    argv: tuple[str, ...]
    timeout: float


def run_check(check: Check, path: str, cwd: str) -> commands.Outcome:
    placed = FILE_PLACEHOLDER in " ".join(check.argv)
    argv = [a.replace(FILE_PLACEHOLDER, path) for a in check.argv]
    return commands.run(argv, check.timeout, cwd=cwd, stdin=None if placed else path)


def select_subset(packs: list[str], subset: str | None, rng: random.Random | None = None) -> list[str]:
    """``n/t`` picks the n-th of t deterministic groups (by pack id); ``x%`` a random x percent."""
    packs = sorted(packs)
    if not subset:
        return packs
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", subset)
    if m:
        n, t = int(m.group(1)), int(m.group(2))
        if not 1 <= n <= t:
            raise UsageError(f"--read-data-subset {subset!r}: need 1 <= n <= t")
        return [p for p in packs if int(p[:8], 16) % t == n - 1]
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", subset)
    if m:
        pct = float(m.group(1))
        if not 0 < pct <= 100:
            raise UsageError(f"--read-data-subset {subset!r}: percentage must be in (0, 100]")
        k = min(len(packs), math.ceil(len(packs) * pct / 100))
        return sorted((rng or random.Random()).sample(packs, k))
    raise UsageError(f"--read-data-subset {subset!r}: use n/t (e.g. 1/5) or a percentage (e.g. 10%)")


def _check_pack(repo: Repository, pack: str, blobs: list[bytes]) -> tuple[int, dict[bytes, str], str | None]:
    """Read a pack, authenticate every indexed blob in it; returns (bytes, damaged blobs, pack problem)."""
    try:
        raw = repo.read_pack(pack)
    except NotFound:
        return 0, {b: f"pack {pack[:16]} missing" for b in blobs}, "missing"
    problem = None if file_hash(raw) == pack else "content does not match its name"
    bad: dict[bytes, str] = {}
    for bid in blobs:
        e = repo.index.get(bid)
        if e is None or e.pack != pack:
            continue
        if e.offset + e.length > len(raw):
            bad[bid] = f"pack {pack[:16]} truncated"
            continue
        try:
            repo.open_blob(bid, e.type, memoryview(raw)[e.offset:e.offset + e.length], e.raw_length)
        except DamagedError as exc:
            bad[bid] = f"{exc} (pack {pack[:16]})"
    try:
        repo.read_pack_header(pack, raw)
    except (DamagedError, struct.error):
        problem = problem or "header unreadable"
    return len(raw), bad, problem


def check(repo: Repository, *, read_data: bool = False, subset: str | None = None,
          progress: Progress | None = None, workers: int = 3) -> dict[str, Any]:
    started = time.time()
    index = repo.load_index()
    repo._index = index
    snaps, bad_snaps = repo.load_snapshots()
    stored = repo.list_packs()
    report: dict[str, Any] = {
        "snapshots": len(snaps) + len(bad_snaps),
        "damaged_index_files": [{"file": f"index/{k}", "reason": v} for k, v in index.damaged_files.items()],
        "damaged_snapshots": [{"id": k, "reason": v} for k, v in bad_snaps.items()],
        "damaged_packs": [], "damaged_files": [], "damaged_trees": [],
        "packs": len(stored), "packs_read": 0, "bytes_read": 0, "keyring": repo.keyring_problem,
    }
    # packs the index names must exist and be long enough for their blobs
    damaged_blobs: dict[bytes, str] = {}
    for pack, ents in index.packs.items():
        ids = [e[1] for e in ents]
        size = stored.get(pack)
        if size is None:
            report["damaged_packs"].append({"pack": pack, "reason": "missing"})
            for b in ids:
                damaged_blobs[b] = f"pack {pack[:16]} missing"
            continue
        for b in ids:
            e = index.entries[b]
            if e.pack == pack and e.offset + e.length + 4 > size:
                damaged_blobs[b] = f"pack {pack[:16]} truncated"
        if any(index.entries[b].pack == pack and b in damaged_blobs for b in ids):
            report["damaged_packs"].append({"pack": pack, "reason": "truncated"})
    # every tree of every snapshot, once
    used: set[bytes] = set()
    seen_trees: set[str] = set()
    stack = [s["tree"] for s in snaps]
    while stack:
        tid = stack.pop()
        if tid in seen_trees:
            continue
        seen_trees.add(tid)
        used.add(bytes.fromhex(tid))
        try:
            nodes = repo.load_tree(tid)
        except DamagedError as exc:
            damaged_blobs[bytes.fromhex(tid)] = str(exc)
            continue
        for n in nodes:
            if n.get("type") == "dir" and n.get("subtree"):
                stack.append(n["subtree"])
            for c in n.get("content") or ():
                used.add(bytes.fromhex(c))
    for b in used:
        if b not in index:
            damaged_blobs.setdefault(b, f"blob {b.hex()[:16]} missing from the index")
    if read_data:
        chosen = select_subset([p for p in index.packs if p in stored], subset)
        by_pack = {p: [e[1] for e in index.packs[p]] for p in chosen}
        done = [0]

        def one(p: str) -> tuple[str, int, dict[bytes, str], str | None]:
            n, bad, problem = _check_pack(repo, p, by_pack[p])
            done[0] += 1
            if progress:
                progress(done[0], len(chosen))
            return p, n, bad, problem

        with ThreadPoolExecutor(workers) as pool:
            for p, n, bad, problem in pool.map(one, chosen):
                report["packs_read"] += 1
                report["bytes_read"] += n
                damaged_blobs.update(bad)
                if problem or bad:
                    report["damaged_packs"].append({"pack": p, "reason": problem or f"{len(bad)} damaged blob(s)"})
    lost_index = sorted({index.entries[b].pack for b in used
                         if b in index and index.entries[b].pack in index.recovered})
    for pack in lost_index:
        report["damaged_index_files"].append({"file": f"(pack {pack})",
                                              "reason": "referenced pack is in no index file (recovered from its "
                                                        "own header; a prune rewrites the index)"})
    report["unreferenced_packs"] = sorted(set(stored) - set(index.packs) | (index.recovered - set(lost_index)))
    relevant = {b: r for b, r in damaged_blobs.items() if b in used}
    if relevant:
        _name_damage(repo, snaps, relevant, report)
    report["damaged_blobs"] = len(relevant)
    report["ok"] = not (report["keyring"] or report["damaged_index_files"] or report["damaged_snapshots"]
                        or report["damaged_packs"] or relevant)
    report["duration"] = round(time.time() - started, 3)
    return report


def _name_damage(repo: Repository, snaps: list[dict[str, Any]], damaged: dict[bytes, str],
                 report: dict[str, Any]) -> None:
    """Walk every snapshot again, naming each file and directory that depends on a damaged blob."""
    for s in snaps:
        broken: list[dict[str, str]] = []
        tree_damage: list[dict[str, str]] = []
        for rel, node in walk(repo, s["tree"], "", tree_damage):
            reasons = [damaged[bytes.fromhex(c)] for c in node.get("content") or () if bytes.fromhex(c) in damaged]
            if reasons:
                broken.append({"snapshot": s["id"], "path": rel, "reason": reasons[0]})
        report["damaged_files"].extend(broken)
        report["damaged_trees"].extend({"snapshot": s["id"], **t} for t in tree_damage)


def _expected_hash(repo: Repository, node: dict[str, Any]) -> tuple[str | None, Any]:
    """The hash a restored file must have, and the hasher that computes it.

    A file's own (unkeyed) BLAKE3 when the snapshot recorded one; for a one-blob file, which records none,
    its blob id: the keyed BLAKE3 of exactly the file's bytes. An empty file has neither: its size is checked.
    """
    if node.get("hash"):
        return node["hash"], blake3.blake3(max_threads=1)
    content = node.get("content") or []
    if len(content) == 1:
        return content[0], blake3.blake3(key=repo.keyring.id_key, max_threads=1)
    return None, blake3.blake3(max_threads=1)


def restore_drill(repo: Repository, snapshot_ref: str, sandbox: str | None = None, *, keep: bool = False,
                  progress: Progress | None = None, checks: Mapping[str, Check] | None = None) -> dict[str, Any]:
    """Restore into a sandbox and prove it: hashes, SQLite integrity, ledger counts, command checks.

    ``checks`` maps a command source's name to the check its set declares. JSON-ready result.
    """
    started = time.time()
    snap = repo.find_snapshot(snapshot_ref)
    made = sandbox is None
    sandbox = sandbox or tempfile.mkdtemp(prefix="continuity-drill-")
    if not made and os.path.exists(sandbox) and os.listdir(sandbox):
        raise UsageError(f"drill sandbox {sandbox} is not empty")
    try:
        result = restore(repo, snap, sandbox, progress=progress)
        not_restored = result["damaged"] + result["failed"]
        mismatches: list[dict[str, str]] = []
        checked = 0
        for rel, node in walk(repo, snap["tree"]):
            if node.get("type") != "file" or any(d["path"] == rel for d in not_restored):
                continue
            path = os.path.join(sandbox, *rel.split("/"))
            want, h = _expected_hash(repo, node)
            size = 0
            try:
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                        size += len(block)
            except OSError as exc:
                mismatches.append({"path": rel, "reason": f"unreadable: {exc.strerror}"})
                continue
            checked += 1
            if (want is not None and h.hexdigest() != want) or (want is None and size != node.get("size")):
                mismatches.append({"path": rel, "reason": "content hash differs from the snapshot"})
        sqlite_checks, ledger_checks, command_checks = [], [], []
        for src in snap.get("sources", []):
            path = os.path.join(sandbox, src["name"])
            if src.get("error") and not src.get("manifest"):
                continue
            if src["kind"] == "command":
                command_checks.append(_check_command(src, path, sandbox, (checks or {}).get(src["name"])))
                continue
            if src["kind"] == "sqlite":
                res = src_mod.check_sqlite(path) if os.path.exists(path) else {"integrity": "missing"}
                expected = (src.get("manifest") or {}).get("tables")
                ok = res["integrity"] == "ok" and (expected is None or res.get("tables") == expected)
                sqlite_checks.append({"name": src["name"], **res, "expected_tables": expected, "ok": ok})
            elif src["kind"] == "ledger":
                man = src.get("manifest") or {}
                if os.path.exists(path):
                    with open(path, "rb") as f:
                        cap = src_mod.inspect_ledger(f.read(), man.get("format"))
                    got = cap.manifest
                else:
                    got = {"records": None, "last_seq": None}
                ok = got.get("records") == man.get("records") and got.get("last_seq") == man.get("last_seq")
                ledger_checks.append({"name": src["name"], "records": got.get("records"),
                                      "expected_records": man.get("records"), "last_seq": got.get("last_seq"),
                                      "expected_last_seq": man.get("last_seq"), "ok": ok})
        ok = (not not_restored and not mismatches and all(c["ok"] for c in sqlite_checks)
              and all(c["ok"] for c in ledger_checks) and all(c["ok"] for c in command_checks))
        return {
            "snapshot": snap["id"], "set": snap.get("set"), "snapshot_time": snap["time"],
            "source_node": snap.get("hostname"), "ok": ok, "files": result["files"], "bytes": result["bytes"],
            "files_hashed": checked, "damaged": not_restored, "skipped": result["skipped"],
            "hash_mismatches": mismatches,
            "sqlite": sqlite_checks, "ledgers": ledger_checks, "checks": command_checks,
            "sandbox": sandbox if keep else None,
            "duration": round(time.time() - started, 3),
        }
    finally:
        if not keep:
            shutil.rmtree(sandbox, ignore_errors=True)



def _check_command(src: dict[str, Any], path: str, sandbox: str, check: Check | None) -> dict[str, Any]:
    """A restored command-source file: its size against the manifest, then the set's check command on it."""
    expected = (src.get("manifest") or {}).get("bytes")
    out: dict[str, Any] = {"name": src["name"], "bytes": None, "expected_bytes": expected, "check": None,
                           "ok": False, "reason": ""}
    try:
        out["bytes"] = os.path.getsize(path)
    except OSError as exc:
        out["reason"] = f"not restored: {exc.strerror}"
        return out
    if expected is not None and out["bytes"] != expected:
        out["reason"] = f"{out['bytes']} bytes restored, the command wrote {expected}"
        return out
    if check is not None:
        outcome = run_check(check, path, sandbox)
        out["check"] = outcome.as_dict()
        if not outcome.ok:
            out["reason"] = f"check {outcome.describe()}"
            return out
    out["ok"] = True
    return out
