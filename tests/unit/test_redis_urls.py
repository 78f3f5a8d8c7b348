"""One CONTINUITY_REDIS_URL serves redis-py and Celery alike, including Sentinel and TLS."""

from __future__ import annotations

import pytest

from continuity.errors import ContinuityError
from continuity.redisd import SentinelURL, celery_urls, parse_sentinel, redbeat_config
from tests.helpers import ROOT


def test_plain_url_unchanged() -> None:
    assert celery_urls("redis://:pw@10.0.0.5:6380/2") == ("redis://:pw@10.0.0.5:6380/2", {})


def test_sentinel_becomes_kombu_list_with_master_name() -> None:
    broker, opts = celery_urls("sentinel://s1:26379,s2:26380/fleet")
    assert broker == "sentinel://s1:26379;sentinel://s2:26380"
    assert opts == {"master_name": "fleet"}


def test_tls_verifies_certificates_by_default() -> None:
    assert celery_urls("rediss://h:6379/0")[0] == "rediss://h:6379/0?ssl_cert_reqs=required"
    assert celery_urls("rediss://h:6379/0?ssl_cert_reqs=optional")[0].endswith("ssl_cert_reqs=optional")


def test_celery_app_finds_the_fleet_like_every_command(tmp_path) -> None:
    """A second terminal next to `continuity up` has no $CONTINUITY_REDIS_URL: the Celery app (what `failover
    switchover` sends tasks through) must use the URL `up` wrote, as `connect()` does, not a dead default."""
    import os
    import subprocess
    import sys

    state = tmp_path / "state"
    state.mkdir()
    (state / "redis.url").write_text("redis://127.0.0.1:6399/0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUITY_")}
    env["CONTINUITY_STATE"] = str(state)
    probe = "import workers.app as a; from continuity.redisd import fleet_url; print(a.broker_url(), fleet_url())"
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["redis://127.0.0.1:6399/0", "redis://127.0.0.1:6399/0"]


def test_sentinel_url_parsed_with_defaults_password_and_db() -> None:
    assert parse_sentinel("redis://h:1/0") is None
    assert parse_sentinel("sentinel://s1:26380,s2/fleet") == SentinelURL((("s1", 26380), ("s2", 26379)), "fleet")
    assert parse_sentinel("sentinel://:pw@s1:1/m?db=3") == SentinelURL((("s1", 1),), "m", 3, "pw")
    assert parse_sentinel("sentinel://s1:1").master == "mymaster"


@pytest.mark.parametrize("bad", ["sentinel:///m", "sentinel://s1:port/m", "sentinel://s1:1/m?db=x"])
def test_malformed_sentinel_url_is_one_clear_error(bad: str) -> None:
    with pytest.raises(ContinuityError, match="sentinel URL"):
        parse_sentinel(bad)


def test_redbeat_gets_its_own_sentinel_form() -> None:
    """RedBeat given ``sentinel://a:1,b:2/m`` as is died at start ("Port could not be cast to integer"): it wants
    ``redis-sentinel://`` plus the sentinels and the master name in its options."""
    conf = redbeat_config("sentinel://:pw@a:1,b:2/m?db=2")
    assert conf["redbeat_redis_url"].startswith("redis-sentinel://")
    opts = conf["redbeat_redis_options"]
    assert opts["sentinels"] == [["a", 1], ["b", 2]] and opts["service_name"] == "m"
    assert opts["db"] == 2 and opts["password"] == "pw"
    assert redbeat_config("redis://h:1/0") == {"redbeat_redis_url": "redis://h:1/0"}


def test_sentinel_password_and_db_reach_kombu() -> None:
    assert celery_urls("sentinel://:pw@a:1,b:2/m?db=2") == ("sentinel://:pw@a:1/2;sentinel://:pw@b:2/2",
                                                             {"master_name": "m"})
