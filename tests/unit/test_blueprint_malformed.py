"""Every blueprint mistake an operator can make ends in one line naming file, line and key path, exit 2.

Each case runs the real `continuity blueprint check` in a child process, so a
traceback anywhere (loader, validation, CLI) fails the test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import run_cli

# a valid blueprint; the line numbers below are the ones the cases expect
BASE = """\
version: 1
fleet: t
policy:
  standby_required_tiers: [0, 1]
nodes:
  a:
    kind: core
  b:
    kind: core
  sat:
    kind: satellite
    contact:
      - {start: "22:00", end: "02:00"}
domains:
  pay:
    rto: 10s
    rpo: 5s
    services:
      s0:
        tier: 0
        depends_on: [s1]
        placement:
          primary: a
          standbys: [b]
        hooks:
          start: ["{python}", "-m", "svc", "--port", "{port}"]
      s1:
        tier: 0
        placement: {primary: b, standbys: [a]}
  ops:
    rto: 1m
    rpo: 1m
    services:
      s2:
        tier: 2
        depends_on: [s0]
        placement: {primary: a}
      s3:
        tier: 3
        placement: {primary: sat}
"""


def mutate(*edits: tuple[str, str]) -> str:
    text = BASE
    for old, new in edits:
        assert text.count(old) == 1, f"edit target {old!r} must occur exactly once"
        text = text.replace(old, new)
    return text


@dataclass
class Case:
    name: str
    text: str
    line: int | None
    key_path: str
    message: str


CASES = [
    Case("unknown top-level key", mutate(("fleet: t\n", "fleet: t\nfleat: u\n")),
         3, "fleat", "unknown key 'fleat'"),
    Case("unknown key in a node", mutate(("  b:\n    kind: core\n", "  b:\n    kind: core\n    colour: red\n")),
         10, "nodes.b.colour", "unknown key 'colour'"),
    Case("unknown key in a service", mutate(("        tier: 2\n", "        tier: 2\n        teir: 1\n")),
         36, "domains.ops.services.s2.teir", "unknown key 'teir'"),
    Case("unknown node as primary", mutate(("primary: a\n          standbys", "primary: zz\n          standbys")),
         23, "domains.pay.services.s0.placement.primary", "unknown node 'zz' (declared nodes: a, b, sat)"),
    Case("unknown node as standby", mutate(("standbys: [b]", "standbys: [b, core-z]")),
         24, "domains.pay.services.s0.placement.standbys[1]", "unknown node 'core-z'"),
    Case("unknown service in depends_on", mutate(("depends_on: [s0]", "depends_on: [s0, ghost]")),
         36, "domains.ops.services.s2.depends_on[1]", "unknown service 'ghost'"),
    Case("three-service dependency cycle",
         mutate(("      s1:\n        tier: 0\n", "      s1:\n        tier: 0\n        depends_on: [s5]\n"),
                ("  ops:\n", "      s5:\n        tier: 0\n        depends_on: [s0]\n"
                             "        placement: {primary: b, standbys: [a]}\n  ops:\n")),
         21, "domains.pay.services.s0.depends_on", "dependency cycle: s0 -> s1 -> s5 -> s0"),
    Case("self dependency", mutate(("depends_on: [s0]", "depends_on: [s2]")),
         36, "domains.ops.services.s2.depends_on[0]", "cannot depend on itself"),
    Case("unparsable duration", mutate(("rto: 1m", "rto: one minute")),
         31, "domains.ops.rto", "not a duration: 'one minute'"),
    Case("unparsable service duration", mutate(("        tier: 3\n", "        tier: 3\n        rpo: 5 parsecs\n")),
         40, "domains.ops.services.s3.rpo", "not a duration"),
    Case("tier-0 depending on tier-2",
         mutate(("        placement: {primary: b, standbys: [a]}\n",
                 "        depends_on: [s3]\n        placement: {primary: b, standbys: [a]}\n"),
                ("        tier: 3\n", "        tier: 2\n")),
         29, "domains.pay.services.s1.depends_on[0]", "tier-0 service 's1' depends on 's3' of tier 2"),
    Case("tier-0 without standby", mutate(("placement: {primary: b, standbys: [a]}", "placement: {primary: b}")),
         29, "domains.pay.services.s1.placement", "tier-0 services need at least one standby"),
    Case("tier-1 without standby", mutate(("        tier: 2\n", "        tier: 1\n")),
         37, "domains.ops.services.s2.placement", "tier-1 services need at least one standby"),
    Case("YAML syntax error (unclosed bracket)", mutate(("standbys: [b]", "standbys: [b")),
         25, "", "YAML syntax error: expected ',' or ']', but got ':' (while parsing a flow sequence on line 24)"),
    Case("YAML syntax error (bad indentation)", mutate(("    rpo: 5s\n", "      rpo: 5s\n")),
         17, "", "YAML syntax error: mapping values are not allowed here"),
    Case("duplicate key", mutate(("        tier: 2\n", "        tier: 2\n        tier: 3\n")),
         36, "domains.ops.services.s2.tier", "duplicate key 'tier'"),
    Case("hook as a shell string",
         mutate(('start: ["{python}", "-m", "svc", "--port", "{port}"]', 'start: "{python} -m svc --port {port}"')),
         26, "domains.pay.services.s0.hooks.start", "hooks are argv lists, never shell strings"),
    Case("unknown placeholder in a hook",
         mutate(('"--port", "{port}"]', '"--port", "{prot}"]')),
         26, "domains.pay.services.s0.hooks.start[4]", "unknown placeholder {prot}"),
    Case("port_offset that is not an integer",
         mutate(("  b:\n    kind: core\n", '  b:\n    kind: core\n    labels: {port_offset: "1OO"}\n')),
         10, "nodes.b.labels.port_offset", "port_offset must be an integer"),
    Case("wrong type for tier", mutate(("        tier: 2\n", "        tier: high\n")),
         35, "domains.ops.services.s2.tier", "expected an integer, got 'high'"),
    Case("tier given as a string", mutate(("        tier: 2\n", '        tier: "2"\n')),
         35, "domains.ops.services.s2.tier", "expected an integer, got '2'"),
    Case("tier out of range", mutate(("        tier: 3\n", "        tier: 4\n")),
         39, "domains.ops.services.s3.tier", "must be at most 3, got 4"),
    Case("missing required key", mutate(("        placement: {primary: sat}\n", "")),
         38, "domains.ops.services.s3.placement", "required key 'placement' is missing"),
    Case("missing top-level key", mutate(("fleet: t\n", "")),
         1, "fleet", "required key 'fleet' is missing"),
    Case("unknown node kind", mutate(("  b:\n    kind: core\n", "  b:\n    kind: mainframe\n")),
         9, "nodes.b.kind", "must be one of 'core', 'satellite' or 'edge', got 'mainframe'"),
    Case("node given as a string", mutate(("  b:\n    kind: core\n", "  b: core\n")),
         8, "nodes.b", "expected a mapping, got 'core'"),
    Case("unquoted contact time", mutate(('{start: "22:00", end', "{start: 22:00, end")),
         13, "nodes.sat.contact[0].start", 'write times of day in quotes, e.g. "22:00"'),
    Case("impossible contact time", mutate(('end: "02:00"', 'end: "26:00"')),
         13, "nodes.sat.contact[0].end", "not a time of day: '26:00'"),
    Case("contact window on a core node",
         mutate(("  a:\n    kind: core\n",
                 '  a:\n    kind: core\n    contact:\n      - {start: "01:00", end: "02:00"}\n')),
         6, "nodes.a", "contact windows are for satellite/edge nodes"),
    Case("invalid node id", mutate(("  b:\n    kind: core\n", "  Core_B:\n    kind: core\n")),
         8, "nodes.Core_B", "invalid id 'Core_B'"),
    Case("service declared in two domains",
         mutate(("      s3:\n        tier: 3\n", "      s1:\n        tier: 3\n"),
                ("placement: {primary: sat}", "placement: {primary: sat, standbys: [a]}")),
         38, "domains.ops.services.s1", "service 's1' is already declared in domain 'pay'"),
    Case("unsupported version", mutate(("version: 1\n", "version: 2\n")),
         1, "version", "must be one of 1, got 2"),
    Case("a list instead of a mapping", "- a\n- b\n", 1, "(top level)", "a blueprint is a mapping"),
    Case("empty file", "", 1, "", "the file is empty"),
    Case("only comments", "# todo: write the blueprint\n", 1, "", "the file is empty"),
]


def _check(path: Path) -> tuple[int, str, str]:
    res = run_cli("blueprint", "check", "--file", str(path))
    return res.returncode, res.stdout, res.stderr


def test_base_blueprint_is_valid(tmp_path: Path) -> None:
    """Guards the cases: each must fail because of its own edit, not because BASE is broken."""
    path = tmp_path / "blueprint.yml"
    path.write_text(BASE)
    rc, out, err = _check(path)
    assert rc == 0, err
    assert "ok" in out and "minimal continuity set: s0, s1" in out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_blueprint_exits_2_naming_file_line_and_key(case: Case, tmp_path: Path) -> None:
    path = tmp_path / "blueprint.yml"
    path.write_text(case.text)
    rc, out, err = _check(path)
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    where = f"{path}:{case.line}:" if case.line else f"{path}:"
    prefix = f"continuity: {where} {case.key_path}: " if case.key_path else f"continuity: {where} "
    assert lines[0].startswith(prefix), f"{lines[0]!r} does not start with {prefix!r}"
    assert case.message in lines[0]


def test_file_not_found(tmp_path: Path) -> None:
    rc, out, err = _check(tmp_path / "nope.yml")
    assert rc == 2
    assert err.strip() == f"continuity: {tmp_path / 'nope.yml'}: file not found"


def test_directory_given(tmp_path: Path) -> None:
    rc, out, err = _check(tmp_path)
    assert rc == 2
    assert err.strip() == f"continuity: {tmp_path}: is a directory, expected a YAML file"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "blueprint.yml"
    path.write_bytes(b"fleet: \xff\xfe\n")
    rc, out, err = _check(path)
    assert rc == 2 and "Traceback" not in err
    assert err.startswith(f"continuity: {path}: not UTF-8 text")


def test_json_error_report(tmp_path: Path) -> None:
    """Scripts get the same facts as fields, and the exit code still says it failed."""
    path = tmp_path / "blueprint.yml"
    path.write_text(mutate(("standbys: [b]", "standbys: [b, core-z]")))
    res = run_cli("blueprint", "check", "--file", str(path), "--json")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["ok"] is False
    assert doc["line"] == 24
    assert doc["key_path"] == "domains.pay.services.s0.placement.standbys[1]"
    assert "unknown node 'core-z'" in doc["message"]


def test_blueprint_from_environment(tmp_path: Path) -> None:
    """Without --file the command checks $CONTINUITY_BLUEPRINT, the same file every other command loads."""
    import os

    path = tmp_path / "blueprint.yml"
    path.write_text(mutate(("rto: 1m", "rto: soon")))
    res = run_cli("blueprint", "check", env={**os.environ, "CONTINUITY_BLUEPRINT": str(path)})
    assert res.returncode == 2
    assert res.stderr.startswith(f"continuity: {path}:31: domains.ops.rto: not a duration")


@pytest.mark.parametrize("argv", [["blueprint", "check", "--bogus"], ["blueprint"], ["pulse", "tail", "-n", "-1"],
                                  ["pulse", "verify", "extra-arg"]])
def test_command_line_mistakes_exit_2_without_traceback(argv: list[str]) -> None:
    res = run_cli(*argv)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stdout + res.stderr
