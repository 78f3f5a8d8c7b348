"""A store-and-forward copy killed with -9 mid-transfer resumes without sending again what had arrived.

The copy runs in a child process over a rate-limited link (1 MiB/s, real clock) into a local repository; the
test kills it once a few packs have landed (waiting for that, not for a time), then runs the copy again and
counts what the second run writes: only the blobs the first run did not deliver, every snapshot complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from continuity.backup import crypto
from continuity.backup.replicate import copy
from continuity.backup.repository import Repository
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend

FAST_KDF = {"n": 2**10, "r": 8, "p": 1}
MIB = 1024 * 1024
ROOT = Path(__file__).resolve().parents[2]

CHILD = """
import sys
from continuity.backup.replicate import copy
from continuity.backup.repository import Repository
from continuity.backup.storage.local import LocalBackend
from continuity.backup.throttle import Limits, ThrottledBackend
src = Repository.open(LocalBackend(sys.argv[1]), b"pw")
dst = Repository.open(ThrottledBackend(LocalBackend(sys.argv[2]), Limits(upload=1024 * 1024)), b"pw")
print(copy(src, dst, pack_size=512 * 1024))
"""


class Counting(LocalBackend):
    def __init__(self, root: str) -> None:
        super().__init__(root)
        self.written: list[tuple[str, int]] = []

    def write(self, name: str, data: bytes | bytearray | memoryview, *, sync: bool = True) -> None:
        super().write(name, data, sync=sync)
        self.written.append((name, len(data)))


def _packs(path: Path) -> list[Path]:
    return [p for p in (path / "data").rglob("*") if p.is_file() and ".tmp-" not in p.name]


def test_kill_9_mid_copy_then_resume_sends_nothing_twice(tmp_path: Path) -> None:
    src = Repository.init(LocalBackend(str(tmp_path / "src")), b"pw", kdf=FAST_KDF)
    for k in range(2):
        d = tmp_path / f"obs-{k}"
        d.mkdir()
        for j in range(4):
            (d / f"f{j}").write_bytes(os.urandom(MIB))
        take_snapshot(src, [Source("directory", str(d))], set_name="t")
    ring = crypto.Keyring.new()
    ring.id_key, ring.chunker_seed = src.keyring.id_key, src.keyring.chunker_seed
    Repository.init(LocalBackend(str(tmp_path / "dst")), b"pw", kdf=FAST_KDF, keyring=ring)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "src"), str(tmp_path / "dst")], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_packs(tmp_path / "dst")) < 3:
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the copy never delivered three packs"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.communicate()
    assert child.returncode == -signal.SIGKILL
    arrived = {p.name: p.stat().st_size for p in _packs(tmp_path / "dst")}
    # killed mid-way through the first snapshot: nothing committed yet
    assert not (tmp_path / "dst" / "snapshots").exists() or not list((tmp_path / "dst" / "snapshots").iterdir())

    dst_backend = Counting(str(tmp_path / "dst"))
    dst = Repository.open(dst_backend, b"pw")
    res = copy(src, dst)
    assert res["complete"] and len(res["copied"]) == 2
    # no blob stored twice across the packs of both runs: what arrived before the kill was never re-sent
    ground = Repository.open(LocalBackend(str(tmp_path / "dst")), b"pw")
    seen: dict[bytes, str] = {}
    for pack in ground.list_packs():
        for _typ, bid, *_ in ground.read_pack_header(pack):
            assert bid not in seen, f"blob {bid.hex()[:12]} is in packs {seen[bid][:8]} and {pack[:8]}"
            seen[bid] = pack
    second = sum(n for name, n in dst_backend.written if name.startswith("data/"))
    total = sum(size for size in ground.list_packs().values())
    assert second == total - sum(arrived.values())
    assert second < total  # the first run's packs counted
    # and the ground copy is whole: every blob the source snapshots need is there
    assert {b for ents in src.index.packs.values() for _t, b, *_ in ents} <= set(seen)
