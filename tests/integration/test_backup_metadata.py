"""Extended attributes as an unprivileged user restores them: user.* comes back, even on read-only files;
namespaces only root may set are left alone rather than failing the restore.

The restore runs in a forked child that dropped root's privileges (uid/gid ``nobody``), from a repository
made readable to it: what an operator without root sees.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.backup.repository import Repository
from continuity.backup.restore import restore
from continuity.backup.snapshot import Source, take_snapshot
from continuity.backup.storage.local import LocalBackend

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user and set trusted.*")


@pytest.fixture
def shared() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="continuity-xattr-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _as_nobody(fn: object, *args: object) -> int:
    """Run ``fn(*args)`` in a forked child as nobody; its exit status (0: returned normally)."""
    nobody = pwd.getpwnam("nobody")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            code = int(fn(*args) or 0)  # type: ignore[operator]
        except BaseException:  # noqa: BLE001 - reported through the exit status and stderr
            import traceback

            os.write(2, traceback.format_exc().encode())
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_user_xattrs_come_back_for_an_unprivileged_restore(shared: Path) -> None:
    src = shared / "src"
    src.mkdir()
    ro = src / "read-only.txt"
    ro.write_text("r")
    try:
        os.setxattr(ro, "user.note", b"kept")
    except OSError as exc:
        pytest.skip(f"no user extended attributes on {shared}: {exc.strerror}")
    os.setxattr(ro, "trusted.secret", b"root only")
    os.chmod(ro, 0o444)
    repo_path = shared / "repo"
    repo = Repository.init(LocalBackend(str(repo_path)), b"pw", kdf={"n": 2**10, "r": 8, "p": 1})
    snap = repo.find_snapshot(take_snapshot(repo, [Source("directory", str(src))])["id"])
    for dirpath, dirs, files in os.walk(repo_path):
        for name in dirs + files:
            os.chmod(os.path.join(dirpath, name), 0o755 if name in dirs else 0o644)
    nobody = pwd.getpwnam("nobody")
    for mine in ("out", "notes"):
        (shared / mine).mkdir()
        os.chown(shared / mine, nobody.pw_uid, nobody.pw_gid)
    out, report = shared / "out", shared / "notes" / "failed"

    def unprivileged_restore() -> int:
        r = Repository.open(LocalBackend(str(repo_path)), b"pw")
        result = restore(r, snap, str(out))
        report.write_text(repr(result["failed"]))
        return 0

    assert _as_nobody(unprivileged_restore) == 0
    assert report.read_text() == "[]"  # trusted.* was not attempted, so nothing failed
    restored = out / "src" / "read-only.txt"
    assert os.getxattr(restored, "user.note") == b"kept"  # set before the mode took write permission away
    assert "trusted.secret" not in os.listxattr(restored)
    assert restored.stat().st_mode & 0o777 == 0o444
    as_root = shared / "as-root"
    restore(Repository.open(LocalBackend(str(repo_path)), b"pw"), snap, str(as_root))
    assert os.getxattr(as_root / "src" / "read-only.txt", "trusted.secret") == b"root only"
