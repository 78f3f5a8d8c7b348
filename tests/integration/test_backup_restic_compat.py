"""Judged by restic itself: the same tree, the same exclude options, the same entries kept; restic's JSON keys.

restic (Debian's package) backs up the tree and lists its snapshot; ``continuity backup snapshot`` does the same
with the same flags; the two sets of paths must be equal. Skipped where restic is not installed (``make bench``
installs it). ``--one-file-system`` mounts a real tmpfs inside the source, in a private mount namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

RESTIC = shutil.which("restic")
SIG = "Signature: 8a477f597d28d172789f06886806bc55"


def _restic(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RESTIC or "restic", "--no-cache", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _ours(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "continuity", "backup", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def repos(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTINUITY_", "RESTIC_"))}
    env.update(RESTIC_PASSWORD="pw", RESTIC_REPOSITORY=str(tmp_path / "restic"), CONTINUITY_PASSWORD="pw",
               CONTINUITY_REPOSITORY=str(tmp_path / "ours"), HOME=str(tmp_path))
    assert _ours(env, "init").returncode == 0
    if RESTIC:
        assert _restic(env, "init").returncode == 0
    return env


def _tree(root: Path) -> Path:
    files = {"a.txt": "a", "b.TMP": "b", "c.tmp": "c", "logs/x.log": "x", "logs/keep.txt": "k",
             "proj/build/out.o": "o", "proj/src/main.c": "m", "proj/src/build/gen.c": "g",
             "cache/CACHEDIR.TAG": SIG + "\n", "cache/blob": "b", "cache/sub/more": "m",
             "fake/CACHEDIR.TAG": "Signature: wrong\n", "fake/data": "d",
             "skipme/.nobackup": "", "skipme/data": "d", "header/.nobackup": "yes please", "header/data": "d",
             "space name/x y.txt": "s", "Mixed/Case.Txt": "m"}
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def _ours_paths(env: dict[str, str], src: Path) -> set[str]:
    snaps = json.loads(_ours(env, "snapshots", "--json").stdout)
    from continuity.backup.repository import Repository
    from continuity.backup.restore import walk
    from continuity.backup.storage import open_backend

    repo = Repository.open(open_backend(env["CONTINUITY_REPOSITORY"]), b"pw")
    tree = repo.find_snapshot(snaps[-1]["id"])["tree"]
    parent = str(src.parent)
    return {f"{parent}/{rel}" for rel, _ in walk(repo, tree)}


def _restic_paths(env: dict[str, str], src: Path) -> set[str]:
    out = _restic(env, "ls", "--json", "latest")
    assert out.returncode == 0, out.stderr
    nodes = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return {n["path"] for n in nodes if n.get("struct_type") == "node" and
            (n["path"] == str(src) or n["path"].startswith(f"{src}/"))}


CASES = [
    ["--exclude", "*.tmp"],
    ["--iexclude", "*.tmp", "--exclude", "build"],
    ["--exclude", "proj/**/build", "--exclude", "/nowhere/*"],
    ["--exclude-caches"],
    ["--exclude-if-present", ".nobackup"],
    ["--exclude-if-present", ".nobackup:yes"],
    ["--exclude", "space name", "--exclude", "[lm]*"],
    ["--exclude-file", "{exfile}", "--exclude-caches"],
]


@pytest.mark.skipif(RESTIC is None, reason="restic is not installed (apt-get install restic; `make bench` does)")
@pytest.mark.parametrize("flags", CASES, ids=[" ".join(c) for c in CASES])
def test_the_same_entries_as_restic(repos: dict[str, str], tmp_path: Path, flags: list[str]) -> None:
    src = _tree(tmp_path / "src")
    exfile = tmp_path / "excludes.txt"
    exfile.write_text("# from a file\n  *.log\n\n$HOME/src/proj/src\n")
    flags = [f.replace("{exfile}", str(exfile)) for f in flags]
    r = _restic(repos, "backup", str(src), *flags)
    assert r.returncode == 0, r.stderr
    o = _ours(repos, "snapshot", str(src), *flags)
    assert o.returncode == 0, o.stderr
    theirs, ours = _restic_paths(repos, src), _ours_paths(repos, src)
    assert ours == theirs, f"only ours: {sorted(ours - theirs)}; only restic's: {sorted(theirs - ours)}"
    assert len(ours) > 3


def _namespace_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _namespace_ok(), reason="cannot make a private mount namespace here (unshare -m)")
def test_one_file_system_keeps_the_mount_point_empty(repos: dict[str, str], tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    (src / "mnt").mkdir()
    (src / "mnt" / "under-the-mount").write_text("hidden by the mount")
    script = (f"mount -t tmpfs none {src / 'mnt'} && echo on-tmpfs > {src / 'mnt' / 'f'} && "
              f"{sys.executable} -m continuity backup snapshot -x --json {src} > {tmp_path / 'x.json'} && "
              f"{sys.executable} -m continuity backup snapshot --json {src} > {tmp_path / 'all.json'}")
    if RESTIC:
        script += f" && {RESTIC} --no-cache backup -x {src} >/dev/null"
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=repos, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    if r.returncode and "mount" in r.stderr and "permission" in r.stderr.lower():
        pytest.skip(f"tmpfs mount not permitted: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    from continuity.backup.repository import Repository
    from continuity.backup.restore import walk
    from continuity.backup.storage import open_backend

    repo = Repository.open(open_backend(repos["CONTINUITY_REPOSITORY"]), b"pw")
    listing = {}
    for name in ("x", "all"):
        sid = json.loads((tmp_path / f"{name}.json").read_text())["id"]
        listing[name] = {rel for rel, _ in walk(repo, repo.find_snapshot(sid)["tree"])}
    assert "src/mnt" in listing["x"] and "src/mnt/f" not in listing["x"]  # kept, empty
    assert "src/a.txt" in listing["x"]
    assert "src/mnt/f" in listing["all"]  # without -x the mounted file system is walked
    if RESTIC:
        assert {f"{tmp_path}/{rel}" for rel in listing["x"]} == _restic_paths(repos, src)


@pytest.mark.skipif(RESTIC is None, reason="restic is not installed")
def test_snapshots_json_has_restics_shape(repos: dict[str, str], tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    for tool in (_restic, _ours):
        args = ["backup", str(src), "--tag", "nightly"] if tool is _restic else ["snapshot", str(src), "--tag",
                                                                                  "nightly"]
        assert tool(repos, *args).returncode == 0
        args2 = ["backup", str(src)] if tool is _restic else ["snapshot", str(src)]
        assert tool(repos, *args2).returncode == 0
    theirs = json.loads(_restic(repos, "snapshots", "--json").stdout)
    for cmd in ("snapshots", "list"):
        ours = json.loads(_ours(repos, cmd, "--json").stdout)
        assert isinstance(theirs, list) and isinstance(ours, list) and len(ours) == len(theirs) == 2
        for t, o in zip(theirs, ours, strict=True):
            missing = set(t) - set(o)
            assert not missing, f"restic's keys missing from ours: {missing}"
            for key in t:
                assert type(o[key]) is type(t[key]), (key, o[key], t[key])
            assert o["paths"] == t["paths"] == [str(src)] and o["short_id"] == o["id"][:8]
        assert ours[1]["parent"] == ours[0]["id"] and "parent" not in ours[0]
        assert ours[0]["tags"] == ["nightly"] and "tags" not in ours[1]  # omitted when empty, as restic does


@pytest.mark.skipif(RESTIC is None, reason="restic is not installed")
def test_every_source_missing_fails_like_restic(repos: dict[str, str], tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")
    r, o = _restic(repos, "backup", gone), _ours(repos, "snapshot", gone)
    assert r.returncode == o.returncode == 1
    assert "do not exist" in r.stderr and "do not exist" in o.stderr
    assert json.loads(_ours(repos, "snapshots", "--json").stdout) == []


def _metadata_tree(root: Path) -> Path:
    """Files, a directory, a symlink and two hard links, each with its own past mtime; user.* attributes."""
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "f.txt").write_text("f")
    (root / "linked").write_text("one inode, two names")
    os.link(root / "linked", root / "dir" / "also-linked")
    os.symlink("dir/f.txt", root / "sym")
    (root / "ro.txt").write_text("read only")
    os.setxattr(root / "dir" / "f.txt", "user.origin", b"lab-7")
    os.setxattr(root / "dir", "user.project", b"\x00binary\xff")
    os.setxattr(root / "ro.txt", "user.note", b"set before chmod")
    os.chmod(root / "ro.txt", 0o444)
    os.chmod(root / "dir", 0o750)
    if os.geteuid() == 0:
        os.chown(root / "dir" / "f.txt", 4242, 4343)
        os.chown(root / "sym", 4244, 4345, follow_symlinks=False)
    stamp = 1_600_000_000_123_456_789
    for i, p in enumerate([root / "dir" / "f.txt", root / "linked", root / "ro.txt", root / "sym", root / "dir"]):
        os.utime(p, ns=(stamp + i * 10**9, stamp + i * 10**9), follow_symlinks=False)
    return root


def _metadata(root: Path) -> dict[str, tuple]:
    out = {}
    for p in sorted(root.rglob("*")):
        st = os.lstat(p)
        user_xattrs = {} if p.is_symlink() else {n: os.getxattr(p, n) for n in os.listxattr(p) if n.startswith("user.")}
        owner = (st.st_uid, st.st_gid) if os.geteuid() == 0 else None
        out[str(p.relative_to(root))] = (oct(st.st_mode), st.st_mtime_ns, owner, st.st_nlink, user_xattrs)
    return out


def _xattrs_supported(where: Path) -> bool:
    probe = where / ".xattr-probe"
    probe.write_text("")
    try:
        os.setxattr(probe, "user.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


@pytest.mark.skipif(RESTIC is None, reason="restic is not installed")
def test_metadata_comes_back_as_restic_brings_it_back(repos: dict[str, str], tmp_path: Path) -> None:
    """Mode, mtimes (symlinks' too), hard links, user.* attributes, and as root ownership: the same as restic's
    restore of the same tree, and the same as the tree itself."""
    if not _xattrs_supported(tmp_path):
        pytest.skip(f"{tmp_path}'s file system has no user extended attributes")
    src = _metadata_tree(tmp_path / "src")
    assert _restic(repos, "backup", str(src)).returncode == 0
    ours = _ours(repos, "snapshot", str(src))
    assert ours.returncode == 0, ours.stderr
    assert _restic(repos, "restore", "latest", "--target", str(tmp_path / "by-restic")).returncode == 0
    r = _ours(repos, "restore", "latest", "--target", str(tmp_path / "by-us"))
    assert r.returncode == 0, r.stderr
    original = _metadata(src)
    theirs = _metadata(tmp_path / "by-restic" / src.relative_to("/"))
    mine = _metadata(tmp_path / "by-us" / "src")
    assert mine == original
    assert mine == theirs
    assert mine["linked"][3] == mine["dir/also-linked"][3] == 2
