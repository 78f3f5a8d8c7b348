"""The pulse history file: hash chain, tamper detection through the real CLI, concurrent and crashing writers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from continuity.pulse import GENESIS, PREFIX, Pulse, event_hash, read_events, read_from, verify_file
from continuity.pulse_trust import writer_key
from tests.helpers import ROOT, Proc, continuity_cmd, run_cli, wait_for


@pytest.fixture
def hist(tmp_path: Path) -> Path:
    return tmp_path / "state" / "pulse_history.jsonl"


def fill(path: Path, n: int, node: str = "core-a") -> list[dict]:
    p = Pulse(path=path, node=node)
    return [p.emit("test.tick", service="ledger", epoch=i, data={"i": i}) for i in range(n)]


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def verify_cli(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTINUITY_REDIS_URL"}
    return run_cli("pulse", "verify", "--file", str(path), *extra, env=env)


def test_events_are_chained(hist: Path) -> None:
    events = fill(hist, 5)
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["prev"] == GENESIS
    for before, after in zip(events, events[1:], strict=False):
        assert after["prev"] == before["hash"]
    assert all(e["kind"] == PREFIX + "test.tick" and e["node"] == "core-a" for e in events)
    assert list(read_events(hist)) == events
    assert all(e["hash"] == event_hash(e) for e in events)
    res = verify_file(hist)
    assert res.ok and res.count == 5


def test_kind_prefix_is_not_doubled(hist: Path) -> None:
    ev = Pulse(path=hist).emit(PREFIX + "drill.started")
    assert ev["kind"] == "continuity_layer.drill.started"


def test_verify_cli_accepts_an_intact_history(hist: Path) -> None:
    fill(hist, 7)
    res = verify_cli(hist)
    assert res.returncode == 0, res.stderr
    signer = writer_key(hist).key_id
    assert res.stdout.strip() == f"{hist}: 7 events, chain intact, every event signed by {signer}"


def test_verify_cli_on_an_empty_history(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    res = verify_cli(path)
    assert res.returncode == 0 and "0 events, chain intact" in res.stdout


def _assert_bad(res: subprocess.CompletedProcess[str], path: Path, line: int, event_id: str | None,
                reason: str) -> None:
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    who = f"event {event_id}" if event_id else "event ?"
    assert res.stderr.startswith(f"continuity: {path}:{line}: {who}: "), res.stderr
    assert reason in res.stderr


def test_verify_detects_an_edited_line(hist: Path) -> None:
    events = fill(hist, 6)
    lines = lines_of(hist)
    lines[2] = lines[2].replace('"i":2', '"i":9')
    hist.write_text("".join(lines))
    _assert_bad(verify_cli(hist), hist, 3, events[2]["id"], "content does not match its hash (edited)")


def test_verify_detects_an_edit_with_a_recomputed_hash(hist: Path) -> None:
    """Re-hashing the edited line does not help: its signature no longer matches (and the next line still
    links to the original); the edited line itself is named."""
    events = fill(hist, 6)
    lines = lines_of(hist)
    ev = json.loads(lines[2])
    ev["data"] = {"i": 9}
    ev["hash"] = event_hash(ev)
    lines[2] = json.dumps(ev, sort_keys=True, separators=(",", ":")) + "\n"
    hist.write_text("".join(lines))
    _assert_bad(verify_cli(hist), hist, 3, events[2]["id"], "does not match: the event was changed after it was signed")


def test_verify_detects_a_deleted_line(hist: Path) -> None:
    events = fill(hist, 6)
    lines = lines_of(hist)
    del lines[2]
    hist.write_text("".join(lines))
    _assert_bad(verify_cli(hist), hist, 3, events[3]["id"], "deleted or reordered")


def test_verify_detects_reordered_lines(hist: Path) -> None:
    events = fill(hist, 6)
    lines = lines_of(hist)
    lines[3], lines[4] = lines[4], lines[3]
    hist.write_text("".join(lines))
    _assert_bad(verify_cli(hist), hist, 4, events[4]["id"], "deleted or reordered")


def test_verify_detects_lines_removed_from_the_end(hist: Path) -> None:
    fill(hist, 6)
    hist.write_text("".join(lines_of(hist)[:4]))
    _assert_bad(verify_cli(hist), hist, 5, None, "history ends at event 4 but the head records 6 events")


def test_verify_detects_a_cut_last_line(hist: Path) -> None:
    fill(hist, 6)
    data = hist.read_bytes()
    hist.write_bytes(data[:-20])
    _assert_bad(verify_cli(hist), hist, 6, None, "last line is incomplete")


def test_verify_detects_garbage(hist: Path) -> None:
    fill(hist, 3)
    with open(hist, "ab") as f:
        f.write(b"\xff\xfe not json\n")
    _assert_bad(verify_cli(hist), hist, 4, None, "not valid JSON")


def test_verify_json_output(hist: Path) -> None:
    events = fill(hist, 4)
    lines = lines_of(hist)
    lines[1] = lines[1].replace('"i":1', '"i":5')
    hist.write_text("".join(lines))
    res = verify_cli(hist, "--json")
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc == {"ok": False, "count": 1, "bad_line": 2, "bad_id": events[1]["id"],
                   "reason": "content does not match its hash (edited)", "signers": None, "file": str(hist)}


def test_verify_usage_errors(tmp_path: Path) -> None:
    missing = verify_cli(tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "file not found" in missing.stderr
    directory = verify_cli(tmp_path)
    assert directory.returncode == 2 and "is a directory" in directory.stderr


def test_a_writer_killed_before_updating_the_head_does_not_break_the_chain(hist: Path) -> None:
    fill(hist, 3)
    head = hist.with_name(hist.name + ".head")
    old_head = head.read_text()
    fill(hist, 1)
    head.write_text(old_head)  # as if killed between the append and the head update
    assert verify_file(hist).ok  # the chain itself is intact
    ev = Pulse(path=hist).emit("test.after")
    assert ev["seq"] == 5
    res = verify_file(hist)
    assert res.ok and res.count == 5


def test_a_torn_final_line_is_cut_by_the_next_writer(hist: Path) -> None:
    fill(hist, 3)
    with open(hist, "ab") as f:
        f.write(b'{"id":"half-written","ts":1')  # killed mid-write: never acknowledged
    assert not verify_file(hist).ok
    Pulse(path=hist).emit("test.after")
    res = verify_file(hist)
    assert res.ok and res.count == 4
    assert "half-written" not in hist.read_text()


def test_repair_never_hides_truncation(hist: Path) -> None:
    fill(hist, 5)
    hist.write_text("".join(lines_of(hist)[:3]))
    Pulse(path=hist).emit("test.after")
    res = verify_file(hist)
    assert not res.ok and res.bad_line == 4


def test_head_from_an_older_format_is_rebuilt(hist: Path) -> None:
    events = fill(hist, 3)
    head = hist.with_name(hist.name + ".head")
    head.write_text(json.dumps({"count": 3, "hash": events[-1]["hash"]}))  # no "size"
    ev = Pulse(path=hist).emit("test.after")
    assert ev["seq"] == 4 and ev["prev"] == events[-1]["hash"]
    assert verify_file(hist).ok


_EMITTER = """
import sys
from pathlib import Path
from continuity.pulse import Pulse
p = Pulse(path=Path(sys.argv[1]), node=sys.argv[2])
for i in range(int(sys.argv[3])):
    p.emit("test.concurrent", data={"writer": sys.argv[2], "i": i})
"""


def test_concurrent_writers_in_several_processes_keep_the_chain_valid(hist: Path) -> None:
    hist.parent.mkdir(parents=True)
    writers, per = 4, 40
    procs = [subprocess.Popen([sys.executable, "-c", _EMITTER, str(hist), f"w{w}", str(per)], cwd=ROOT)
             for w in range(writers)]
    for p in procs:
        assert p.wait(120) == 0
    res = verify_file(hist)
    assert res.ok, res.as_dict()
    assert res.count == writers * per
    events = list(read_events(hist))
    assert len({e["id"] for e in events}) == writers * per
    for w in range(writers):
        mine = [e["data"]["i"] for e in events if e["data"]["writer"] == f"w{w}"]
        assert mine == list(range(per))  # each writer's events in the order it emitted them


_LOOPER = """
import sys
from pathlib import Path
from continuity.pulse import Pulse
p = Pulse(path=Path(sys.argv[1]), node="looper")
i = 0
while True:
    p.emit("test.loop", data={"i": i, "pad": "x" * 2000})
    i += 1
"""


def test_writers_killed_with_sigkill_leave_a_verifiable_history(hist: Path, tmp_path: Path) -> None:
    hist.parent.mkdir(parents=True)
    env = dict(os.environ)
    for round_ in range(3):
        start = verify_file(hist).count
        proc = Proc([sys.executable, "-c", _LOOPER, str(hist)], env, tmp_path / f"looper{round_}.log")
        wait_for(lambda s=start: sum(1 for _ in read_events(hist)) > s + 20, timeout=60, what="events written")
        proc.kill9()
        proc.stop()
        Pulse(path=hist).emit("test.after_kill", data={"round": round_})
        res = verify_file(hist)
        assert res.ok, res.as_dict()


def test_read_from_returns_only_complete_new_lines(hist: Path) -> None:
    fill(hist, 2)
    events, offset = read_from(hist, 0)
    assert len(events) == 2 and offset == hist.stat().st_size
    with open(hist, "ab") as f:
        f.write(b'{"id":"partial"')
    assert read_from(hist, offset) == ([], offset)
    fill(hist, 1)  # cuts the partial line and appends a whole one
    new, offset2 = read_from(hist, offset)
    assert [e["seq"] for e in new] == [3] and offset2 == hist.stat().st_size
    hist.write_text("")
    assert read_from(hist, offset2) == ([], 0)  # a shorter file was replaced: start over


def _tail_env(hist: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTINUITY_REDIS_URL"}
    env["CONTINUITY_PULSE_FILE"] = str(hist)
    env["CONTINUITY_STATE"] = str(hist.parent)
    return env


def test_tail_from_the_file(hist: Path) -> None:
    fill(hist, 5)
    Pulse(path=hist).emit("failover.promoted", service="ledger", epoch=7, data={"to": "core-b"})
    env = _tail_env(hist)

    res = run_cli("pulse", "tail", "-n", "2", env=env)
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip().splitlines()
    assert len(out) == 2
    assert "test.tick" in out[0] and "epoch=4" in out[0] and '{"i":4}' in out[0]
    assert "failover.promoted" in out[1] and "service=ledger" in out[1] and "epoch=7" in out[1]
    assert out[1].split()[0].endswith("Z")

    js = run_cli("pulse", "tail", "--json", "--kind", "failover", env=env)
    assert js.returncode == 0
    events = json.loads(js.stdout)
    assert [e["kind"] for e in events] == ["continuity_layer.failover.promoted"]

    full = run_cli("pulse", "tail", "--json", "-n", "100", "--kind", "continuity_layer.test", env=env)
    assert [e["data"]["i"] for e in json.loads(full.stdout)] == [0, 1, 2, 3, 4]


def test_tail_follow_on_the_file_prints_new_events_until_ctrl_c(hist: Path, tmp_path: Path) -> None:
    fill(hist, 2)
    proc = Proc(continuity_cmd("pulse", "tail", "--follow", "--json", "-n", "1"), _tail_env(hist),
                tmp_path / "follow.log")
    try:
        def printed() -> list[dict]:
            return [json.loads(ln) for ln in proc.output().splitlines() if ln.startswith("{")]

        wait_for(lambda: len(printed()) == 1, timeout=30, what="the initial tail")
        writer = Pulse(path=hist)
        writer.emit("test.live", data={"n": 1})
        writer.emit("drill.started", data={"n": 2})
        wait_for(lambda: len(printed()) == 3, timeout=30, what="followed events")
        assert [e["seq"] for e in printed()] == [2, 3, 4]
        proc.popen.send_signal(signal.SIGINT)
        assert proc.popen.wait(20) == 0
        assert "Traceback" not in proc.output()
    finally:
        proc.stop()
