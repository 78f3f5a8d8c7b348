"""`who` is the operator key's id, not whatever LOGNAME says; without a key the name is marked unauthenticated."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

from tests.helpers import run_cli


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env.update(CONTINUITY_OPERATOR_KEY=str(tmp_path / "op" / "operator.ed25519"), **extra)
    return env


def test_without_a_key_the_login_name_is_only_a_claim(tmp_path: Path) -> None:
    res = run_cli("operator", "whoami", env=cli_env(tmp_path, LOGNAME="cfo", USER="cfo"))
    assert res.returncode == 0
    assert res.stdout.strip() == f"cfo@{socket.gethostname()} [unauthenticated]"
    assert "continuity operator keygen" in res.stderr


def test_with_a_key_who_is_its_key_id_whatever_logname_says(tmp_path: Path) -> None:
    made = run_cli("operator", "keygen", "--name", "alice", "--json", env=cli_env(tmp_path))
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    path = Path(key["file"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert key["public"].startswith("continuity-ed25519 ") and len(key["key_id"]) == 16
    res = run_cli("operator", "whoami", "--json", env=cli_env(tmp_path, LOGNAME="cfo", USER="cfo"))
    me = json.loads(res.stdout)
    assert me["who"] == f"alice [key {key['key_id']}]" and me["key_id"] == key["key_id"]
    again = run_cli("operator", "keygen", env=cli_env(tmp_path))
    assert again.returncode == 2 and "already exists" in again.stderr and key["key_id"] in again.stderr


def test_an_operator_key_others_can_read_is_refused(tmp_path: Path) -> None:
    assert run_cli("operator", "keygen", env=cli_env(tmp_path)).returncode == 0
    key = tmp_path / "op" / "operator.ed25519"
    key.chmod(0o640)
    res = run_cli("operator", "whoami", env=cli_env(tmp_path))
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert f"operator key {key} is readable by group or others (mode 0640): run `chmod 600 {key}`" in res.stderr
    key.write_text("# continuity operator key: x\nnot a key\n")
    key.chmod(0o600)
    res = run_cli("operator", "whoami", env=cli_env(tmp_path))
    assert res.returncode == 2 and "is not an unencrypted Ed25519 private key" in res.stderr
