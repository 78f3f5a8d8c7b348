"""The bed's pure parts: the subnet choice, the hosts' blueprint, the guard's verdicts and its event parsing."""

from __future__ import annotations

import ipaddress
import json
import random
from pathlib import Path

import yaml

from continuity.blueprint import load_blueprint
from continuity.netbed import guard, net
from continuity.netbed.bed import host_blueprint
from continuity.services.hooks import base_url, placeholder_values, render
from tests.helpers import ROOT

N = ipaddress.IPv4Network


def test_the_subnet_overlaps_nothing_the_machine_routes_nor_another_beds() -> None:
    used = [N("10.213.0.0/17"), N("192.0.2.0/24"), N("10.213.200.7/32")]
    taken = [f"10.213.{x}.0/24" for x in range(128, 200)]
    picks = {net.pick_subnet(used, taken, random.Random(seed)) for seed in range(300)}
    allowed = {N(f"10.213.{x}.0/24") for x in [*range(201, 256)]}
    assert picks <= allowed and len(picks) > 10  # random among the free ones, never a used or taken one


def test_no_subnet_when_the_range_is_routed() -> None:
    assert net.pick_subnet([N("10.0.0.0/8")], []) is None
    assert net.pick_subnet([], [str(s) for s in net.SUPERNET.subnets(new_prefix=24)]) is None


def test_names_fit_the_kernels_limits() -> None:
    assert len(net.bridge_name("abcdef")) <= 15 and len(net.veth_name("abcdef", 249)) <= 15
    assert net.netns_name("abcdef", "core a/../x") == "ctb-abcdef-core_a_.._x"


def test_on_the_bed_each_node_is_at_its_address_on_the_declared_port(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    addresses = {"core-a": "10.213.9.2", "core-b": "10.213.9.3", "core-c": "10.213.9.5", "sat-1": "10.213.9.4"}
    out = host_blueprint(doc, addresses)
    assert doc["nodes"]["core-b"]["labels"]["port_offset"] == "100"  # the input is left alone
    (tmp_path / "bp.yml").write_text(yaml.safe_dump(out))
    bp = load_blueprint(tmp_path / "bp.yml")
    assert base_url(bp, "ledger", "core-b") == "http://10.213.9.3:27100"
    assert base_url(bp, "ledger", "core-a") == "http://10.213.9.2:27100"


def test_the_start_hook_binds_the_service_to_its_nodes_address(tmp_path: Path) -> None:
    doc = host_blueprint(yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text()),
                         {"core-a": "10.213.9.2", "core-b": "10.213.9.3", "core-c": "10.213.9.5",
                          "sat-1": "10.213.9.4"})
    (tmp_path / "bp.yml").write_text(yaml.safe_dump(doc))
    bp = load_blueprint(tmp_path / "bp.yml")
    argv = render(bp.services["ledger"].spec.hooks.start or [], placeholder_values(bp, "ledger", "core-b", 1))
    assert argv[argv.index("--host") + 1] == "10.213.9.3" and argv[argv.index("--port") + 1] == "27100"
    shipped = yaml.safe_load((ROOT / "ops" / "blueprint.yml").read_text())
    for dom in shipped["domains"].values():
        for sid, svc in dom["services"].items():
            if "probe" in svc and svc["probe"]["kind"] == "http":
                assert "{address}" in svc["probe"]["url"], sid
                assert "{address}" in svc["hooks"]["start"], sid


ROOTS = "/bed/roots"
DIRS = {"core-a": "core-a", "core-b": "core-b"}


def test_a_path_belongs_to_the_node_whose_root_holds_it() -> None:
    assert guard.owner_of("/bed/roots/core-a/nodes/core-a/ledger/x", ROOTS, DIRS) == "core-a"
    assert guard.owner_of("/bed/roots/core-b", ROOTS, DIRS) == "core-b"
    assert guard.owner_of("/bed/roots/core-b/gone (deleted)", ROOTS, DIRS) == "core-b"
    assert guard.owner_of("/bed/roots", ROOTS, DIRS) == guard.ALL_ROOTS  # listing every node's root
    assert guard.owner_of("/bed/roots/.lost/core-a-1/x", ROOTS, DIRS) == guard.LOST
    assert guard.owner_of("/bed/roots/core-ab/x", ROOTS, DIRS) == guard.ALL_ROOTS  # no prefix confusion


def test_only_the_owner_and_the_bed_may_open() -> None:
    nodes = {(1, 10): "core-a", (1, 11): "core-b"}
    bed = (1, 1)
    assert guard.reader_of((1, 10), nodes, bed) == "core-a"
    assert guard.reader_of((1, 1), nodes, bed) == guard.BED
    assert guard.reader_of((1, 99), nodes, bed) == "(unknown namespace)"
    assert guard.reader_of(None, nodes, bed) == "(unknown process)"
    assert guard.allowed("core-a", "core-a") and guard.allowed(guard.BED, "core-b")
    assert not guard.allowed("core-b", "core-a")
    assert not guard.allowed("core-a", guard.ALL_ROOTS) and not guard.allowed("core-a", guard.LOST)
    assert not guard.allowed("(unknown namespace)", "core-a")


def test_events_are_read_from_the_kernels_layout() -> None:
    one = guard.METADATA.pack(guard.METADATA.size, guard.METADATA_VERSION, 0, guard.METADATA.size,
                              guard.FAN_OPEN_PERM, 7, 4242)
    two = guard.METADATA.pack(guard.METADATA.size, guard.METADATA_VERSION, 0, guard.METADATA.size,
                              guard.FAN_OPEN_PERM, 8, 4343)
    assert list(guard.events(one + two)) == [(7, 4242), (8, 4343)]
    bad = guard.METADATA.pack(guard.METADATA.size, 2, 0, guard.METADATA.size, 0, 7, 1)
    try:
        list(guard.events(bad))
    except RuntimeError as exc:
        assert "version 2" in str(exc)
    else:
        raise AssertionError("an unknown metadata version was parsed")


def test_violations_file_round_trip_skips_torn_lines() -> None:
    v = guard.Violation("core-b", "core-a", "/bed/roots/core-a/x", 12, "cat x", 1.5)
    assert guard.parse_violations(json.dumps(v.__dict__) + "\n" + '{"reader": "core-b"\n') == [v]
    assert guard.parse_violations("") == []
    assert v.line() == "core-b opened core-a's /bed/roots/core-a/x (pid 12: cat x)"


def test_the_bed_says_why_it_cannot_run(monkeypatch) -> None:
    monkeypatch.setattr(net.os, "geteuid", lambda: 1000)
    assert "needs root" in (net.unavailable() or "")
    monkeypatch.setattr(net.os, "geteuid", lambda: 0)
    monkeypatch.setattr(net.shutil, "which", lambda name: None)
    assert "iproute2" in (net.unavailable() or "")
