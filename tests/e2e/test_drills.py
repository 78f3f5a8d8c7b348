"""End to end: every shipped drill scenario against the sample fleet, with real processes.

One fleet for the module (own redis-server with AOF, a Redis-link proxy in front
of every node's worker, four workers with their node agents, detector loops and replicators, beat), the
sample fleet as shipped (three core nodes, the ledger in sync mode, the notifier async) on fast timings,
and the shipped ``ops/drills/continuity_scenarios.yaml``
run through the real CLI (``continuity drill run NAME --json``). After each drill
we check it passed and left nothing behind: no stopped process, no link fault,
no pending rollback, the corrupted file bytes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import yaml

from continuity.drills import procs
from continuity.redisd import RedisServer
from continuity.state import keys
from tests.failover_support import kill_services, make_blueprint
from tests.helpers import (
    ROOT,
    Proc,
    continuity_cmd,
    project_env,
    register_nodes,
    run_cli,
    signed_as_control,
    wait_for,
)

pytestmark = pytest.mark.slow
NODES = ("core-a", "core-b", "core-c", "sat-1")
SERVICES = ("ledger", "keystore", "notifier", "reports", "telemetry")
PASSWORD = "drill-test-password"


class DrillFleet:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.state = tmp / "state"
        self.state.mkdir()
        self.redis = RedisServer(tmp / "redis", appendonly=True).start()
        bp_path = make_blueprint(tmp, SERVICES, shipped=True, failover_cooldown="1s")
        doc = yaml.safe_load(bp_path.read_text())
        doc["nodes"]["sat-1"]["contact"] = [{"start": "00:00", "end": "24:00"}]  # drills at any hour of the test
        bp_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        self.bp_path = bp_path
        self.env = project_env(self.redis.url, self.state, CONTINUITY_BLUEPRINT=str(bp_path), CONTINUITY_ENV="test",
                               CONTINUITY_PASSWORD=PASSWORD, CONTINUITY_GAME_DAYS="off")
        self.client = redis_lib.Redis.from_url(self.redis.url, decode_responses=True)
        self.procs: list[Proc] = []
        self.proxy_urls: dict[str, str] = {}

    def spawn(self, argv: list[str], env: dict[str, str], name: str) -> Proc:
        p = Proc(argv, env, self.tmp / "logs" / f"{name}.log", cwd=ROOT)
        self.procs.append(p)
        return p

    def start(self) -> None:
        for node in NODES:
            port_file = self.tmp / f"proxy-{node}.port"
            self.spawn([os.sys.executable, "-m", "continuity.drills.proxy", "--node", node,
                        "--upstream", self.redis.url, "--port-file", str(port_file)], self.env, f"proxy-{node}")
            port = wait_for(lambda pf=port_file: pf.exists() and pf.read_text().strip(), timeout=20,
                            what=f"link proxy of {node}")
            self.proxy_urls[node] = f"redis://127.0.0.1:{port}/0"
        register_nodes(self.env, NODES)
        for node in NODES:
            env = dict(self.env, CONTINUITY_REDIS_URL=self.proxy_urls[node])
            proc = self.spawn(continuity_cmd("worker", "--node", node), env, f"worker-{node}")
            wait_for(lambda n=node, p=proc: self.client.hexists(keys.nodes_registry(), n) or not p.alive(),
                     timeout=60, what=f"worker {node} to register")
            assert proc.alive(), proc.output()[-3000:]
        self.spawn(continuity_cmd("beat"), self.env, "beat")
        self.wait_normal(90)

    def wait_normal(self, timeout: float = 60, settle: float = 1.5) -> None:
        """Until the fleet has been calm (normal, all alive, no incident) for ``settle`` seconds in a row:
        right after a switchover the mode can still flip once, and the drill guard would rightly refuse."""
        calm_since: list[float] = []

        def normal() -> bool:
            raw = self.client.get(keys.mode())
            states = [json.loads(v).get("state") for v in self.client.hgetall(keys.node_state()).values()]
            ok = (bool(raw) and json.loads(raw).get("mode") == "normal" and not self.client.hlen(keys.incidents())
                  and len(states) == len(NODES) and all(s == "alive" for s in states))
            if not ok:
                calm_since.clear()
                return False
            if not calm_since:
                calm_since.append(time.monotonic())
            return time.monotonic() - calm_since[0] >= settle

        wait_for(normal, timeout=timeout, what="mode normal, every node alive, no open incident")

    def drill(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return run_cli("drill", *args, env=self.env, timeout=timeout)

    def restore_placement(self) -> None:
        """Put every service back on its blueprint primary (earlier drills failed some over), as an operator
        would between game-day drills; each drill's blast radius is declared against that placement."""
        from continuity.blueprint import load_blueprint
        from continuity.drills.probes import current_primary

        bp = load_blueprint(self.bp_path)
        for sid, view in bp.services.items():
            if view.spec.port is None or current_primary(self.client, bp, sid) == view.primary:
                continue
            self.wait_normal()
            res = run_cli("failover", "switchover", sid, "--to", view.primary, env=self.env, timeout=90)
            assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

    def run(self, name: str) -> dict[str, Any]:
        self.restore_placement()
        self.wait_normal()
        res = self.drill("run", name, "--json")
        try:
            record = json.loads(res.stdout)
        except ValueError:
            raise AssertionError(f"{name}: rc={res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}") from None
        return record

    def wait_injected(self, known: set[Path]) -> dict[str, Any]:
        """The record of a drill started in the background, once its fault is in place."""
        records = self.state / "drills" / "records"

        def injected() -> dict[str, Any] | None:
            for f in set(records.glob("*.json")) - known:
                try:
                    rec = json.loads(f.read_text())
                except ValueError:
                    return None
                if rec.get("injected"):
                    return rec
            return None

        return wait_for(injected, timeout=60, what="a background drill to inject its fault")

    def assert_no_fault_left(self) -> None:
        assert self.client.scard(keys.drill_pending_rollbacks()) == 0
        assert not list((self.state / "drills" / "rollbacks").glob("*.json"))
        for node in NODES:
            assert not self.client.exists(keys.drill_link_fault(node))
            st = self.client.hgetall(keys.drill_link(node))
            assert st and float(st["delay_ms"]) == 0 and st["drop"] == "0", st
            raw = self.client.hget(keys.nodes_registry(), node)
            pid = json.loads(raw)["pid"]
            for p in procs.tree(pid):
                assert not procs.stopped(p), f"{node}: process {p} left stopped"
        for pidfile in self.state.glob("nodes/*/*/service.pid"):
            try:
                pid = int(pidfile.read_text())
            except ValueError:
                continue
            assert not (procs.alive(pid) and procs.stopped(pid)), f"service {pidfile} left stopped"

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        procs.kill_spawned(self.state / "drills" / "spawned.jsonl")
        kill_services(self.state)
        self.client.close()
        self.redis.kill()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DrillFleet]:
    f = DrillFleet(tmp_path_factory.mktemp("drills"))
    try:
        f.start()
        yield f
    finally:
        f.close()


def assert_passed(record: dict[str, Any]) -> None:
    failed = [e for e in record.get("expectations", []) if not e["ok"]]
    assert record["status"] == "passed", json.dumps({"status": record.get("status"), "failed": failed,
                                                      "aborted": record.get("aborted"), "error": record.get("error"),
                                                      "metrics": record.get("metrics")}, indent=1, default=str)


def test_dry_run_touches_nothing(fleet: DrillFleet) -> None:
    before = fleet.client.hgetall(keys.nodes_registry())
    res = fleet.drill("run", "primary-node-outage", "--dry-run", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert plan["dry_run"] and plan["target"]["nodes"] == ["core-a"] and plan["refusal"] is None
    assert (plan["fault"]["action"] or "").startswith("kill -9"), plan["fault"]
    assert fleet.client.hgetall(keys.nodes_registry()) == before
    assert not fleet.client.exists(keys.drill_history())


def test_primary_node_outage(fleet: DrillFleet) -> None:
    rec = fleet.run("primary-node-outage")
    assert_passed(rec)
    m = rec["metrics"]
    assert m["failover_count"] >= 1 and m["detection_time"] is not None and m["data_lost"] == 0
    assert {s["step"] for s in m["failover_steps"]} >= {"fence", "promote", "repoint", "verify"}
    assert m["writes_acked"] > 0
    fleet.assert_no_fault_left()
    assert Path(rec["postmortem"]).exists()


def test_standby_core_outage(fleet: DrillFleet) -> None:
    rec = fleet.run("standby-core-outage")
    assert_passed(rec)
    assert {"keystore", "notifier"} <= set(rec["services"])
    fleet.assert_no_fault_left()


def test_service_crash(fleet: DrillFleet) -> None:
    rec = fleet.run("service-crash")
    assert_passed(rec)
    assert rec["metrics"]["data_lost"] == 0
    fleet.assert_no_fault_left()


def assert_reported_loss_is_the_clients(m: dict[str, Any]) -> None:
    """What the failovers' prepare steps reported lost is what the drill's client lost (it is the only writer),
    give or take the one write the client was waiting on at the fault: stored and committed, its answer lost
    with the node, retried by the client on the new primary (so lost to the count, not to the client)."""
    reported = sum(int(e["loss_records"]) for e in m["failover_loss"] if e["service"] == "ledger")
    assert m["data_lost"] is not None and 0 <= reported - m["data_lost"] <= 1, (reported, m["data_lost"],
                                                                                  m["failover_loss"])


def test_heartbeat_loss(fleet: DrillFleet) -> None:
    rec = fleet.run("heartbeat-loss")
    assert_passed(rec)
    assert rec["metrics"]["failover_count"] >= 1
    assert_reported_loss_is_the_clients(rec["metrics"])
    fleet.assert_no_fault_left()


def test_node_partition(fleet: DrillFleet) -> None:
    rec = fleet.run("node-partition")
    assert_passed(rec)
    fleet.assert_no_fault_left()


def test_redis_link_latency(fleet: DrillFleet) -> None:
    rec = fleet.run("redis-link-latency")
    assert_passed(rec)
    assert rec["metrics"]["failover_count"] == 0
    fleet.assert_no_fault_left()


def test_ledger_corruption(fleet: DrillFleet) -> None:
    rec = fleet.run("ledger-corruption")
    assert_passed(rec)
    assert rec["metrics"]["detection_event"] == "probe:ledger-file-intact"
    path = Path(rec["injected"]["path"])
    from continuity.drills.probes import ledger_integrity

    ok, detail, _ = ledger_integrity(path)
    assert ok, detail
    fleet.assert_no_fault_left()


def test_backup_corruption(fleet: DrillFleet) -> None:
    repo = fleet.state / "repos" / "main"
    src = ROOT / "examples" / "data"
    # the fleet's own beat may already have created this repository (a scheduled copy into it)
    res = run_cli("backup", "init", "--repo", str(repo), env=fleet.env)
    assert res.returncode == 0 or "already exists" in res.stderr, res.stderr
    res = run_cli("backup", "snapshot", "--repo", str(repo), "-q", str(src / "files"), env=fleet.env)
    assert res.returncode == 0, res.stderr
    rec = fleet.run("backup-corruption")
    assert_passed(rec)
    victim = Path(rec["injected"]["path"])
    assert victim.is_relative_to(repo)
    res = run_cli("backup", "verify", "--repo", str(repo), "--read-data", "-q", env=fleet.env)
    assert res.returncode == 0, res.stdout + res.stderr
    fleet.assert_no_fault_left()


def test_broker_restart(fleet: DrillFleet) -> None:
    rec = fleet.run("broker-restart")
    assert_passed(rec)
    fleet.assert_no_fault_left()


def test_satellite_blackout(fleet: DrillFleet) -> None:
    rec = fleet.run("satellite-blackout")
    assert_passed(rec)
    assert rec["metrics"]["failover_count"] == 0
    fleet.assert_no_fault_left()
    # sat-1 went silent inside its contact window: its standby-less telemetry escalated to a person (an incident),
    # which the operator closes once contact is back; later drills rightly refuse while it is open
    res = run_cli("failover", "resolve", "--all", "--note", "satellite back in contact", env=fleet.env)
    assert res.returncode == 0, res.stderr
    assert not fleet.client.hlen(keys.incidents())


def test_drill_refused_while_incident_open(fleet: DrillFleet) -> None:
    fleet.restore_placement()
    fleet.wait_normal()
    fleet.client.hset(keys.incidents(), "manual-1", json.dumps({"id": "manual-1", "reason": "real outage"}))
    try:
        before = fleet.client.zcard(keys.drill_history())
        res = fleet.drill("run", "service-crash")
        assert res.returncode == 2
        assert "refused: 1 incident(s) open (manual-1)" in res.stderr
        assert "Traceback" not in res.stderr
        assert fleet.client.zcard(keys.drill_history()) == before  # nothing started, nothing recorded
    finally:
        fleet.client.hdel(keys.incidents(), "manual-1")


def test_failed_rollback_is_reported_and_finished_on_next_start(fleet: DrillFleet) -> None:
    fleet.restore_placement()
    fleet.wait_normal()
    records = fleet.state / "drills" / "records"
    known = set(records.glob("*.json"))
    proc = subprocess.Popen(continuity_cmd("drill", "run", "ledger-corruption", "--json"), env=fleet.env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    rec = fleet.wait_injected(known)
    ledger = Path(rec["injected"]["path"])
    aside = ledger.with_name("ledger.jsonl.aside")
    ledger.rename(aside)  # the rollback will find a directory where its file was: it must fail loudly
    ledger.mkdir()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    final = json.loads(out)
    assert proc.returncode == 1 and final["status"] == "failed"
    assert not final["rollback_ok"] and "restore-bytes" in final["rollback_errors"][0]
    assert fleet.client.sismember(keys.drill_pending_rollbacks(), final["id"])
    ledger.rmdir()
    aside.rename(ledger)
    from continuity.drills.probes import ledger_integrity

    assert not ledger_integrity(ledger)[0]  # the corruption is still there
    res = fleet.drill("recover", "--json")
    assert res.returncode == 0, res.stderr
    assert [o["drill"] for o in json.loads(res.stdout)] == [final["id"]]
    assert ledger_integrity(ledger)[0]
    rec = json.loads(fleet.drill("report", final["id"], "--json").stdout)
    assert rec["status"] == "failed" and rec["rollback_completed_at"]
    fleet.assert_no_fault_left()


def test_runner_killed_mid_drill_rollback_finished_on_next_start(fleet: DrillFleet) -> None:
    fleet.restore_placement()
    fleet.wait_normal()
    records = fleet.state / "drills" / "records"
    known = set(records.glob("*.json"))
    runner = fleet.spawn(continuity_cmd("drill", "run", "heartbeat-loss", "--json"), fleet.env, "runner-killed")

    rec = fleet.wait_injected(known)
    stopped = [int(p) for ps in rec["injected"]["stopped"].values() for p in ps]
    assert stopped and all(procs.stopped(p) for p in stopped)
    runner.kill9()  # the runner dies with the node frozen: only the registry knows how to undo it
    assert all(procs.stopped(p) for p in stopped)
    assert fleet.client.sismember(keys.drill_pending_rollbacks(), rec["id"])
    res = fleet.drill("recover", "--json")  # the next start of a runner (every `drill run` does this first)
    assert res.returncode == 0, res.stderr
    assert [o["drill"] for o in json.loads(res.stdout)] == [rec["id"]]
    assert not any(procs.stopped(p) for p in stopped if procs.alive(p))
    final = json.loads(fleet.drill("report", rec["id"], "--json").stdout)
    assert final["status"] == "failed" and final["reason"] == "runner died during the drill"
    fleet.assert_no_fault_left()


def test_scorecard_shows_measured_beside_declared(fleet: DrillFleet) -> None:
    res = run_cli("report", "--json", env=fleet.env)
    assert res.returncode == 0, res.stderr
    card = json.loads(res.stdout)
    for sid in ("ledger", "keystore", "notifier"):
        row = card["services"][sid]
        assert row["tier"] in (0, 1)
        assert row["rto"]["declared"] is not None and row["rpo"]["declared"] is not None
        assert row["rto"]["latest"] is not None and row["rto"]["worst"] is not None, (sid, row)
        assert row["rpo"]["latest"] is not None and row["rpo"]["worst"] is not None, (sid, row)
    md = run_cli("report", "--markdown", env=fleet.env)
    assert md.returncode == 0 and "| ledger | payments |" in md.stdout


def test_postmortem_drafts_for_drills_and_real_failovers(fleet: DrillFleet, tmp_path: Path) -> None:
    drill_id = fleet.client.zrange(keys.drill_history(), 0, 0)[0]
    failover_id = fleet.client.zrange(keys.failover_history(), 0, 0)[0]
    for rid in (drill_id, failover_id):
        res = fleet.drill("postmortem", rid, "--out", str(tmp_path))
        assert res.returncode == 0, res.stderr
        text = (tmp_path / f"{rid}.md").read_text()
        assert "## Timeline" in text and "{{" not in text
        assert "`failover.started`" in text or "`drill.started`" in text
    res = fleet.drill("postmortem", "no-such-record")
    assert res.returncode == 2 and "no drill or failover record" in res.stderr


def test_run_task_on_the_control_queue(fleet: DrillFleet) -> None:
    from celery import Celery

    sender = Celery("drill-test", broker=fleet.redis.url, backend=fleet.redis.url)
    sender.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    try:
        with signed_as_control(fleet.state):
            for _ in range(3):
                # the guards see the fleet as it is: on a loaded machine a slow probe can flip the mode for a
                # moment, and the task then rightly answers with a refusal (a result, not a crash): wait, ask again.
                # The blast radius is declared against the blueprint's placement, which earlier drills moved.
                fleet.restore_placement()
                fleet.wait_normal()
                plan = sender.send_task("continuity.drills.run", args=["primary-node-outage"],
                                        kwargs={"dry_run": True}, queue="continuity.control").get(timeout=60)
                if plan.get("status") != "refused":
                    break
                assert "continuity mode is" in plan["reason"] or "cool-down" in plan["reason"], plan
            assert plan.get("target", {}).get("nodes") and plan.get("refusal") is None, plan
            # a game-day message outside the calendar (or with game days off, as here) is refused, not run
            late = sender.send_task("continuity.drills.run", args=["service-crash"], kwargs={"game_day": True},
                                    queue="continuity.control").get(timeout=60)
            assert late["status"] == "refused" and "calendar" in late["reason"]
    finally:
        sender.close()


def test_primary_node_loss(fleet: DrillFleet) -> None:
    """Issue 10 item 9: the ledger's primary loses every process and its data root in the same instant. The
    standby is promoted from what it replicated; the failover's prepare step reports the loss and that is the
    drill's (and the scorecard's) RPO; the node comes back on an empty root and does not take the role back."""
    from continuity.blueprint import load_blueprint
    from continuity.drills.measure import service_rpo
    from continuity.drills.probes import current_primary
    from continuity.state import leases

    root = fleet.state / "nodes" / "core-a"
    old_pid = json.loads(fleet.client.hget(keys.nodes_registry(), "core-a"))["pid"]
    rec = fleet.run("primary-node-loss")
    assert_passed(rec)
    m = rec["metrics"]
    assert m["failover_count"] >= 1 and m["writes_acked"] > 0
    assert rec["injected"]["deleted"] == {"core-a": str(root.resolve())}
    assert old_pid in rec["injected"]["killed"]["core-a"]
    reported = [e for e in m["failover_loss"] if e["service"] == "ledger"]
    assert reported, m["failover_loss"]
    assert reported[-1]["source"] in ("replica", "standby", "snapshot"), reported
    assert reported[-1]["loss_records"] is not None and reported[-1]["loss_seconds"] is not None, reported
    assert_reported_loss_is_the_clients(m)
    print(f"node-loss: prepare source={reported[-1]['source']} loss_records={reported[-1]['loss_records']} "
          f"loss_seconds={reported[-1]['loss_seconds']} client_lost={m['data_lost']} achieved_rpo={m['achieved_rpo']}"
          f" mttr={m['mttr']}")

    # the node is back (a new worker on the empty root) and never takes the ledger's role from zero records
    bp = load_blueprint(fleet.bp_path)
    new_pid = json.loads(fleet.client.hget(keys.nodes_registry(), "core-a"))["pid"]
    assert new_pid != old_pid
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        lease = leases.read(fleet.client, "ledger")
        assert current_primary(fleet.client, bp, "ledger") == "core-b"
        assert lease is None or lease.node == "core-b", lease
        time.sleep(0.2)
    fleet.assert_no_fault_left()

    card = json.loads(run_cli("report", "--json", env=fleet.env).stdout)
    assert card["services"]["ledger"]["rpo"]["latest"] == service_rpo(m, "ledger")
    assert service_rpo(m, "ledger") >= reported[-1]["loss_seconds"]
