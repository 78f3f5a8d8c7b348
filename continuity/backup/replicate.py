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

Progress = Callable[[int, int], None]


def copy(src: Repository, dst: Repository, *, snapshot_ids: list[str] | None = None,
         set_name: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
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
    copied = []
    with Lock(dst.backend, exclusive=False, operation="copy"):
        writer = PackWriter(dst)
        blob_map: dict[str, str] = {}
        tree_map: dict[str, str] = {}

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

        records = []
        try:
            for i, s in enumerate(todo):
                rec = {k: v for k, v in s.items() if k != "id"}
                rec["tree"] = tree(s["tree"])
                rec["original"] = s["id"]
                records.append(rec)
                if progress:
                    progress(i + 1, len(todo))
            packs = writer.finish()
        except BaseException:
            writer.abort()
            raise
        if packs or dst.index.recovered:
            dst.save_index(packs)
        for rec in records:
            copied.append({"source": rec["original"], "id": dst.save_file("snapshots", rec)})
    return {"copied": copied, "skipped": len(snaps) - len(todo), "blobs_added": writer.blobs_added,
            "bytes_added": writer.bytes_added, "same_params": same, "duration": round(time.time() - started, 3)}
