"""SFTP specifics the shared torture tests do not reach: host-key checking and connection errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.storage_servers import free_port, sshd
from tests.unit.test_backup_damage import run_cli


def test_unknown_host_key_is_refused_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    for k in [k for k in os.environ if k.startswith("CONTINUITY_")]:
        monkeypatch.delenv(k)
    with sshd(tmp_path) as s:
        for k, v in s.env.items():
            monkeypatch.setenv(k, v)
        monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
        assert run_cli(["backup", "init", "--repo", s.url], capsys)[0] == 0
        # a server whose key is not the one on record: a man in the middle, or a rebuilt host
        (tmp_path / "empty_known_hosts").write_text("")
        monkeypatch.setenv("CONTINUITY_SFTP_KNOWN_HOSTS", str(tmp_path / "empty_known_hosts"))
        rc, _out, err = run_cli(["backup", "list", "--repo", s.url], capsys)
        assert rc == 1 and len(err.strip().splitlines()) == 1 and "not found in known_hosts" in err, err
        assert not (tmp_path / "empty_known_hosts").read_text()  # and it was not learnt either
    rc, _out, err = run_cli(["backup", "list", "--repo", f"sftp://u@127.0.0.1:{free_port()}//x"], capsys)
    assert rc == 1 and "cannot connect" in err and len(err.strip().splitlines()) == 1, err
