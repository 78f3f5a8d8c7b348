"""kill -9 of a real snapshot process at random points never damages the repository."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

PW = "kill-nine"


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from continuity.cli import main; main()", "backup", *args]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


def state_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def mutate(src: Path, rnd: random.Random, step: int) -> None:
    # a few small changes and one new large file per round: new packs to be killed in the middle of
    for i in rnd.sample(range(120), 6):
        (src / "small" / f"s{i:03d}.json").write_text(json.dumps({"step": step, "r": rnd.random()}))
    (src / "big" / f"b{step % 4}.bin").write_bytes(rnd.randbytes(1_500_000))


@pytest.mark.slow
def test_kill9_during_snapshot_keeps_repository_consistent(tmp_path: Path) -> None:
    rnd = random.Random(int(os.environ.get("KILL9_SEED", "20240601")))
    src = tmp_path / "src"
    (src / "small").mkdir(parents=True)
    (src / "big").mkdir()
    for i in range(120):
        (src / "small" / f"s{i:03d}.json").write_text(json.dumps({"i": i}))
    for i in range(4):
        (src / "big" / f"b{i}.bin").write_bytes(rnd.randbytes(1_500_000))
    repo = tmp_path / "repo"
    env = {**os.environ, "CONTINUITY_PASSWORD": PW, "CONTINUITY_PACK_SIZE": str(256 * 1024),
           "CONTINUITY_REPOSITORY": str(repo)}
    assert run(env, "init").returncode == 0
    t0 = time.monotonic()
    first = run(env, "snapshot", str(src), "--json")
    full = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    expected: dict[str, dict[str, bytes]] = {json.loads(first.stdout)["id"]: state_of(src)}

    # kill at a uniform point of how long a run takes; an incremental run is far shorter than the first
    # full one, so the span shrinks to the last run that finished before its kill
    span = full
    kills = 0
    step = 0
    while kills < 20:
        assert step < 40, f"only {kills} kills landed in {step} runs"
        step += 1
        mutate(src, rnd, step)
        state = state_of(src)
        before = set(expected)
        proc = subprocess.Popen(cli("snapshot", str(src), "--quiet"), env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        deadline = started + rnd.uniform(0.05, span)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        else:
            span = max(0.1, min(span, time.monotonic() - started))
        proc.wait(timeout=30)
        listing = run(env, "list", "--json")
        assert listing.returncode == 0, listing.stderr
        assert "damaged" not in listing.stderr, listing.stderr
        ids = {s["id"] for s in json.loads(listing.stdout)}
        assert before <= ids  # no earlier snapshot lost
        new = ids - before
        assert len(new) <= 1
        for sid in new:  # a listed snapshot is a complete one: it restores to exactly what was backed up
            expected[sid] = state
            out = tmp_path / f"restore-{sid[:8]}"
            r = run(env, "restore", sid, "--target", str(out))
            assert r.returncode == 0, r.stderr
            assert state_of(out / "src") == state
        check = run(env, "verify", "--read-data", "--json")
        assert check.returncode == 0, check.stdout + check.stderr

    # every snapshot ever listed still restores byte-identical after all the crashes
    for sid, state in expected.items():
        out = tmp_path / f"final-{sid[:8]}"
        r = run(env, "restore", sid, "--target", str(out))
        assert r.returncode == 0, r.stderr
        assert state_of(out / "src") == state
    # and prune collects what the killed runs left behind
    assert run(env, "prune").returncode == 0
    final = json.loads(run(env, "verify", "--read-data", "--json").stdout)
    assert final["ok"] and final["unreferenced_packs"] == []
