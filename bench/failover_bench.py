"""Failover benchmark: kill -9 the ledger's primary node, restart Redis, idle under load; measure what clients see.

Usage::

    .venv/bin/python bench/failover_bench.py                          # 20 kills, 10 Redis restarts (~15 min)
    .venv/bin/python bench/failover_bench.py --kills 3 --redis-restarts 2 --anchor-kills 2 --idle 20   # quick
    .venv/bin/python bench/failover_bench.py --hog                    # the same with both cores saturated
    .venv/bin/python bench/failover_bench.py --json bench/.data/failover.json

The sample fleet (ops/blueprint.yml) runs for real on this machine: a private
redis-server with AOF, one Celery worker per node (node agent; core nodes run
the detector), beat, and the sample ledger service started by the hooks. The
timing policy is the blueprint's default (1 s heartbeat, 3 s lease, 1 s margin,
2.5 s to dead); only the ports (free ones, so a running demo is not disturbed)
and the per-service cool-down (``--cooldown``: 20 kills must not take 20
minutes; it does not enter detection or recovery time) are changed. A steady
client (the sample ``LedgerClient``, following the route) writes every 20 ms
throughout, as an application would.

Phases, in order:

* **idle** (``--idle`` s): nothing is done to the fleet; every failover started
  and every node declared dead is false.
* **kills** (``--kills``): kill -9 the worker of the node holding the ledger's
  lease and every sample service on that node. Detection = the detector's
  ``node_dead`` event - kill; MTTR = the client's first write acknowledged by
  the new primary - kill (what the application sees); also the time to the new
  primary verified, and each step's time (fence, prepare, promote, repoint,
  verify, record) from the failover record. The victim is restarted (it becomes
  the standby) before the next round.
* **Redis restarts** (``--redis-restarts``): kill -9 redis-server, leave it down
  5 s, start it again with its AOF on the same port. Blind time = from Redis
  answering again to the detector's next completed sweep (its generation
  counter moving, the one thing every detector version bumps per sweep); every
  failover started meanwhile is false.
* **anchor** (``--anchor-kills``): the same kill -9 against Redis Sentinel on this
  machine in the same run (master, replica, 3 sentinels, quorum 2) with
  ``down-after-milliseconds`` set to our ``dead_after``: detection = ``+odown``
  - kill, MTTR = a client's first acknowledged write through Sentinel discovery
  - kill. Our medians are printed as ratios to these.

``--hog`` runs everything above with a CPU hog on every core (from before the
fleet starts): the false failovers it reports are the ones that matter.
Targets (issue 9, idle machine): detection median <= 3 s, MTTR median <= 5 s
and p95 <= 8 s, blind time <= 5 s, 0 false failovers (with or without the hog).
Documented anchors (ANCHORS.md) are printed beside the measured one: Sentinel
down-after default 30 s, Patroni TTL 30 s, Kubernetes NotReady 40-50 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
import yaml  # noqa: E402

from continuity.failover import records  # noqa: E402
from continuity.pulse import read_events  # noqa: E402
from continuity.redisd import RedisServer, find_redis_server, free_port  # noqa: E402
from continuity.sample.client import LedgerClient  # noqa: E402
from continuity.state import keys, leases  # noqa: E402

DOCUMENTED = {"Sentinel down-after default": 30.0, "Patroni TTL": 30.0, "Kubernetes NotReady": 45.0}
TARGETS = {"detection": 3.0, "mttr_median": 5.0, "mttr_p95": 8.0, "blind": 5.0}
STEPS = ("fence", "prepare", "promote", "repoint", "verify", "record")
REDIS_DOWN = 5.0


def _register(env: dict[str, str], node: str) -> None:
    """Make the node's heartbeat key and register its public half, as an operator (or `continuity up`) would."""
    from continuity.state import heartbeats

    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("CONTINUITY_")})
    try:
        heartbeats.provision([node])
    finally:
        os.environ.clear()
        os.environ.update(saved)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"n": len(values), "min": min(values), "median": statistics.median(values),
            "p95": percentile(values, 0.95), "max": max(values)}


def wait(cond: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            v = cond()
        except redis.RedisError:
            v = None
        if v:
            return v
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class Hogs:
    """One busy loop per core, for the whole run (``--hog``)."""

    def __init__(self, on: bool) -> None:
        n = os.cpu_count() or 2
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
                      for _ in range(n if on else 0)]

    def stop(self) -> None:
        for h in self.procs:
            h.kill()
            h.wait()


class Writer:
    """The application: writes a new seq every 20 ms through the route; notes when each ack came and from whom."""

    def __init__(self, url: str) -> None:
        self.client = LedgerClient(url, "ledger", timeout=120, request_timeout=0.5)
        self.acks: list[tuple[float, str | None, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        seq = int(time.time() * 1000)
        while not self._stop.is_set():
            seq += 1
            if self.client.append(seq, timeout=5):
                ack = self.client.last_ack
                self.acks.append((time.time(), ack.get("node"), ack.get("epoch")))
            self._stop.wait(0.02)

    def first_ack(self, after: float, node: str | None) -> float | None:
        return next((t for t, n, _ in list(self.acks) if t > after and (node is None or n == node)), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


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
        self.policy = doc["policy"]
        self.bp_path = work / "blueprint.yml"
        self.bp_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.redis = RedisServer(work / "redis", appendonly=True).start()
        self.client = redis.Redis.from_url(self.redis.url, decode_responses=True, socket_timeout=1,
                                           socket_connect_timeout=1)
        self.env = {**os.environ, "CONTINUITY_REDIS_URL": self.redis.url, "CONTINUITY_ROOT": str(ROOT),
                    "CONTINUITY_STATE": str(self.state), "CONTINUITY_BLUEPRINT": str(self.bp_path),
                    "CONTINUITY_PULSE_FILE": str(self.state / "pulse_history.jsonl"), "PYTHONUNBUFFERED": "1",
                    "CONTINUITY_BACKUP_CONFIG": str(work / "no-backup-sets.yml")}
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
        _register(self.env, node)  # the operator's step: the node's heartbeat key in the detector's registry
        self.spawn(node, [sys.executable, "-m", "continuity", "worker", "--node", node, "--concurrency", "2",
                          "--loglevel", "WARNING"])
        wait(lambda: self.client.hexists(keys.nodes_registry(), node), 120, f"worker {node} to register")

    def start(self) -> None:
        for node in self.nodes:
            self.start_worker(node)
        self.spawn("beat", [sys.executable, "-m", "continuity", "beat", "--loglevel", "WARNING"])
        wait(lambda: self.holder("ledger") is not None, 120, "the ledger to be bootstrapped")
        wait(lambda: all(self.node_state(n) == "alive" for n in self.nodes), 120, "every node alive")

    def holder(self, service: str) -> str | None:
        lease = leases.read(self.client, service)
        return lease.node if lease else None

    def node_state(self, node: str) -> str:
        raw = self.client.hget(keys.node_state(), node)
        return json.loads(raw).get("state", "unknown") if raw else "unknown"

    def generation(self) -> int | None:
        try:
            raw = self.client.get(keys.detector_generation())
            return int(raw) if raw is not None else 0
        except (redis.RedisError, ValueError):
            return None

    def records(self) -> list[dict[str, Any]]:
        return records.history(self.client, limit=500)

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

    def restart_redis(self, down: float) -> tuple[float, float]:
        """kill -9 redis-server, ``down`` seconds of nothing, then start it with its AOF on the same port."""
        port = self.redis.port
        t_kill = time.time()
        self.redis.kill()
        time.sleep(down)  # the fault itself: Redis is gone this long
        self.redis = RedisServer(self.work / "redis", port=port, appendonly=True).start(timeout=30)
        return t_kill, time.time()

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
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        from continuity.drills.procs import stop_fleet_processes

        stop_fleet_processes(self.state, exclude={os.getpid(), self.redis.proc.pid if self.redis.proc else -1})
        self.client.close()
        self.redis.stop()


# --- phases --------------------------------------------------------------------------------------------------------
def idle_phase(fleet: BenchFleet, seconds: float) -> dict[str, Any]:
    t0 = time.time()
    time.sleep(seconds)  # the phase itself: the fleet runs untouched this long
    t1 = time.time()
    return {"seconds": round(t1 - t0, 1),
            "false_failovers": sum(1 for r in fleet.records() if t0 <= r["started"] <= t1),
            "false_dead": sum(1 for e in fleet.events("detect.node_dead") if t0 <= e["ts"] <= t1),
            "suspect_events": sum(1 for e in fleet.events("detect.node_suspect") if t0 <= e["ts"] <= t1)}


def kill_round(fleet: BenchFleet, writer: Writer, i: int) -> dict[str, Any]:
    victim = wait(lambda: fleet.holder("ledger"), 60, "a ledger lease holder")
    before = {r["id"] for r in fleet.records()}
    t_kill = fleet.kill_node(victim)

    def ledger_record() -> dict[str, Any] | None:
        for r in records.history(fleet.client, limit=50):
            if r["id"] not in before and r["service"] == "ledger" and r["outcome"] in records.FINAL:
                return r
        return None

    rec = wait(ledger_record, 120, f"round {i}: the ledger's failover record")
    new = rec.get("new_primary")
    ack = wait(lambda: writer.first_ack(t_kill, new), 60, f"round {i}: a write acknowledged by {new}")
    dead = [e for e in fleet.events("detect.node_dead") if e["node"] == victim and e["ts"] >= t_kill]
    verify = [s for s in rec["steps"] if s["step"] == "verify" and s["ok"]]
    last = max((s["attempt"] for s in rec["steps"]), default=0)
    row = {"round": i, "victim": victim, "new_primary": new, "outcome": rec["outcome"], "record": rec["id"],
           "detection": (dead[0]["ts"] - t_kill) if dead else None, "mttr_ack": ack - t_kill,
           "mttr_verified": (verify[-1]["end"] - t_kill) if verify else None,
           "steps": {s["step"]: s["duration"] for s in rec["steps"] if s["attempt"] == last and s.get("duration")}}
    fleet.start_worker(victim)  # back as the standby, seen alive, cool-down over: the next round starts clean
    wait(lambda: fleet.node_state(victim) == "alive", 120, f"{victim} to be alive again")
    wait(lambda: not fleet.client.exists(keys.failover_cooldown("ledger")), 180, "the ledger's cool-down to end")
    return row


def redis_round(fleet: BenchFleet, writer: Writer, i: int) -> dict[str, Any]:
    before = {r["id"] for r in fleet.records()}
    t_kill, t_back = fleet.restart_redis(REDIS_DOWN)
    g0 = wait(lambda: (g := fleet.generation()) is not None and (g,), 30, "Redis to answer")[0]
    try:
        wait(lambda: (g := fleet.generation()) is not None and g != g0, 60, "the next sweep", interval=0.02)
        blind: float | None = time.time() - t_back
    except TimeoutError:
        blind = None
    ack = writer.first_ack(t_back, None) or wait(lambda: writer.first_ack(t_back, None), 60, "a write after")
    time.sleep(10)  # watch for false failovers in the aftermath (the grace and the lease renewals after a gap)
    false = [r for r in fleet.records() if r["id"] not in before]
    return {"round": i, "blind": blind, "write_gap": ack - t_kill, "false_failovers": len(false),
            "tilt": sum(1 for e in fleet.events("detect.tilt") if e["ts"] >= t_kill),
            "grace": sum(1 for e in fleet.events("detect.grace_started") if e["ts"] >= t_kill)}


class SentinelAnchor:
    """Redis Sentinel on this machine: master, replica, three sentinels (quorum 2), down-after = our dead_after."""

    NAME = "bench"

    def __init__(self, work: Path, down_after: float) -> None:
        self.work = work
        self.servers = [RedisServer(work / f"node-{i}", appendonly=False).start() for i in range(2)]
        master = self.servers[0]
        redis.Redis(port=self.servers[1].port).replicaof("127.0.0.1", master.port)
        self.sentinels: list[subprocess.Popen[bytes]] = []
        self.ports = []
        for i in range(3):
            port = free_port()
            d = work / f"sentinel-{i}"
            d.mkdir(parents=True, exist_ok=True)
            conf = d / "sentinel.conf"
            conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {d}\n"
                            f"sentinel monitor {self.NAME} 127.0.0.1 {master.port} 2\n"
                            f"sentinel down-after-milliseconds {self.NAME} {int(down_after * 1000)}\n"
                            f"sentinel failover-timeout {self.NAME} 10000\n"
                            f"sentinel parallel-syncs {self.NAME} 1\n")
            self.sentinels.append(subprocess.Popen([find_redis_server(), str(conf), "--sentinel"],
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                                   start_new_session=True))
            self.ports.append(port)
        self.sentinel = redis.sentinel.Sentinel([("127.0.0.1", p) for p in self.ports], socket_timeout=0.5)
        wait(self._healthy, 60, "Sentinel to see its master and replica")

    def _healthy(self) -> bool:
        s = redis.Redis(port=self.ports[0], socket_timeout=0.5)
        try:
            master = s.sentinel_master(self.NAME)
            replicas = s.sentinel_slaves(self.NAME)
            return (master.get("num-other-sentinels", 0) >= 2 and len(replicas) >= 1
                    and all("s_down" not in str(r.get("flags")) and r.get("master-link-status") == "ok"
                            for r in replicas))
        finally:
            s.close()

    def master(self) -> RedisServer:
        host, port = self.sentinel.discover_master(self.NAME)
        return next(s for s in self.servers if s.port == port)

    def round(self, i: int) -> dict[str, Any]:
        client = self.sentinel.master_for(self.NAME, socket_timeout=0.5, socket_connect_timeout=0.5)
        acks: list[float] = []
        stop = threading.Event()

        def write() -> None:
            while not stop.is_set():
                try:
                    client.incr("k")
                    acks.append(time.time())
                except redis.RedisError:
                    pass
                stop.wait(0.02)

        events: dict[str, float] = {}
        watch = redis.Redis(port=self.ports[1], socket_timeout=None)
        pubsub = watch.pubsub()
        pubsub.subscribe("+odown", "+switch-master")

        def listen() -> None:
            while not stop.is_set():
                m = pubsub.get_message(timeout=0.1)
                if m and m["type"] == "message":
                    events.setdefault(m["channel"].decode(), time.time())

        listener = threading.Thread(target=listen, daemon=True)
        listener.start()
        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        wait(lambda: acks, 30, "Sentinel client writes")
        victim = self.master()
        t_kill = time.time()
        victim.kill()
        ack = wait(lambda: next((t for t in list(acks) if t > t_kill), None), 120, f"anchor round {i}: a write")
        stop.set()
        writer.join(10)
        listener.join(10)
        odown = events.get("+odown")
        pubsub.close()
        watch.close()
        # the old master comes back as a replica of the new one (Sentinel reconfigures it)
        victim.start(timeout=30)
        wait(self._healthy, 120, "Sentinel to see the old master back as a replica")
        return {"round": i, "detection": (odown - t_kill) if odown else None, "mttr_ack": ack - t_kill}

    def stop(self) -> None:
        for p in self.sentinels:
            p.kill()
            p.wait()
        for s in self.servers:
            s.kill()


# --- report --------------------------------------------------------------------------------------------------------
def line(name: str, s: dict[str, float] | None, target: str = "") -> str:
    if not s:
        return f"{name:<34} no samples"
    return (f"{name:<34} n {s['n']:<3d} min {s['min']:6.2f}s  median {s['median']:6.2f}s  p95 {s['p95']:6.2f}s"
            f"  max {s['max']:6.2f}s{target}")


def verdict(value: float | None, target: float) -> str:
    return "" if value is None else f"  (target <= {target:g}s: {'met' if value <= target else 'MISSED'})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--redis-restarts", type=int, default=10)
    ap.add_argument("--anchor-kills", type=int, default=5, help="kill -9 rounds against Redis Sentinel (0: skip)")
    ap.add_argument("--idle", type=float, default=60.0, help="seconds of an untouched fleet (false failovers)")
    ap.add_argument("--hog", action="store_true", help="run everything with a CPU hog on every core")
    ap.add_argument("--cooldown", type=float, default=5.0, help="per-service failover cool-down for the bench")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()
    work = ROOT / "bench" / ".data" / f"failover-{int(time.time())}"
    hogs = Hogs(args.hog)
    fleet = BenchFleet(work, args.cooldown)
    writer: Writer | None = None
    kills: list[dict[str, Any]] = []
    restarts: list[dict[str, Any]] = []
    anchor: list[dict[str, Any]] = []
    idle: dict[str, Any] | None = None
    startup_failovers = 0
    load: list[float] = []
    try:
        fleet.start()
        startup_failovers = len(fleet.records())
        writer = Writer(fleet.redis.url)
        wait(lambda: writer.acks, 60, "the client's first acknowledged write")
        if args.idle > 0:
            idle = idle_phase(fleet, args.idle)
            print(f"idle {idle['seconds']:.0f}s: false failovers {idle['false_failovers']},"
                  f" nodes declared dead {idle['false_dead']}", flush=True)
        for i in range(1, args.kills + 1):
            row = kill_round(fleet, writer, i)
            kills.append(row)
            load.append(os.getloadavg()[0])
            det = f"{row['detection']:.2f}s" if row["detection"] is not None else "?"
            print(f"kill {i:2d}: {row['victim']} -> {row['new_primary']} {row['outcome']}  detection {det}"
                  f"  MTTR (first ack) {row['mttr_ack']:.2f}s  steps "
                  + " ".join(f"{k} {v:.2f}" for k, v in row["steps"].items()), flush=True)
        for i in range(1, args.redis_restarts + 1):
            row = redis_round(fleet, writer, i)
            restarts.append(row)
            load.append(os.getloadavg()[0])
            blind = f"{row['blind']:.2f}s" if row["blind"] is not None else "> 60s"
            print(f"redis restart {i:2d}: blind {blind}  client write gap {row['write_gap']:.2f}s"
                  f"  false failovers {row['false_failovers']}  grace {row['grace']}  tilt {row['tilt']}", flush=True)
    finally:
        if writer is not None:
            writer.stop()
        fleet.stop()
    if args.anchor_kills > 0:
        dead_after = float(str(fleet.policy.get("dead_after", "2.5s")).rstrip("s"))
        sentinel = SentinelAnchor(work / "sentinel", dead_after)
        try:
            for i in range(1, args.anchor_kills + 1):
                row = sentinel.round(i)
                anchor.append(row)
                print(f"anchor {i}: Sentinel detection {row['detection'] or float('nan'):.2f}s"
                      f"  MTTR (first ack) {row['mttr_ack']:.2f}s", flush=True)
        finally:
            sentinel.stop()
    hogs.stop()
    return report(args, kills, restarts, anchor, idle, startup_failovers, load)


def report(args: argparse.Namespace, kills: list[dict[str, Any]], restarts: list[dict[str, Any]],
           anchor: list[dict[str, Any]], idle: dict[str, Any] | None, startup_failovers: int,
           load: list[float]) -> int:
    det = summary([r["detection"] for r in kills if r["detection"] is not None])
    mttr = summary([r["mttr_ack"] for r in kills])
    verified = summary([r["mttr_verified"] for r in kills if r["mttr_verified"] is not None])
    blind = summary([r["blind"] for r in restarts if r["blind"] is not None])
    a_det = summary([r["detection"] for r in anchor if r["detection"] is not None])
    a_mttr = summary([r["mttr_ack"] for r in anchor])
    false = startup_failovers + (idle["false_failovers"] if idle else 0) + sum(r["false_failovers"] for r in restarts)
    failed = [r for r in kills if r["outcome"] != "succeeded"]
    print()
    print(f"{len(kills)} kills ({len(failed)} not succeeded), {len(restarts)} Redis restarts, {len(anchor)} anchor"
          f" kills; CPU hog: {'on, every core' if args.hog else 'off'}; load average during the run:"
          f" {statistics.median(load) if load else os.getloadavg()[0]:.1f} median, {max(load, default=0):.1f} max")
    print(line("detection (kill -> node_dead)", det, verdict(det and det["median"], TARGETS["detection"])))
    print(line("MTTR (kill -> first ack write)", mttr, verdict(mttr and mttr["median"], TARGETS["mttr_median"])
               + (f" p95 {'met' if mttr['p95'] <= TARGETS['mttr_p95'] else 'MISSED'} (<= 8s)" if mttr else "")))
    print(line("   (kill -> new primary verified)", verified))
    for step in STEPS:
        print(line(f"   step {step}", summary([r["steps"][step] for r in kills if step in r["steps"]])))
    print(line("Redis restart blind time", blind, verdict(blind and blind["max"], TARGETS["blind"]) + " (max)"))
    unseen = sum(1 for r in restarts if r["blind"] is None)
    if unseen:
        print(f"   {unseen} restart(s) with no sweep within 60 s of Redis being back")
    print(line("   client write gap (kill -> ack)", summary([r["write_gap"] for r in restarts])))
    print(f"false failovers: {false} (start-up {startup_failovers}, idle {idle['false_failovers'] if idle else '-'},"
          f" Redis restarts {sum(r['false_failovers'] for r in restarts)}); nodes falsely declared dead while idle:"
          f" {idle['false_dead'] if idle else '-'}  (target 0)")
    print("anchor, measured in this run (Redis Sentinel, same machine, down-after = our dead_after):")
    print(line("   Sentinel detection (+odown)", a_det))
    print(line("   Sentinel MTTR (first ack write)", a_mttr))
    for name, ours, theirs in (("detection", det, a_det), ("MTTR to first ack", mttr, a_mttr)):
        if ours and theirs:
            print(f"   ours / Sentinel, {name}: {ours['median'] / theirs['median']:.2f}x"
                  f" ({ours['median']:.2f}s vs {theirs['median']:.2f}s median)")
    if det:
        print("documented anchors (defaults, not measured here): "
              + ", ".join(f"{name} {secs:g}s = {secs / det['median']:.1f}x our detection"
                          for name, secs in DOCUMENTED.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"kills": kills, "redis_restarts": restarts, "anchor": anchor, "idle": idle,
                                         "startup_failovers": startup_failovers, "hog": args.hog,
                                         "summary": {"detection": det, "mttr_ack": mttr, "mttr_verified": verified,
                                                     "blind": blind, "false_failovers": false,
                                                     "anchor_detection": a_det, "anchor_mttr": a_mttr}}, indent=1))
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
