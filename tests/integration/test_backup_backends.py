"""The same torture tests for every storage backend: local, S3 (moto), SFTP (OpenSSH's sshd), REST.

Each backend runs against a real server private to the test (see
tests/storage_servers.py) and real CLI processes: kill -9 in the middle of
snapshots, a process killed in the middle of one large upload, damaged packs
(flipped and torn), and a round trip that must restore every byte, mode,
mtime and symlink.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, wait_for
from tests.storage_servers import BACKENDS, Served, served
from tests.unit.test_backup_damage import run_cli

PW = "torture-pw"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    with served(request.param, tmp_path) as s:
        yield s


def env_for(s: Served, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONTINUITY_"))}
    return {**base, **s.env, "CONTINUITY_PASSWORD": PW, "CONTINUITY_REPOSITORY": s.url,
            "CONTINUITY_PACK_SIZE": str(256 * 1024), **extra}


class InProcess:
    """The CLI called in this process (start-up paid once) with the backend's environment: for the tests
    that do not kill anything."""

    def __init__(self, store: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        for k in [k for k in os.environ if k.startswith(("AWS_", "CONTINUITY_"))]:
            monkeypatch.delenv(k)
        for k, v in env_for(store).items():
            if k.startswith(("AWS_", "CONTINUITY_")):
                monkeypatch.setenv(k, v)
        self.capsys = capsys

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        rc, out, err = run_cli(["backup", *args], self.capsys)
        return subprocess.CompletedProcess(args, rc, out, err)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from continuity.cli import main; main()", "backup", *args]


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)


def state_of(root: Path) -> dict[str, tuple[object, ...]]:
    """Content, permission bits and mtime of every file; target of every symlink."""
    out: dict[str, tuple[object, ...]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        st = p.lstat()
        if p.is_symlink():
            out[rel] = ("link", os.readlink(p))
        elif p.is_file():
            out[rel] = ("file", p.read_bytes(), st.st_mode & 0o7777, int(st.st_mtime))
        elif p.is_dir():
            out[rel] = ("dir", st.st_mode & 0o7777)
    return out


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def make_tree(src: Path, rnd: random.Random) -> None:
    (src / "small").mkdir(parents=True)
    (src / "big").mkdir()
    (src / "deep" / "er" / "est").mkdir(parents=True)
    for i in range(60):
        (src / "small" / f"s{i:03d}.json").write_text(json.dumps({"i": i, "r": rnd.random()}))
    for i in range(3):
        (src / "big" / f"b{i}.bin").write_bytes(rnd.randbytes(900_000))
    (src / "deep" / "er" / "est" / "empty").write_bytes(b"")
    (src / "deep" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "deep" / "run.sh", 0o751)
    (src / "deep" / "naïve ünïcode.txt").write_text("名前")
    os.symlink("../big/b0.bin", src / "deep" / "link")
    os.utime(src / "big" / "b1.bin", (1_600_000_000, 1_600_000_000))


def test_round_trip_is_faithful(store: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    make_tree(src, random.Random(5))
    cmd = InProcess(store, monkeypatch, capsys)
    assert cmd("init").returncode == 0
    r = cmd("snapshot", str(src), "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    (src / "small" / "s007.json").write_text("changed")
    r = cmd("snapshot", str(src), "--json")
    assert r.returncode == 0, r.stderr
    second = json.loads(r.stdout)
    assert second["files_unmodified"] >= 60 and second["bytes_read"] == len("changed")
    r = cmd("verify", "--read-data", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stdout + r.stderr
    out = tmp_path / "out"
    r = cmd("restore", second["id"], "--target", str(out))
    assert r.returncode == 0, r.stderr
    assert state_of(out / "src") == state_of(src)
    r = cmd("restore", first["id"], "--target", str(tmp_path / "out1"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out1" / "src" / "small" / "s007.json").read_text() != "changed"


def raw_backend(store: Served, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from continuity.backup.storage import open_backend

    for k, v in store.env.items():
        monkeypatch.setenv(k, v)
    return open_backend(store.url)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_damaged_pack_is_named_and_never_restored(store: Served, how: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    make_tree(src, random.Random(6))
    cmd = InProcess(store, monkeypatch, capsys)
    assert cmd("init").returncode == 0
    r = cmd("snapshot", str(src), "--json")
    assert r.returncode == 0, r.stderr
    sid = json.loads(r.stdout)["id"]
    backend = raw_backend(store, monkeypatch)
    name, size = max(backend.list("data"), key=lambda e: e[1])  # a pack of big-file content
    data = bytearray(backend.read(name))
    if how == "flip":
        data[len(data) // 3] ^= 0x40
    else:  # a torn write: the object ends early
        data = data[: len(data) // 2]
    backend.write(name, bytes(data))
    backend.close()

    r = cmd("verify", "--read-data", "--json")
    report = json.loads(r.stdout)
    assert r.returncode == 1 and not report["ok"]
    pack = name.rsplit("/", 1)[-1]
    assert any(d["pack"] == pack for d in report["damaged_packs"]), report
    out = tmp_path / "out"
    r = cmd("restore", sid, "--target", str(out))
    assert r.returncode == 1 and "damaged" in r.stderr
    original, restored = contents(src), contents(out / "src")
    assert restored and set(restored) < set(original)  # the damaged file is missing, not wrong
    for rel, blob in restored.items():
        assert blob == original[rel]


WRITER = """
import os, sys
from continuity.backup.storage import open_backend
b = open_backend(sys.argv[1])
data = os.urandom(int(sys.argv[2]))
open(sys.argv[3], "wb").write(data[:64])
print("writing", flush=True)
b.write("data/ee/" + "e" * 64, data)
print("done", flush=True)
"""


def test_upload_killed_midway_leaves_no_object(store: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer killed -9 during one large upload: the name is absent or holds the whole object, never a part."""
    env = env_for(store)
    assert run(env, "init").returncode == 0
    size = 96 * 1024 * 1024
    head = tmp_path / "head"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, store.url, str(size), str(head)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        if store.disk is not None:  # wait until part of the object has reached the server's disk
            def partial() -> bool:
                assert proc.poll() is None, "the upload finished before any part of it was seen"
                return any(p.is_file() and 0 < p.stat().st_size < size
                           for p in store.disk.rglob("*") if p.parent.name in ("ee", "tmp"))
            wait_for(partial, timeout=60, interval=0.01, what="a partial upload on the server")
        else:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    backend = raw_backend(store, monkeypatch)
    listed = dict(backend.list("data"))
    name = "data/ee/" + "e" * 64
    if name in listed or backend.exists(name):  # only if the kill landed after the whole body arrived
        assert listed.get(name) == size and backend.read_range(name, 0, 64) == head.read_bytes()
    else:
        assert store.disk is None or not any(p.name == "e" * 64 for p in store.disk.rglob("*"))
    assert all(".tmp" not in n for n in listed)
    # and the repository is still sound
    backend.close()
    r = run(env, "verify", "--json")
    assert r.returncode == 0, r.stdout + r.stderr


def mutate(src: Path, rnd: random.Random, step: int) -> None:
    for i in rnd.sample(range(60), 5):
        (src / "small" / f"s{i:03d}.json").write_text(json.dumps({"step": step, "r": rnd.random()}))
    (src / "big" / f"b{step % 3}.bin").write_bytes(rnd.randbytes(1_200_000))


@pytest.mark.slow
def test_kill9_during_snapshots_keeps_repository_consistent(store: Served, tmp_path: Path) -> None:
    rnd = random.Random(int(os.environ.get("KILL9_SEED", "20261201")))
    src = tmp_path / "src"
    make_tree(src, rnd)
    env = env_for(store)
    assert run(env, "init").returncode == 0
    t0 = time.monotonic()
    first = run(env, "snapshot", str(src), "--json")
    full = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    expected = {json.loads(first.stdout)["id"]: contents(src)}
    kills = step = 0
    while kills < 4:
        assert step < 16, f"only {kills} kills landed in {step} runs"
        step += 1
        mutate(src, rnd, step)
        state = contents(src)
        before = set(expected)
        proc = subprocess.Popen(cli("snapshot", str(src), "--quiet"), env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + rnd.uniform(0.05, full)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        listing = run(env, "list", "--json")
        assert listing.returncode == 0 and "damaged" not in listing.stderr, listing.stderr
        ids = {s["id"] for s in json.loads(listing.stdout)}
        assert before <= ids and len(ids - before) <= 1
        for sid in ids - before:  # a listed snapshot is a complete one
            expected[sid] = state
        check = run(env, "verify", "--json")  # structure after every crash; every byte once at the end
        assert check.returncode == 0, check.stdout + check.stderr
    check = run(env, "verify", "--read-data", "--json")
    assert check.returncode == 0, check.stdout + check.stderr
    for sid, state in expected.items():
        out = tmp_path / f"final-{sid[:8]}"
        r = run(env, "restore", sid, "--target", str(out))
        assert r.returncode == 0, r.stderr
        assert contents(out / "src") == state
    assert run(env, "prune").returncode == 0
    final = json.loads(run(env, "verify", "--read-data", "--json").stdout)
    assert final["ok"] and final["unreferenced_packs"] == []
