"""A Redis outage is not a node failure; a cut link still is. Real workers, a real redis-server, real services.

Two nodes, each primary of one sample service (ledger on core-a, keystore on core-b). core-b reaches Redis
through the drills' link proxy. No beat runs (no detector, no failover): what is checked is what each node's
agent and service instance do on their own.

1. redis-server is killed -9 and started again 5 s later on the same port: both primaries keep their roles
   and their service processes (no self-demotion, same pids, same epoch), renew as soon as Redis answers,
   and record ``detect.redis_outage`` with cause ``redis-down``. Before, every primary demoted itself after
   2.25 s (the self-fence limit of a 3 s lease).
2. core-b's link is then blackholed (the proxy holds every byte): its agent and its service instance both give
   the role up before the lease they stopped renewing has expired at Redis.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis

from continuity.redisd import RedisServer
from continuity.state import leases, links
from tests.failover_support import get_health, kill_services, make_blueprint, post_seq, pulse_events, service_pid
from tests.helpers import continuity_cmd, project_env, wait_for

pytestmark = pytest.mark.slow

OUTAGE = 5.0  # how long redis-server stays dead (the fault itself, not a wait for anything)
POLICY = {"heartbeat_interval": "1s", "lease_ttl": "3s", "lease_margin": "1s", "suspect_after": "1.5s",
          "dead_after": "2.5s"}


def _health(port: int) -> dict | None:
    return get_health(f"http://127.0.0.1:{port}")


@pytest.fixture
def fleet(tmp_path: Path, own_redis: RedisServer, state_dir: Path, spawn, start_worker):
    from continuity.blueprint import load_blueprint
    from continuity.services.hooks import service_port

    bp_path = make_blueprint(tmp_path, ("ledger", "keystore"), **POLICY)
    bp = load_blueprint(bp_path)
    env = project_env(own_redis.url, state_dir, CONTINUITY_BLUEPRINT=str(bp_path))
    port_file = tmp_path / "proxy-core-b.port"
    spawn(continuity_cmd()[:1] + ["-m", "continuity.drills.proxy", "--node", "core-b", "--upstream", own_redis.url,
                                  "--port-file", str(port_file)], env, "proxy-core-b")
    port = int(wait_for(lambda: port_file.exists() and port_file.read_text().strip(), timeout=20,
                        what="the link proxy of core-b"))
    env_b = dict(env, CONTINUITY_REDIS_URL=f"redis://127.0.0.1:{port}/0")
    start_worker("core-a", env=env)
    start_worker("core-b", env=env_b)
    client = redis.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=2)
    ports = {"ledger": service_port(bp, "ledger", "core-a"), "keystore": service_port(bp, "keystore", "core-b")}
    for svc, node in (("ledger", "core-a"), ("keystore", "core-b")):
        wait_for(lambda s=svc, n=node: (lease := leases.read(client, s)) and lease.node == n and lease.epoch == 1
                 and (_health(ports[s]) or {}).get("epoch") == 1, timeout=60, what=f"{svc} serving on {node}")
    yield {"client": client, "ports": ports, "env": env}
    kill_services(state_dir)


def _events(state: Path, suffix: str, node: str | None = None) -> list[dict]:
    return [e for e in pulse_events(state, suffix) if node is None or e["node"] == node]


def test_primaries_ride_out_a_redis_restart_but_a_cut_off_node_demotes_in_time(fleet, own_redis, state_dir) -> None:
    client, ports = fleet["client"], fleet["ports"]
    pids = {("ledger", "core-a"): service_pid(state_dir, "core-a", "ledger"),
            ("keystore", "core-b"): service_pid(state_dir, "core-b", "keystore")}
    assert all(pids.values())

    # --- 1. redis-server killed, back 5 s later on the same port --------------------------------------------
    own_redis.kill()
    killed = time.time()
    time.sleep(OUTAGE)
    own_redis.restart()
    for node in ("core-a", "core-b"):
        wait_for(lambda n=node: _events(state_dir, "detect.redis_outage", n), timeout=30,
                 what=f"{node}'s agent reaching Redis again")
    for svc, node in (("ledger", "core-a"), ("keystore", "core-b")):
        (ev,) = _events(state_dir, "detect.redis_outage", node)
        assert ev["data"]["causes"] == ["redis-down"], ev
        assert ev["data"]["seconds"] >= OUTAGE - 1.0 and ev["data"]["kept"] == [svc], ev
        wait_for(lambda s=svc, n=node: (lease := leases.read(client, s)) and lease.node == n and lease.epoch == 1,
                 timeout=10, what=f"{svc}'s lease renewed by {node} at epoch 1")
        h = _health(ports[svc])
        assert h and h["epoch"] == 1 and h["pid"] == pids[(svc, node)], f"{svc} on {node} kept serving: {h}"
    assert _events(state_dir, "failover.self_demoted") == [], "no primary demoted itself for a Redis restart"
    assert _events(state_dir, "failover.service_demoted") == []
    # the ledger takes writes again (its epoch checks out at Redis)
    assert post_seq(f"http://127.0.0.1:{ports['ledger']}", 1) == 200
    assert all(service_pid(state_dir, n, s) == pid for (s, n), pid in pids.items())
    print(f"redis down {OUTAGE:.1f}s from {killed:.3f}; agents rode it out; load {os.getloadavg()}")

    # --- 2. core-b's link blackholed: it demotes before its lease can expire at Redis -------------------------
    links.set_fault(client, "core-b", {"delay_ms": 60_000}, ttl_ms=120_000)
    wait_for(lambda: float((links.read_status(client, "core-b") or {}).get("delay_ms", 0)) == 60_000, timeout=10,
             what="the proxy applying the blackhole")
    # the lease core-b can no longer renew runs out at Redis: when (to within the poll) is the deadline
    gone = wait_for(lambda: leases.read(client, "keystore") is None and time.time(), timeout=15, interval=0.01,
                    what="core-b's keystore lease to expire at Redis")
    (demoted,) = wait_for(lambda: _events(state_dir, "failover.self_demoted", "core-b"), timeout=20,
                          what="core-b's agent to demote keystore")
    assert demoted["service"] == "keystore" and "not renewed" in demoted["data"]["reason"], demoted
    assert demoted["data"]["decided_at"] < gone, (demoted["data"]["decided_at"], gone)
    from continuity.sample.ledger_service import running

    wait_for(lambda: running("core-b", "keystore") is None, timeout=20, what="keystore's instance to stop")
    # the instance may have stopped itself first (its own lease watch has the same budget): then in time too
    for stopped in _events(state_dir, "failover.service_demoted", "core-b"):
        assert stopped["data"]["at"] < gone, (stopped["data"]["at"], gone)
    assert _events(state_dir, "failover.self_demoted", "core-a") == [], "core-a is not cut off"
    assert (_health(ports["ledger"]) or {}).get("pid") == pids[("ledger", "core-a")]
    print(f"core-b gave keystore up {gone - demoted['data']['decided_at']:.2f}s before its lease expired at Redis; "
          f"its stop hook was done {demoted['data']['at'] - gone:+.2f}s from then; load {os.getloadavg()}")
