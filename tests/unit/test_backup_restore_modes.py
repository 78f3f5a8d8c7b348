"""A restored file gets its recorded mode and owner however it was created.

Restore creates a file with its recorded mode straight away when the umask leaves that mode whole, and then
skips the chmod, and the chown when the new file's owner is already the recorded one (two syscalls of a
small file's handful). These tests hold the cases where that shortcut must not be taken: a mode the umask
would cut, a setgid directory that gives new files another group, setuid bits, a read-only mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from continuity.backup import restore as restore_mod
from continuity.backup.repository import Repository
from continuity.backup.restore import restore
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend
from tests.unit.test_backup_engine import FAST_KDF

PW = "modes-pw"
MODES = {"plain": 0o644, "private": 0o600, "shared": 0o666, "open": 0o777, "script": 0o755,
         "readonly": 0o444, "group": 0o640}


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository.init(LocalBackend(str(tmp_path / "repo")), PW.encode(), kdf=FAST_KDF)


def snap_of(repo: Repository, src: Path) -> dict:
    return repo.find_snapshot(take_snapshot(repo, [Source("directory", str(src))])["id"])


def tree_with_modes(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, mode in MODES.items():
        (src / name).write_bytes(name.encode() * 10)
        os.chmod(src / name, mode)
    return src


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002, 0o000])
def test_every_mode_comes_back_under_any_umask(repo: Repository, tmp_path: Path, umask: int) -> None:
    src = tree_with_modes(tmp_path)
    snap = snap_of(repo, src)
    old = os.umask(umask)
    try:
        restore(repo, snap, str(tmp_path / "out"))
    finally:
        os.umask(old)
    got = {name: stat.S_IMODE(os.stat(tmp_path / "out" / "src" / name).st_mode) for name in MODES}
    assert got == MODES


def test_the_umask_is_read_without_changing_it() -> None:
    old = os.umask(0o027)
    try:
        assert restore_mod._umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(old)


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are restored only as root")
def test_a_setgid_target_directory_does_not_leave_its_group_on_restored_files(repo: Repository,
                                                                              tmp_path: Path) -> None:
    """New files in a setgid directory take the directory's group: the recorded group must still be set."""
    src = tree_with_modes(tmp_path)
    for name in MODES:
        os.chown(src / name, 0, 0)
    snap = snap_of(repo, src)
    out = tmp_path / "out"
    (out / "src").mkdir(parents=True)
    os.chown(out / "src", 0, 4242)
    os.chmod(out / "src", 0o2775)
    restore(repo, snap, str(out))
    got = {name: (os.stat(out / "src" / name).st_uid, os.stat(out / "src" / name).st_gid) for name in MODES}
    assert got == {name: (0, 0) for name in MODES}


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are restored only as root")
def test_files_owned_by_someone_else_get_that_owner_back(repo: Repository, tmp_path: Path) -> None:
    src = tree_with_modes(tmp_path)
    os.chown(src / "plain", 4242, 4343)
    os.chown(src / "group", 0, 4343)
    snap = snap_of(repo, src)
    restore(repo, snap, str(tmp_path / "out"))
    st = {name: os.stat(tmp_path / "out" / "src" / name) for name in ("plain", "group", "script")}
    assert (st["plain"].st_uid, st["plain"].st_gid) == (4242, 4343)
    assert (st["group"].st_uid, st["group"].st_gid) == (0, 4343)
    assert (st["script"].st_uid, st["script"].st_gid) == (0, 0)
    assert {n: stat.S_IMODE(s.st_mode) for n, s in st.items()} == {n: MODES[n] for n in st}


def test_a_restore_keeps_more_reads_in_flight_from_a_network_backend(repo: Repository, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Four to eight threads from a local disk; a backend whose reads wait on the network (``read_threads``)
    gets its own count, also through the wrappers (append-only, throttled) that a CLI run puts around it."""
    from continuity.backup.storage.append_only import AppendOnlyBackend
    from continuity.backup.storage.s3 import S3Backend
    from continuity.backup.storage.sftp import SftpBackend
    from continuity.backup.throttle import ThrottledBackend

    assert S3Backend.read_threads == SftpBackend.read_threads == 8 and LocalBackend.read_threads is None
    seen: list[int] = []
    real = restore_mod.ThreadPoolExecutor

    def counting(n: int, *a, **kw):
        seen.append(n)
        return real(n, *a, **kw)

    monkeypatch.setattr(restore_mod, "ThreadPoolExecutor", counting)
    src = tree_with_modes(tmp_path)
    snap = snap_of(repo, src)
    restore(repo, snap, str(tmp_path / "local"))
    inner = repo.backend
    inner.read_threads = 7  # as a network backend would say, here from inside both wrappers
    repo.backend = ThrottledBackend(AppendOnlyBackend(inner))
    restore(repo, snap, str(tmp_path / "remote"))
    assert seen == [max(4, min(8, 3 * (os.cpu_count() or 2))), 7]
