"""The envelope check of continuity.task_auth: every way a message can be wrong is refused, with why."""

from __future__ import annotations

from pathlib import Path

import pytest

from continuity import task_auth
from continuity.signing import create_key

TASK = "continuity.drills.run"
NOW = 1_700_000_000.0


@pytest.fixture
def keys(tmp_path: Path) -> dict:
    control = create_key(tmp_path / "control.ed25519", "control", "beat")
    node = create_key(tmp_path / "node.ed25519", "node", "core-a")
    stranger = create_key(tmp_path / "stranger.ed25519", "control", "x")
    trust = task_auth.Trust({control.key_id: ("control", control.public), node.key_id: ("node", node.public)})
    return {"control": control, "node": node, "stranger": stranger, "trust": trust}


def _check(keys: dict, key: str = "control", task: str = TASK, tid: str = "t1", args: list | None = None,
           kwargs: dict | None = None, now: float = NOW, sealed_for: tuple = ()) -> str:
    s_task, s_tid, s_args, s_kwargs = sealed_for or (task, tid, args or ["x"], kwargs or {})
    env = task_auth.seal(keys[key], s_task, s_tid, s_args, s_kwargs, NOW, 60).to_dict()
    env_role = task_auth.check(keys["trust"], task, tid, args or ["x"], kwargs or {}, env, now)
    return env_role[1]


def test_valid_envelope_names_the_role(keys) -> None:
    assert _check(keys) == "control"
    assert _check(keys, "node", task="continuity.failover.fence") == "node"
    assert _check(keys, "node", task="continuity.node.ping") == "node"  # not a control-plane task: any trusted key


@pytest.mark.parametrize("case, match", [
    ({"key": "node"}, "a node key"),
    ({"key": "stranger"}, "not a trusted key"),
    ({"sealed_for": (TASK, "t1", ["y"], {})}, "does not match"),
    ({"sealed_for": (TASK, "t1", ["x"], {"dry_run": True})}, "does not match"),
    ({"sealed_for": (TASK, "t2", ["x"], {})}, "not this message"),
    ({"sealed_for": ("continuity.backup.forget", "t1", ["x"], {})}, "not this message"),
    ({"now": NOW + 61}, "expired"),
    ({"now": NOW - 61}, "future"),
])
def test_refused(keys, case: dict, match: str) -> None:
    with pytest.raises(task_auth.Unauthenticated, match=match):
        _check(keys, **case)


def test_missing_or_malformed_envelope(keys) -> None:
    for raw, match in [(None, "no signature envelope"), ({"task": TASK}, "malformed")]:
        with pytest.raises(task_auth.Unauthenticated, match=match):
            task_auth.check(keys["trust"], TASK, "t1", [], {}, raw, NOW)
    env = task_auth.seal(keys["control"], TASK, "t1", [], {}, NOW, 60).to_dict()
    env["sig"] = "00" * 64
    with pytest.raises(task_auth.Unauthenticated, match="does not match"):
        task_auth.check(keys["trust"], TASK, "t1", [], {}, env, NOW)


def test_eta_extends_validity_from_when_it_is_due(keys) -> None:
    env = task_auth.seal(keys["control"], TASK, "t1", [], {}, NOW, 60, not_before=NOW + 300).to_dict()
    assert task_auth.check(keys["trust"], TASK, "t1", [], {}, env, NOW + 350)[1] == "control"


def test_role_keys_are_published_and_trusted(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path))
    key = task_auth.role_key(task_auth.NODE, "core-a")
    trust = task_auth.load_trust()
    assert trust.role_of(key.key_id) == "node"
    assert (tmp_path / "keys" / "node-core-a.ed25519").stat().st_mode & 0o077 == 0
