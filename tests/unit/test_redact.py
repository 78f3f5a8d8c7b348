"""Secrets are kept out of Redis and the pulse history by value, whatever the variable holding them is called."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from continuity import redact, secretfiles
from continuity.drills import faults
from continuity.pulse import Pulse


@pytest.fixture()
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CONTINUITY_STATE", str(tmp_path / "state"))
    for name in ("CONTINUITY_REDIS_URL", "FLOWER_BASIC_AUTH", "CONTINUITY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "state"


def test_rollback_env_drops_secrets_under_innocent_names(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redis_pw = secretfiles.ensure("redis.password")
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "admin:flower-secret-1")
    env = {
        "CONTINUITY_REDIS_URL": "redis://:s3cr3t-url-pw@127.0.0.1:6379/0",  # no KEY/PASS/TOKEN in the name
        "DATABASE_URL": "postgres://app:db-secret-9@db/app",
        "FLOWER_BASIC_AUTH": "admin:flower-secret-1",
        "MY_COPY": f"x{redis_pw}x",  # a generated password copied under any name
        "SHOWN": "flower-secret-1",  # the Flower password alone, known from this process's environment
        "PATH": "/usr/bin", "CONTINUITY_NODE": "core-a",
    }
    safe, dropped = faults._safe_env(env)
    assert safe == {"PATH": "/usr/bin", "CONTINUITY_NODE": "core-a"}
    assert set(dropped) == set(env) - set(safe)
    assert not any(s in json.dumps(safe) for s in ("s3cr3t-url-pw", "db-secret-9", "flower-secret-1", redis_pw))


def test_pulse_events_mask_known_secret_values(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    redis_pw = secretfiles.ensure("redis.password")
    monkeypatch.setenv("CONTINUITY_REDIS_URL", "redis://:url-secret-7@127.0.0.1:1/0")
    pulse = Pulse(path=state / "pulse_history.jsonl")
    ev = pulse.emit("test.secret", data={"error": f"auth failed for {redis_pw}",
                                         "argv": ["redis-cli", "-a", "url-secret-7"], "ok": 1})
    text = (state / "pulse_history.jsonl").read_text()
    assert redis_pw not in text and "url-secret-7" not in text
    assert ev["data"] == {"error": "auth failed for ***", "argv": ["redis-cli", "-a", "***"], "ok": 1}


def test_short_values_are_not_treated_as_secrets() -> None:
    assert "on" not in redact.known_secrets({"CONTINUITY_PASSWORD": "on"})
