"""Replication benchmark: the sample ledger at 500 and 2,000 writes/s, with no replication, async and sync.

Usage::

    .venv/bin/python bench/replication_bench.py                 # 500 and 2000 w/s, 10 s per run (~2 min)
    .venv/bin/python bench/replication_bench.py --seconds 5 --rates 500
    .venv/bin/python bench/replication_bench.py --json bench/.data/replication.json
    .venv/bin/python bench/replication_bench.py --node-loss 20      # + 20 node losses per mode (root, netbed)
    .venv/bin/python bench/replication_bench.py --node-loss 20 --rates ''   # the node losses alone

Real processes on this machine's loopback: a private redis-server holding the
ledger's lease for core-a, the sample ledger service on core-a (``serve``), and
one replicator process per node (``python -m continuity.replication``) — core-a
primary, core-b its standby — with the nodes' data under ``--dir`` (tmpfs by
default, so the numbers are the layer's, not a disk's fsync).

Per run (mode × rate): writers send ``rate`` writes a second (open loop, spread
over ``--writers`` keep-alive connections) for ``--seconds``; measured:

- write latency at the client, p50/p99 (what sync mode costs a write);
- replication lag per record: the moment the record is a complete line of
  core-b's copy minus the moment core-a's service stamped it (``ts``), p50/p99,
  read by tailing core-b's file every 2 ms (same host, same clock);
- bytes per record core-b received for the ledger (frames, headers, MACs);
- for SQLite (the service's ``ledger.db``, replicated in rounds): bytes the page
  diff sent, beside the bytes the same commits write to a WAL (what shipping WAL
  frames, Litestream's way, would send) and the cost of taking an image: the
  measurement behind continuity/replication/sqlite.py's choice.

``--node-loss N`` (issue 10, acceptance 2 and 3): on the separate-host bed (``continuity.netbed``: each node
its own network namespace and data root; needs root), three core nodes with their workers, a client writing
``--node-loss-rate`` records a second to the ledger's primary, and N node losses (kill -9 of everything of the
primary and its root deleted at once) in async and then in sync mode, the lost node back on an empty root each
time (the driver is ``tests/node_loss_support.py``, shared with ``tests/e2e/test_node_loss_replication.py``).
Per fault: the acknowledged writes the new primary lacks (client-counted) beside the loss the failover's
prepare step reported, the lag window they were written in, and acknowledged writes no surviving standby held.

Anchors (documented defaults): Litestream ships SQLite WAL every 1 s
(``sync-interval``), so async lag up to ~1 s; Redis Sentinel replicates
asynchronously (acknowledged writes can be lost on failover; ``WAIT`` is best
effort). Targets (issue 10): async lag p99 <= 250 ms at 500 w/s; sync overhead
<= 5 ms p50 over no replication, on loopback.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import yaml  # noqa: E402

from continuity.redisd import RedisServer, free_port  # noqa: E402
from continuity.replication.local import LocalClient  # noqa: E402
from continuity.replication.sqlite import Images  # noqa: E402
from continuity.state import leases  # noqa: E402

MODES = ("none", "async", "sync")
TARGET_ASYNC_P99 = 0.250
TARGET_SYNC_OVERHEAD = 0.005
LITESTREAM_INTERVAL = 1.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def blueprint(path: Path, mode: str, port: int, repl_port: int) -> Path:
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    doc["nodes"].pop("sat-1", None)
    led = doc["domains"]["payments"]["services"]["ledger"]
    led.update(port=port, depends_on=[])
    led["replication"] = {"mode": "off"} if mode == "none" else {"mode": "sync", "standbys": 1} if mode == "sync" \
        else {"mode": "async"}
    led["data"] = [{"kind": "ledger", "path": "data/ledger.jsonl"},
                   {"kind": "sqlite", "path": "data/ledger.db", "interval": "1s"}]
    doc["domains"] = {"payments": {**doc["domains"]["payments"], "services": {"ledger": led}}}
    doc["policy"]["replication"] = {"port": repl_port}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class Tail:
    """Reads new complete lines of a ledger copy every millisecond; lag = when seen - the record's ``ts``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lags: list[float] = []
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Tail:
        self._t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)

    def _run(self) -> None:
        offset = 0
        carry = b""
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            now = time.time()
            if data:
                offset += len(data)
                data = carry + data
                end = data.rfind(b"\n") + 1
                carry = data[end:]
                for line in data[:end].splitlines():
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    self.seen.add(rec["seq"])
                    self.lags.append(now - rec["ts"])
            self._stop.wait(0.002)


def write_load(host: str, port: int, rate: float, seconds: float, writers: int
               ) -> tuple[list[float], set[int], dict[str, int]]:
    """Open-loop writers: seq i is due at t0 + i / rate; returns latencies, acknowledged seqs, failures."""
    lock = threading.Lock()
    nxt = [1]
    lat: list[float] = []
    acked: set[int] = set()
    failed = [0]
    reasons: dict[str, int] = {}
    t0 = time.monotonic() + 0.2
    total = int(rate * seconds)

    def worker() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        while True:
            with lock:
                seq = nxt[0]
                nxt[0] += 1
            if seq > total:
                break
            due = t0 + (seq - 1) / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            start = time.monotonic()
            try:
                conn.request("POST", "/records", body=json.dumps({"seq": seq, "memo": "bench transfer"}),
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                doc = json.loads(r.read())
                ok = r.status == 200 and doc.get("ok")
                why = "" if ok else f"{r.status} {str(doc.get('error'))[:60]}"
            except (OSError, http.client.HTTPException, ValueError) as exc:
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
                ok, why = False, type(exc).__name__
            took = time.monotonic() - start
            with lock:
                if ok:
                    acked.add(seq)
                    lat.append(took)
                else:
                    failed[0] += 1
                    reasons[why] = reasons.get(why, 0) + 1
        conn.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, acked, reasons


def run_one(base: Path, redis_url: str, mode: str, rate: int, seconds: float, writers: int) -> dict[str, Any]:
    work = base / f"{mode}-{rate}"
    shutil.rmtree(work, ignore_errors=True)
    state = work / "state"
    state.mkdir(parents=True)
    port = free_port()
    bp = blueprint(work / "blueprint.yml", mode, port, free_port())
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    assert leases.bootstrap(client, "ledger", "core-a", 3600)
    env = {**os.environ, "CONTINUITY_REDIS_URL": redis_url, "CONTINUITY_ROOT": str(ROOT),
           "CONTINUITY_STATE": str(state), "CONTINUITY_BLUEPRINT": str(bp),
           "CONTINUITY_PULSE_FILE": str(state / "pulse_history.jsonl"), "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    logs = work / "logs"
    logs.mkdir()

    def spawn(argv: list[str], name: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=open(logs / f"{name}.log", "wb"),  # noqa: SIM115
                             stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        return p

    try:
        if mode != "none":
            for node in ("core-a", "core-b"):
                spawn([sys.executable, "-m", "continuity.replication", "--node", node], f"replicator-{node}")
        spawn([sys.executable, "-m", "continuity.sample.ledger_service", "serve", "--service", "ledger",
               "--node", "core-a", "--port", str(port), "--epoch", "1"], "service")
        _wait(lambda: _healthy(port), 30, "the ledger service")
        standby = state / "nodes" / "core-b" / "ledger" / "ledger.jsonl"
        if mode != "none":
            # one write, replicated: the standby follows before the clock starts
            _post(port, 0)
            _wait(standby.exists, 30, "core-b following")
        tail = Tail(standby).start()
        lat, acked, reasons = write_load("127.0.0.1", port, rate, seconds, writers)
        out: dict[str, Any] = {"mode": mode, "rate": rate, "seconds": seconds, "acked": len(acked),
                               "failed": sum(reasons.values()), "reasons": reasons, "lat_p50": pct(lat, 0.5),
                               "lat_p99": pct(lat, 0.99)}
        if mode != "none":
            _wait(lambda: acked <= tail.seen, 30, "core-b holding every acknowledged write")
            tail.stop()
            lags = tail.lags[1:]  # not the warm-up write
            state_b = LocalClient("core-b", state).state()["streams"]
            received = {s["source"]: s.get("received", 0) for s in state_b if s.get("role") == "standby"}
            out.update(lag_p50=pct(lags, 0.5), lag_p99=pct(lags, 0.99), lag_max=max(lags) if lags else None,
                       bytes_per_record=received.get("ledger.jsonl", 0) / max(1, len(tail.seen)),
                       sqlite_bytes_per_s=received.get("ledger.db", 0) / seconds)
        else:
            tail.stop()
        db = state / "nodes" / "core-a" / "ledger" / "ledger.db"
        out["db_bytes"] = db.stat().st_size if db.exists() else 0
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        client.close()


def _post(port: int, seq: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/records", body=json.dumps({"seq": seq}), headers={"Content-Type": "application/json"})
    conn.getresponse().read()
    conn.close()


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise SystemExit(f"timed out waiting for {what}")


def wal_bytes_per_record(records: int, work: Path) -> float:
    """Bytes the sample service's commits (one row, one commit each) append to a WAL, checkpoints held off:
    what WAL-frame shipping would send for the same writes."""
    path = work / "wal-probe.db"
    for side in ("", "-wal", "-shm"):
        Path(str(path) + side).unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE IF NOT EXISTS records (seq INTEGER PRIMARY KEY, epoch INTEGER, node TEXT, ts REAL, "
               "data TEXT)")
    db.commit()
    for i in range(records):
        db.execute("INSERT INTO records VALUES (?,?,?,?,?)", (i, 1, "core-a", time.time(),
                                                              json.dumps({"memo": "bench transfer"})))
        db.commit()
    size = Path(str(path) + "-wal").stat().st_size
    db.close()
    return size / records


def image_cost(db: Path) -> tuple[float, float]:
    """Seconds to take one consistent image of ``db`` (best of 5), and its size in MB."""
    images = Images(db)
    images.changed()
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        image = images.capture()
        best = min(best, time.perf_counter() - t)
    images.close()
    return best, len(image) / 1e6


def node_loss(faults: int, rate: float, workdir: Path) -> dict[str, Any]:
    """``faults`` node losses per mode on the separate-host bed; per mode, the fault results and a summary."""
    from continuity import netbed
    from tests.netbed import BedFleet, bed_blueprint, finish_bed
    from tests.node_loss_support import NodeLossRun, summary

    why = netbed.unavailable()
    if why:
        raise SystemExit(f"--node-loss needs the separate-host bed: {why}")
    netbed.sweep_stale()
    out: dict[str, Any] = {}
    for mode in ("async", "sync"):
        work = workdir / f"node-loss-{mode}"
        work.mkdir(parents=True)
        bed = netbed.Bed(bed_blueprint(work, sync=mode == "sync", failover_cooldown="1s"), work / "bed")
        bed.start()
        fleet = BedFleet(bed)
        run = NodeLossRun(fleet, rate=rate)
        problems: list[str] = []
        try:
            fleet.start(("core-a", "core-b", "core-c"))
            for _ in range(faults):
                r = run.fault()
                print(f"  {mode:5} fault {r.index:2}: {r.lost} lost -> {r.promoted}; client lost "
                      f"{len(r.client_lost):3}, reported {r.reported_records} rec / {r.reported_seconds} s "
                      f"(source {r.prepare.get('source')}); window {ms(r.window)} ms; on no standby "
                      f"{len(r.not_on_standby)}; mttr {r.mttr:.1f} s; load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            fleet.close()
            problems = finish_bed(bed)
        out[mode] = {"summary": summary(run.results), "isolated": not problems, "problems": problems,
                     "faults": [{"lost": r.lost, "promoted": r.promoted, "client_lost": len(r.client_lost),
                                 "reported_records": r.reported_records, "reported_seconds": r.reported_seconds,
                                 "source": r.prepare.get("source"), "window": r.window,
                                 "not_on_standby": len(r.not_on_standby), "mttr": r.mttr, "acked": r.acked,
                                 "evidence": r.evidence()} for r in run.results]}
    return out


def report_node_loss(res: dict[str, Any], rate: float) -> None:
    def fmt(t: tuple[float, float, float] | None, scale: float = 1.0, unit: str = "", digits: int = 0) -> str:
        return "-" if t is None else "/".join(f"{v * scale:.{digits}f}" for v in t) + unit

    print()
    print(f"node loss at {rate:g} writes/s (min/median/max per fault; client = acknowledged writes the new "
          "primary lacks, reported = the failover's prepare step):")
    for mode, r in res.items():
        s = r["summary"]
        print(f"  {mode:5}: {s['faults']} faults, {s['acked']} writes acked; records lost client "
              f"{fmt(s['client'])}, reported {fmt(s['reported'])}; reported == client in {s['agree']}/{s['faults']}; "
              f"lag window {fmt(s['window'], 1000, ' ms', 1)}; acked on no standby {s['not_on_standby']}; "
              f"mttr {fmt(s['mttr'], 1, ' s', 1)}; bed isolated: {r['isolated']}")
    per_s = rate * LITESTREAM_INTERVAL
    print(f"  anchors: Litestream (1 s default sync interval) may lose up to ~{per_s:.0f} writes per fault at "
          f"{rate:g} w/s; Redis Sentinel replicates async: acknowledged writes lost on failover, neither bounded "
          "nor reported; targets (issue 10): async <= 1 s of writes, sync 0")
    for mode, r in res.items():
        worst = max(r["faults"], key=lambda f: f["client_lost"], default=None)
        if worst is not None and worst["client_lost"]:
            print(f"  {mode} worst fault: {worst['evidence']}")
        bad = [f for f in r["faults"] if f["reported_records"] != f["client_lost"]]
        if bad:
            print(f"  {mode}: {len(bad)} fault(s) where reported != client-counted, e.g. {bad[0]['evidence']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="500,2000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--writers", type=int, default=8)
    ap.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--node-loss", type=int, default=0, metavar="N",
                    help="N node losses per mode (async, sync) on the separate-host bed (root only)")
    ap.add_argument("--node-loss-rate", type=float, default=200.0)
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())} ({os.cpu_count()} cpus)")
    losses: dict[str, Any] = {}
    if args.node_loss:
        work = Path(tempfile.mkdtemp(prefix="repl-bench-loss-"))
        try:
            losses = node_loss(args.node_loss, args.node_loss_rate, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        report_node_loss(losses, args.node_loss_rate)
        print(f"load average after the node losses: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).with_suffix(".node-loss.json").write_text(json.dumps(losses, indent=2, default=str))
    if not args.rates:
        return 0
    base = Path(tempfile.mkdtemp(prefix="repl-bench-", dir=args.dir))
    server = RedisServer(base / "redis", appendonly=False).start()
    results = []
    try:
        for rate in [int(r) for r in args.rates.split(",")]:
            for mode in MODES:
                r = run_one(base, server.url, mode, rate, args.seconds, args.writers)
                results.append(r)
                print(f"  {mode:5} {rate:5} w/s: {r['acked']} acked, {r['failed']} failed {r['reasons'] or ''}",
                      flush=True)
        records = max(r["acked"] for r in results)
        wal = wal_bytes_per_record(min(records, 5000), base)
        big = max((base / f"{m}-{r}" / "state" / "nodes" / "core-a" / "ledger" / "ledger.db"
                   for m in MODES for r in [int(x) for x in args.rates.split(",")]),
                  key=lambda p: p.stat().st_size if p.exists() else 0)
        cost, mb = image_cost(big)
    finally:
        server.kill()
        shutil.rmtree(base, ignore_errors=True)
    report(results, wal, cost, mb)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"runs": results, "wal_bytes_per_record": wal,
                                               "image_seconds": cost, "image_mb": mb}, indent=2))
    return 0


def ms(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v * 1000:.1f}"


def report(results: list[dict[str, Any]], wal: float, cost: float, mb: float) -> None:
    print()
    print(f"{'rate':>6} {'mode':6} {'write p50':>9} {'write p99':>9} {'lag p50':>8} {'lag p99':>8} {'lag max':>8} "
          f"{'B/record':>8}  (ms)")
    none = {r["rate"]: r for r in results if r["mode"] == "none"}
    for r in results:
        bpr = f"{r['bytes_per_record']:.0f}" if "bytes_per_record" in r else "-"
        print(f"{r['rate']:>6} {r['mode']:6} {ms(r['lat_p50']):>9} {ms(r['lat_p99']):>9} {ms(r.get('lag_p50')):>8} "
              f"{ms(r.get('lag_p99')):>8} {ms(r.get('lag_max')):>8} {bpr:>8}")
    print()
    print("targets and anchors:")
    for r in results:
        if r["mode"] == "async":
            verdict = "ok" if r["lag_p99"] <= TARGET_ASYNC_P99 else "MISSED"
            print(f"  async lag p99 at {r['rate']} w/s: {ms(r['lag_p99'])} ms (target <= 250 ms at 500 w/s: "
                  f"{verdict if r['rate'] <= 500 else 'n/a'}); Litestream ships every {LITESTREAM_INTERVAL:g} s "
                  "(lag up to ~1000 ms); Redis Sentinel: async, acknowledged writes may be lost on failover")
        if r["mode"] == "sync" and r["rate"] in none:
            over = r["lat_p50"] - none[r["rate"]]["lat_p50"]
            verdict = "ok" if over <= TARGET_SYNC_OVERHEAD else "MISSED"
            print(f"  sync write overhead p50 at {r['rate']} w/s: {ms(over)} ms over no replication "
                  f"(target <= 5 ms: {verdict}); no write acknowledged before a standby fsync'd it")
    sq = [r for r in results if r["mode"] == "async"]
    for r in sq:
        per_s = r["rate"] * wal
        print(f"  SQLite at {r['rate']} w/s: page diff sent {r['sqlite_bytes_per_s'] / 1e3:.0f} kB/s; the same commits "
              f"write {per_s / 1e3:.0f} kB/s of WAL ({wal:.0f} B per commit) that WAL shipping would send")
    print(f"  SQLite image of a {mb:.1f} MB database: {cost * 1000:.1f} ms (taken once per interval, only when "
          "data_version moved)")


if __name__ == "__main__":
    sys.exit(main())
