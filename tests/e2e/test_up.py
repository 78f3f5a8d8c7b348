"""The README's run command on this machine: `continuity up` brings the embedded fleet up, least privilege by default.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
import redis

from continuity.redisd import connect
from tests.helpers import ROOT, continuity_cmd, wait_for

pytestmark = pytest.mark.slow


def _status(env: dict[str, str]) -> dict | None:
    out = subprocess.run(continuity_cmd("status", "--json"), env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _post(base: str, seq: int) -> tuple[int, str]:
    """Status and body of writing ``seq`` (0 and the error if unreachable): a refusal says why."""
    req = urllib.request.Request(f"{base}/records", data=json.dumps({"seq": seq}).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status, r.read().decode(errors="replace")[:300]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]
    except OSError as exc:
        return 0, repr(exc)


def _explain(env: dict[str, str], log: Path) -> str:
    """What a timed-out wait on the running fleet needs to be explained: the status report and up's log."""
    out = subprocess.run(continuity_cmd("status", "--json"), env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    try:
        report = json.loads(out.stdout)
        shown = json.dumps({k: report.get(k) for k in ("nodes", "services", "replication", "detector")},
                           default=str)[:6000]
    except ValueError:
        shown = (out.stdout + out.stderr)[-2000:]
    return f"status: {shown}\nup.log tail:\n{log.read_text(errors='replace')[-4000:]}"


def _basic(auth: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def _flower(url: str, auth: str | None = None, method: str = "GET", headers: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, method=method, data=b"{}" if method == "POST" else None,
                                 headers={**(_basic(auth) if auth else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _flower_tasks(url: str, auth: str) -> dict:
    status, _, body = _flower(f"{url}/api/tasks", auth)
    assert status == 200, (status, body[:200])
    return json.loads(body)


def _least_privilege(state: Path, flower: str, up: psutil.Process) -> None:
    """Issue 11 item 5 on the running fleet: Redis, Flower, file modes, no secret in the pulse history."""
    auth = (state / "keys" / "flower.auth").read_text().strip()
    url = (state / "redis.url").read_text().strip()
    password = (state / "keys" / "redis.password").read_text().strip()
    assert password and f":{password}@" in url
    # Redis: no client without the password; with it, CONFIG SET (file write via dir/dbfilename) is refused
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=port, socket_timeout=5).get("x")
    client = connect(url)
    with pytest.raises(redis.exceptions.NoPermissionError):
        client.config_set("dir", "/tmp")
    for cmd in (("DEBUG", "SLEEP", "0"), ("MODULE", "LIST"), ("ACL", "SETUSER", "evil", "on", "+@all")):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*cmd)
    # Flower: nothing without credentials; a cross-site POST is refused even carrying them (a browser would
    # send cached basic-auth), and no page is told it may read the answers
    api = f"{flower}/api/task/async-apply/continuity.failover.prepare"
    assert _flower(f"{flower}/api/tasks")[0] == 401
    assert _flower(api, method="POST", headers={"Origin": "http://evil.example"})[0] in (401, 403)
    code, headers, _ = _flower(api, auth, "POST", {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"})
    assert code == 403 and "Access-Control-Allow-Origin" not in headers
    code, _, _ = _flower(api, auth, "POST", {"Origin": "http://evil.example"})  # no fetch metadata: the origin
    assert code == 403
    flower_proc = next(p for p in up.children(recursive=True) if "flower" in p.cmdline())
    assert not any(auth.split(":", 1)[1] in a for a in flower_proc.cmdline())  # credentials not in argv
    for p in up.children(recursive=True):
        assert not any(password in a for a in p.cmdline()), p.cmdline()
    # modes: the state directory is the owner's alone, and so is every file the fleet wrote in it
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    loose = []
    for base, dirs, files in os.walk(state):
        for name in dirs + files:
            p = Path(base) / name
            mode = stat.S_IMODE(p.lstat().st_mode)
            if mode & 0o077:
                loose.append(f"{p.relative_to(state)} {mode:04o}")
    assert not loose, loose
    for name in ("redis.url", "pulse_history.jsonl", "keys/redis.password", "keys/flower.auth", "logs/beat.log"):
        assert (state / name).exists(), name
    # no secret value reached the pulse history
    history = (state / "pulse_history.jsonl").read_text()
    assert password not in history and auth.split(":", 1)[1] not in history


def test_up_runs_fleet_and_stops_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env.update({"CONTINUITY_STATE": str(state), "CONTINUITY_ROOT": str(ROOT), "PYTHONUNBUFFERED": "1"})
    log = open(tmp_path / "up.log", "wb")
    up = subprocess.Popen(continuity_cmd("up", "--no-live", "--flower-port", "0"), env=env, cwd=ROOT,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # every sample node is seen (four workers start side by side: a margin for a busy machine)
        report = wait_for(lambda: (r := _status(env)) and all(n["seen"] for n in r["nodes"]) and r,
                          timeout=60, what="every node seen in `continuity status --json`")
        assert {n["id"] for n in report["nodes"]} == {"core-a", "core-b", "core-c", "sat-1"}
        text = (tmp_path / "up.log").read_text()
        flower = next(w for w in text.split() if w.startswith("http://127.0.0.1:"))

        auth = (state / "keys" / "flower.auth").read_text().strip()

        def pinged_everywhere() -> bool:
            tasks = _flower_tasks(flower, auth).values()
            ran = {t["args"].strip("[]'\"") for t in tasks
                   if t["name"] == "continuity.node.ping" and t["state"] == "SUCCESS"
                   and t.get("worker", "").startswith(t["args"].strip("[]'\"") + "@")}
            return {"core-a", "core-b", "core-c", "sat-1"} <= ran

        # beat put a job on each node's queue, which that node's worker ran: visible in Flower's API ...
        wait_for(pinged_everywhere, timeout=30, what="a ping on every node in Flower's API")
        # ... and in the pulse history
        events = [json.loads(line) for line in (state / "pulse_history.jsonl").read_text().splitlines()]
        pinged = {e["node"] for e in events if e["kind"] == "continuity_layer.node.ping" and e["data"]["correct"]}
        assert pinged == {"core-a", "core-b", "core-c", "sat-1"}
        # the sample fleet runs both replication modes: the ledger sync (one of core-b, core-c must hold each
        # write), the notifier async; each standby's stream shows up once its replicator follows the primary
        modes = {s["id"]: s["replication"] for s in report["services"]}
        assert modes["ledger"] == "sync(1)" and modes["notifier"] == "async", modes
        seqs = iter(range(1, 100_000))  # refused early writes (no standby following yet) stay stored: new seqs
        for service, url in (("ledger", "http://127.0.0.1:27100"), ("notifier", "http://127.0.0.1:27220")):
            last: list[tuple[int, str]] = []

            def acknowledged(u: str = url, seen: list[tuple[int, str]] = last) -> bool:
                seen[:] = [_post(u, next(seqs))]
                return seen[0][0] == 200

            try:
                wait_for(acknowledged, timeout=60,
                         what=f"a write acknowledged by the {service} (core-a's 27100, core-b's 27120 + 100)")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nlast answer: {last}\n{_explain(env, tmp_path / 'up.log')}") from None
        try:
            wait_for(lambda: {(r["service"], r["standby"]) for r in (_status(env) or {}).get("replication", [])
                              if r["state"] == "streaming"} >= {("ledger", "core-b"), ("ledger", "core-c"),
                                                                 ("notifier", "core-a")},
                     timeout=60, what="the ledger streaming to core-b and core-c, the notifier to core-a")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_explain(env, tmp_path / 'up.log')}") from None
        _least_privilege(state, flower, psutil.Process(up.pid))
        children = psutil.Process(up.pid).children(recursive=True)
        assert len(children) >= 7  # redis, 4 workers, beat, flower (plus pool processes)
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
        log.close()
    assert up.returncode == 0, (tmp_path / "up.log").read_text()[-2000:]
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children),
             timeout=20, what="no orphan processes after Ctrl-C")
