"""One CONTINUITY_REDIS_URL serves redis-py and Celery alike, including Sentinel and TLS."""

from __future__ import annotations

from continuity.redisd import celery_urls


def test_plain_url_unchanged() -> None:
    assert celery_urls("redis://:pw@10.0.0.5:6380/2") == ("redis://:pw@10.0.0.5:6380/2", {})


def test_sentinel_becomes_kombu_list_with_master_name() -> None:
    broker, opts = celery_urls("sentinel://s1:26379,s2:26380/fleet")
    assert broker == "sentinel://s1:26379;sentinel://s2:26380"
    assert opts == {"master_name": "fleet"}


def test_tls_verifies_certificates_by_default() -> None:
    assert celery_urls("rediss://h:6379/0")[0] == "rediss://h:6379/0?ssl_cert_reqs=required"
    assert celery_urls("rediss://h:6379/0?ssl_cert_reqs=optional")[0].endswith("ssl_cert_reqs=optional")
