"""Point-in-time recovery benchmark: what shipping the ledger log costs, and what a restore from it costs.

Usage::

    .venv/bin/python bench/pitr_bench.py                   # 200 writes/s for 10 simulated minutes
    .venv/bin/python bench/pitr_bench.py --minutes 1       # quick run

A sample-ledger-shaped ledger (one JSON line per record with seq, epoch, node, ts, data) grows by
``--rate`` records per simulated second; after each second the shipper ships (one segment per ship, as
with ``ship_log: 1s``). A snapshot is taken at the start (the base). Printed:

* ship cost per segment (p50 / p99 ms) and repository bytes per shipped record;
* a point-in-time restore to the newest record and to a seq in the middle of the log (s), against the
  anchor measured in the same run: restoring the ledger from a snapshot taken at the end (what a restore
  costs when no log is needed), as a ratio;
* the restore drill's point-in-time check (s), which runs with every scheduled restore drill.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from continuity.backup.logship import KIND, LedgerShipper  # noqa: E402
from continuity.backup.pitr import pitr_drill, recover_ledger  # noqa: E402
from continuity.backup.repository import Repository  # noqa: E402
from continuity.backup.restore import restore  # noqa: E402
from continuity.backup.snapshot import Source, take_snapshot  # noqa: E402
from continuity.backup.storage.local import LocalBackend  # noqa: E402

SET = "bench"


def append(fh, seq0: int, n: int, t: float) -> None:
    for i in range(n):
        s = seq0 + i
        fh.write(json.dumps({"seq": s, "epoch": 1, "node": "core-a", "ts": t + i / n, "instance": "bench-1",
                             "data": {"amount": s % 977, "to": f"acct-{s % 131}"}}).encode() + b"\n")
    fh.flush()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=200, help="records per simulated second")
    ap.add_argument("--minutes", type=float, default=10.0, help="simulated minutes of writes after the snapshot")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pitr-bench-") as tmp:
        root = Path(tmp)
        repo = Repository.init(LocalBackend(str(root / "repo")), b"bench", kdf={"n": 2**10, "r": 8, "p": 1})
        ledger = root / "ledger.jsonl"
        t = time.time()
        with open(ledger, "ab") as fh:
            append(fh, 1, args.rate * 10, t)
        take_snapshot(repo, [Source("ledger", str(ledger), ledger.name)], set_name=SET, node_name="core-a")
        shipper = LedgerShipper(repo, SET, ledger.name, ledger, "core-a")
        shipper.ship()
        seq = args.rate * 10 + 1
        costs = []
        seconds = int(args.minutes * 60)
        with open(ledger, "ab") as fh:
            for sec in range(seconds):
                append(fh, seq, args.rate, t + 10 + sec)
                seq += args.rate
                _, dt = timed(shipper.ship)
                costs.append(dt * 1000)
        log_bytes = sum(size for _n, size in repo.backend.list(KIND))
        shipped = seconds * args.rate
        newest, t_newest = timed(lambda: recover_ledger(repo, SET))
        assert newest.data == ledger.read_bytes()
        mid_seq = args.rate * 10 + shipped // 2
        _, t_mid = timed(lambda: recover_ledger(repo, SET, seq=mid_seq))
        drill, t_drill = timed(lambda: pitr_drill(repo, SET))
        assert drill and drill["ok"], drill
        snap = take_snapshot(repo, [Source("ledger", str(ledger), ledger.name)], set_name=SET, node_name="core-a")
        _, t_anchor = timed(lambda: restore(repo, repo.find_snapshot(snap["id"]), str(root / "anchor")))
    costs.sort()
    p99 = costs[min(len(costs) - 1, int(len(costs) * 0.99))]
    print(f"ledger: {args.rate} records/s for {seconds} s after the base snapshot: {shipped} records in "
          f"{len(costs)} segments")
    print(f"ship per segment: p50 {statistics.median(costs):.2f} ms, p99 {p99:.2f} ms; "
          f"repository bytes per shipped record: {log_bytes / shipped:.1f}")
    print(f"point-in-time restore, newest record: {t_newest:.2f} s; to seq {mid_seq}: {t_mid:.2f} s; "
          f"restore drill's point-in-time check: {t_drill:.2f} s")
    print(f"anchor (same run): restoring a snapshot of the whole ledger: {t_anchor:.2f} s; "
          f"ratio PITR newest / anchor: {t_newest / t_anchor:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
