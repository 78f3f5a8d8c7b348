"""Append-only credentials: snapshots are still added, forget/prune are refused in one line (exit 1),
and the refusal holds where it matters: in the repository's key (local) and in the server (SFTP, REST).
S3 object lock keeps every written version until its retain-until date."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from continuity.backup.storage import AppendOnlyRefused, open_backend
from tests.storage_servers import Served, moto_s3, rest, sshd
from tests.unit.test_backup_damage import run_cli

ADMIN, HOST = "admin-pw", "host-pw"


class Cmd:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
        self.mp, self.capsys = monkeypatch, capsys

    def __call__(self, env: dict[str, str], *args: str) -> tuple[int, str, str]:
        for k, v in env.items():
            self.mp.setenv(k, v)
        return run_cli(["backup", *args], self.capsys)


@pytest.fixture
def cmd(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cmd:
    for k in [k for k in os.environ if k.startswith(("AWS_", "CONTINUITY_"))]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("CONTINUITY_PACK_SIZE", str(128 * 1024))
    return Cmd(monkeypatch, capsys)


def tree(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for i in range(8):
        (src / f"f{i}").write_bytes(random.Random(i).randbytes(30_000))
    return src


def assert_refused(rc: int, err: str, op: str) -> None:
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "append-only" in lines[0] and f"{op} refused" in lines[0], err


def snapshot_ids(cmd: Cmd, env: dict[str, str]) -> set[str]:
    rc, out, err = cmd(env, "list", "--json")
    assert rc == 0, err
    return {s["id"] for s in json.loads(out)}


def test_append_only_key_adds_but_never_deletes(tmp_path: Path, cmd: Cmd) -> None:
    repo = str(tmp_path / "repo")
    admin = {"CONTINUITY_REPOSITORY": repo, "CONTINUITY_PASSWORD": ADMIN}
    host = {**admin, "CONTINUITY_PASSWORD": HOST}
    src = tree(tmp_path)
    assert cmd(admin, "init")[0] == 0
    rc, out, err = cmd({**admin, "CONTINUITY_NEW_PASSWORD": HOST}, "key", "add", "--append-only")
    assert rc == 0 and "append-only" in out, err
    for _ in range(2):
        (src / "f0").write_bytes(os.urandom(100))
        rc, _out, err = cmd(host, "snapshot", str(src))
        assert rc == 0, err
    ids = snapshot_ids(cmd, host)
    assert len(ids) == 2
    files = sorted(str(p) for p in (tmp_path / "repo").rglob("*"))
    rc, _out, err = cmd(host, "forget", "--keep-last", "1")
    assert_refused(rc, err, "forget")
    rc, _out, err = cmd(host, "prune")
    assert_refused(rc, err, "prune")
    assert sorted(str(p) for p in (tmp_path / "repo").rglob("*")) == files  # refused before any work
    rc, _out, err = cmd(host, "key", "rotate")  # re-stamping key files would replace them
    assert rc == 1 and "append-only" in err
    assert cmd(host, "forget", "--keep-last", "1", "--dry-run")[0] == 0
    assert snapshot_ids(cmd, host) == ids and not list((tmp_path / "repo" / "locks").iterdir())
    # the full-access credential prunes
    rc, _out, err = cmd(admin, "forget", "--keep-last", "1", "--prune")
    assert rc == 0, err
    assert len(snapshot_ids(cmd, admin)) == 1


@pytest.fixture(params=["sftp", "rest"])
def append_only_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    with (sshd if request.param == "sftp" else rest)(tmp_path, append_only=True) as s:
        yield s


def test_server_side_append_only(append_only_server: Served, tmp_path: Path, cmd: Cmd,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One repository key for everything; the server alone decides what the host's credential may do."""
    s = append_only_server
    admin_url, admin_env = s.admin()
    admin = {**admin_env, "CONTINUITY_REPOSITORY": admin_url, "CONTINUITY_PASSWORD": ADMIN}
    host = {**s.env, "CONTINUITY_REPOSITORY": s.url, "CONTINUITY_PASSWORD": ADMIN}
    src = tree(tmp_path)
    rc, _out, err = cmd(host, "init")  # creating a repository only adds files
    assert rc == 0, err
    for _ in range(2):
        (src / "f0").write_bytes(os.urandom(100))
        rc, _out, err = cmd(host, "snapshot", str(src))
        assert rc == 0, err
    ids = snapshot_ids(cmd, host)
    assert len(ids) == 2
    rc, _out, err = cmd(host, "forget", "--keep-last", "1")
    assert_refused(rc, err, "forget")
    rc, _out, err = cmd(host, "prune")
    assert_refused(rc, err, "prune")
    assert snapshot_ids(cmd, host) == ids

    # a client that skips continuity's own checks meets the server's refusal
    for k, v in s.env.items():
        monkeypatch.setenv(k, v)
    raw = open_backend(s.url)
    victim = f"snapshots/{sorted(ids)[0]}"
    before = raw.read(victim)
    with pytest.raises(AppendOnlyRefused):
        raw.delete(victim)
    with pytest.raises(AppendOnlyRefused):
        raw.write(victim, b"ransom")
    assert raw.read(victim) == before
    raw.close()

    # the separate full-access credential prunes, and sweeps what the host could not remove
    rc, _out, err = cmd(admin, "forget", "--keep-last", "1", "--prune")
    assert rc == 0, err
    assert len(snapshot_ids(cmd, admin)) == 1
    for k, v in admin_env.items():
        monkeypatch.setenv(k, v)
    admin_raw = open_backend(admin_url)
    assert list(admin_raw.list("locks")) == []
    admin_raw.close()


def test_s3_object_lock_keeps_every_version(tmp_path: Path, cmd: Cmd, monkeypatch: pytest.MonkeyPatch) -> None:
    with moto_s3() as s:
        env = {**s.env, "CONTINUITY_REPOSITORY": s.url, "CONTINUITY_PASSWORD": ADMIN,
               "CONTINUITY_S3_OBJECT_LOCK_DAYS": "7"}
        src = tree(tmp_path)
        assert cmd(env, "init")[0] == 0
        rc, _out, err = cmd(env, "snapshot", str(src))
        assert rc == 0, err
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        backend = open_backend(s.url)
        client, bucket = backend.client, backend.bucket
        assert client.get_object_lock_configuration(Bucket=bucket)["ObjectLockConfiguration"][
            "ObjectLockEnabled"] == "Enabled"
        names = [n for prefix in ("data", "index", "snapshots", "keys", "keyring") for n, _ in backend.list(prefix)]
        assert names and len([n for n in names if n.startswith("data/")]) >= 2
        for name in names:
            head = client.head_object(Bucket=bucket, Key=backend._key(name))
            assert head["ObjectLockMode"] == "COMPLIANCE", name
            assert head["ObjectLockRetainUntilDate"].timestamp() > __import__("time").time() + 6 * 86400
        # nobody can remove a locked version, whatever their credential
        pack = next(n for n in names if n.startswith("data/"))
        version = client.head_object(Bucket=bucket, Key=backend._key(pack))["VersionId"]
        from botocore.exceptions import ClientError

        with pytest.raises(ClientError) as exc:
            client.delete_object(Bucket=bucket, Key=backend._key(pack), VersionId=version)
        assert exc.value.response["Error"]["Code"] == "AccessDenied"
        # forget+prune hide data behind delete markers; the locked versions stay to be restored
        (src / "f1").write_bytes(b"x")
        assert cmd(env, "snapshot", str(src))[0] == 0
        rc, _out, err = cmd(env, "forget", "--keep-last", "1", "--prune")
        assert rc == 0, err
        versions = client.list_object_versions(Bucket=bucket, Prefix=backend._key("data/"))
        kept = {v["Key"] for v in versions.get("Versions", [])}
        assert backend._key(pack) in kept
        backend.close()
