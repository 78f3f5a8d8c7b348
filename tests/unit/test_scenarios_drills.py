"""Scenario files: the shipped one loads; malformed ones exit 2 naming file:line and key path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from continuity.blueprint import load_blueprint
from continuity.drills.scenarios import load_scenarios, parse_selection
from continuity.drills.targets import resolve
from continuity.errors import ConfigError
from tests.helpers import ROOT, run_cli

BP = load_blueprint(ROOT / "ops" / "blueprint.yml")

GOOD = """\
version: 1
scenarios:
  outage:
    title: kill the ledger primary
    target: {kind: node, service: ledger, role: primary}
    fault: {type: node-kill}
    duration: 5s
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "scenarios.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_shipped_scenarios_load_and_cover_the_required_faults() -> None:
    sc = load_scenarios(ROOT / "ops" / "drills" / "continuity_scenarios.yaml", BP)
    faults = {sc.get(n).fault.type for n in sc.names()}
    assert {"node-kill", "service-crash", "node-stop", "link-latency", "file-corruption", "backup-corruption",
            "redis-restart", "satellite-blackout", "node-loss"} <= faults


def test_good_file_resolves_live_primary() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        sc = load_scenarios(write(Path(d), GOOD), BP)
    target = sc.get("outage").target
    assert resolve(target, BP).nodes == ("core-a",)
    assert resolve(target, BP, {"ledger": "core-b"}).nodes == ("core-b",)


BAD = [
    ("unknown fault", GOOD.replace("type: node-kill", "type: meteor-strike"), 6, "fault.type"),
    ("bad duration", GOOD.replace("duration: 5s", "duration: fivish"), 7, "duration"),
    ("unknown service", GOOD.replace("service: ledger", "service: ledgr"), 5, "target.service"),
    ("target matches nothing", GOOD.replace("{kind: node, service: ledger, role: primary}",
                                            "{kind: node, node_kind: edge}"), 5, "target"),
    ("empty tier", GOOD.replace("{kind: node, service: ledger, role: primary}", "{kind: tier, tier: 3,"
                                " selection: all, blast_radius: {max_nodes: 0}}"), 5, "target"),
    ("bad selection", GOOD.replace("role: primary}", "role: primary, selection: some(2)}"), 5, "target.selection"),
    ("unknown key", GOOD.replace("    duration: 5s", "    duraton: 5s"), 7, "duraton"),
    ("blast radius exceeded", GOOD.replace("{kind: node, service: ledger, role: primary}",
                                           "{kind: node, selection: all}"), 5, "target"),
    ("unknown node", GOOD.replace("{kind: node, service: ledger, role: primary}",
                                  "{kind: node, nodes: [core-z]}"), 5, "target.nodes[0]"),
    ("probe without service", GOOD + "    steady_state:\n      - {name: h, probe: http-health}\n", 9,
     "steady_state[0]"),
]


@pytest.mark.parametrize("label,text,line,key", BAD, ids=[b[0] for b in BAD])
def test_malformed_scenarios_name_file_line_and_key(tmp_path: Path, label: str, text: str, line: int,
                                                   key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_scenarios(path, BP)
    assert err.value.line == line, str(err.value)
    assert key in err.value.key_path, str(err.value)


def test_tier_target_with_no_services_says_it_matches_nothing(tmp_path: Path) -> None:
    bp_text = (ROOT / "ops" / "blueprint.yml").read_text()
    assert "tier: 3" in bp_text
    path = write(tmp_path, GOOD.replace("{kind: node, service: ledger, role: primary}",
                                        "{kind: node, node_kind: edge}"))
    with pytest.raises(ConfigError, match="matches nothing"):
        load_scenarios(path, BP)


@pytest.mark.parametrize("label,text,line,key", BAD[:4], ids=[b[0] for b in BAD[:4]])
def test_cli_exits_2_with_file_line(tmp_path: Path, label: str, text: str, line: int, key: str) -> None:
    path = write(tmp_path, text)
    env = {"CONTINUITY_SCENARIOS": str(path), "CONTINUITY_ROOT": str(ROOT), "PATH": "/usr/bin:/bin"}
    res = run_cli("drill", "list", env=env)
    assert res.returncode == 2, res.stderr
    assert f"{path}:{line}:" in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_selection_syntax() -> None:
    assert parse_selection("all") == ("all", 0)
    assert parse_selection("count(2)") == ("count", 2)
    assert parse_selection("percent(50)") == ("percent", 50)
    for bad in ("count(0)", "percent(101)", "half", "count(x)"):
        with pytest.raises(ValueError):
            parse_selection(bad)
