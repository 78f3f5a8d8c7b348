"""Backend benchmark: initial snapshot and full restore through each storage backend, beside restic.

Usage::

    .venv/bin/python bench/backends_bench.py              # ~64 MB
    .venv/bin/python bench/backends_bench.py --scale 0.25 # quick

One deterministic data set (small JSON files plus half-random binaries) is
snapshotted and restored by continuity into a local path (the anchor), an
SFTP server (OpenSSH's sshd on loopback, as the tests start it) and a REST
server (tests/rest_server.py), and by restic into a local path and the same
sshd. Every number is a median of ``--repeat`` runs, tools rotated per
round, so the ratios printed (ours over restic on the same backend, and each
backend over local for ours) come from the same machine state; the load
average is printed with them because a loaded machine moves them.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from tests import storage_servers  # noqa: E402 - the same servers the tests start

PW = "bench-pw"


def make_data(root: Path, scale: float) -> None:
    rnd = random.Random(7)
    for d in range(int(40 * scale) or 1):
        (root / f"d{d:03d}").mkdir(parents=True)
        for i in range(100):
            (root / f"d{d:03d}" / f"{i}.json").write_text(
                "".join(f'{{"seq": {i * 50 + j}, "v": {rnd.random()}}}\n' for j in range(rnd.randint(5, 60))))
    for b in range(4):
        blocks = [rnd.randbytes(65536) if k % 2 else (b"text line %d\n" % k) * 5000 for k in range(int(240 * scale))]
        (root / f"big{b}.bin").write_bytes(b"".join(blocks))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({r.returncode}): {r.stderr.strip()[-400:]}")
    return took


def ours(url: str, extra: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, **extra, "CONTINUITY_PASSWORD": PW, "CONTINUITY_REPOSITORY": url}
    return [sys.executable, "-c", "from continuity.cli import main; main()", "backup"], env


def run_round(n: str, rnd: int, tmp: Path, data: Path, sftp: storage_servers.Served, rest_url: str,
              ssh: str) -> tuple[float, float, Path]:
    """Initial snapshot into a fresh repository, then a full restore: (seconds, seconds, restore dir)."""
    kind, backend = n.split("/")
    out = tmp / f"out-{kind}-{backend}-{rnd}"
    if kind == "ours":
        url = {"local": str(tmp / f"o-local-{rnd}"), "sftp": f"{sftp.url}-ours-{rnd}", "rest": rest_url}[backend]
        cli, env = ours(url, sftp.env if backend == "sftp" else {})
        timed([*cli, "init"], env)
        snap = timed([*cli, "snapshot", str(data), "--quiet"], env)
        return snap, timed([*cli, "restore", "latest", "--target", str(out)], env), out
    env = {**os.environ, "RESTIC_PASSWORD": PW, "RESTIC_CACHE_DIR": str(tmp / f"rcache-{rnd}")}
    user_host = sftp.url.split("//")[1].split(":")[0]
    port = sftp.url.split(":")[2].split("/")[0]
    if backend == "sftp":
        r = ["restic", "-r", f"sftp:{user_host}:{sftp.disk}-restic-{rnd}",
             "-o", f"sftp.command={ssh} -p {port} {user_host} -s sftp"]
    else:
        r = ["restic", "-r", str(tmp / f"r-local-{rnd}")]
    timed([*r, "init"], env)
    snap = timed([*r, "backup", "--quiet", str(data)], env)
    return snap, timed([*r, "restore", "latest", "--target", str(out)], env), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="backends-bench-") as t:
        tmp = Path(t)
        data = tmp / "data"
        make_data(data, a.scale)
        size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
        (tmp / "s").mkdir()
        names = ["ours/local", "ours/sftp", "ours/rest"]
        if shutil.which("restic"):
            names += ["restic/local", "restic/sftp"]
        times: dict[str, dict[str, list[float]]] = {n: {"initial": [], "restore": []} for n in names}
        loads = []
        with storage_servers.sshd(tmp / "s") as sftp:
            ssh = (f"ssh -i {sftp.env['CONTINUITY_SFTP_KEY']} -o UserKnownHostsFile="
                   f"{sftp.env['CONTINUITY_SFTP_KNOWN_HOSTS']} -o BatchMode=yes")
            for rnd in range(a.repeat):
                order = names[rnd % len(names):] + names[:rnd % len(names)]  # rotate who goes first
                (tmp / f"r{rnd}").mkdir()
                with storage_servers.rest(tmp / f"r{rnd}") as rest:  # a fresh REST repository per round
                    for n in order:
                        loads.append(os.getloadavg()[0])
                        snap, restore, out = run_round(n, rnd, tmp, data, sftp, rest.url, ssh)
                        got = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
                        if got != size:  # every restore checked
                            raise SystemExit(f"{n}: restored {got} bytes of {size}")
                        # kept until the run ends: on a file system mounted with `discard` (as measured here),
                        # deleting thousands of files makes the next minutes' file creation several times
                        # slower, which charged whichever tool came next for the one before's clean-up
                        times[n]["initial"].append(snap)
                        times[n]["restore"].append(restore)
    print(f"data: {size / 1e6:.1f} MB; medians of {a.repeat} rounds, tools rotated; "
          f"load average during runs {min(loads):.1f}..{max(loads):.1f}")
    med = {n: {k: statistics.median(v) for k, v in m.items()} for n, m in times.items()}
    print(f"{'tool/backend':14s}{'snapshot s':>11s}{'restore s':>11s}{'ours/restic (snap, rest)':>28s}"
          f"{'backend/local':>16s}")
    loc = med["ours/local"]
    for n, m in med.items():
        kind, backend = n.split("/")
        peer = med.get(f"restic/{backend}") if kind == "ours" else None
        vs = f"{m['initial'] / peer['initial']:.2f}x, {m['restore'] / peer['restore']:.2f}x" if peer else "-"
        vl = f"{m['initial'] / loc['initial']:.2f}x, {m['restore'] / loc['restore']:.2f}x" if kind == "ours" else "-"
        print(f"{n:14s}{m['initial']:>11.2f}{m['restore']:>11.2f}{vs:>28s}{vl:>16s}")


if __name__ == "__main__":
    main()
