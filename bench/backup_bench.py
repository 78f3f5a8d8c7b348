"""Backup benchmark: continuity vs restic (and borg when installed) on one deterministic data set.

Usage::

    .venv/bin/python bench/backup_bench.py              # ~560 MB, like the anchor in ANCHORS.md
    .venv/bin/python bench/backup_bench.py --scale 0.1  # quick run

The data set mirrors the anchor: ~20k small JSON-ledger files in 100
directories plus 4 large half-random binaries (incompressible blocks
interleaved with compressible text), generated from a fixed seed. Every
phase runs all tools back to back on the same bytes, so page-cache state
and the 1 % change are identical for each: initial snapshot, unchanged
re-snapshot, 1 %-changed re-snapshot, full restore, repository size, and
peak RSS of each child process (``wait4`` rusage). Ratios are ours/restic;
targets are from issue 3. restic/borg missing → their columns are skipped,
and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PASSWORD = "bench-password"
TARGETS = {"initial": 1.0, "unchanged": 0.5, "changed": None, "restore": 1.0, "repo_size": 1.05, "peak_rss": None}


def _ledger_lines(rnd: random.Random, n: int, seq0: int) -> str:
    out = []
    for i in range(n):
        out.append(json.dumps({"seq": seq0 + i, "ts": 1790000000 + (seq0 + i) * 7,
                               "from": f"acct-{rnd.randrange(1000):04d}", "to": f"acct-{rnd.randrange(1000):04d}",
                               "amount_cents": rnd.randrange(10_000_000), "memo": rnd.choice(MEMOS),
                               "ref": f"{rnd.getrandbits(64):016x}"}))
    return "\n".join(out) + "\n"


MEMOS = ["payroll", "invoice 2231", "refund", "transfer", "fee", "interest", "settlement batch", "chargeback"]


def half_random(rnd: random.Random, size: int) -> bytes:
    """Alternating 64 KiB blocks of random bytes and repetitive text: compresses to ~half."""
    text = (b"continuity benchmark block " * 3000)[:65536]
    out = bytearray()
    while len(out) < size:
        out += rnd.randbytes(65536) if len(out) // 65536 % 2 == 0 else text
    return bytes(out[:size])


def generate(data: Path, scale: float) -> dict[str, int]:
    marker = data / ".complete"
    spec = {"scale": scale, "version": 2}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return spec
    shutil.rmtree(data, ignore_errors=True)
    rnd = random.Random(1234)
    n_small = max(100, int(20_000 * scale))
    for i in range(n_small):
        d = data / "ledgers" / f"shard-{i % 100:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"ledger-{i:06d}.jsonl").write_text(_ledger_lines(rnd, rnd.randint(20, 60), i * 100))
    (data / "blobs").mkdir(parents=True, exist_ok=True)
    for i in range(4):
        (data / "blobs" / f"blob-{i}.bin").write_bytes(half_random(rnd, int(100_000_000 * scale)))
    marker.write_text(json.dumps(spec))
    return spec


def change_one_percent(data: Path, scale: float) -> None:
    """Rewrite 1 % of the ledger files and 1 % of one large file, deterministically."""
    rnd = random.Random(99)
    files = sorted((data / "ledgers").rglob("*.jsonl"))
    for p in rnd.sample(files, max(1, len(files) // 100)):
        with open(p, "a") as f:
            f.write(_ledger_lines(rnd, 3, 10**9))
    blob = data / "blobs" / "blob-1.bin"
    size = blob.stat().st_size
    region = max(65536, size * 4 // 100)  # 4 % of one of 4 blobs = 1 % of the blob data
    with open(blob, "r+b") as f:
        f.seek(size // 3)
        f.write(rnd.randbytes(region))


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def warm(path: Path) -> None:
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass


@dataclass
class Result:
    seconds: float
    rss_kib: int


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Result:
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err[-2000:]}")
    return Result(dt, usage.ru_maxrss)


@dataclass
class Tool:
    name: str
    repo: Path
    env: dict[str, str] = field(default_factory=dict)

    def init(self) -> None: ...
    def snapshot(self, data: Path) -> Result: ...
    def restore(self, target: Path) -> Result: ...


class Ours(Tool):
    def cmd(self, *args: str) -> list[str]:
        exe = ROOT / ".venv" / "bin" / "continuity"
        return [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "continuity"]),
                "backup", *args, "--repo", str(self.repo)]

    def init(self) -> None:
        run(self.cmd("init"), self.env)

    def snapshot(self, data: Path) -> Result:
        return run(self.cmd("snapshot", str(data), "--quiet"), self.env)

    def restore(self, target: Path) -> Result:
        return run(self.cmd("restore", "latest", "--target", str(target), "--quiet"), self.env)


class Restic(Tool):
    def init(self) -> None:
        run(["restic", "-r", str(self.repo), "init"], self.env)

    def snapshot(self, data: Path) -> Result:
        return run(["restic", "-r", str(self.repo), "backup", "--quiet", str(data)], self.env)

    def restore(self, target: Path) -> Result:
        return run(["restic", "-r", str(self.repo), "restore", "latest", "--target", str(target)], self.env)


class Borg(Tool):
    n = 0

    def init(self) -> None:
        run(["borg", "init", "--encryption=repokey-blake2", str(self.repo)], self.env)

    def snapshot(self, data: Path) -> Result:
        self.n += 1
        return run(["borg", "create", "--compression", "zstd,3", f"{self.repo}::s{self.n}", str(data)], self.env)

    def restore(self, target: Path) -> Result:
        target.mkdir(parents=True, exist_ok=True)
        return run(["borg", "extract", f"{self.repo}::s{self.n}"], self.env, cwd=target)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="1.0 ≈ 560 MB; 0.1 for a quick run")
    ap.add_argument("--work", type=Path, default=HERE / ".data", help="where data and repositories go")
    ap.add_argument("--tools", default="ours,restic,borg")
    ap.add_argument("--json", action="store_true", help="print results as JSON too")
    ap.add_argument("--repeat", type=int, default=1, help="best of N for unchanged and restore")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work: Path = args.work
    data = work / f"dataset-{args.scale:g}"
    t0 = time.perf_counter()
    if args.generate_only:
        generate(data, args.scale)
        return
    # generate in a child: a forked child inherits the parent's RSS as its starting peak, so the parent
    # must stay small for the children's ru_maxrss to mean anything
    subprocess.run([sys.executable, __file__, "--scale", str(args.scale), "--work", str(work), "--generate-only"],
                   check=True)
    size = du(data)
    print(f"data set: {size / 1e6:.0f} MB, {sum(1 for _ in data.rglob('*.jsonl'))} ledger files "
          f"(ready in {time.perf_counter() - t0:.1f}s)")
    base_env = {**os.environ, "CONTINUITY_PASSWORD": PASSWORD, "RESTIC_PASSWORD": PASSWORD,
                "BORG_PASSPHRASE": PASSWORD, "RESTIC_CACHE_DIR": str(work / "restic-cache"),
                "BORG_BASE_DIR": str(work / "borg-base"), "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
                "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}
    tools: list[Tool] = []
    wanted = args.tools.split(",")
    repos = work / "repos"
    shutil.rmtree(repos, ignore_errors=True)
    shutil.rmtree(work / "restic-cache", ignore_errors=True)
    shutil.rmtree(work / "borg-base", ignore_errors=True)
    repos.mkdir(parents=True)
    if "ours" in wanted:
        tools.append(Ours("ours", repos / "ours", base_env))
    for name, cls in (("restic", Restic), ("borg", Borg)):
        if name not in wanted:
            continue
        if shutil.which(name) is None:
            pkg = "borgbackup" if name == "borg" else name
            print(f"{name}: not installed — skipping its column (apt-get install {pkg})")
            continue
        tools.append(cls(name, repos / name, base_env))
    for t in tools:
        t.init()
    warm(data)
    results: dict[str, dict[str, float]] = {t.name: {} for t in tools}
    rss: dict[str, int] = {t.name: 0 for t in tools}

    def phase(label: str, fn: str, *a: Path) -> None:
        for t in tools:
            r: Result = getattr(t, fn)(*a)
            results[t.name][label] = min(r.seconds, results[t.name].get(label, r.seconds))
            rss[t.name] = max(rss[t.name], r.rss_kib)
            print(f"  {t.name:7s} {label:10s} {r.seconds:7.2f}s  rss {r.rss_kib / 1024:6.0f} MiB", flush=True)

    phase("initial", "snapshot", data)
    for t in tools:
        results[t.name]["repo_size"] = du(t.repo)
    for _ in range(args.repeat):  # a shared machine is noisy: best of N for the repeatable phases
        phase("unchanged", "snapshot", data)
    change_one_percent(data, args.scale)
    warm(data)
    phase("changed", "snapshot", data)
    restore_root = work / "restore"
    for t in tools:
        shutil.rmtree(restore_root / t.name, ignore_errors=True)
    phase_targets = {t.name: restore_root / t.name for t in tools}
    for i in range(args.repeat):
        for t in (tools if i % 2 == 0 else tools[::-1]):
            shutil.rmtree(phase_targets[t.name], ignore_errors=True)
            os.sync()
            r = t.restore(phase_targets[t.name])
            results[t.name]["restore"] = min(r.seconds, results[t.name].get("restore", r.seconds))
            rss[t.name] = max(rss[t.name], r.rss_kib)
            print(f"  {t.name:7s} {'restore':10s} {r.seconds:7.2f}s  rss {r.rss_kib / 1024:6.0f} MiB", flush=True)
    for t in tools:
        results[t.name]["peak_rss"] = rss[t.name] * 1024
    _check_restore(data, phase_targets)
    for t in tools:
        shutil.rmtree(phase_targets[t.name], ignore_errors=True)
    _table(results, size)
    if args.json:
        print(json.dumps(results, indent=2))


def _check_restore(data: Path, targets: dict[str, Path]) -> None:
    """The timing is meaningless if a tool restored the wrong bytes: spot-check ours."""
    ours = targets.get("ours")
    if not ours:
        return
    restored = ours / data.name
    sample = sorted(data.rglob("*"))[::97]
    bad = [p for p in sample if p.is_file() and (restored / p.relative_to(data)).read_bytes() != p.read_bytes()]
    print(f"restore spot-check (ours): {len(sample)} paths, {len(bad)} differ")
    if bad:
        raise SystemExit(f"restored content differs: {bad[:3]}")


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "repo_size" or metric == "peak_rss":
        return f"{v / 1e6:.0f} MB"
    return f"{v:.2f}s"


def _table(results: dict[str, dict[str, float]], size: int) -> None:
    names = list(results)
    print(f"\nresults on {size / 1e6:.0f} MB, {os.cpu_count()} cores")
    header = f"{'metric':11s}" + "".join(f"{n:>11s}" for n in names) + f"{'ours/restic':>13s}{'target':>9s}  ok"
    print(header)
    print("-" * len(header))
    for metric in ("initial", "unchanged", "changed", "restore", "repo_size", "peak_rss"):
        row = f"{metric:11s}" + "".join(f"{_fmt(metric, results[n].get(metric)):>11s}" for n in names)
        ours, restic = results.get("ours", {}).get(metric), results.get("restic", {}).get(metric)
        target = TARGETS[metric]
        if ours is not None and restic:
            ratio = ours / restic
            ok = "" if target is None else ("yes" if ratio <= target else "NO")
            row += f"{ratio:>12.2f}x{('<= ' + str(target)) if target else '':>9s}  {ok}"
        else:
            row += f"{'(no restic)':>13s}"
        print(row)


if __name__ == "__main__":
    main()
