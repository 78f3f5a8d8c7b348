"""Backup benchmark: continuity vs restic (and borg when installed) on one deterministic data set.

Usage::

    .venv/bin/python bench/backup_bench.py              # mixed, ~560 MB, like the anchor in ANCHORS.md
    .venv/bin/python bench/backup_bench.py --scale 0.1  # quick run
    .venv/bin/python bench/backup_bench.py --profile small [--files 200000]   # many 0.5-8 KB files
    .venv/bin/python bench/backup_bench.py --profile big   # 2 GiB in 8 files
    .venv/bin/python bench/backup_bench.py --double --files 200000 --tools ours,restic  # RSS vs file count

Fairness: every phase runs ``--repeat`` times (the initial snapshot into fresh
repositories each time) with the tool order rotated, and the table shows
medians, with the load average of the runs beside; ours is initialised with
the scrypt parameters restic chose on this machine, so both pay the same key
cost on every command; the 1 % change includes an insertion in a large file;
every restore of every tool is compared file by file with the data set.

The mixed data set mirrors the anchor: ~20k small JSON-ledger files in 100
directories plus 4 large half-random binaries (incompressible blocks
interleaved with compressible text), generated from a fixed seed. Every
phase runs all tools back to back on the same bytes, so page-cache state
and the 1 % change are identical for each: initial snapshot, unchanged
re-snapshot, 1 %-changed re-snapshot, full restore, repository size, and
peak RSS of each child process (``wait4`` rusage). Ratios are ours/restic;
targets are from issues 3 and 13. restic/borg missing → their columns are skipped,
and said so.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PASSWORD = "bench-password"
TARGETS = {"initial": 1.0, "unchanged": 0.5, "changed": None, "restore": 1.0, "repo_size": 1.05,
           "rss_snapshot": 1.5, "rss_restore": 1.5}


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


def generate(data: Path, scale: float, profile: str = "mixed", files: int = 0) -> dict[str, object]:
    marker = data / ".complete"
    spec: dict[str, object] = {"scale": scale, "version": 3, "profile": profile, "files": files}
    if marker.exists() and json.loads(marker.read_text()) == spec:
        return spec
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    rnd = random.Random(1234)
    if profile == "small":
        generate_small(data, files, rnd)
    elif profile == "big":
        (data / "big").mkdir()
        for i in range(8):  # 2 GiB at scale 1 in 8 files: the large-file path, no per-file overhead
            (data / "big" / f"big-{i}.bin").write_bytes(half_random(rnd, int(2**28 * scale)))
    else:
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


def generate_small(data: Path, files: int, rnd: random.Random) -> None:
    """``files`` files of 0.5–8 KB, 100 per directory, 10 directories per top-level one (a source tree, a
    mail spool): half random bytes, half text, so they compress a little, as real small files do."""
    text = b"".join(b"%06d small file line of ordinary text\n" % i for i in range(300))
    for i in range(files):
        d = data / f"top-{i // 1000:04d}" / f"sub-{i // 100 % 10}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rnd.randint(512, 8192)
        (d / f"file-{i:07d}.dat").write_bytes(rnd.randbytes(size // 2) + text[:size - size // 2])


def change_one_percent(data: Path, scale: float) -> None:
    """Change 1 % of the data deterministically: appends to 1 % of the small files, a rewritten region and an
    insertion (which shifts everything after it: content-defined chunking must find the old chunks again)
    in the large files."""
    rnd = random.Random(99)
    smalls = sorted(p for p in data.rglob("*") if p.is_file() and p.stat().st_size < 1 << 20 and p.name[0] != ".")
    for p in rnd.sample(smalls, max(1, len(smalls) // 100)) if smalls else []:
        with open(p, "ab") as f:
            f.write(_ledger_lines(rnd, 3, 10**9).encode())
    bigs = sorted(p for p in data.rglob("*.bin"))
    if not bigs:
        return
    blob = bigs[1 % len(bigs)]
    size = blob.stat().st_size
    region = max(65536, size * len(bigs) // 100 // 2)  # half rewritten, half inserted: 1 % of the large data
    with open(blob, "r+b") as f:
        f.seek(size // 3)
        f.write(rnd.randbytes(region))
    at, tmp = size * 2 // 3, blob.with_suffix(".tmp")
    with open(blob, "rb") as src, open(tmp, "wb") as dst:  # streamed: this process must stay small (see main)
        while at - dst.tell() > 0:
            dst.write(src.read(min(1 << 22, at - dst.tell())))
        dst.write(rnd.randbytes(region))
        shutil.copyfileobj(src, dst, 1 << 22)
    os.replace(tmp, blob)


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
    load: float  # 1-minute load average when the run ended: the machine is shared, say how busy it was


TIME = shutil.which("time", path="/usr/bin:/bin")


def run(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Result:
    """Run a tool; its wall time and its own peak RSS.

    A child's ``ru_maxrss`` starts from the RSS of the process that forked it (Linux keeps the larger of
    the pre-exec and post-exec peaks, and Python spawns with vfork), and this process holds the data set's
    path lists: so the tool is started by GNU time, a small process whose child's peak is the tool's alone.
    """
    rss_file = None
    if TIME:
        fd, rss_file = tempfile.mkstemp(prefix="bench-rss-")
        os.close(fd)
        argv = [TIME, "-q", "-f", "%M", "-o", rss_file, *argv]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _pid, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    rss = usage.ru_maxrss
    if rss_file:
        text = Path(rss_file).read_text().split()
        os.unlink(rss_file)
        rss = int(text[-1]) if text and text[-1].isdigit() else rss
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {err[-2000:]}")
    return Result(dt, rss, os.getloadavg()[0])


@dataclass
class Tool:
    name: str
    repo: Path
    env: dict[str, str] = field(default_factory=dict)
    kdf: dict[str, int] | None = None  # scrypt parameters: ours are set to restic's, so both pay one key cost

    def init(self) -> None: ...
    def snapshot(self, data: Path) -> Result: ...
    def restore(self, target: Path) -> Result: ...
    def restored_root(self, target: Path, data: Path) -> Path: ...


class Ours(Tool):
    def cmd(self, *args: str) -> list[str]:
        exe = ROOT / ".venv" / "bin" / "continuity"
        return [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "continuity"]),
                "backup", *args, "--repo", str(self.repo)]

    def init(self) -> None:
        if self.kdf is None:
            run(self.cmd("init"), self.env)
            return
        # no CLI flag sets scrypt parameters (the defaults are the product's); the bench matches restic's
        code = ("import json, sys; from continuity.backup.repository import Repository; "
                "from continuity.backup.storage import open_backend; "
                "Repository.init(open_backend(sys.argv[1]), sys.argv[2].encode(), kdf=json.loads(sys.argv[3]))")
        run([sys.executable, "-c", code, str(self.repo), PASSWORD, json.dumps(self.kdf)], self.env)

    def snapshot(self, data: Path) -> Result:
        return run(self.cmd("snapshot", str(data), "--quiet"), self.env)

    def restore(self, target: Path) -> Result:
        return run(self.cmd("restore", "latest", "--target", str(target), "--quiet"), self.env)

    def restored_root(self, target: Path, data: Path) -> Path:
        return target / data.name


class Restic(Tool):
    def init(self) -> None:
        run(["restic", "-r", str(self.repo), "init"], self.env)

    def key_params(self) -> dict[str, int]:
        doc = json.loads(next((self.repo / "keys").iterdir()).read_text())
        return {"n": doc["N"], "r": doc["r"], "p": doc["p"]}

    def snapshot(self, data: Path) -> Result:
        return run(["restic", "-r", str(self.repo), "backup", "--quiet", str(data)], self.env)

    def restore(self, target: Path) -> Result:
        return run(["restic", "-r", str(self.repo), "restore", "latest", "--target", str(target)], self.env)

    def restored_root(self, target: Path, data: Path) -> Path:
        return target / str(data.resolve()).lstrip("/")


class Borg(Tool):
    n = 0

    def init(self) -> None:
        self.n = 0
        run(["borg", "init", "--encryption=repokey-blake2", str(self.repo)], self.env)

    def snapshot(self, data: Path) -> Result:
        self.n += 1
        return run(["borg", "create", "--compression", "zstd,3", f"{self.repo}::s{self.n}", str(data)], self.env)

    def restore(self, target: Path) -> Result:
        target.mkdir(parents=True, exist_ok=True)
        return run(["borg", "extract", f"{self.repo}::s{self.n}"], self.env, cwd=target)

    def restored_root(self, target: Path, data: Path) -> Path:
        return target / str(data.resolve()).lstrip("/")


def rotated(tools: list[Tool], i: int) -> list[Tool]:
    """Run ``i`` starts with a different tool: none always runs first (cold caches) or last (a warm machine)."""
    k = i % len(tools) if tools else 0
    return tools[k:] + tools[:k]


class Recorder:
    """Every measurement, printed as it is taken with the load beside it; medians for the table."""

    def __init__(self, tools: list[Tool]) -> None:
        self.times: dict[str, dict[str, list[float]]] = {t.name: {} for t in tools}
        self.rss: dict[str, dict[str, int]] = {t.name: {} for t in tools}
        self.loads: list[float] = []

    def add(self, tool: Tool, label: str, r: Result) -> None:
        self.times[tool.name].setdefault(label, []).append(r.seconds)
        kind = "restore" if label == "restore" else "snapshot"
        self.rss[tool.name][kind] = max(self.rss[tool.name].get(kind, 0), r.rss_kib * 1024)
        self.loads.append(r.load)
        print(f"  {tool.name:7s} {label:10s} {r.seconds:7.2f}s  rss {r.rss_kib / 1024:6.0f} MiB  load {r.load:5.2f}",
              flush=True)

    def results(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for name, phases in self.times.items():
            out[name] = {label: statistics.median(v) for label, v in phases.items()}
            out[name]["rss_snapshot"] = self.rss[name].get("snapshot", 0)
            out[name]["rss_restore"] = self.rss[name].get("restore", 0)
        return out


def make_tools(wanted: list[str], repos: Path, env: dict[str, str]) -> list[Tool]:
    tools: list[Tool] = []
    if "ours" in wanted:
        tools.append(Ours("ours", repos / "ours", env))
    for name, cls in (("restic", Restic), ("borg", Borg)):
        if name not in wanted:
            continue
        if shutil.which(name) is None:
            pkg = "borgbackup" if name == "borg" else name
            print(f"{name}: not installed — skipping its column (apt-get install {pkg})")
            continue
        tools.append(cls(name, repos / name, env))
    return tools


def fresh_repos(tools: list[Tool], repos: Path, work: Path) -> None:
    """Empty repositories (and caches); restic's first, so ours gets restic's scrypt parameters."""
    for t in tools:
        shutil.rmtree(t.repo, ignore_errors=True)
    shutil.rmtree(work / "restic-cache", ignore_errors=True)
    shutil.rmtree(work / "borg-base", ignore_errors=True)
    repos.mkdir(parents=True, exist_ok=True)
    restic = next((t for t in tools if isinstance(t, Restic)), None)
    if restic is not None:
        restic.init()
    for t in tools:
        if isinstance(t, Ours) and restic is not None:
            t.kdf = restic.key_params()
        if t is not restic:
            t.init()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", choices=("mixed", "small", "big"), default="mixed",
                    help="mixed: ledgers + 4 large files (~560 MB); small: --files files of 0.5-8 KB; "
                         "big: 2 GiB in 8 files (times --scale)")
    ap.add_argument("--files", type=int, default=200_000, help="file count of the small profile")
    ap.add_argument("--scale", type=float, default=1.0, help="mixed/big: 1.0 ≈ full size; 0.1 for a quick run")
    ap.add_argument("--work", type=Path, default=HERE / ".data", help="where data and repositories go")
    ap.add_argument("--tools", default="ours,restic,borg")
    ap.add_argument("--json", action="store_true", help="print results as JSON too")
    ap.add_argument("--repeat", type=int, default=3, help="runs per phase (fresh repositories for the "
                                                          "initial snapshot); the table shows medians")
    ap.add_argument("--double", action="store_true",
                    help="small profile: snapshot and restore --files and twice as many, once each, and print "
                         "how much peak RSS grows (target: at most 10 %%)")
    ap.add_argument("--generate-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work: Path = args.work
    if args.generate_only:
        generate(dataset_path(work, args.profile, args.scale, args.files), args.scale, args.profile, args.files)
        return
    if args.double:
        double_check(args, work)
        return
    data = prepare(args, work, args.files)
    base_env = tool_env(work)
    repos = work / "repos"
    tools = make_tools(args.tools.split(","), repos, base_env)
    rec = Recorder(tools)
    warm(data)
    for i in range(args.repeat):  # a fresh repository per run: every initial snapshot starts from nothing
        fresh_repos(tools, repos, work)
        for t in rotated(tools, i):
            rec.add(t, "initial", t.snapshot(data))
    repo_size = {t.name: du(t.repo) for t in tools}
    for i in range(args.repeat):
        for t in rotated(tools, i):
            rec.add(t, "unchanged", t.snapshot(data))
    change_one_percent(data, args.scale)
    warm(data)
    for t in tools:  # the change happens once, so this phase runs once per tool
        rec.add(t, "changed", t.snapshot(data))
    # every restore goes to a new directory, and none is deleted before the phase ends: on the ext4 this was
    # measured on, creating files in the minutes after many were deleted near them cost 3-20x the kernel
    # time, which would charge one tool for another's clean-up
    restore_root = work / "restore"
    shutil.rmtree(restore_root, ignore_errors=True)
    os.sync()
    for i in range(args.repeat):
        for t in rotated(tools, i):
            target = restore_root / f"{t.name}-{i}"
            os.sync()
            rec.add(t, "restore", t.restore(target))
            check_restore(data, t.restored_root(target, data), t.name)
    shutil.rmtree(restore_root, ignore_errors=True)
    results = rec.results()
    for t in tools:
        results[t.name]["repo_size"] = repo_size[t.name]
    _table(results, du(data), rec.loads, args.repeat)
    if args.json:
        print(json.dumps(results, indent=2))


def dataset_path(work: Path, profile: str, scale: float, files: int) -> Path:
    return work / (f"dataset-small-{files}" if profile == "small" else
                   f"dataset-{scale:g}" if profile == "mixed" else f"dataset-big-{scale:g}")


def prepare(args: argparse.Namespace, work: Path, files: int) -> Path:
    """Generate the data set in a child: a forked child inherits the parent's RSS as its starting peak, so
    the parent must stay small for the children's ru_maxrss to mean anything."""
    t0 = time.perf_counter()
    data = dataset_path(work, args.profile, args.scale, files)
    subprocess.run([sys.executable, __file__, "--profile", args.profile, "--scale", str(args.scale),
                    "--files", str(files), "--work", str(work), "--generate-only"], check=True)
    n = sum(1 for p in data.rglob("*") if p.is_file())
    print(f"data set {args.profile}: {du(data) / 1e6:.0f} MB in {n} files (ready in {time.perf_counter() - t0:.1f}s), "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}", flush=True)
    return data


def tool_env(work: Path) -> dict[str, str]:
    return {**os.environ, "CONTINUITY_PASSWORD": PASSWORD, "RESTIC_PASSWORD": PASSWORD,
            "BORG_PASSPHRASE": PASSWORD, "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            "BORG_BASE_DIR": str(work / "borg-base"), "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes"}


def double_check(args: argparse.Namespace, work: Path) -> None:
    """Peak RSS of an initial snapshot and a restore of N and 2N small files, per tool, same run."""
    args.profile = "small"
    base_env = tool_env(work)
    repos = work / "repos"
    tools = make_tools(args.tools.split(","), repos, base_env)
    peaks: dict[tuple[str, int], tuple[int, int, float]] = {}
    for n in (args.files, 2 * args.files):
        data = prepare(args, work, n)
        warm(data)
        fresh_repos(tools, repos, work)
        for t in tools:
            s = t.snapshot(data)
            target = work / "restore" / t.name
            shutil.rmtree(target, ignore_errors=True)
            r = t.restore(target)
            check_restore(data, t.restored_root(target, data), t.name)
            shutil.rmtree(target, ignore_errors=True)
            peaks[(t.name, n)] = (s.rss_kib, r.rss_kib, max(s.load, r.load))
            print(f"  {t.name:7s} {n:8d} files  snapshot {s.seconds:7.2f}s rss {s.rss_kib / 1024:6.0f} MiB  "
                  f"restore {r.seconds:7.2f}s rss {r.rss_kib / 1024:6.0f} MiB  load {max(s.load, r.load):5.2f}",
                  flush=True)
    print(f"\npeak RSS growth from {args.files} to {2 * args.files} files (target for ours: <= 1.10x)")
    for t in tools:
        (s1, r1, _), (s2, r2, _) = peaks[(t.name, args.files)], peaks[(t.name, 2 * args.files)]
        print(f"  {t.name:7s} snapshot {s2 / s1:5.2f}x   restore {r2 / r1:5.2f}x")
    if ("restic", args.files) in peaks and ("ours", args.files) in peaks:
        for n in (args.files, 2 * args.files):
            (so, ro, _), (sr, rr, _) = peaks[("ours", n)], peaks[("restic", n)]
            print(f"  ours/restic at {n} files: snapshot {so / sr:5.2f}x  restore {ro / rr:5.2f}x  (target <= 1.5x)")


def check_restore(data: Path, restored: Path, tool: str) -> None:
    """A timing is meaningless if the tool restored the wrong bytes: every file of every tool is compared."""
    missing, differ, n = [], [], 0
    for p in data.rglob("*"):
        if not p.is_file() or p.name == ".complete":
            continue
        n += 1
        q = restored / p.relative_to(data)
        if not q.is_file():
            missing.append(q)
        elif not filecmp.cmp(p, q, shallow=False):
            differ.append(q)
    if missing or differ:
        raise SystemExit(f"{tool}: restore of {n} files: {len(missing)} missing, {len(differ)} differ, e.g. "
                         f"{(missing + differ)[:3]}")


def _fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "repo_size" or metric.startswith("rss"):
        return f"{v / 1e6:.0f} MB"
    return f"{v:.2f}s"


def _table(results: dict[str, dict[str, float]], size: int, loads: list[float], repeat: int) -> None:
    names = list(results)
    print(f"\nresults on {size / 1e6:.0f} MB, {os.cpu_count()} cores, medians of {repeat} (changed: 1 run), "
          f"load average {min(loads, default=0):.2f}-{max(loads, default=0):.2f} during the runs")
    header = f"{'metric':13s}" + "".join(f"{n:>11s}" for n in names) + f"{'ours/restic':>13s}{'target':>9s}  ok"
    print(header)
    print("-" * len(header))
    for metric in TARGETS:
        row = f"{metric:13s}" + "".join(f"{_fmt(metric, results[n].get(metric)):>11s}" for n in names)
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
