"""Bandwidth limits and pass deadlines at the backend interface, on a simulated clock (no test sleeps)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from continuity.backup.config import load_backup_config
from continuity.backup.storage.local import LocalBackend
from continuity.backup.throttle import Clock, Limits, PassClosing, ThrottledBackend, TokenBucket, throttled
from continuity.errors import ConfigError

KIB, MIB = 1024, 1024 * 1024


class Sim:
    def __init__(self) -> None:
        self.t = 1000.0
        self.slept: list[float] = []

    def sleep(self, d: float) -> None:
        self.slept.append(d)
        self.t += d

    def clock(self) -> Clock:
        return Clock(lambda: self.t, self.sleep)


def test_bucket_holds_the_long_run_rate_for_any_object_sizes() -> None:
    sim = Sim()
    b = TokenBucket(MIB, clock=sim.clock())
    for n in [10 * MIB, 1, 300 * KIB, 4 * MIB, 7, 2 * MIB]:
        b.take(n)
    total = 10 * MIB + 1 + 300 * KIB + 4 * MIB + 7 + 2 * MIB
    assert sim.t - 1000.0 == pytest.approx(total / MIB, rel=1e-9)  # no credit at the start, no more than rate
    sim.t += 60  # an idle minute refills at most one second (the burst)
    waited = b.take(2 * MIB)
    assert waited == pytest.approx(1.0)


def test_throttled_backend_paces_writes_and_reads_separately(tmp_path: Path) -> None:
    sim = Sim()
    be = ThrottledBackend(LocalBackend(str(tmp_path)), Limits.from_kib(upload=512, download=2048), clock=sim.clock())
    be.write("data/aa/obj", b"x" * MIB)
    assert sim.t - 1000.0 == pytest.approx(2.0)  # 1 MiB at 512 KiB/s
    for _ in range(5):
        assert be.read("data/aa/obj") == b"x" * MIB
    # 5 MiB at 2 MiB/s, less the one second of credit the idle download side had saved up meanwhile
    assert sim.t - 1000.0 == pytest.approx(2.0 + 1.5)
    assert be.read_range("data/aa/obj", 0, 1024) == b"x" * 1024
    assert (be.bytes_written, be.bytes_read) == (MIB, 5 * MIB + 1024)


def test_a_write_that_would_not_arrive_before_the_deadline_is_never_started(tmp_path: Path) -> None:
    sim = Sim()
    inner = LocalBackend(str(tmp_path))
    be = ThrottledBackend(inner, Limits(upload=MIB), clock=sim.clock(), deadline=1000.0 + 5.5)
    be.write("data/aa/one", b"1" * (4 * MIB))  # done at +4 s
    with pytest.raises(PassClosing, match="data/aa/two"):
        be.write("data/aa/two", b"2" * (2 * MIB))  # would end at +6 s
    assert not inner.exists("data/aa/two") and sim.t == pytest.approx(1004.0)  # refused before any wait
    be.write("data/aa/small", b"3" * (MIB // 2))  # +4.5 s: still fits


def test_no_limits_means_no_wrapper_and_limits_combine_to_the_tighter(tmp_path: Path) -> None:
    inner = LocalBackend(str(tmp_path))
    assert throttled(inner, Limits()) is inner
    assert throttled(inner, Limits.from_kib(0, 0)) is inner  # restic: 0 is unlimited
    assert isinstance(throttled(inner, Limits(), deadline=5.0), ThrottledBackend)
    a = Limits.from_kib(upload=100)
    assert a.tighter(Limits.from_kib(upload=50, download=10)) == Limits(50 * KIB, 10 * KIB)


def _cfg(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "continuity.yml"
    f.write_text(textwrap.dedent(body))
    return f


def test_config_limits_per_link_set_and_target(tmp_path: Path) -> None:
    f = _cfg(tmp_path, """\
        version: 1
        links:
          sat-1: {limit_upload: 1024, pass_margin: 15s}
        sets:
          telemetry:
            node: sat-1
            sources: [{kind: directory, path: /data}]
            repository: /var/lib/sat-repo
            key: {password_env: PW}
            limit_upload: 4096
            replicate_to:
              - {repository: "s3://ground/telemetry", limit_upload: 512}
              - {repository: "s3://ground/mirror"}
          remote:
            node: sat-1
            sources: [{kind: directory, path: /data}]
            repository: "s3://ground/direct"
            key: {password_env: PW}
        """)
    cfg = load_backup_config(f, blueprint_nodes={"sat-1": "satellite"})
    s = cfg.sets["telemetry"]
    assert cfg.link("sat-1").pass_margin == 15.0
    assert cfg.set_limits(s) == Limits(4096 * KIB, None)  # the local repository: not over the radio
    assert cfg.set_limits(s, s.replicate_to[0]) == Limits(512 * KIB, None)  # the target asks for less
    assert cfg.set_limits(s, s.replicate_to[1]) == Limits(1024 * KIB, None)  # the link caps the set
    assert cfg.set_limits(cfg.sets["remote"]) == Limits(1024 * KIB, None)  # a URL crosses the link


def test_config_refuses_a_link_for_an_unknown_node_and_a_bad_limit(tmp_path: Path) -> None:
    base = """\
        version: 1
        links:
          {node}: {{limit_upload: {limit}}}
        sets:
          t:
            node: sat-1
            sources: [{{kind: directory, path: /data}}]
            repository: /r
            key: {{password_env: PW}}
        """
    with pytest.raises(ConfigError) as exc:
        load_backup_config(_cfg(tmp_path, base.format(node="sat-9", limit=10)), blueprint_nodes={"sat-1": None})
    assert exc.value.line == 3 and "unknown node 'sat-9'" in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        load_backup_config(_cfg(tmp_path, base.format(node="sat-1", limit=0)), blueprint_nodes={"sat-1": None})
    assert exc.value.line == 3 and "links.sat-1.limit_upload" in str(exc.value)


def test_cli_limits_wrap_the_repository_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from continuity.backup.repository import Repository
    from continuity.cli.backup.common import open_repo

    Repository.init(LocalBackend(str(tmp_path / "r")), b"pw", kdf={"n": 2**10, "r": 8, "p": 1})
    monkeypatch.setenv("CONTINUITY_PASSWORD", "pw")
    plain = open_repo(str(tmp_path / "r"), None)
    assert isinstance(plain.backend, LocalBackend)
    limited = open_repo(str(tmp_path / "r"), None, 100, 200)
    assert isinstance(limited.backend, ThrottledBackend)
    assert (limited.backend.up.rate, limited.backend.down.rate) == (100 * KIB, 200 * KIB)
    assert limited.backend.bytes_read > 0  # opening already went through it (config and key files)
