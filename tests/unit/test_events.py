"""The pulse event catalogue is the one truth about event kinds: emitters, readers and the docs agree with it.

The AST scan below reads every emit call site in continuity/ and workers/ and
resolves its kind argument to catalogue constants (through imports, ``if/else``,
dict look-ups and forwarding helpers such as the agent's ``_emit``) and its
``data`` keys (through dict literals, local variables and ``**`` spreads of
them). What it cannot resolve statically is listed in :data:`DYNAMIC` together
with the test that covers it instead.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import fakeredis
import pytest

from continuity import events
from continuity.detect import detector, sweep
from continuity.drills import measure
from continuity.events import KINDS, PREFIX, EventKind, UndeclaredField, render_markdown
from continuity.failover import records
from continuity.pulse import Pulse, read_events
from tests.helpers import ROOT

DOC = ROOT / "docs" / "continuity" / "events.md"
SCANNED = ("continuity", "workers")
# the API itself, not emitters; the detector's queued sink only relays emits checked at their own call sites
SKIP = {"continuity/pulse.py", "continuity/events.py", "continuity/detect/queued_sink.py"}
CONSTANTS = {name: k for name, k in vars(events).items() if isinstance(k, EventKind)}

# spreads into ``data`` the scan cannot follow, and what proves their keys are declared instead
DYNAMIC = {
    ("continuity/detect/sweep.py", "tr.as_dict()"): "test_detector_payloads_are_declared",
    ("continuity/detect/sweep.py", "_storm_incident(outcome, now)"): "test_detector_payloads_are_declared",
    ("continuity/failover/records.py", "detail or {}"): "test_finish_details_are_declared (finish callers' dicts)",
}


# --- the docs ---------------------------------------------------------------------------------------------------
def test_checked_in_docs_match_the_catalogue() -> None:
    assert DOC.read_text() == render_markdown(), (
        "docs/continuity/events.md is out of date with continuity/events.py; regenerate it with\n"
        "    python -m continuity.events > docs/continuity/events.md")


def test_every_kind_is_documented_with_fields() -> None:
    for name, kind in KINDS.items():
        assert kind.name == name and kind.description and kind.emitter, name
        assert kind.fields or kind.extra, f"{name} declares no fields"
        assert f"## {name}\n" in render_markdown()


# --- the scan ---------------------------------------------------------------------------------------------------
@dataclass
class Site:
    path: str
    line: int
    kinds: set[str] | None  # None: the kind is the forwarder's own parameter
    via: str | None = None  # the forwarder called, when not an ``emit`` directly
    keys: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)


@dataclass
class Forwarder:
    name: str
    kind_index: int  # position of the EventKind parameter among the call's arguments
    keys: set[str] = field(default_factory=set)  # data keys the forwarder adds itself


def _files() -> Iterator[tuple[str, ast.Module]]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in SKIP:
                yield rel, ast.parse(path.read_text(), filename=rel)


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _enclosing(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> ast.FunctionDef | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node  # type: ignore[return-value]
    return None


def _kind_params(fn: ast.FunctionDef | None) -> list[str]:
    if fn is None:
        return []
    return [a.arg for a in fn.args.args if a.annotation is not None and "EventKind" in ast.unparse(a.annotation)]


class Module:
    def __init__(self, path: str, tree: ast.Module) -> None:
        self.path, self.tree, self.parents = path, tree, _parents(tree)
        self.names: dict[str, str] = {}  # local name -> catalogue constant name
        self.aliases: set[str] = set()  # names bound to the continuity.events module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "continuity.events":
                self.names.update({a.asname or a.name: a.name for a in node.names if a.name in CONSTANTS})
            elif isinstance(node, ast.ImportFrom) and node.module == "continuity":
                self.aliases.update(a.asname or a.name for a in node.names if a.name == "events")

    def assigned(self, name: str, at: ast.AST) -> ast.expr | None:
        """The value last assigned to ``name`` in the function around ``at``, else at module level."""
        scopes = [s for s in (_enclosing(at, self.parents), self.tree) if s is not None]
        for scope in scopes:
            found = None
            for node in ast.walk(scope):
                if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                        and node.targets[0].id == name and node.lineno <= getattr(at, "lineno", 10**9)):
                    found = node.value
            if found is not None:
                return found
        return None

    def kinds(self, expr: ast.expr, at: ast.AST) -> set[str] | None:
        """Catalogue kinds ``expr`` can evaluate to; raises ValueError when it is not provably one."""
        if isinstance(expr, ast.Name):
            if expr.id in self.names:
                return {CONSTANTS[self.names[expr.id]].name}
            if expr.id in _kind_params(_enclosing(at, self.parents)):
                return None
            value = self.assigned(expr.id, at)
            if value is not None:
                return self.kinds(value, at)
        elif isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and expr.value.id in self.aliases:
            if expr.attr in CONSTANTS:
                return {CONSTANTS[expr.attr].name}
        elif isinstance(expr, ast.IfExp):
            return (self.kinds(expr.body, at) or set()) | (self.kinds(expr.orelse, at) or set())
        elif isinstance(expr, ast.Dict):
            return set().union(*(self.kinds(v, at) or set() for v in expr.values))
        elif isinstance(expr, ast.Subscript):
            return self.kinds(expr.value, at)
        elif (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute) and expr.func.attr == "get"):
            return self.kinds(expr.func.value, at)
        raise ValueError(f"kind {ast.unparse(expr)!r} is not a continuity.events constant")

    def keys(self, expr: ast.expr, at: ast.AST, site: Site, params: tuple[str, ...] = ()) -> None:
        """Collect the literal keys of a ``data`` expression into ``site``, following what can be followed."""
        if isinstance(expr, ast.Dict):
            for k, v in zip(expr.keys, expr.values, strict=True):
                if k is None:
                    self.keys(v, at, site, params)
                elif isinstance(k, ast.Constant) and isinstance(k.value, str):
                    site.keys.add(k.value)
                else:
                    site.problems.append(f"non-literal key {ast.unparse(k)}")
        elif isinstance(expr, ast.DictComp) and isinstance(expr.key, ast.Name) and len(expr.generators) == 1:
            gen = expr.generators[0]
            if isinstance(gen.iter, ast.Tuple) and all(isinstance(e, ast.Constant) for e in gen.iter.elts):
                site.keys.update(str(e.value) for e in gen.iter.elts)  # type: ignore[attr-defined]
            else:
                site.problems.append(f"spread {ast.unparse(expr)}")
        elif isinstance(expr, ast.Name) and expr.id in params:
            return  # a forwarder's own data parameter: its call sites are checked
        elif isinstance(expr, ast.Name) and (value := self.assigned(expr.id, at)) is not None:
            self.keys(value, at, site, params)
        elif (self.path, ast.unparse(expr)) not in DYNAMIC:
            site.problems.append(f"data {ast.unparse(expr)!r} cannot be checked (add it to DYNAMIC with a test)")


def _forwarders(mod: Module) -> dict[str, Forwarder]:
    out = {}
    for fn in ast.walk(mod.tree):
        if isinstance(fn, ast.FunctionDef) and (params := _kind_params(fn)):
            names = [a.arg for a in fn.args.args if a.arg not in ("self", "cls")]
            out[fn.name] = Forwarder(fn.name, names.index(params[0]))
    return out


def _data_arg(call: ast.Call, start: int) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == "data":
            return kw.value
    rest = [a for a in call.args[start + 1:] if isinstance(a, ast.Dict | ast.Name)]
    return rest[-1] if rest else None


def scan() -> tuple[list[Site], dict[tuple[str, str], Forwarder]]:
    """Every emit call site (direct or through a forwarder) with its resolved kinds and data keys."""
    sites: list[Site] = []
    all_forwarders: dict[tuple[str, str], Forwarder] = {}
    for path, tree in _files():
        mod = Module(path, tree)
        fwd = _forwarders(mod)
        all_forwarders.update({(path, n): f for n, f in fwd.items()})
        for call in ast.walk(tree):
            if not isinstance(call, ast.Call):
                continue
            fname = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", None)
            if fname == "emit":
                index = 0
            elif fname in fwd:
                index = fwd[fname].kind_index
            else:
                continue
            site = Site(path, call.lineno, None, via=fname if fname != "emit" else None)
            sites.append(site)
            if len(call.args) <= index:
                site.problems.append("no kind argument")
                continue
            try:
                site.kinds = mod.kinds(call.args[index], call)
            except ValueError as exc:
                site.problems.append(str(exc))
                continue
            fn = _enclosing(call, mod.parents)
            own = tuple(a.arg for a in fn.args.args) if fn is not None and site.kinds is None else ()
            data = _data_arg(call, index)
            if data is not None:
                mod.keys(data, call, site, own)
            if site.kinds is None and fn is not None and fn.name in fwd:
                fwd[fn.name].keys |= site.keys  # keys the forwarder adds to whatever its callers pass
        for site in sites:
            if site.path == path and site.via is not None:
                site.keys |= fwd[site.via].keys
    return sites, all_forwarders


@pytest.fixture(scope="module")
def sites() -> list[Site]:
    return scan()[0]


def test_every_emit_passes_a_catalogue_constant_with_declared_fields(sites: list[Site]) -> None:
    assert len(sites) > 40, "the scan found too few emit call sites: is it still looking in the right places?"
    problems = [f"{s.path}:{s.line}: {p}" for s in sites for p in s.problems]
    for s in sites:
        for name in s.kinds or ():
            bad = KINDS[name].undeclared(dict.fromkeys(s.keys))
            if bad:
                problems.append(f"{s.path}:{s.line}: {name} does not declare {', '.join(bad)}")
    assert not problems, "\n".join(problems)


def test_no_kind_is_spelled_as_a_string() -> None:
    """Kinds are referenced through constants only, so a rename in the catalogue reaches every user."""
    spelled = set(KINDS) | {PREFIX + n for n in KINDS}
    found = []
    for path, tree in _files():
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                      and n.body and isinstance(n.body[0], ast.Expr)}
        # the CLI's lazy registry names modules ("backup.snapshot" is continuity/cli/backup/snapshot.py)
        modules = {id(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args
                   and isinstance(n.func, ast.Name) and n.func.id == "LazyCommand"}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and node.value in spelled and id(node) not in docstrings
                    and id(node) not in modules):
                found.append(f"{path}:{node.lineno}: {node.value!r}")
    assert not found, "use the continuity.events constant instead of:\n" + "\n".join(found)


def test_every_kind_is_emitted_or_reserved_with_a_reason(sites: list[Site]) -> None:
    """No dead kinds. A reserved kind may still sit behind an emit site (failover.failed is one of
    records.finish's outcomes) when no caller reaches it today; the reservation says so, with the reason."""
    emitted = set().union(*(s.kinds or set() for s in sites))
    reserved = {n for n, k in KINDS.items() if k.reserved}
    assert set(KINDS) - emitted - reserved == set(), "dead kinds: emit them, delete them, or mark them reserved"
    assert all(len(KINDS[n].reserved) > 20 for n in reserved), "a reservation needs its reason"


def test_dynamic_spreads_are_still_there(sites: list[Site]) -> None:
    """DYNAMIC must not keep excusing code that is gone (its covering test would then cover nothing)."""
    sources = {p: (ROOT / p).read_text() for p, _ in DYNAMIC}
    assert [k for k in DYNAMIC if k[1] not in sources[k[0]]] == []


# --- what the scan leaves to tests --------------------------------------------------------------------------------
def test_detector_payloads_are_declared() -> None:
    tr = detector.Transition("core-a", "alive", "dead", 10.0, 3.0)
    for kind in sweep.EVENT_FOR.values():
        assert kind.undeclared({**tr.as_dict(), "last_seen": 7.0}) == []
    outcome = detector.Outcome(states={}, meta=detector.Meta(), dead=["core-a"], dead_fraction=0.5)
    assert events.DETECT_STORM.undeclared(sweep._storm_incident(outcome, 10.0)) == []


def test_finish_details_are_declared() -> None:
    """records.finish spreads its caller's detail into failover.<outcome>: every caller's dict is declared."""
    outcome_kind = {"succeeded": events.FAILOVER_COMPLETED, "failed": events.FAILOVER_FAILED,
                    "escalated": events.FAILOVER_ESCALATED, "superseded": events.FAILOVER_SUPERSEDED}
    seen, problems = 0, []
    for path, tree in _files():
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute | ast.Name)
                    and getattr(call.func, "attr", getattr(call.func, "id", None)) == "finish"
                    and len(call.args) >= 5 and isinstance(call.args[2], ast.Constant)):
                continue
            seen += 1
            kind = outcome_kind[call.args[2].value]
            detail = call.args[4]
            keys = {k.value for k in detail.keys if isinstance(k, ast.Constant)} if isinstance(detail, ast.Dict) else {
                f"<not a dict literal: {ast.unparse(detail)}>"}
            if bad := kind.undeclared(dict.fromkeys(keys)):
                problems.append(f"{path}:{call.lineno}: {kind.name} does not declare {bad}")
    assert seen >= 3 and not problems, problems


# --- behaviour ---------------------------------------------------------------------------------------------------
def test_undeclared_field_raises_under_test_and_is_logged_in_production(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    hist = tmp_path / "pulse.jsonl"
    with pytest.raises(UndeclaredField, match="failover.promoted.*bogus"):
        Pulse(path=hist).emit(events.FAILOVER_PROMOTED, service="ledger", epoch=3, data={"bogus": 1})
    events.VIOLATIONS.clear()  # the violation above is this test's point, not a failure of the session
    monkeypatch.setattr(events, "STRICT", False)
    with caplog.at_level(logging.WARNING, logger="continuity.events"):
        ev = Pulse(path=hist).emit(events.FAILOVER_PROMOTED, service="ledger", epoch=3, data={"bogus": 1})
    assert ev["data"] == {"bogus": 1} and "undeclared field(s) bogus" in caplog.text  # written whole, only logged


def test_wire_format_is_unchanged(tmp_path: Path) -> None:
    hist = tmp_path / "pulse.jsonl"
    ev = Pulse(path=hist).emit(events.FAILOVER_PROMOTED, service="ledger", epoch=3,
                               data={"record": "r", "lease_ttl": 3})
    line = json.loads(hist.read_text())
    assert line["kind"] == "continuity_layer.failover.promoted" == ev["kind"]
    assert line["data"] == {"record": "r", "lease_ttl": 3}
    assert events.FAILOVER_PROMOTED == "failover.promoted" and "failover.promoted" in {events.FAILOVER_PROMOTED}
    assert events.lookup(line["kind"]) is events.FAILOVER_PROMOTED


def test_measure_recognises_what_the_failover_records_emit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events written by the real emitters (not hand-built ones) give measure its failover count and steps."""
    monkeypatch.setenv("CONTINUITY_PULSE_FILE", str(tmp_path / "pulse.jsonl"))
    client = fakeredis.FakeRedis(decode_responses=True)
    plan = {"service": "ledger", "old_primary": "core-a", "candidate": "core-b", "expected_epoch": 1}
    trigger = {"by": "detector", "reason": "node dead", "detected_at": 100.0, "last_seen": {"core-a": 98.0}}
    rid = records.open_record(client, plan, trigger, "detector", 100.0)
    records.step_started(client, rid, 0, "fence", None, 100.5)
    records.step_finished(client, rid, 0, "fence", True, 101.0, {"epoch": 2}, service="ledger", epoch=2)
    records.finish(client, rid, "succeeded", 103.0, {"node": "core-b", "epoch": 2, "attempt": 0}, service="ledger")
    other = records.open_record(client, dict(plan, service="ledger2"), trigger, "detector", 104.0)
    records.finish(client, other, "superseded", 109.0, {"reason": "newer epoch", "step": "fence"},
                   service="ledger2")
    evs = list(read_events(tmp_path / "pulse.jsonl"))
    started = [e for e in evs if events.lookup(e["kind"]) == measure.FAILOVER_START]
    assert [measure._record_id(e) for e in started] == [rid, other]
    count, steps = measure.failovers(evs, 99.0)
    assert count == 2
    assert [(s["step"], s["duration"]) for s in steps] == [("fence", 0.5)]  # not the superseded record's 5 s
    fault_at = started[0]["ts"] - 1.0  # events carry the wall clock, not the ``now`` the records were given
    det, kind = measure.detection(evs, fault_at, ["core-a"], [])
    assert det == pytest.approx(1.0) and kind == "failover.started"


def test_measure_detection_kinds_are_what_the_old_word_rule_matched() -> None:
    """Moving from words to constants changed no drill's detection time: same kinds, now named."""
    words = ("dead", "suspect", "unhealthy", "down", "lost", "offline", "failed", "stale")
    by_words = {n for n in KINDS if n.startswith("detect.") and any(w in n for w in words)}
    assert measure.DETECTION_KINDS == by_words
    assert {sweep.EVENT_FOR[detector.SUSPECT], sweep.EVENT_FOR[detector.DEAD]} <= measure.DETECTION_KINDS


def test_an_undeclared_field_is_noted_even_where_the_emitter_swallows_errors(tmp_path: Path) -> None:
    """The sweep (like the agent and the drill runner) never lets its bookkeeping fail; the session still sees it."""
    sweep._emit(Pulse(path=tmp_path / "pulse.jsonl"), events.DETECT_TILT_ENDED, data={"at": 1.0, "bogus": 2})
    found, events.VIOLATIONS[:] = list(events.VIOLATIONS), []  # conftest fails any test that leaves one behind
    assert found and "detect.tilt_ended" in found[0]


def test_every_emitter_named_in_the_catalogue_exists() -> None:
    """When a module moves (continuity/state/ is coming), the catalogue and docs must say where it went."""
    missing = [f"{n}: {k.emitter}" for n, k in KINDS.items() if not (ROOT / k.emitter.split()[0]).is_file()]
    assert not missing, "update the emitter in continuity/events.py, then regenerate the docs:\n" + "\n".join(missing)
