"""The sample ledger service: one instance per data directory, and a restarted one knows its whole ledger.

Real processes, no Redis (the instances run unguarded): what is checked is the data directory's
lock and the load-before-serve order, which are the service's own defences.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.redisd import free_port
from tests.failover_support import make_blueprint
from tests.helpers import ROOT

SERVICE = ["-m", "continuity.sample.ledger_service"]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    e.update({"CONTINUITY_STATE": str(tmp_path / "state"), "CONTINUITY_ROOT": str(ROOT),
              # no replicator runs here: the ledger replicates async in this copy (sync would refuse every write)
              "CONTINUITY_BLUEPRINT": str(make_blueprint(tmp_path))})
    yield e
    subprocess.run([sys.executable, *SERVICE, "stop-all"], env=e, cwd=ROOT, capture_output=True, timeout=60)


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *SERVICE, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def post(port: int, seq: int) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/records", data=json.dumps({"seq": seq}).encode(),
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def ledger_seqs(env: dict[str, str], node: str = "core-a") -> list[int]:
    path = Path(env["CONTINUITY_STATE"]) / "nodes" / node / "ledger" / "ledger.jsonl"
    return [json.loads(line)["seq"] for line in path.read_text().splitlines()]


def test_a_restarted_instance_never_stores_a_seq_already_in_its_file(env: dict[str, str]) -> None:
    d = Path(env["CONTINUITY_STATE"]) / "nodes" / "core-a" / "ledger"
    d.mkdir(parents=True)
    with open(d / "ledger.jsonl", "w") as fh:
        fh.writelines(json.dumps({"seq": s, "epoch": 1, "node": "core-a", "ts": 0, "data": {}}) + "\n"
                      for s in range(1, 201))
    port = free_port()
    r = ctl(env, "start", "--service", "ledger", "--node", "core-a", "--port", str(port), "--epoch", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    # the first write after `start` returned already meets the whole ledger
    for seq in (200, 1, 137):
        status, body = post(port, seq)
        assert (status, body["duplicate"]) == (200, True), body
    status, body = post(port, 201)
    assert (status, body["duplicate"], body["epoch"]) == (200, False, 2)
    seqs = ledger_seqs(env)
    assert len(seqs) == len(set(seqs)) == 201
    last = json.loads((d / "ledger.jsonl").read_text().splitlines()[-1])
    assert last["instance"] == body["instance"]


def test_a_second_instance_waits_for_the_first_and_then_loads_what_it_wrote(env: dict[str, str]) -> None:
    """The issue's incident: two instances on one data directory, the later one blind to the other's writes."""
    p1, p2 = free_port(), free_port()
    r = ctl(env, "start", "--service", "ledger", "--node", "core-a", "--port", str(p1), "--epoch", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    for seq in range(1, 6):
        assert post(p1, seq)[0] == 200
    second = subprocess.Popen([sys.executable, *SERVICE, "serve", "--service", "ledger", "--node", "core-a",
                               "--port", str(p2), "--epoch", "1"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in second.stdout], daemon=True).start()  # type: ignore
    try:
        first_word = lines.get(timeout=60)
        assert first_word.startswith("waiting for the instance"), f"the second instance did not wait: {first_word}"
        assert post(p1, 6)[0] == 200  # the first instance writes while the second one waits
        assert ctl(env, "stop", "--service", "ledger", "--node", "core-a").returncode == 0
        ready = lines.get(timeout=60)
        assert ready.startswith("ready "), ready
        status, body = post(p2, 6)
        assert (status, body["duplicate"]) == (200, True), "the second instance stored seq 6 again"
        assert ledger_seqs(env) == [1, 2, 3, 4, 5, 6]
    finally:
        second.kill()
        second.wait(10)


def test_start_fails_clearly_when_the_port_is_taken(env: dict[str, str]) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = ctl(env, "start", "--service", "ledger", "--node", "core-a", "--port", str(port), "--epoch", "1")
    assert r.returncode == 1 and "exited at start" in r.stderr and "Address already in use" in r.stderr
