"""S3 repositories against moto's server on 127.0.0.1 (no network, no real AWS)."""

from __future__ import annotations

import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.test_backup_damage import run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield url
    finally:
        server.stop()


def test_s3_repository_end_to_end(s3: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUITY_PASSWORD", "s3-pw")
    monkeypatch.setenv("CONTINUITY_PACK_SIZE", str(128 * 1024))
    src = tmp_path / "src"
    src.mkdir()
    rnd = random.Random(9)
    for i in range(20):
        (src / f"f{i}").write_bytes(rnd.randbytes(20_000))
    (src / "big").write_bytes(rnd.randbytes(1_200_000))
    repo = "s3://continuity-test/fleet/main"
    assert run_cli(["backup", "list", "--repo", repo], capsys)[0] == 10
    assert run_cli(["backup", "init", "--repo", repo], capsys)[0] == 0
    rc, out, err = run_cli(["backup", "snapshot", str(src), "--repo", repo, "--json"], capsys)
    assert rc == 0, err
    first = json.loads(out)
    assert first["packs_added"] >= 3
    (src / "f3").write_bytes(b"changed")
    rc, out, _ = run_cli(["backup", "snapshot", str(src), "--repo", repo, "--json"], capsys)
    second = json.loads(out)
    assert second["files_unmodified"] == 20 and second["bytes_read"] == len(b"changed")
    rc, out, _ = run_cli(["backup", "verify", "--repo", repo, "--read-data", "--json"], capsys)
    assert rc == 0 and json.loads(out)["ok"]
    target = tmp_path / "out"
    assert run_cli(["backup", "restore", first["id"], "--repo", repo, "--target", str(target)], capsys)[0] == 0
    assert (target / "src" / "big").read_bytes() == (src / "big").read_bytes()
    assert (target / "src" / "f3").read_bytes() != b"changed"
    monkeypatch.setenv("CONTINUITY_PASSWORD", "nope")
    assert run_cli(["backup", "list", "--repo", repo], capsys)[0] == 12


def test_copy_local_to_s3_moves_only_missing(s3: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Store-and-forward: a satellite's local repository replicated to object storage."""
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_bytes(random.Random(1).randbytes(800_000))
    local, remote = str(tmp_path / "local"), "s3://offsite/sat-1"
    run_cli(["backup", "init", "--repo", local], capsys)
    run_cli(["backup", "init", "--repo", remote, "--copy-params-from", local], capsys)
    run_cli(["backup", "snapshot", str(src), "--repo", local], capsys)
    rc, out, err = run_cli(["backup", "copy", "--repo", local, "--to", remote, "--json"], capsys)
    assert rc == 0, err
    c1 = json.loads(out)
    assert len(c1["copied"]) == 1 and c1["same_params"] and c1["bytes_added"] > 700_000
    (src / "more").write_text("a little more")
    run_cli(["backup", "snapshot", str(src), "--repo", local], capsys)
    c2 = json.loads(run_cli(["backup", "copy", "--repo", local, "--to", remote, "--json"], capsys)[1])
    assert len(c2["copied"]) == 1 and c2["skipped"] == 1 and c2["bytes_added"] < 5_000
    rc, out, _ = run_cli(["backup", "verify", "--repo", remote, "--read-data", "--drill", "latest", "--json"],
                         capsys)
    assert rc == 0 and json.loads(out)["drill"]["ok"]
