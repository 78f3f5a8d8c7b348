"""Issue 11: the redis-restart drill brings the embedded Redis back as hardened as `continuity up` started it.

It used to relaunch the server with ``--requirepass <password>`` in argv (shown by ``ps`` to every user, and
kept in the spawned-process ledger) and without the ACL rules, so ``CONFIG SET dir`` worked again after the
drill. Real redis-server, real fault and real rollback executor.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path

import pytest
import redis

from continuity.blueprint import load_blueprint
from continuity.drills.faults import FaultContext, executors, redis_restart
from continuity.drills.targets import TargetPlan
from continuity.redisd import RedisServer, connect
from tests.helpers import ROOT


def argvs() -> list[bytes]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes())
            except OSError:
                continue  # gone meanwhile, or not ours to read
    return out


def test_a_redis_restart_drill_keeps_the_acl_rules_and_the_password_out_of_argv(tmp_path: Path, monkeypatch) -> None:
    state = tmp_path / "state"
    password = secrets.token_hex(16)
    monkeypatch.setenv("CONTINUITY_STATE", str(state))
    server = RedisServer(state / "redis", password=password, harden=True).start()
    monkeypatch.setenv("CONTINUITY_REDIS_URL", server.url)
    monkeypatch.setenv("CONTINUITY_REDIS_PASSWORD", password)  # what a relaunch without the config file would use
    ctx = FaultContext(connect(server.url), load_blueprint(ROOT / "ops" / "blueprint.yml"), state)
    relaunched = None
    try:
        ctx.client.set("kept", "1")
        prepared = redis_restart(ctx, TargetPlan("broker", (), ()), {})
        prepared.inject()
        executors(ctx)["redis-start"](prepared.rollbacks[0])
        after = connect(server.url)
        relaunched = int(after.info("server")["process_id"])
        assert relaunched != prepared.detail["pid"] and after.get("kept") == "1"
        with pytest.raises(redis.ResponseError, match="(?i)permission|no permissions"):
            after.config_set("dir", str(tmp_path))
        assert not [a for a in argvs() if password.encode() in a]
        assert password not in ctx.spawned_ledger.read_text(encoding="utf-8")
        after.close()
    finally:
        if relaunched is not None:
            os.kill(relaunched, signal.SIGTERM)
            os.waitpid(relaunched, 0)
        server.stop()
