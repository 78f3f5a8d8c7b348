"""The sample ledger service as a real process against a real redis-server: fencing, durability, the client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.redisd import free_port
from continuity.sample.client import LedgerClient
from continuity.services.layout import service_dir
from continuity.state import keys
from tests.failover_support import kill_services, make_blueprint
from tests.helpers import ROOT, project_env


@pytest.fixture
def env(redis_url: str, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    # no replicator runs here: the two-core copy, whose ledger replicates async (sync would refuse every write)
    e = project_env(redis_url, state_dir, CONTINUITY_BLUEPRINT=str(make_blueprint(tmp_path)))
    for k in ("CONTINUITY_STATE", "CONTINUITY_REDIS_URL", "CONTINUITY_PULSE_FILE", "CONTINUITY_BLUEPRINT"):
        monkeypatch.setenv(k, e[k])
    yield e
    kill_services(state_dir)


def ledger(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "continuity.sample.ledger_service", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def start(env: dict[str, str], node: str, port: int, epoch: int) -> None:
    r = ledger(env, "start", "--service", "ledger", "--node", node, "--port", str(port), "--epoch", str(epoch))
    assert r.returncode == 0, r.stderr


def hold(rds, node: str, epoch: int) -> None:
    """Make ``node`` the holder of epoch ``epoch`` (what fence + promote leave behind)."""
    rds.set(keys.epoch("ledger"), epoch)
    rds.set(keys.lease("ledger"), json.dumps({"node": node, "epoch": epoch}), px=60_000)
    from continuity.failover.steps import write_routes_file

    rds.set(keys.route("ledger"), json.dumps({"node": node, "epoch": epoch, "url": f"http://127.0.0.1:{PORTS[node]}"}))
    write_routes_file({"ledger": {"node": node, "epoch": epoch, "url": f"http://127.0.0.1:{PORTS[node]}"}})


PORTS: dict[str, int] = {}


def test_writes_are_fenced_durable_and_idempotent(env, rds, state_dir: Path) -> None:
    PORTS.update({"core-a": free_port(), "core-b": free_port()})
    hold(rds, "core-a", 1)
    start(env, "core-a", PORTS["core-a"], 1)
    start(env, "core-a", PORTS["core-a"], 1)  # idempotent: already running with this epoch
    client = LedgerClient(env["CONTINUITY_REDIS_URL"], timeout=5)
    assert all(client.append(s) for s in range(1, 6))
    assert client.append(3)  # a retried write is acknowledged once, stored once
    assert client.records() == [1, 2, 3, 4, 5]
    lines = (service_dir("core-a", "ledger") / "ledger.jsonl").read_text().splitlines()
    assert [json.loads(x)["seq"] for x in lines] == [1, 2, 3, 4, 5]
    import sqlite3

    db = sqlite3.connect(service_dir("core-a", "ledger") / "ledger.db")
    assert [r[0] for r in db.execute("SELECT seq FROM records ORDER BY seq")] == [1, 2, 3, 4, 5]

    # the role moves on (epoch 2 on core-b): the old instance's writes are refused with 409
    from continuity.failover.steps import prepare

    rds.set(keys.epoch("ledger"), 2)
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{PORTS['core-a']}/records", data=b'{"seq": 6}', method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 409 and "stale epoch 1" in json.loads(err.value.read())["error"]
    # the standby serves what prepare left in its directory, and the client follows the route
    from continuity.blueprint import load_blueprint

    bp = load_blueprint(Path(env["CONTINUITY_BLUEPRINT"]))
    from continuity.failover.context import FailoverContext

    out = prepare(rds, bp, FailoverContext.from_dict({"service": "ledger", "candidate": "core-b",
                                                      "old_primary": "core-a", "epoch": 2, "record_id": "r1"}, bp))
    # nothing was replicated here and there is no backup: core-b starts from its own (empty) copy and says so,
    # never from core-a's disk (another node's disk is not there on real hosts)
    assert out["source"] == "replica" and out["starts_from"]["records"] == 0, out
    hold(rds, "core-b", 2)
    start(env, "core-b", PORTS["core-b"], 2)
    files_client = LedgerClient(state_dir / "routes.json", timeout=5)
    assert files_client.append(6)
    assert files_client.records() == [6]


def test_bad_requests_are_400_and_never_crash(env, rds) -> None:
    import urllib.error
    import urllib.request

    PORTS["core-a"] = free_port()
    hold(rds, "core-a", 1)
    start(env, "core-a", PORTS["core-a"], 1)
    for body in (b"not json", b'{"seq": "one"}', b"[1]", b'{"seq": true}'):
        req = urllib.request.Request(f"http://127.0.0.1:{PORTS['core-a']}/records", data=body, method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 400
    with urllib.request.urlopen(f"http://127.0.0.1:{PORTS['core-a']}/health", timeout=5) as r:
        assert json.loads(r.read())["records"] == 0


def test_instance_stops_itself_when_its_lease_is_gone(env, rds, state_dir: Path) -> None:
    from tests.failover_support import pulse_events
    from tests.helpers import wait_for

    PORTS["core-a"] = free_port()
    hold(rds, "core-a", 1)
    start(env, "core-a", PORTS["core-a"], 1)
    rds.delete(keys.lease("ledger"))  # the lease expired (agent frozen, node cut off)
    from continuity.sample.ledger_service import running

    wait_for(lambda: running("core-a", "ledger") is None, timeout=20, what="the instance to stop itself")
    (ev,) = pulse_events(state_dir, "failover.service_demoted")
    assert ev["node"] == "core-a" and ev["epoch"] == 1 and "lease" in ev["data"]["reason"]
    assert ledger(env, "stop", "--service", "ledger", "--node", "core-a").returncode == 0  # stopping twice is fine


def test_start_fails_cleanly_when_the_port_is_taken(env, rds) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = ledger(env, "start", "--service", "ledger", "--node", "core-a", "--port", str(port), "--epoch", "1")
    assert r.returncode == 1 and "exited" in r.stderr


def test_an_epoch_lower_than_one_served_on_this_node_is_refused_also_after_restart(env, rds) -> None:
    """A Redis that lost writes (failover to a replica that was behind) handed epoch 2 back after 3 was served
    here: Redis calls 2 current, but this node's own record of epoch 3 refuses it — through restarts too."""
    import urllib.error
    import urllib.request

    PORTS["core-a"] = free_port()
    url = f"http://127.0.0.1:{PORTS['core-a']}"

    def post(seq: int) -> tuple[int, dict]:
        req = urllib.request.Request(f"{url}/records", data=json.dumps({"seq": seq}).encode(), method="POST")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    hold(rds, "core-a", 3)
    start(env, "core-a", PORTS["core-a"], 3)
    assert post(1)[0] == 200
    floor = json.loads((service_dir("core-a", "ledger") / "epoch.max").read_text())["epoch"]
    assert floor == 3
    hold(rds, "core-a", 2)  # Redis went back to epoch 2 (and a lease at 2)
    for _ in range(2):  # started at 2, then restarted at 2: refused both times
        start(env, "core-a", PORTS["core-a"], 2)
        status, body = post(2)
        assert status == 409 and "lower than epoch 3" in body["error"], body
        assert ledger(env, "stop", "--service", "ledger", "--node", "core-a").returncode == 0
    hold(rds, "core-a", 4)
    start(env, "core-a", PORTS["core-a"], 4)
    assert post(3)[0] == 200
    with urllib.request.urlopen(f"{url}/records?after=-1", timeout=5) as r:
        assert [rec["seq"] for rec in json.loads(r.read())["records"]] == [1, 3]
