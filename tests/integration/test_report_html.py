"""`continuity report --html`: the page a person opens, checked in a real headless Chromium.

A fleet history (drills, failovers through the chain's own record writer, backup status) in a real Redis; one
``continuity report --json --html FILE`` run gives the page and the JSON of the same instant. In Chromium the
page loads with no console error (its Content-Security-Policy turns any external load into one), a screenshot
is produced, and every number on the page equals the JSON's value at the path it names. Skips with a clear
message only where Chromium is absent (``make test`` installs Debian's package first).
"""

from __future__ import annotations

import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.chromium import Chromium, find
from tests.helpers import project_env, run_cli
from tests.report_seed import mismatches, seed

COLLECT = """JSON.stringify(Array.from(document.querySelectorAll('[data-json]')).map(e => ({
  json: e.getAttribute('data-json'), kind: e.getAttribute('data-kind'), value: e.getAttribute('data-value'),
  text: e.textContent})))"""


class _Numbers(HTMLParser):
    """The same collection without a browser: elements with data-json and their text."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[dict[str, str]] = []
        self.stack: list[dict[str, str] | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        el = ({"json": a["data-json"] or "", "kind": a["data-kind"] or "", "value": a["data-value"] or "",
               "text": ""} if "data-json" in a else None)
        if el is not None:
            self.found.append(el)
        self.stack.append(el)

    def handle_endtag(self, tag: str) -> None:
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        for el in self.stack:
            if el is not None:
                el["text"] += data


@pytest.fixture
def reported(rds, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict, Path]:
    env = project_env(redis_url, tmp_path / "state")
    env.pop("CONTINUITY_BACKUP_CONFIG")  # the shipped sets: the page draws their freshness
    for name in ("CONTINUITY_STATE", "CONTINUITY_PULSE_FILE"):  # where the record writer puts pulse events
        monkeypatch.setenv(name, env[name])
    seed(rds, time.time())
    page = tmp_path / "scorecard.html"
    r = run_cli("report", "--json", "--html", str(page), env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), page


def test_every_number_on_the_page_is_the_jsons(reported: tuple[dict, Path]) -> None:
    card, page = reported
    html = page.read_text()
    parser = _Numbers()
    parser.feed(html)
    paths = {el["json"] for el in parser.found}
    # each part of the page is there: objectives, drill timeline and trends, backups, failover swimlanes
    assert {"services.ledger.rto.worst", "drills.5.mttr", "failovers.0.steps.6.duration",
            "backups.1.last_snapshot_age", "failovers.1.lease_wait", "verdict"} <= paths
    assert len(card["drills"]) == 6 and len(card["failovers"]) == 2
    assert mismatches(parser.found, card) == []
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), "the page must load nothing from elsewhere"
    assert "every candidate failed: promote hook exited 1" in html  # the escalation's reason


def test_the_page_in_chromium(reported: tuple[dict, Path], tmp_path: Path) -> None:
    if find() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; `make test` does it)")
    card, page = reported
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        errors = browser.load(page.as_uri())
        assert errors == []
        elements = json.loads(browser.evaluate(COLLECT))
        png = browser.screenshot()
        height = browser.evaluate("document.documentElement.scrollHeight")
        svgs = browser.evaluate("document.querySelectorAll('svg').length")
    finally:
        browser.close()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    (tmp_path / "scorecard.png").write_bytes(png)
    assert height > 1500 and svgs >= 8  # charts drawn: 5 objectives rows x2, timeline, trends, backups, lanes
    assert len(elements) > 100
    assert mismatches(elements, card) == []


def test_a_page_that_loads_from_elsewhere_is_caught(tmp_path: Path) -> None:
    """The console check can fail: a page pulling a script from a CDN logs a CSP error in Chromium."""
    if find() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; `make test` does it)")
    from continuity.report_html import CSP

    page = tmp_path / "bad.html"
    page.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{CSP}">'
                    '<script src="https://cdn.example.invalid/chart.js"></script></head><body>x</body></html>')
    browser = Chromium(tmp_path / "chromium-profile")
    try:
        errors = browser.load(page.as_uri())
    finally:
        browser.close()
    assert errors and any("Content Security Policy" in e or "script" in e for e in errors), errors
