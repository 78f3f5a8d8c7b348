"""copy: replicate snapshots to another repository, moving only blobs it lacks.

This is both the off-site path and store-and-forward for satellites, which
snapshot into a local repository while out of contact and copy when the link
returns. When both repositories share content-ID key and chunker seed
(``init --copy-params-from``), blob IDs agree and a blob the destination has
is never read from the source; otherwise each blob is read once to compute
its ID under the destination's key. Blobs are re-sealed with the
destination's data key, so repositories never share data keys. Copied
records carry ``original`` = source snapshot id, so re-running copy (a
redelivered task) copies nothing twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from continuity.backup.locks import Lock
from continuity.backup.repository import DATA, TREE, PackWriter, Repository
from continuity.backup.throttle import PassClosing

Progress = Callable[[int, int], None]


def copy(src: Repository, dst: Repository, *, snapshot_ids: list[str] | None = None,
         set_name: str | None = None, progress: Progress | None = None,
         pack_size: int | None = None) -> dict[str, Any]:
    """Copy the snapshots ``dst`` lacks, committing each one as soon as its data is there.

    Each snapshot is its own step: its packs are written, then an index naming them, then its record.
    When ``dst``'s backend refuses a write because the pass is closing (:class:`PassClosing`, from
    :mod:`continuity.backup.throttle`), the copy stops at that object boundary: the packs that arrived are
    indexed (best effort: the next run also finds unindexed packs by their headers) and the result says
    ``complete: false``. Nothing that arrived is sent again: blobs the destination's index names are skipped.
    ``pack_size`` makes packs smaller than the repository default, so a short pass at a low rate still
    moves whole packs (the unit a pass's end can cut at).
    """
    started = time.time()
    snaps, _bad = src.load_snapshots()
    if set_name is not None:
        snaps = [s for s in snaps if s.get("set") == set_name]
    if snapshot_ids:
        snaps = [s for s in snaps if any(s["id"].startswith(r) for r in snapshot_ids)]
    have = set()
    for s in dst.load_snapshots()[0]:
        have.add(s.get("original") or s["id"])
    todo = [s for s in snaps if s["id"] not in have]
    same = (src.keyring.id_key == dst.keyring.id_key and src.keyring.chunker_seed == dst.keyring.chunker_seed)
    copied: list[dict[str, str]] = []
    totals = {"blobs": 0, "bytes": 0}
    stopped: str | None = None
    blob_map: dict[str, str] = {}
    tree_map: dict[str, str] = {}
    try:
        with Lock(dst.backend, exclusive=False, operation="copy"):
            for i, s in enumerate(todo):
                writer = PackWriter(dst, target=pack_size)
                try:
                    root = _copy_tree(src, dst, writer, same, s["tree"], blob_map, tree_map)
                    packs = writer.finish()
                except PassClosing as exc:
                    writer.abort()
                    stopped = str(exc)
                    _index_what_arrived(dst, writer)
                    break
                except BaseException:
                    writer.abort()
                    raise
                finally:
                    totals["blobs"] += writer.blobs_added
                    totals["bytes"] += writer.bytes_added
                if packs or dst.index.recovered:
                    dst.save_index(packs)
                rec = {k: v for k, v in s.items() if k != "id"}
                rec["tree"] = root
                rec["original"] = s["id"]
                copied.append({"source": s["id"], "id": dst.save_file("snapshots", rec)})
                if progress:
                    progress(i + 1, len(todo))
    except PassClosing as exc:  # the lock or a record could not be sent in time: what arrived stays
        stopped = stopped or str(exc)
    return {"copied": copied, "skipped": len(snaps) - len(todo), "blobs_added": totals["blobs"],
            "bytes_added": totals["bytes"], "same_params": same, "complete": stopped is None,
            "pending": len(todo) - len(copied), "stopped": stopped,
            "duration": round(time.time() - started, 3)}


def _index_what_arrived(dst: Repository, writer: PackWriter) -> None:
    """After a stop, name the packs that did arrive in an index (if the pass still allows the write)."""
    if not writer.written:
        return
    for pid, ents in writer.written.items():
        dst.index.add(pid, ents)
    try:
        dst.backend.barrier()
        dst.save_index(dict(writer.written))
    except PassClosing:
        pass  # the next run recovers them from their own headers


def _copy_tree(src: Repository, dst: Repository, writer: PackWriter, same: bool, root: str,
               blob_map: dict[str, str], tree_map: dict[str, str]) -> str:
    def blob(cid: str) -> str:
        if cid in blob_map:
            return blob_map[cid]
        bid = bytes.fromhex(cid)
        if same:
            if writer.reserve(bid):
                data = src.read_blob(bid)
                writer.add(bid, DATA, dst.seal_blob(bid, DATA, data), len(data))
            out = cid
        else:
            out = writer.save(DATA, src.read_blob(bid)).hex()
        blob_map[cid] = out
        return out

    def tree(tid: str) -> str:
        if tid in tree_map:
            return tree_map[tid]
        if same and bytes.fromhex(tid) in dst.index:
            tree_map[tid] = tid  # the destination already holds this whole subtree
            return tid
        nodes = src.load_tree(tid)
        for n in nodes:
            if n.get("content"):
                n["content"] = [blob(c) for c in n["content"]]
            if n.get("subtree"):
                n["subtree"] = tree(n["subtree"])
        data = json.dumps({"nodes": nodes}, sort_keys=True, separators=(",", ":")).encode()
        out = writer.save(TREE, data).hex()
        tree_map[tid] = out
        return out

    return tree(root)
