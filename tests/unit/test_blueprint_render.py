"""`continuity blueprint render`: the generated section is right, rewritten in place only, and checkable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from continuity.blueprint import Blueprint, parse_blueprint
from continuity.blueprint_render import (
    BEGIN_MARKER,
    END_MARKER,
    declared,
    mermaid_ids,
    render_section,
    replace_section,
)
from continuity.config import parse_text
from continuity.errors import ConfigError
from tests.helpers import ROOT, run_cli

FLEET = """\
version: 1
fleet: render-test
nodes:
  a: {}
  b: {}
  sat-2:
    kind: satellite
    contact: [{start: "21:00", end: "03:00", days: [mon, tue]}]
domains:
  money:
    rto: 10s
    rpo: 500ms
    services:
      vault-x: {tier: 0, placement: {primary: b, standbys: [a]}}
      ledger: {tier: 0, depends_on: [vault-x], placement: {primary: a, standbys: [b]}}
  back-office:
    rto: 1h30m
    rpo: 2d
    services:
      notify: {tier: 1, depends_on: [ledger], placement: {primary: b, standbys: [a]}}
      stats: {tier: 3, rto: 90s, placement: {primary: sat-2}}
"""

DOC = f"""# Title

Hand-written intro with a | pipe and trailing spaces.{"   "}

{BEGIN_MARKER}
stale generated text
{END_MARKER}

## After

More prose.
"""


def bp_from(text: str) -> Blueprint:
    return parse_blueprint(parse_text(text, "fleet.yml"))


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (0.5, "500ms"), (10, "10s"), (90, "1m30s"), (300, "5m"), (5400, "1h30m"),
    (172800, "2d"), (1.5, "1.5s"), (3661, "1h1m1s"),
])
def test_objectives_are_written_the_way_they_are_declared(seconds: float, text: str) -> None:
    assert declared(seconds) == text


def test_section_has_tables_graph_continuity_set_and_degradation_order() -> None:
    out = render_section(bp_from(FLEET), "ops/fleet.yml")
    assert "from ops/fleet.yml" in out
    assert "Fleet **render-test**: 3 nodes (2 core, 1 satellite), 4 services in 2 domains." in out
    assert "| tier | meaning | recovery strategy | services |" in out
    assert "| 0 | safety-critical |" in out and "`ledger`, `vault-x` |" in out
    assert "| domain | service | tier | RTO | RPO | primary | standbys | depends on |" in out
    assert "| `money` | `ledger` | 0 | 10s | 500ms | `a` | `b` | `vault-x` |" in out
    assert "| `back-office` | `stats` | 3 | 1m30s | 2d | `sat-2` | — | — |" in out
    assert "| `sat-2` | satellite | `node.sat-2` | 21:00–03:00 (mon,tue) UTC | `stats` |" in out
    assert "```mermaid\ngraph TD\n" in out
    assert "  svc_ledger --> svc_vault_x\n" in out
    assert "  svc_notify --> svc_ledger\n" in out
    assert 'subgraph dom_back_office["back-office"]' in out
    assert "  class svc_ledger,svc_vault_x mcs\n" in out
    assert "### Minimal continuity set\n" in out and "\n`ledger`, `vault-x`\n" in out
    assert "1. tier 3: `stats`\n2. tier 1: `notify`\n" in out


def test_render_is_deterministic() -> None:
    assert render_section(bp_from(FLEET)) == render_section(bp_from(FLEET))


def test_mermaid_ids_never_collide() -> None:
    text = FLEET.replace("      stats: {tier: 3,", "      vault_x: {tier: 3, placement: {primary: a}}\n"
                                                  "      stats: {tier: 3,")
    ids = mermaid_ids(bp_from(text))
    assert len(set(ids.values())) == len(ids)
    assert all("-" not in v for v in ids.values())


def test_replace_touches_only_the_marked_section() -> None:
    out = replace_section(DOC, "NEW\nSECTION\n")
    before, after = DOC.split(BEGIN_MARKER)[0], DOC.split(END_MARKER)[1]
    assert out.startswith(before + BEGIN_MARKER + "\n")
    assert out.endswith(END_MARKER + after)
    assert "stale generated text" not in out
    assert "\nNEW\nSECTION\n" in out
    assert replace_section(out, "NEW\nSECTION\n") == out  # idempotent


def test_replace_keeps_crlf_documents_crlf() -> None:
    doc = DOC.replace("\n", "\r\n")
    out = replace_section(doc, "NEW\nSECTION\n")
    assert "\nNEW\r\nSECTION\r\n" in out
    assert out.replace("\r\n", "").count("\n") == 0  # every line ends in CRLF
    assert replace_section(out, "NEW\nSECTION\n") == out


@pytest.mark.parametrize(("doc", "line", "message"), [
    ("# nothing here\n", None, "marker line <!-- BEGIN blueprint:generated --> not found"),
    (f"{BEGIN_MARKER}\nx\n", None, "marker line <!-- END blueprint:generated --> not found"),
    (f"{BEGIN_MARKER}\n{END_MARKER}\n{BEGIN_MARKER}\n{END_MARKER}\n", 3, "appears 2 times (lines 1, 3)"),
    (f"a\n{END_MARKER}\n{BEGIN_MARKER}\n", 2, "comes before"),
])
def test_bad_markers_are_refused(doc: str, line: int | None, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        replace_section(doc, "x", file="arch.md")
    assert err.value.line == line
    assert message in str(err.value)


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    fleet = tmp_path / "fleet.yml"
    fleet.write_text(FLEET)
    doc = tmp_path / "arch.md"
    doc.write_text(DOC)
    env = {**os.environ, "CONTINUITY_ROOT": str(tmp_path)}
    return fleet, doc, env


def test_cli_render_writes_once_and_check_detects_staleness(project: tuple[Path, Path, dict[str, str]]) -> None:
    fleet, doc, env = project
    stale = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), "--check", env=env)
    assert stale.returncode == 1, stale.stderr
    assert "out of date" in stale.stderr
    assert doc.read_text() == DOC  # --check writes nothing

    first = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), env=env)
    assert first.returncode == 0, first.stderr
    written = doc.read_text()
    assert written.split(BEGIN_MARKER)[0] == DOC.split(BEGIN_MARKER)[0]
    assert written.split(END_MARKER)[1] == DOC.split(END_MARKER)[1]
    assert "from fleet.yml" in written  # the blueprint is named relative to the project root
    assert not list(doc.parent.glob(".arch.md.*")), "temporary file left behind"

    again = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), env=env)
    assert again.returncode == 0 and "already up to date" in again.stdout
    assert doc.read_text() == written

    ok = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), "--check", env=env)
    assert ok.returncode == 0, ok.stderr

    fleet.write_text(FLEET.replace("rto: 10s", "rto: 20s"))
    changed = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), "--check", env=env)
    assert changed.returncode == 1
    assert doc.read_text() == written


def test_cli_render_refuses_missing_markers_and_leaves_the_doc_alone(
        project: tuple[Path, Path, dict[str, str]]) -> None:
    fleet, doc, env = project
    doc.write_text("# no markers\n")
    res = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), env=env)
    assert res.returncode == 2
    assert res.stderr.strip() == (f"continuity: {doc}: marker line {BEGIN_MARKER} not found; add the BEGIN and "
                                  "END markers where the generated section belongs")
    assert doc.read_text() == "# no markers\n"


def test_cli_render_refuses_duplicate_markers(project: tuple[Path, Path, dict[str, str]]) -> None:
    fleet, doc, env = project
    text = DOC + f"\n{END_MARKER}\n"
    doc.write_text(text)
    res = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"{doc}:13:" in res.stderr and "appears 2 times" in res.stderr
    assert doc.read_text() == text


def test_cli_render_with_a_bad_blueprint_exits_2(project: tuple[Path, Path, dict[str, str]]) -> None:
    fleet, doc, env = project
    fleet.write_text(FLEET.replace("rto: 10s", "rto: 10 sec"))
    res = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc), env=env)
    assert res.returncode == 2
    assert res.stderr.startswith(f"continuity: {fleet}:11: domains.money.rto: not a duration")
    assert doc.read_text() == DOC


def test_cli_render_missing_document(project: tuple[Path, Path, dict[str, str]]) -> None:
    fleet, doc, env = project
    res = run_cli("blueprint", "render", "--file", str(fleet), "--doc", str(doc.with_name("none.md")), env=env)
    assert res.returncode == 2 and "document not found" in res.stderr


def test_shipped_architecture_doc_is_up_to_date() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("CONTINUITY_BLUEPRINT", "CONTINUITY_ROOT")}
    res = run_cli("blueprint", "render", "--check", env=env)
    assert res.returncode == 0, res.stderr + "\nrun `continuity blueprint render` and commit the result"
    text = (ROOT / "docs" / "continuity" / "architecture.md").read_text()
    for heading in ("## Components", "## Failure modes", "## Recovery strategy per tier", "## Invariants"):
        assert heading in text
