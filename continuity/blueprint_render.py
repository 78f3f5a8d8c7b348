"""Turn a blueprint into the generated section of ``docs/continuity/architecture.md``.

The architecture document is read by people deciding what to protect first;
if its tier table drifts from ``ops/blueprint.yml`` it lies to them at the
worst moment. So the factual part is generated from the blueprint, kept
between two marker lines, and CI runs ``continuity blueprint render --check``.
This module only builds strings (no file access) so the output is easy to
test and the CLI alone decides how the document is written.
"""

from __future__ import annotations

import re

from continuity.blueprint import Blueprint
from continuity.errors import ConfigError

BEGIN_MARKER = "<!-- BEGIN blueprint:generated -->"
END_MARKER = "<!-- END blueprint:generated -->"

TIER_MEANING = {
    0: ("safety-critical", "automatic failover within seconds, fenced by epoch; never shed"),
    1: ("essential", "automatic failover to the next standby"),
    2: ("important", "restore from the latest verified snapshot"),
    3: ("best effort", "no failover; shed first under pressure"),
}

_UNITS = (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


def declared(seconds: float) -> str:
    """Durations written back the way operators declare them (``5m``, ``1h30m``, ``500ms``).

    ``format_duration`` is made for measurements (``12.3s``); an objective of
    ``10s`` shown as ``10.0s`` reads like a measurement, so objectives get
    their own exact spelling.
    """
    if seconds == 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{ms}ms" if ms < 1000 else f"{seconds:g}s"
    rest = ms // 1000
    out = ""
    for unit, size in _UNITS:
        if rest >= size:
            count, rest = divmod(rest, size)
            out += f"{count}{unit}"
    return out


def _cell(text: str) -> str:
    """Table cells must not break the Markdown table they sit in."""
    return text.replace("|", "\\|").replace("\n", " ").strip() or "—"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _names(items: list[str] | tuple[str, ...]) -> str:
    return ", ".join(f"`{i}`" for i in items) if items else "—"


def _label(text: str) -> str:
    """Mermaid labels are quoted; a quote inside would end the label early."""
    return text.replace('"', "#quot;")


def mermaid_ids(bp: Blueprint) -> dict[str, str]:
    """Stable Mermaid node ids: service ids may hold '-', which Mermaid reads as part of an arrow."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for sid in sorted(bp.services):
        base = "svc_" + sid.replace("-", "_")
        cand, n = base, 2
        while cand in used:
            cand, n = f"{base}_{n}", n + 1
        used.add(cand)
        out[sid] = cand
    return out


def _nodes_section(bp: Blueprint) -> list[str]:
    rows = []
    for nid in sorted(bp.nodes):
        node = bp.nodes[nid]
        windows = ", ".join(f"{w.start}–{w.end}" + ("" if len(w.days) == 7 else f" ({','.join(w.days)})")
                            for w in node.contact)
        contact = "always" if node.kind == "core" or not node.scheduled else f"{windows} UTC" if windows else ""
        n_abs = len(bp.absolute_passes(nid))
        if n_abs:
            contact = ", ".join(x for x in (contact, f"{n_abs} scheduled pass(es)") if x)
        rows.append([f"`{nid}`", node.kind, f"`{bp.queue(nid)}`", contact, _names(bp.services_on(nid))])
    return ["### Nodes", "", *_table(["node", "kind", "queue", "contact", "primary for"], rows)]


def _tier_section(bp: Blueprint) -> list[str]:
    rows = []
    for tier, (meaning, strategy) in TIER_MEANING.items():
        rows.append([str(tier), meaning, strategy, _names(bp.tier_services([tier]))])
    return ["### Tiers", "", *_table(["tier", "meaning", "recovery strategy", "services"], rows)]


def _objectives_section(bp: Blueprint) -> list[str]:
    rows = []
    for dom_id, dom in bp.model.domains.items():
        for sid in sorted(dom.services, key=lambda s: (bp.services[s].tier, s)):
            s = bp.services[sid]
            rows.append([f"`{dom_id}`", f"`{sid}`", str(s.tier), declared(s.rto), declared(s.rpo),
                         f"`{s.primary}`", _names(s.standbys), _names(s.depends_on)])
    header = ["domain", "service", "tier", "RTO", "RPO", "primary", "standbys", "depends on"]
    return ["### Recovery objectives", "",
            "Domain objectives apply to every service in the domain unless the service declares its own.", "",
            *_table(header, rows)]


def _graph_section(bp: Blueprint) -> list[str]:
    ids = mermaid_ids(bp)
    protected = set(bp.minimal_continuity_set())
    lines = ["### Dependency graph", "",
             "An arrow points from a service to what it needs. Thick borders: the minimal continuity set.", "",
             "```mermaid", "graph TD"]
    for dom_id, dom in bp.model.domains.items():
        lines.append(f"  subgraph dom_{re.sub(r'[^A-Za-z0-9_]', '_', dom_id)}[\"{_label(dom_id)}\"]")
        for sid in sorted(dom.services):
            s = bp.services[sid]
            lines.append(f"    {ids[sid]}[\"{sid}<br/>tier {s.tier} · RTO {declared(s.rto)}\"]")
        lines.append("  end")
    for sid in sorted(bp.services):
        for dep in bp.services[sid].depends_on:
            lines.append(f"  {ids[sid]} --> {ids[dep]}")
    lines += ["  classDef tier0 fill:#fde2e1,stroke:#b42318",
              "  classDef tier1 fill:#fef0c7,stroke:#b54708",
              "  classDef tier2 fill:#e0f2fe,stroke:#026aa2",
              "  classDef tier3 fill:#f2f4f7,stroke:#475467",
              "  classDef mcs stroke-width:3px"]
    for tier in range(4):
        members = [ids[s] for s in bp.tier_services([tier])]
        if members:
            lines.append(f"  class {','.join(members)} tier{tier}")
    if protected:
        lines.append(f"  class {','.join(ids[s] for s in sorted(protected))} mcs")
    lines.append("```")
    return lines


def _continuity_section(bp: Blueprint) -> list[str]:
    mcs = bp.minimal_continuity_set()
    lines = ["### Minimal continuity set", "",
             "The tier-0 services and everything they transitively depend on: what must keep running for the "
             "fleet to be worth anything. It is never shed.", "",
             f"{_names(mcs)}", "",
             "### Degradation order", "",
             "Under pressure (capacity lost, failover storm) services are shed group by group, first group first; "
             "the minimal continuity set is never in a group.", ""]
    order = bp.degradation_order()
    if not order:
        lines.append("Nothing can be shed: every service is in the minimal continuity set.")
    for i, group in enumerate(order, start=1):
        tier = bp.services[group[0]].tier
        lines.append(f"{i}. tier {tier}: {_names(group)}")
    return lines


def render_section(bp: Blueprint, source: str = "ops/blueprint.yml") -> str:
    """The generated section (without markers), ending in a newline."""
    counts: dict[str, int] = {}
    for node in bp.nodes.values():
        counts[node.kind] = counts.get(node.kind, 0) + 1
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    parts = [
        f"<!-- generated by `continuity blueprint render` from {source}; edit the blueprint, not this section -->",
        "",
        f"Fleet **{bp.model.fleet}**: {len(bp.nodes)} nodes ({kinds}), {len(bp.services)} services "
        f"in {len(bp.model.domains)} domains.",
        "",
    ]
    for section in (_nodes_section, _tier_section, _objectives_section, _graph_section, _continuity_section):
        parts += section(bp)
        parts.append("")
    return "\n".join(parts)


def _marker_lines(text: str, marker: str) -> list[int]:
    return [i for i, line in enumerate(text.split("\n")) if line.strip() == marker]


def replace_section(document: str, section: str, file: str = "<document>") -> str:
    """``document`` with everything between the markers replaced by ``section``; nothing else changes.

    Refuses (ConfigError, exit 2) when a marker is missing, repeated or out of
    order: guessing where the section goes could overwrite hand-written prose.
    """
    begins, ends = _marker_lines(document, BEGIN_MARKER), _marker_lines(document, END_MARKER)
    for marker, found in ((BEGIN_MARKER, begins), (END_MARKER, ends)):
        if not found:
            raise ConfigError(file, None, "", f"marker line {marker} not found; add the BEGIN and END markers "
                                              "where the generated section belongs")
        if len(found) > 1:
            raise ConfigError(file, found[1] + 1, "", f"marker {marker} appears {len(found)} times "
                                                      f"(lines {', '.join(str(i + 1) for i in found)}); keep one")
    if ends[0] < begins[0]:
        raise ConfigError(file, ends[0] + 1, "", f"{END_MARKER} comes before {BEGIN_MARKER}")
    lines = document.split("\n")
    cr = "\r" if lines[begins[0]].endswith("\r") else ""  # keep a CRLF document CRLF
    body = [ln + cr for ln in section.rstrip("\n").split("\n")]
    return "\n".join(lines[: begins[0] + 1] + [cr] + body + [cr] + lines[ends[0]:])
