"""The separate-host test bed itself: addresses, partitions, node loss, revival, the disk guard, teardown.

Real namespaces, real processes, a real Redis on the bridge; no worker fleet here
(tests/e2e/test_netbed_fleet.py runs one). Skipped, with the reason, where the bed
cannot run (not root); CI runs as root.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from continuity import netbed
from continuity.netbed import Bed
from continuity.redisd import free_port
from tests.helpers import ROOT, wait_for
from tests.netbed import bed_blueprint, make_bed_fixture, netbed_session_fixture  # noqa: F401 - fixtures

# answers GET with the node name it was given: which host answered is the whole question
SERVER = ("import http.server, sys\n"
          "class H(http.server.BaseHTTPRequestHandler):\n"
          "    def do_GET(self):\n"
          "        self.send_response(200); self.end_headers(); self.wfile.write(sys.argv[2].encode())\n"
          "    def log_message(self, *a): pass\n"
          "http.server.ThreadingHTTPServer(('0.0.0.0', int(sys.argv[1])), H).serve_forever()\n")
# from inside a node: GET a URL, print the body or the error's class
FETCH = ("import sys, urllib.request\n"
         "try:\n    print(urllib.request.urlopen(sys.argv[1], timeout=1).read().decode())\n"
         "except OSError as exc:\n    print('unreachable', type(exc).__name__)\n")
PING = ("import sys, redis\n"
        "try:\n    print(redis.Redis.from_url(sys.argv[1], socket_timeout=1, socket_connect_timeout=1).ping())\n"
        "except redis.RedisError as exc:\n    print('unreachable', type(exc).__name__)\n")


def fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.read().decode()
    except OSError as exc:
        return f"unreachable {type(exc).__name__}"


def on(bed: Bed, node: str, code: str, *args: str) -> str:
    res = bed.call(node, [sys.executable, "-c", code, *args], timeout=30)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip()


@pytest.fixture
def bed(make_bed, tmp_path: Path) -> Bed:
    return make_bed(bed_blueprint(tmp_path))


def serve(bed: Bed, node: str, port: int) -> str:
    bed.run(node, [sys.executable, "-c", SERVER, str(port), node], f"server-{node}")
    url = f"http://{bed.host(node).address}:{port}/"
    wait_for(lambda: fetch(url) == node, timeout=30, what=f"{node}'s server on its address")
    return url


def test_each_node_is_a_host_of_its_own_reaching_redis_and_the_others_over_the_network(bed: Bed) -> None:
    assert len({h.address for h in bed.hosts.values()}) == 3
    port = free_port()  # free on the machine's loopback: no node is there
    url_a, url_b = serve(bed, "core-a", port), serve(bed, "core-b", port)  # same port, two hosts: no clash
    assert fetch(url_a) == "core-a" and fetch(url_b) == "core-b"
    assert fetch(f"http://127.0.0.1:{port}/").startswith("unreachable"), "a node listened on the bed's loopback"
    assert on(bed, "core-c", FETCH, url_a) == "core-a"  # node to node, over the bridge
    assert on(bed, "core-c", FETCH, f"http://127.0.0.1:{port}/").startswith("unreachable")  # its own loopback
    assert bed.url.startswith(f"redis://{bed.gateway}:")
    assert on(bed, "core-c", PING, bed.url) == "True"
    env = bed.node_env("core-c")
    assert env["CONTINUITY_STATE"] == str(bed.host("core-c").root)
    assert env["CONTINUITY_PULSE_FILE"].startswith(str(bed.host("core-c").root) + "/")
    other_roots = [str(h.root) for h in bed.hosts.values() if h.node != "core-c"]
    assert not [k for k, v in env.items() if any(r in v for r in other_roots)], "core-c is pointed at another root"


def test_a_partitioned_node_keeps_its_own_address_and_nothing_else_until_healed(bed: Bed) -> None:
    port = free_port()
    url_a = serve(bed, "core-a", port)
    bed.partition("core-a")
    assert fetch(url_a).startswith("unreachable")
    assert on(bed, "core-b", FETCH, url_a).startswith("unreachable")
    assert on(bed, "core-a", PING, bed.url).startswith("unreachable")
    assert on(bed, "core-a", FETCH, url_a) == "core-a"  # the host itself still works: only its cable is out
    bed.heal("core-a")
    wait_for(lambda: fetch(url_a) == "core-a", timeout=30, what="core-a reachable after the heal")
    assert on(bed, "core-a", PING, bed.url) == "True"


# a node process with something on its disk and grandchildren in sessions of their own; it writes MARKER
# (outside every root) if it ever runs while its root is not all there
WRITER = """
import os, subprocess, sys, time
root, marker = os.environ["CONTINUITY_STATE"], sys.argv[1]
kids = [subprocess.Popen(["sleep", "1000"], start_new_session=True) for _ in range(3)]
for i in range(2000):
    with open(f"{root}/f{i}", "w") as fh:
        fh.write("x" * 512)
want = len(os.listdir(root))
print("ready", os.getpid(), *[k.pid for k in kids], flush=True)
while True:
    try:
        seen = len(os.listdir(root))
    except OSError:
        seen = -1
    if seen < want:
        with open(marker, "w") as fh:
            fh.write(f"ran with {seen} of {want} entries in its root")
        break
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][:1]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _start_writer(bed: Bed, node: str, marker: Path) -> list[int]:
    bed.run(node, [sys.executable, "-c", WRITER, str(marker)], f"writer-{node}")
    line = wait_for(lambda: [ln for ln in bed.log_path(f"writer-{node}").read_text().splitlines()
                             if ln.startswith("ready")], timeout=60, what=f"the writer on {node}")[0]
    return [int(p) for p in line.split()[1:]]


def test_node_loss_kills_every_process_of_the_node_and_its_root_in_the_same_instant(bed: Bed,
                                                                                     tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    pids = _start_writer(bed, "core-a", marker)
    survivor = _start_writer(bed, "core-b", tmp_path / "marker-b")
    root_a = bed.host("core-a").root
    loss = bed.lose("core-a")
    assert set(pids) <= set(loss.pids), "a process of the node (a grandchild in its own session?) was missed"
    assert not [p for p in pids if _alive(p)]
    assert bed.pids("core-a") == set()
    assert not root_a.exists() and not list((bed.roots / ".lost").iterdir())
    assert not marker.exists(), marker.read_text()  # no process of the node ran after its disk went
    # the other hosts are untouched
    assert all(_alive(p) for p in survivor) and len(os.listdir(bed.host("core-b").root)) > 2000
    assert not (tmp_path / "marker-b").exists()


def test_a_lost_node_comes_back_on_an_empty_root_with_only_its_provisioned_keys(bed: Bed, tmp_path: Path) -> None:
    _start_writer(bed, "core-a", tmp_path / "marker")
    with pytest.raises(netbed.NetError, match="not lost"):
        bed.revive("core-a")
    bed.lose("core-a")
    root = bed.revive("core-a")
    assert sorted(p.name for p in root.iterdir()) == ["keys", "nodes", "trust"]
    assert [p.name for p in (root / "trust").iterdir()] == ["nodes.pub"]  # the provisioned public-key registry
    assert sorted(p.name for p in (root / "keys").iterdir()) == ["core-a.key", "core-b.key", "core-c.key",
                                                                 "node-core-a.ed25519", "nodes", "trusted"]
    # its own task-signing key (no other node's), and every node's and the control host's public half trusted
    trusted = sorted(str(p.relative_to(root / "keys" / "trusted")) for p in (root / "keys" / "trusted").rglob("*.pub"))
    assert trusted == ["control/control.pub", "node/core-a.pub", "node/core-b.pub", "node/core-c.pub"]
    own = [p.relative_to(root / "keys" / "nodes") for p in (root / "keys" / "nodes").rglob("*") if p.is_file()]
    assert [str(p) for p in own] == ["core-a/heartbeat.ed25519"]  # its own signing key, no other node's
    assert not [p for p in (root / "nodes").iterdir() if not p.is_symlink()], "data survived the loss"
    port = free_port()
    assert fetch(serve(bed, "core-a", port)) == "core-a"  # same address, running again


def test_a_node_reading_another_nodes_root_is_refused_and_fails_the_test_even_if_it_shrugs(bed: Bed) -> None:
    plant = [sys.executable, "-m", "tests.netbed_plant"]
    env_a = {**bed.node_env("core-a"), "CONTINUITY_NODE": "core-a"}
    res = subprocess.run(["ip", "netns", "exec", bed.host("core-a").netns, *plant, "write", "ledger"],
                         env=env_a, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    ledger = bed.host("core-a").root / "nodes" / "core-a" / "ledger" / "ledger.jsonl"
    assert ledger.read_text() == '{"seq": 1}\n'  # the bed (root namespace) may read any root
    assert bed.violations() == []  # nor is a node's own root any violation
    # core-b runs code that assumes a shared disk: it shrugs at what it cannot read ...
    assert bed.call("core-b", [*plant, "peek", "core-a", "ledger"]).stdout.strip() == "absent"
    direct = bed.call("core-b", ["cat", str(ledger)])
    assert direct.returncode != 0 and "Operation not permitted" in direct.stderr
    # ... but every open was refused and reported, naming who, whose and what
    found = bed.violations()
    assert {(v.reader, v.owner) for v in found} == {("core-b", "core-a")}
    assert {v.path for v in found} >= {str(ledger.parent), str(ledger)}
    with pytest.raises(netbed.IsolationBroken, match=r"core-b opened core-a's .*ledger"):
        bed.assert_isolated()
    assert len(bed.take_violations()) == len(found)
    bed.assert_isolated()  # taken: this test provoked them on purpose


def test_without_the_guard_the_same_plant_reads_the_other_nodes_data(make_bed, tmp_path: Path) -> None:
    """Why the guard: the trap links make shared-disk code reach the real data, which only the guard stops."""
    bed = make_bed(bed_blueprint(tmp_path), guard=False)
    plant = [sys.executable, "-m", "tests.netbed_plant"]
    env_a = {**bed.node_env("core-a"), "CONTINUITY_NODE": "core-a"}
    subprocess.run(["ip", "netns", "exec", bed.host("core-a").netns, *plant, "write", "ledger"], env=env_a,
                   cwd=ROOT, check=True, capture_output=True, timeout=30)
    assert bed.call("core-b", [*plant, "peek", "core-a", "ledger"]).stdout.strip() == \
        "found ['ledger.jsonl'], 1 record(s)"
    assert bed.violations() == []


SUITE = """
import subprocess, sys
from tests.netbed import bed_blueprint, make_bed_fixture, netbed_session_fixture  # noqa: F401

def test_plants_a_cross_node_read(make_bed, tmp_path):
    bed = make_bed(bed_blueprint(tmp_path))
    env = {**bed.node_env("core-a"), "CONTINUITY_NODE": "core-a"}
    subprocess.run(["ip", "netns", "exec", bed.host("core-a").netns, sys.executable, "-m", "tests.netbed_plant",
                    "write", "ledger"], env=env, check=True, capture_output=True, timeout=30)
    out = bed.call("core-b", [sys.executable, "-m", "tests.netbed_plant", "peek", "core-a", "ledger"])
    assert out.stdout.strip() == "absent"   # the test itself sees nothing wrong
"""


def test_a_suite_whose_node_reads_another_nodes_root_fails(netbed_session, tmp_path: Path) -> None:
    """A pytest run of a test that plants a cross-node read (and passes by itself) fails: the bed's verdict."""
    test_file = tmp_path / "test_planted.py"
    test_file.write_text(SUITE)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-3000:]
    assert "1 passed, 1 error" in out and "core-b opened core-a's" in out, out[-3000:]


ORPHAN = """
import os, signal, sys
from pathlib import Path
from continuity.netbed import Bed
bed = Bed(Path(sys.argv[1]), Path(sys.argv[2])).start()
bed.run("core-a", ["sleep", "1000"], "sleeper")
bed.run_control(["sleep", "1000"], "control-sleeper")
print(bed.plan["record"], flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_bed_whose_owner_was_killed_is_swept_and_a_closed_bed_leaves_nothing(bed: Bed, tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", ORPHAN, str(bed.blueprint), str(tmp_path / "orphan")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    plan = json.loads(Path(res.stdout.strip()).read_text())
    left = netbed.leftovers(plan)
    assert any(x.startswith("namespace") for x in left) and any(x.startswith("process") for x in left), left
    # a subnet claim whose owner died before it could record its bed is swept too
    stray = Path(plan["claim"]).with_name(f"subnet-stray-{plan['id']}.claim")
    stray.write_text(json.dumps({"id": "stray", "owner_pid": plan["owner_pid"], "owner_start": plan["owner_start"]}))
    assert plan["id"] in netbed.sweep_stale()
    assert netbed.leftovers(plan) == [] and not stray.exists()
    assert bed.plan["id"] not in netbed.sweep_stale()  # a bed whose owner lives is never swept
    # and a bed closed with processes running on its hosts and beside them leaves nothing either
    serve(bed, "core-a", free_port())
    control = bed.run_control(["sleep", "1000"], "control-sleeper")
    assert bed.close() == []
    assert bed.leftovers() == [] and control.poll() is not None
