"""Failover benchmark: kill -9 the ledger's primary node again and again; measure detection and recovery.

Usage::

    .venv/bin/python bench/failover_bench.py                         # 20 kills + 5 min CPU hog (~10 min)
    .venv/bin/python bench/failover_bench.py --kills 5 --hog 30      # quick run
    .venv/bin/python bench/failover_bench.py --json bench/.data/failover.json

The sample fleet (ops/blueprint.yml) runs for real on this machine: a private
redis-server, one Celery worker per node (with its node agent), beat sending
the detector's sweep, and the sample ledger service started by the hooks. The
timing policy is the blueprint's default (1 s heartbeat, 3 s lease, 1 s margin,
2.5 s to dead); only the ports (free ones, so a running demo is not disturbed)
and the per-service cool-down (60 s → ``--cooldown``, so 20 kills do not take
20 minutes; it does not enter detection or recovery time) are changed.

Each round: kill -9 the worker of the node holding the ledger's lease and every
sample service on that node; detection = the detector's ``node_dead`` event −
kill time; MTTR = the ledger's new primary verified healthy with the new epoch
(end of the failover record's verify step) − kill time. The killed node is then
restarted (it becomes the standby) before the next round.

Then both cores are saturated by CPU hogs for ``--hog`` seconds while the fleet
keeps running, and every failover started and every node declared dead in that
window is counted: all of them are false.

Anchors (documented defaults, ANCHORS.md): Redis Sentinel down-after 30 s,
Patroni leader TTL 30 s, Kubernetes NotReady after 40-50 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import yaml  # noqa: E402

from continuity.failover import records  # noqa: E402
from continuity.pulse import read_events  # noqa: E402
from continuity.redisd import RedisServer, free_port  # noqa: E402
from continuity.state import keys, leases  # noqa: E402

ANCHORS = {"Sentinel down-after": 30.0, "Patroni TTL": 30.0, "Kubernetes NotReady": 45.0}
TARGET_DETECTION = 3.0
TARGET_MTTR = 5.0


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "p95": percentile(values, 0.95), "max": max(values)}


class BenchFleet:
    def __init__(self, work: Path, cooldown: float) -> None:
        self.work = work
        self.state = work / "state"
        self.state.mkdir(parents=True, exist_ok=True)
        doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
        doc["policy"]["failover_cooldown"] = f"{cooldown:g}s"
        for dom in doc["domains"].values():
            for svc in dom["services"].values():
                if "port" in svc:
                    svc["port"] = self._port_block()
        self.bp_path = work / "blueprint.yml"
        self.bp_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.redis = RedisServer(work / "redis", appendonly=False).start()
        self.client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        self.env = {**os.environ, "CONTINUITY_REDIS_URL": self.redis.url, "CONTINUITY_ROOT": str(ROOT),
                    "CONTINUITY_STATE": str(self.state), "CONTINUITY_BLUEPRINT": str(self.bp_path),
                    "CONTINUITY_PULSE_FILE": str(self.state / "pulse_history.jsonl"), "PYTHONUNBUFFERED": "1"}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes = list(doc["nodes"])

    @staticmethod
    def _port_block() -> int:
        while True:
            p = free_port()
            if p + 200 < 65000:
                return p

    def spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.work / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(argv, env=self.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start_worker(self, node: str) -> None:
        self.client.hdel(keys.nodes_registry(), node)
        self.spawn(node, [sys.executable, "-m", "continuity", "worker", "--node", node, "--concurrency", "2",
                          "--loglevel", "WARNING"])
        wait(lambda: self.client.hexists(keys.nodes_registry(), node), 60, f"worker {node} to register")

    def start(self) -> None:
        for node in self.nodes:
            self.start_worker(node)
        self.spawn("beat", [sys.executable, "-m", "continuity", "beat", "--loglevel", "WARNING"])
        wait(lambda: self.holder("ledger") is not None, 60, "the ledger to be bootstrapped")

    def holder(self, service: str) -> str | None:
        lease = leases.read(self.client, service)
        return lease.node if lease else None

    def node_state(self, node: str) -> str:
        raw = self.client.hget(keys.node_state(), node)
        return json.loads(raw).get("state", "unknown") if raw else "unknown"

    def kill_node(self, node: str) -> float:
        """kill -9 the node's worker (whole process group) and every sample service it runs; returns kill time."""
        pids = []
        for pidfile in (self.state / "nodes" / node).glob("*/service.pid"):
            try:
                pids.append(int(pidfile.read_text()))
            except (OSError, ValueError):
                pass
        t = time.time()
        os.killpg(self.procs[node].pid, signal.SIGKILL)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.procs[node].wait(10)
        return t

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in read_events(self.state / "pulse_history.jsonl") if e["kind"].endswith(kind)]

    def stop(self) -> None:
        for p in self.procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        from continuity.sample import ledger_service

        old = dict(os.environ)
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("CONTINUITY_")})
        try:
            ledger_service.stop_all()
        finally:
            os.environ.clear()
            os.environ.update(old)
        self.client.close()
        self.redis.stop()


def wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def kill_round(fleet: BenchFleet, i: int) -> dict[str, Any]:
    victim = wait(lambda: fleet.holder("ledger"), 30, "a ledger lease holder")
    before = {r["id"] for r in records.history(fleet.client, limit=500)}
    t_kill = fleet.kill_node(victim)

    def ledger_record() -> dict[str, Any] | None:
        for r in records.history(fleet.client, limit=50):
            if r["id"] not in before and r["service"] == "ledger" and r["outcome"] in records.FINAL:
                return r
        return None

    rec = wait(ledger_record, 90, f"round {i}: the ledger's failover record")
    dead = [e for e in fleet.events("detect.node_dead") if e["node"] == victim and e["ts"] >= t_kill]
    verify = [s for s in rec["steps"] if s["step"] == "verify" and s["ok"]]
    row = {"round": i, "victim": victim, "new_primary": rec.get("new_primary"), "outcome": rec["outcome"],
           "detection": (dead[0]["ts"] - t_kill) if dead else None,
           "mttr": (verify[-1]["end"] - t_kill) if verify else None,
           "record_detection": rec.get("detection"),
           "steps": {s["step"]: s["duration"] for s in rec["steps"]}}
    # bring the victim back as the standby and let the detector see it alive before the next round
    fleet.start_worker(victim)
    wait(lambda: fleet.node_state(victim) == "alive", 60, f"{victim} to be alive again")
    cooldown_key = keys.failover_cooldown("ledger")
    wait(lambda: not fleet.client.exists(cooldown_key), 120, "the ledger's cool-down to end")
    return row


def hog_phase(fleet: BenchFleet, seconds: float) -> dict[str, Any]:
    n = os.cpu_count() or 2
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True) for _ in range(n)]
    t0 = time.time()
    try:
        time.sleep(seconds)  # the phase itself: the fleet runs under load for this long
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    t1 = time.time()
    started = [r for r in records.history(fleet.client, limit=500) if t0 <= r["started"] <= t1]
    dead = [e for e in fleet.events("detect.node_dead") if t0 <= e["ts"] <= t1]
    suspect = [e for e in fleet.events("detect.node_suspect") if t0 <= e["ts"] <= t1]
    tilt = [e for e in fleet.events("detect.tilt") if t0 <= e["ts"] <= t1]
    return {"seconds": round(t1 - t0, 1), "hogs": n, "false_failovers": len(started), "false_dead": len(dead),
            "suspect_events": len(suspect), "tilt_events": len(tilt)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--hog", type=float, default=300.0, help="seconds of CPU saturation (0 to skip)")
    ap.add_argument("--cooldown", type=float, default=5.0, help="per-service failover cool-down for the bench")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()
    work = ROOT / "bench" / ".data" / f"failover-{int(time.time())}"
    fleet = BenchFleet(work, args.cooldown)
    rows: list[dict[str, Any]] = []
    hog: dict[str, Any] | None = None
    try:
        fleet.start()
        wait(lambda: all(fleet.node_state(n) == "alive" for n in fleet.nodes), 60, "every node alive")
        for i in range(1, args.kills + 1):
            row = kill_round(fleet, i)
            rows.append(row)
            print(f"kill {i:2d}: {row['victim']} -> {row['new_primary']} {row['outcome']}"
                  f"  detection {row['detection']:.2f}s  MTTR {row['mttr']:.2f}s", flush=True)
        if args.hog > 0:
            print(f"CPU hog: saturating {os.cpu_count()} cores for {args.hog:.0f}s ...", flush=True)
            hog = hog_phase(fleet, args.hog)
    finally:
        fleet.stop()
    det = [r["detection"] for r in rows if r["detection"] is not None]
    mttr = [r["mttr"] for r in rows if r["mttr"] is not None]
    failed = [r for r in rows if r["outcome"] != "succeeded"]
    print()
    print(f"{len(rows)} kills, {len(failed)} not succeeded; policy: heartbeat 1s, lease 3s, margin 1s, dead after 2.5s")
    for name, vals, target in (("detection", det, TARGET_DETECTION), ("MTTR (kill -> verified)", mttr, TARGET_MTTR)):
        if not vals:
            continue
        s = summary(vals)
        print(f"{name:<24} min {s['min']:.2f}s  median {s['median']:.2f}s  p95 {s['p95']:.2f}s  max {s['max']:.2f}s"
              f"  (target median <= {target:g}s: {'met' if s['median'] <= target else 'MISSED'})")
    if det:
        med = statistics.median(det)
        for anchor, secs in ANCHORS.items():
            print(f"  vs {anchor} {secs:g}s: detection {secs / med:.1f}x faster"
                  + (f", recovery {secs / statistics.median(mttr):.1f}x faster (anchor is detection only)"
                     if mttr else ""))
    if hog:
        print(f"CPU hog {hog['seconds']:.0f}s on {hog['hogs']} cores: false failovers {hog['false_failovers']},"
              f" nodes declared dead {hog['false_dead']}, suspect events {hog['suspect_events']},"
              f" TILT {hog['tilt_events']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "hog": hog, "detection": summary(det) if det else None,
                                         "mttr": summary(mttr) if mttr else None}, indent=1))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
