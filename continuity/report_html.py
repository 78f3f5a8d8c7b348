"""The scorecard as one self-contained HTML page: ``continuity report --html FILE``.

An SRE lead reads a picture faster than a table: declared against measured
RTO/RPO per service as bars, the drill timeline, trends of MTTR and detection
over the last drills and failovers, backup freshness against each set's RPO,
and each failover's steps as swimlanes (one lane per node, a bar per step).

The page is made from the same dictionary ``report --json`` prints (see
:func:`continuity.report.build`) and nothing else, so it can be checked against
it: every number on the page is an element carrying ``data-json`` (its path in
that dictionary, dot-separated, list indices as numbers), ``data-value`` (the
value there, as JSON) and ``data-kind`` (how it is shown, see :func:`shown`).

Self-contained on purpose: the page is mailed, attached to tickets and opened
offline, so there is no script, no font, no stylesheet or image from anywhere;
the charts are SVG written here. A Content-Security-Policy that allows nothing
external makes a browser report any such load as an error (the Chromium test
asserts there is none). Pure: a function of the dictionary.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from continuity.durations import format_duration

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
COLORS = {"pass": "#1a7f37", "passed": "#1a7f37", "succeeded": "#1a7f37", "fail": "#cf222e",
          "failed": "#cf222e", "escalated": "#cf222e", "aborted": "#9a6700", "untested": "#6e7781",
          "superseded": "#6e7781", "running": "#0969da"}
OK, BAD, DECLARED, MUTED = "#1a7f37", "#cf222e", "#24292f", "#8c959f"

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#24292f;max-width:1100px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:14px;margin:16px 0 4px}
table{border-collapse:collapse;margin:6px 0 12px} td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left}
th{background:#f6f8fa} td.r{text-align:right} .muted{color:#6e7781} .badge{padding:1px 8px;border-radius:10px;
color:#fff;font-weight:600} svg text{font:11px system-ui,sans-serif} .legend span{margin-right:14px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
"""


# --- values ------------------------------------------------------------------------------------------------------
def shown(value: Any, kind: str) -> str:
    """How a value of ``kind`` reads on the page (the Chromium test compares the DOM's text with this)."""
    if value is None:
        return "—"
    if kind == "duration":
        return format_duration(float(value))
    if kind == "time":
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    if kind == "bool":
        return "yes" if value else "no"
    return str(value)


def num(path: str, value: Any, kind: str = "duration", tag: str = "span", **attrs: Any) -> str:
    """An element showing ``value`` that says where in the report's JSON it comes from."""
    extra = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(str(v))}"' for k, v in attrs.items())
    return (f'<{tag} data-json="{escape(path)}" data-kind="{kind}" '
            f'data-value="{escape(json.dumps(value))}"{extra}>{escape(shown(value, kind))}</{tag}>')


def badge(path: str, value: Any) -> str:
    color = COLORS.get(str(value), MUTED)
    return num(path, value, "text", class_="badge", style=f"background:{color}")


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=r" if i in right else ""}>{c}</td>' for i, c in enumerate(row))
                   + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _max(values: Iterable[Any], floor: float = 1e-3) -> float:
    return max([floor, *(float(v) for v in values if v is not None)])


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}">{body}</svg>')


# --- sections ----------------------------------------------------------------------------------------------------
def objectives(card: Mapping[str, Any]) -> str:
    """Per service: declared RTO and RPO as a line, measured (worst of the window, and latest) as bars."""
    width, bar = 300, 220
    rows = []
    for sid, row in card["services"].items():
        cells = [escape(sid), escape(str(row["domain"])), num(f"services.{sid}.tier", row["tier"], "int")]
        for what in ("rto", "rpo"):
            obj = row[what]
            scale = bar / (_max([obj["declared"], obj["latest"], obj["worst"]]) * 1.15)
            base = f"services.{sid}.{what}"
            parts = []
            for i, (name, value) in enumerate((("worst", obj["worst"]), ("latest", obj["latest"]))):
                if value is None:
                    continue
                color = BAD if value > obj["declared"] else OK
                parts.append(f'<rect x="0" y="{4 + i * 14}" width="{max(1.0, value * scale):.1f}" height="12" '
                             f'fill="{color}" opacity="{1 if name == "worst" else 0.55}">'
                             f'<title>{name}: {escape(shown(value, "duration"))}</title></rect>')
            x = obj["declared"] * scale
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="34" stroke="{DECLARED}" stroke-width="2" '
                         f'stroke-dasharray="4 2"><title>declared</title></line>')
            parts.append(num(f"{base}.declared", obj["declared"], tag="text", x=f"{bar + 6}", y="12"))
            parts.append(num(f"{base}.worst", obj["worst"], tag="text", x=f"{bar + 6}", y="26",
                             fill=BAD if obj["worst"] is not None and obj["worst"] > obj["declared"] else OK))
            cells.append(_svg(width, 36, "".join(parts), f"{what} of {sid}") + "<br>latest "
                         + num(f"{base}.latest", obj["latest"]))
        cells += [num(f"services.{sid}.drills", row["drills"], "int"), badge(f"services.{sid}.verdict",
                                                                              row["verdict"])]
        rows.append(cells)
    legend = ('<p class="legend"><span><i class="sw" style="background:#24292f"></i>declared (dashed line, '
              'value above)</span><span><i class="sw" style="background:#1a7f37"></i>measured within it</span>'
              '<span><i class="sw" style="background:#cf222e"></i>measured beyond it</span>'
              f'<span>bars: worst of the last {escape(str(card["last_n"]))} drills, then the latest</span></p>')
    return ("<h2>Objectives: declared vs measured</h2>" + legend
            + _table(["service", "domain", "tier", "RTO", "RPO", "drills", "verdict"], rows, right=[2, 5]))


def drill_timeline(card: Mapping[str, Any]) -> str:
    drills = card.get("drills") or []
    if not drills:
        return "<h2>Drill timeline</h2><p class=muted>No drill has run yet (<code>continuity drill run</code>).</p>"
    width, left, right = 900, 20, 20
    t0 = min(d["started"] or 0 for d in drills)
    t1 = max(d["started"] or 0 for d in drills)
    span = max(t1 - t0, 1.0)
    marks = [f'<line x1="{left}" x2="{width - right}" y1="30" y2="30" stroke="{MUTED}"/>']
    for i, d in enumerate(drills):
        x = left + (width - left - right) * ((d["started"] or t0) - t0) / span
        marks.append(f'<circle cx="{x:.1f}" cy="30" r="7" fill="{COLORS.get(d["status"], MUTED)}">'
                     f'<title>{escape(str(d["scenario"]))} {escape(str(d["status"]))} '
                     f'{escape(shown(d["started"], "time"))}</title></circle>'
                     f'<text x="{x:.1f}" y="{14 if i % 2 else 54}" text-anchor="middle">{i + 1}</text>')
    marks.append(num("drills.0.started", drills[0]["started"], "time", tag="text", x=str(left), y="72"))
    marks.append(num(f"drills.{len(drills) - 1}.started", drills[-1]["started"], "time", tag="text",
                     x=str(width - right), y="72", text_anchor="end"))
    rows = []
    for i, d in enumerate(drills):
        p = f"drills.{i}"
        rows.append([str(i + 1), escape(str(d["scenario"])), badge(f"{p}.status", d["status"]),
                     num(f"{p}.started", d["started"], "time"), num(f"{p}.detection", d["detection"]),
                     num(f"{p}.mttr", d["mttr"]), num(f"{p}.achieved_rpo", d["achieved_rpo"]),
                     num(f"{p}.data_lost", d["data_lost"], "int"), num(f"{p}.failovers", d["failovers"], "int"),
                     f"<code>{escape(str(d['id']))}</code>"])
    return (f"<h2>Drill timeline (last {len(drills)})</h2>" + _svg(width, 80, "".join(marks), "drill timeline")
            + _table(["#", "scenario", "result", "started", "detection", "MTTR", "RPO achieved", "acked writes lost",
                      "failovers", "id"], rows, right=[0, 4, 5, 6, 7, 8]))


def _trend(title: str, items: Sequence[Mapping[str, Any]], prefix: str, series: Sequence[tuple[str, str, str]]) -> str:
    """A line per series over the items (oldest first), each point an element tied to the JSON."""
    if not items:
        return f"<h3>{escape(title)}</h3><p class=muted>none yet</p>"
    width, height, left, top, bottom = 900, 180, 60, 12, 26
    ymax = _max(it.get(key) for it in items for key, _, _ in series) * 1.1
    step = (width - left - 20) / max(len(items) - 1, 1)
    body = [f'<line x1="{left}" x2="{width - 20}" y1="{height - bottom}" y2="{height - bottom}" stroke="{MUTED}"/>',
            f'<line x1="{left}" x2="{left}" y1="{top}" y2="{height - bottom}" stroke="{MUTED}"/>']
    for frac in (0.0, 0.5, 1.0):
        y = height - bottom - frac * (height - top - bottom)
        body.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(shown(ymax * frac, "duration"))}'
                    f'</text>')
    for key, label, color in series:
        pts = []
        for i, it in enumerate(items):
            value = it.get(key)
            if value is None:
                continue
            x = left + i * step
            y = height - bottom - (float(value) / ymax) * (height - top - bottom)
            pts.append((x, y, i, value))
        if len(pts) > 1:
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                        f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in pts)}"/>')
        for x, y, i, value in pts:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"><title>{escape(label)} '
                        f'#{i + 1}: {escape(shown(value, "duration"))}</title></circle>')
            body.append(num(f"{prefix}.{i}.{key}", value, tag="text", x=f"{x:.1f}", y=f"{y - 6:.1f}",
                            text_anchor="middle", fill=color))
    for i in range(len(items)):
        body.append(f'<text x="{left + i * step:.1f}" y="{height - 8}" text-anchor="middle">{i + 1}</text>')
    legend = "".join(f'<span><i class="sw" style="background:{c}"></i>{escape(lbl)}</span>' for _, lbl, c in series)
    return (f"<h3>{escape(title)}</h3><p class=legend>{legend}</p>"
            + _svg(width, height, "".join(body), title))


def trends(card: Mapping[str, Any]) -> str:
    series = (("mttr", "MTTR", "#8250df"), ("detection", "detection", "#0969da"))
    return ("<h2>Trends</h2>"
            + _trend(f"Drills (last {len(card.get('drills') or [])}, oldest first)", card.get("drills") or [],
                     "drills", series)
            + _trend(f"Failovers (last {len(card.get('failovers') or [])}, oldest first)",
                     card.get("failovers") or [], "failovers", series))


def backups(card: Mapping[str, Any]) -> str:
    """Each set's last snapshot age as a bar against its RPO (the dashed line at the middle)."""
    sets = card.get("backups") or []
    if not sets:
        return "<h2>Backup freshness</h2><p class=muted>No backup set is configured.</p>"
    width, bar = 420, 300
    rows = []
    for i, b in enumerate(sets):
        p = f"backups.{i}"
        parts = [f'<line x1="{bar / 2}" x2="{bar / 2}" y1="0" y2="20" stroke="{DECLARED}" stroke-dasharray="4 2">'
                 f'<title>RPO</title></line>']
        if b["last_snapshot_age"] is not None and b["target_rpo"]:
            ratio = min(b["last_snapshot_age"] / b["target_rpo"], 2.0)
            parts.insert(0, f'<rect x="0" y="4" width="{max(1.0, ratio * bar / 2):.1f}" height="12" '
                            f'fill="{OK if b["fresh"] else BAD}"/>')
        parts.append(num(f"{p}.last_snapshot_age", b["last_snapshot_age"], tag="text", x=str(bar + 6), y="14"))
        verified = ("never" if b["last_verify_age"] is None else
                    num(f"{p}.last_verify_age", b["last_verify_age"]) + " ago, ok: "
                    + num(f"{p}.last_verify_ok", b["last_verify_ok"], "bool"))
        rows.append([f"<code>{escape(b['set'])}</code>", escape(", ".join(b["services"])) or "—",
                     _svg(width, 20, "".join(parts), f"age of {b['set']}"), num(f"{p}.target_rpo", b["target_rpo"]),
                     num(f"{p}.fresh", b["fresh"], "bool"), verified])
    return ("<h2>Backup freshness</h2><p class=muted>Bar: age of the last snapshot; dashed line: the set's RPO "
            "(the bar stops at twice it).</p>"
            + _table(["set", "service sources", "last snapshot age", "RPO", "fresh", "last verified restore (ok)"],
                     rows))


def swimlanes(card: Mapping[str, Any]) -> str:
    """Each failover's steps on its own time axis, one lane per node that ran them."""
    failovers = card.get("failovers") or []
    if not failovers:
        return "<h2>Failovers</h2><p class=muted>No failover has happened yet.</p>"
    out = [f"<h2>Failovers (last {len(failovers)}) — steps per node</h2>"]
    for i, f in enumerate(reversed(failovers)):
        idx = len(failovers) - 1 - i
        p = f"failovers.{idx}"
        lanes: list[str] = []
        for s in f["steps"]:
            lane = s["node"] or "control"
            if lane not in lanes:
                lanes.append(lane)
        end = _max([f["lease_wait"], *((s["offset"] or 0) + (s["duration"] or 0) for s in f["steps"])])
        width, left, lane_h = 900, 90, 26
        scale = (width - left - 20) / end
        body = []
        for n, lane in enumerate(lanes):
            body.append(f'<text x="4" y="{n * lane_h + 17}">{escape(lane)}</text>'
                        f'<line x1="{left}" x2="{width - 20}" y1="{(n + 1) * lane_h}" y2="{(n + 1) * lane_h}" '
                        f'stroke="#eaeef2"/>')
        if f["lease_wait"] and "control" in lanes:  # the wait before the first fence belongs to no step
            y = lanes.index("control") * lane_h + 4
            body.append(f'<rect x="{left}" y="{y}" width="{f["lease_wait"] * scale:.1f}" height="{lane_h - 8}" '
                        f'fill="#eaeef2"><title>waiting out the old lease + margin</title></rect>'
                        f'<text x="{left + 3}" y="{y + 13}" fill="{MUTED}">lease wait</text>')
        rows = []
        for j, s in enumerate(f["steps"]):
            q = f"{p}.steps.{j}"
            rows.append([escape(str(s["step"])), escape(str(s["node"] or "control")), num(f"{q}.attempt",
                         s["attempt"], "int"), num(f"{q}.offset", s["offset"]), num(f"{q}.duration", s["duration"]),
                         num(f"{q}.ok", s["ok"], "bool") + (f" {escape(str(s['error']))}" if s.get("error") else "")])
            if s["offset"] is None:
                continue
            y = lanes.index(s["node"] or "control") * lane_h + 4
            x = left + s["offset"] * scale
            w = max(2.0, (s["duration"] or 0) * scale)
            color = OK if s["ok"] else (BAD if s["ok"] is False else "#0969da")
            body.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{lane_h - 8}" fill="{color}">'
                        f'<title>{escape(str(s["step"]))} on {escape(str(s["node"] or "control"))}: '
                        f'{escape(shown(s["duration"], "duration"))}</title></rect>')
            if w >= 7 * len(str(s["step"])):  # a name that fits in its bar; the table below names them all
                body.append(f'<text x="{x + 3:.1f}" y="{y + 13}" fill="#fff">{escape(str(s["step"]))}</text>')
        height = len(lanes) * lane_h + 22
        body.append(f'<text x="{left}" y="{height - 4}">0</text><text x="{width - 20}" y="{height - 4}" '
                    f'text-anchor="end">{escape(shown(end, "duration"))}</text>')
        reason = f" — {escape(str(f['reason']))}" if f.get("reason") else ""
        out.append(f"<h3>{escape(str(f['service']))}: {escape(str(f['from'] or '—'))} → "
                   f"{escape(str(f['to'] or '—'))} {badge(f'{p}.outcome', f['outcome'])} "
                   f"<span class=muted>{escape(str(f['kind']))} by {escape(str(f['who']))}{reason}</span></h3>"
                   f"<p>started {num(f'{p}.started', f['started'], 'time')} · detection "
                   f"{num(f'{p}.detection', f['detection'])} · waiting out the old lease "
                   f"{num(f'{p}.lease_wait', f['lease_wait'])} · MTTR {num(f'{p}.mttr', f['mttr'])} · "
                   f"<code>{escape(str(f['id']))}</code></p>"
                   + _svg(width, height, "".join(body), f"steps of {f['id']}")
                   + _table(["step", "node", "attempt", "started at", "took", "ok"], rows, right=[2, 3, 4]))
    return "".join(out)


def render(card: Mapping[str, Any]) -> str:
    """The whole page for a report dictionary (``continuity.report.build``)."""
    title = f"Continuity scorecard — {card.get('fleet') or 'fleet'}"
    head = (f"<h1>{escape(title)} {badge('verdict', card['verdict'])}</h1>"
            f"<p class=muted>generated {num('generated', card['generated'], 'time')}; measured = worst of the last "
            f"{num('last_n', card['last_n'], 'int')} drills per service</p>")
    body = head + objectives(card) + drill_timeline(card) + trends(card) + backups(card) + swimlanes(card)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>{body}</body></html>\n")
