"""Repository URLs as restic spells them, and the append-only guard every backend can sit behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuity.backup.storage import AppendOnlyBackend, AppendOnlyRefused, LocalBackend
from continuity.backup.storage.rest import RestBackend
from continuity.backup.storage.sftp import SftpTarget
from continuity.cli import main
from continuity.errors import UsageError


@pytest.mark.parametrize(("url", "want"), [
    ("sftp:backup@vault:/srv/restic", SftpTarget("backup", "vault", 22, "/srv/restic")),
    ("sftp:vault:repo", SftpTarget(None, "vault", 22, "repo")),
    ("sftp://backup@vault:2222//srv/restic/", SftpTarget("backup", "vault", 2222, "/srv/restic")),
    ("sftp://vault/repo", SftpTarget(None, "vault", 22, "repo")),
    ("sftp://u@[::1]:2200//r", SftpTarget("u", "::1", 2200, "/r")),
])
def test_sftp_urls(url: str, want: SftpTarget) -> None:
    assert SftpTarget.parse(url) == want


@pytest.mark.parametrize("url", ["sftp:", "sftp:host", "sftp://host", "sftp://host/"])
def test_bad_sftp_urls_are_usage_errors(url: str) -> None:
    with pytest.raises(UsageError):
        SftpTarget.parse(url)


def test_rest_url_keeps_credentials_out_of_what_is_printed() -> None:
    b = RestBackend.from_url("rest:https://user:s3cret@vault.example:8000/fleet")
    assert b.url == "rest:https://vault.example:8000/fleet/" and "s3cret" not in b.url
    assert b._where("data/ab/abcd") == "https://vault.example:8000/fleet/data/abcd"
    assert b._where("keyring/00000001-ff") == "https://vault.example:8000/fleet/keys/keyring-00000001-ff"
    assert b._where("config") == "https://vault.example:8000/fleet/config"
    with pytest.raises(ValueError):
        b._where("snapshots/../config")
    with pytest.raises(UsageError):
        RestBackend.from_url("rest:ftp://host/")


def test_unknown_scheme_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["backup", "list", "--repo", "gopher://x/y", "--password-file", "/dev/null"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and "sftp:" in err and "rest:" in err


def test_append_only_guard(tmp_path: Path) -> None:
    inner = LocalBackend(str(tmp_path))
    inner.write("snapshots/a", b"one")
    guard = AppendOnlyBackend(inner)
    assert not guard.can_delete() and inner.can_delete()
    guard.write("snapshots/b", b"two")  # adding is what it is for
    with pytest.raises(AppendOnlyRefused):
        guard.delete("snapshots/a")
    with pytest.raises(AppendOnlyRefused):
        guard.write("snapshots/a", b"ransom")
    assert inner.read("snapshots/a") == b"one" and inner.read("snapshots/b") == b"two"
    # locks change in normal operation: refreshed in place, removed when done
    guard.write("locks/l1", b"{}")
    guard.write("locks/l1", b"{}")
    guard.delete("locks/l1")
    assert not inner.exists("locks/l1")


@pytest.mark.parametrize(("where", "kept"), [
    ("sftp:backup@vault:/srv/repo", True), ("rest:http://vault:8000/", True), ("s3://b/p", True),
    ("repos/main", False), ("/abs/repo", True),
])
def test_config_keeps_urls_and_anchors_paths(tmp_path: Path, where: str, kept: bool) -> None:
    from continuity.backup.config import LoadedConfig

    cfg = LoadedConfig.__new__(LoadedConfig)  # resolve() only needs the project root
    cfg.root = tmp_path
    assert (cfg.resolve(where) == where) is kept
