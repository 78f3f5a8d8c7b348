"""Learn: the scorecard (declared RTO/RPO against measured) and draft postmortems.

Objectives written in a blueprint are promises until a drill measures them.
The scorecard puts, for every service, the declared RTO and RPO beside what the
drills measured (the latest run and the worst of the last N, because one lucky
run proves little) and beside how fresh its backups are, and gives a verdict a
reviewer can act on: ``pass``, ``fail`` or ``untested``. Postmortem drafts are
rendered from the same records plus the pulse timeline, so nobody has to
reconstruct an incident from memory. Everything here is pure except the small
readers at the bottom (Redis, files).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from continuity import paths, text
from continuity.blueprint import Blueprint
from continuity.config import load_document
from continuity.drills.measure import service_rpo
from continuity.durations import format_duration, parse_duration
from continuity.errors import ContinuityError
from continuity.events import NODE_PING, short
from continuity.state import backups, failover_records
from continuity.state import drills as drill_state

LAST_N = 5
# package data (pyproject's package-data): an installed wheel renders postmortems outside any checkout
TEMPLATE = Path(__file__).resolve().parent / "templates" / "postmortem_template.md"
HISTORY_N = 20


def _f(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def _dur(value: float | None) -> str:
    return "—" if value is None else format_duration(value)


# --- scorecard ------------------------------------------------------------------------------------------------
def backup_coverage(bp: Blueprint, sets: Mapping[str, Mapping[str, Any]]) -> dict[str, list[str]]:
    """service -> backup sets protecting it: a ``kind: service`` source naming it (its live data, wherever the
    primary runs), or a source path equal to one of its declared data paths."""
    out: dict[str, list[str]] = {}
    for sid, view in bp.services.items():
        wanted = {str(Path(d.path)) for d in view.spec.data}
        for set_id, info in sorted(sets.items()):
            have = {str(Path(p)) for p in info.get("paths", [])}
            if sid in (info.get("services") or []) or wanted & have:
                out.setdefault(sid, []).append(set_id)
    return out


def _backup_view(set_ids: Sequence[str], status: Mapping[str, Mapping[str, Any]],
                 sets: Mapping[str, Mapping[str, Any]], declared_rpo: float, now: float) -> dict[str, Any]:
    rows = []
    for set_id in set_ids:
        st = status.get(set_id) or {}
        snap = _f(st.get("last_snapshot_time"))
        verified_snap = _f(st.get("last_verified_snapshot_time"))
        verify_time = _f(st.get("last_verify_time"))
        target = _f((sets.get(set_id) or {}).get("rpo")) or _f(st.get("rpo")) or declared_rpo
        age = None if snap is None else max(0.0, now - snap)
        rows.append({"set": set_id, "last_snapshot_age": age, "target_rpo": target,
                     "fresh": age is not None and age <= target,
                     "last_verified_restore": verify_time,
                     "last_verify_ok": st.get("last_verify_ok") in ("1", 1, True, "True"),
                     "verified_snapshot_age": None if verified_snap is None else max(0.0, now - verified_snap)})
    return {"sets": rows, "fresh": all(r["fresh"] for r in rows) if rows else None}


def scorecard(bp: Blueprint, drills: Iterable[Mapping[str, Any]], backup_status: Mapping[str, Mapping[str, Any]],
              backup_sets: Mapping[str, Mapping[str, Any]], now: float, last_n: int = LAST_N) -> dict[str, Any]:
    """Per service, domain and tier: declared vs measured RTO/RPO, backup freshness, verdict.

    "latest" is the newest drill that measured that number (a backup drill measures no MTTR path for
    a service, a drill without load no data loss); "worst" is over the last ``last_n`` drills."""
    records = sorted((d for d in drills if d.get("status") in ("passed", "failed")),
                     key=lambda d: float(d.get("started", 0)), reverse=True)
    coverage = backup_coverage(bp, backup_sets)
    services: dict[str, dict[str, Any]] = {}
    for sid, view in sorted(bp.services.items(), key=lambda kv: (kv[1].tier, kv[0])):
        mine = [d for d in records if sid in (d.get("services") or [])][:last_n]
        metrics = [d.get("metrics") or {} for d in mine]
        mttrs = [_f(m.get("mttr")) for m in metrics]
        rpos = [service_rpo(m, sid) for m in metrics]  # a failover's own loss report (prepare) counts too
        latest = mine[0] if mine else None
        row: dict[str, Any] = {
            "service": sid, "domain": view.domain, "tier": view.tier,
            "rto": {"declared": view.rto, "latest": next((v for v in mttrs if v is not None), None),
                    "worst": max((v for v in mttrs if v is not None), default=None)},
            "rpo": {"declared": view.rpo, "latest": next((v for v in rpos if v is not None), None),
                    "worst": max((v for v in rpos if v is not None), default=None)},
            "drills": len(mine), "latest_drill": latest.get("id") if latest else None,
            "latest_scenario": latest.get("scenario") if latest else None,
            "latest_status": latest.get("status") if latest else None,
            "unmeasured": any(v is None for v in mttrs) and not any(v is not None for v in mttrs),
            "backup": _backup_view(coverage.get(sid, []), backup_status, backup_sets, view.rpo, now),
        }
        row["verdict"] = _verdict(row)
        services[sid] = row
    return {"generated": now, "last_n": last_n, "services": services,
            "domains": _rollup(services, "domain"), "tiers": _rollup(services, "tier"),
            "verdict": _overall(services.values())}


def _verdict(row: Mapping[str, Any]) -> str:
    if not row["drills"] or (row["rto"]["worst"] is None and row["rpo"]["worst"] is None):
        return "untested"
    ok = True
    if row["rto"]["worst"] is None or row["rto"]["worst"] > row["rto"]["declared"]:
        ok = False
    if row["rpo"]["worst"] is not None and row["rpo"]["worst"] > row["rpo"]["declared"]:
        ok = False
    if row["latest_status"] != "passed":
        ok = False
    if row["backup"]["fresh"] is False:
        ok = False
    return "pass" if ok else "fail"


def _overall(rows: Iterable[Mapping[str, Any]]) -> str:
    verdicts = [r["verdict"] for r in rows]
    if "fail" in verdicts:
        return "fail"
    if "untested" in verdicts:
        return "untested"
    return "pass"


def _rollup(services: Mapping[str, Mapping[str, Any]], key: str) -> dict[str, Any]:
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in services.values():
        groups.setdefault(row[key], []).append(row)
    return {str(k): {"services": [r["service"] for r in rows], "verdict": _overall(rows),
                     "worst_rto": max((r["rto"]["worst"] for r in rows if r["rto"]["worst"] is not None),
                                      default=None),
                     "worst_rpo": max((r["rpo"]["worst"] for r in rows if r["rpo"]["worst"] is not None),
                                      default=None)}
            for k, rows in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def _ts(value: Any) -> str:
    t = _f(value)
    if t is None:
        return "—"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _verified(row: Mapping[str, Any]) -> str:
    """When the set's last restore drill ran, marked ✗ when it failed; "never" when none ran yet."""
    if row["last_verified_restore"] is None:
        return "never"
    return _ts(row["last_verified_restore"]) + ("" if row["last_verify_ok"] else " ✗ failed")


def scorecard_markdown(card: Mapping[str, Any]) -> str:
    lines = [f"# Continuity scorecard — {_ts(card['generated'])}", "",
             f"Overall: **{card['verdict']}** (measured = latest drill / worst of the last {card['last_n']})", ""]
    by_tier: dict[int, list[Mapping[str, Any]]] = {}
    for row in card["services"].values():
        by_tier.setdefault(int(row["tier"]), []).append(row)
    for tier in sorted(by_tier):
        lines += [f"## Tier {tier} — {card['tiers'][str(tier)]['verdict']}", "",
                  "| service | domain | RTO declared | RTO measured | RPO declared | RPO measured "
                  "| backup age (target) | last verified restore | drills | verdict |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in by_tier[tier]:
            b = r["backup"]["sets"]
            age = ", ".join(f"{_dur(s['last_snapshot_age'])} ({_dur(s['target_rpo'])})" for s in b) or "—"
            verified = ", ".join(_verified(s) for s in b) or "—"
            lines.append(f"| {r['service']} | {r['domain']} | {_dur(r['rto']['declared'])} "
                         f"| {_dur(r['rto']['latest'])} / {_dur(r['rto']['worst'])} | {_dur(r['rpo']['declared'])} "
                         f"| {_dur(r['rpo']['latest'])} / {_dur(r['rpo']['worst'])} | {age} | {verified} "
                         f"| {r['drills']} | **{r['verdict']}** |")
        lines.append("")
    lines += ["## Domains", "", "| domain | services | worst RTO | worst RPO | verdict |", "|---|---|---|---|---|"]
    for dom, info in card["domains"].items():
        lines.append(f"| {dom} | {', '.join(info['services'])} | {_dur(info['worst_rto'])} "
                     f"| {_dur(info['worst_rpo'])} | **{info['verdict']}** |")
    return "\n".join(lines) + "\n"


# --- history: the drill timeline, failovers with their steps, trends ----------------------------------------
def _num(value: Any, digits: int = 3) -> float | None:
    f = _f(value)
    return None if f is None else round(f, digits)


def drill_summary(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One drill as the timeline shows it: when, what, pass/fail, and what it measured."""
    m = doc.get("metrics") or {}
    lost = m.get("data_lost")
    return {"id": doc.get("id"), "scenario": doc.get("scenario"), "status": doc.get("status"),
            "started": _num(doc.get("started")), "finished": _num(doc.get("finished")),
            "services": list(doc.get("services") or []),
            "detection": _num(m.get("detection_time")), "mttr": _num(m.get("mttr")),
            "achieved_rpo": _num(m.get("achieved_rpo")),
            "data_lost": lost if isinstance(lost, int) and not isinstance(lost, bool) else None,
            "failovers": m.get("failover_count") if isinstance(m.get("failover_count"), int) else None}


def failover_summary(rec: Mapping[str, Any]) -> dict[str, Any]:
    """One failover record with its steps placed on its own time axis (seconds from its start): the swimlanes."""
    started = _f(rec.get("started")) or 0.0
    steps = []
    for s in rec.get("steps") or []:
        start = _f(s.get("start"))
        steps.append({"attempt": s.get("attempt"), "step": s.get("step"), "node": s.get("node"),
                      "offset": None if start is None else round(start - started, 3),
                      "duration": _num(s.get("duration")), "ok": s.get("ok"), "error": s.get("error")})
    detail = rec.get("finish_detail") or {}
    return {"id": rec.get("id"), "service": rec.get("service"), "kind": rec.get("kind"),
            "outcome": rec.get("outcome"), "who": rec.get("who"),
            "reason": detail.get("reason") or rec.get("reason") or None,
            "from": rec.get("old_primary"), "to": rec.get("new_primary") or rec.get("candidate"),
            "started": _num(started), "duration": _num(rec.get("duration")),
            "detection": _num(rec.get("detection")), "mttr": _num(rec.get("mttr")),
            "lease_wait": _num(rec.get("lease_wait")), "steps": steps}


def history(drills: Iterable[Mapping[str, Any]], failovers: Iterable[Mapping[str, Any]], now: float,
            limit: int = HISTORY_N) -> dict[str, Any]:
    """The last ``limit`` drills and failovers, oldest first (the order of a timeline and of a trend line)."""
    ds = sorted(drills, key=lambda d: _f(d.get("started")) or 0.0, reverse=True)[:limit]
    fs = sorted(failovers, key=lambda r: _f(r.get("started")) or 0.0, reverse=True)[:limit]
    return {"history_n": limit, "drills": [drill_summary(d) for d in reversed(ds)],
            "failovers": [failover_summary(r) for r in reversed(fs)]}


def backup_freshness(sets: Mapping[str, Mapping[str, Any]], status: Mapping[str, Mapping[str, Any]],
                     now: float) -> list[dict[str, Any]]:
    """Every configured backup set: age of its last snapshot against its RPO, and of its last verified restore."""
    out = []
    for set_id in sorted(sets):
        st = status.get(set_id) or {}
        snap, verify = _f(st.get("last_snapshot_time")), _f(st.get("last_verify_time"))
        age = None if snap is None else round(max(0.0, now - snap), 3)
        target = _f(sets[set_id].get("rpo"))
        out.append({"set": set_id, "services": list(sets[set_id].get("services") or []),
                    "last_snapshot_age": age, "target_rpo": target,
                    "fresh": None if age is None or target is None else age <= target,
                    "last_verify_age": None if verify is None else round(max(0.0, now - verify), 3),
                    "last_verify_ok": None if verify is None else st.get("last_verify_ok") in ("1", 1, True)})
    return out


# --- postmortems ----------------------------------------------------------------------------------------------
# kinds left out of a postmortem's timeline: routine liveness, not part of any incident's story
NOISE = frozenset({NODE_PING})


def timeline(events: Iterable[Mapping[str, Any]], origin: float, limit: int = 200) -> list[str]:
    rows = []
    for ev in sorted(events, key=lambda e: float(e.get("ts", 0))):
        kind = short(str(ev.get("kind", "")))
        if kind in NOISE:
            continue
        data = ev.get("data") or {}
        brief = ", ".join(f"{k}={v}" for k, v in data.items()
                          if k in ("step", "ok", "duration", "from", "to", "outcome", "status", "mode", "fault",
                                   "reason", "state", "action", "errors"))
        who = "/".join(str(x) for x in (ev.get("node"), ev.get("service")) if x)
        ts = float(ev.get("ts", 0))
        rows.append(f"| {_ts(ts)[11:19]} | {ts - origin:+.3f}s | `{kind}` | {who or '—'} | {brief[:160] or '—'} |")
    if len(rows) > limit:
        rows = rows[:limit // 2] + [f"| … | | {len(rows) - limit} events omitted | | |"] + rows[-limit // 2:]
    return ["| time | offset | event | node/service | detail |", "|---|---|---|---|---|"] + rows


def findings(record: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """What went wrong, and what to do about it, derived from the failed expectations."""
    found: list[str] = []
    todo: list[str] = []
    m = record.get("metrics") or {}
    steps = sorted(m.get("failover_steps") or [], key=lambda s: -float(s.get("duration", 0)))
    for e in record.get("expectations") or []:
        if e.get("ok"):
            continue
        name = e.get("name", "")
        expected, measured = text.expectation(e)
        found.append(f"{name}: expected {expected}, measured {measured}"
                     + (f" ({e['note']})" if e.get("note") else ""))
        if "MTTR" in name:
            slow = f"; slowest failover step: {steps[0]['step']} ({_dur(steps[0]['duration'])})" if steps else ""
            todo.append(f"Bring recovery under the RTO{slow}: tune detection timings or speed up that step.")
        elif "RPO" in name or "lost" in name:
            todo.append("Acknowledged data was lost: make the standby's copy fresher before promotion "
                        "(replicate before acknowledging, or restore the newest verified snapshot).")
        elif "detected" in name:
            todo.append("Detection was slow or absent: review heartbeat_interval / dead_after and the probes.")
        elif "rollback" in name:
            todo.append("A rollback failed: fix its cause; `continuity drill run` (or `drill recover`) "
                        "finishes pending rollbacks on its next start.")
        elif "steady state after" in name:
            todo.append("The system did not return to steady state after rollback: treat as a real incident.")
        elif "failover" in name:
            todo.append("Failover behaviour differed from the expectation: check the detector and the pauses.")
        else:
            todo.append(f"Investigate: {name}.")
    if record.get("aborted"):
        found.append(f"Drill aborted: {record['aborted']}")
    if record.get("error"):
        found.append(f"Runner error: {record['error']}")
    if not found:
        found.append("Every expectation held.")
        todo.append("None required; keep this drill on the game-day calendar.")
    return found, todo


def _metrics_table(record: Mapping[str, Any]) -> str:
    m = record.get("metrics") or {}
    o = record.get("objectives") or {}
    rows = [("Time to detection", _dur(_f(m.get("detection_time"))), _dur(_f(o.get("detection")))),
            ("MTTR (fault → steady state)", _dur(_f(m.get("mttr"))), _dur(_f(o.get("rto")))),
            ("Achieved RPO", _dur(_f(m.get("achieved_rpo"))), _dur(_f(o.get("rpo")))),
            ("Acknowledged writes lost", str(m.get("data_lost", "—")), str(o.get("data_lost", "—"))),
            ("Writes sent / acknowledged", f"{m.get('writes_sent', 0)} / {m.get('writes_acked', 0)}", ""),
            ("Failovers", str(m.get("failover_count", 0)), str(o.get("failovers", ""))),
            ("Integrity", "ok" if m.get("integrity_ok", True) else "damaged", "")]
    out = ["| metric | measured | objective |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    steps = m.get("failover_steps") or []
    if steps:
        out += ["", "| failover step | service | node | duration | ok |", "|---|---|---|---|---|"]
        out += [f"| {s['step']} | {s.get('service') or '—'} | {s.get('node') or '—'} | {_dur(_f(s['duration']))} "
                f"| {text.plain(s.get('ok'))} |" for s in steps]
    losses = m.get("failover_loss") or []
    if losses:
        out += ["", "| failover prepared from | service | records lost | seconds lost |", "|---|---|---|---|"]
        out += [f"| {text.plain(e.get('source'))} | {text.plain(e.get('service'))} "
                f"| {text.plain(e.get('loss_records'))} | {_dur(_f(e.get('loss_seconds')))} |" for e in losses]
    return "\n".join(out)


def approvals_section(record: Mapping[str, Any]) -> str:
    """Who approved the drill (steward approvals it ran under, verified at its start), or that none was needed."""
    rows = record.get("approvals") or []
    if not rows:
        return "None recorded: no steward approval was required when it started (ops/stewards.yml)."
    out = ["| steward | key id | approved | valid until |", "|---|---|---|---|"]
    out += [f"| {a.get('name', '?')} | `{a.get('key_id', '?')}` | {_ts(a.get('at'))} | {_ts(a.get('expires'))} |"
            for a in rows]
    return "\n".join(out)


def _fill(template: str, values: Mapping[str, str]) -> str:
    out = template
    for k, v in values.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def render_postmortem(record: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                      template: str | None = None) -> str:
    """A drill record (or a failover record, see :func:`failover_as_record`) as a draft postmortem."""
    template = template if template is not None else TEMPLATE.read_text(encoding="utf-8")
    found, todo = findings(record)
    origin = _f(record.get("fault_at")) or _f(record.get("started")) or 0.0
    target = record.get("target") or {}
    fault = record.get("fault") or {}
    m = record.get("metrics") or {}
    summary = (f"{record.get('kind', 'Drill')} `{record.get('scenario', record.get('id'))}` "
               f"{record.get('status', 'unknown')}: {record.get('action') or fault.get('type', '')}. "
               f"MTTR {_dur(_f(m.get('mttr')))}, detection {_dur(_f(m.get('detection_time')))}, "
               f"{m.get('data_lost', 'unknown')} acknowledged writes lost.")
    expectations = ["| expectation | expected | measured | held |", "|---|---|---|---|"]
    expectations += [f"| {e.get('name')} | {' | '.join(text.expectation(e))} "
                     f"| {'yes' if e.get('ok') else 'NO'} |" for e in record.get("expectations") or []]
    values = {
        "title": str(record.get("title") or record.get("scenario") or record.get("id")),
        "kind": str(record.get("kind", "drill")), "id": str(record.get("id")),
        "status": str(record.get("status")), "environment": str(record.get("environment", "—")),
        "started": _ts(record.get("started")),
        "trigger": str(record.get("action") or fault.get("type") or "—"),
        "target": ", ".join(target.get("nodes") or []) or target.get("kind", "—"),
        "services": ", ".join(record.get("services") or []) or "—",
        "summary": summary, "approvals": approvals_section(record), "metrics": _metrics_table(record),
        "expectations": "\n".join(expectations),
        "timeline": "\n".join(timeline(events, origin)),
        "findings": "\n".join(f"- {f}" for f in found), "remediation": "\n".join(f"- [ ] {t}" for t in todo),
    }
    return _fill(template, values)


def failover_as_record(rec: Mapping[str, Any], environment: str) -> dict[str, Any]:
    """A real failover record in the drill-record shape, so one template serves both.

    ``environment`` is the fleet's own ($CONTINUITY_ENV): a failover on a developer's fleet is not one in
    production, and the postmortem must not say so."""
    outcome = rec.get("outcome")
    steps = [{"step": s.get("step"), "duration": s.get("duration") or 0.0, "service": rec.get("service"),
              "node": s.get("node"), "ok": s.get("ok")} for s in rec.get("steps") or []]
    expectations = []
    if rec.get("mttr") is not None and rec.get("rto") is not None:
        expectations.append({"name": "MTTR within RTO", "expected": rec["rto"], "measured": rec["mttr"],
                             "ok": float(rec["mttr"]) <= float(rec["rto"])})
    expectations.append({"name": "failover succeeded", "expected": "succeeded", "measured": outcome,
                         "ok": outcome == "succeeded"})
    return {
        "id": rec.get("id"), "kind": "Failover", "title": f"failover of {rec.get('service')}",
        "scenario": rec.get("id"), "status": outcome, "started": rec.get("started"),
        "fault_at": rec.get("last_seen") or rec.get("started"), "environment": environment,
        "action": f"{rec.get('old_primary')} → {rec.get('new_primary') or rec.get('candidate')} ({rec.get('reason')})",
        "target": {"kind": "node", "nodes": [rec.get("old_primary")] if rec.get("old_primary") else []},
        "services": [rec.get("service")],
        "metrics": {"mttr": rec.get("mttr"), "detection_time": rec.get("detection"), "failover_count": 1,
                    "failover_steps": steps, "data_lost": "unknown", "writes_sent": 0, "writes_acked": 0},
        "objectives": {"rto": rec.get("rto")}, "expectations": expectations,
    }


def postmortem_dir() -> Path:
    return paths.state_dir() / "postmortems"


def write_postmortem(record: Mapping[str, Any], events: Iterable[Mapping[str, Any]],
                     out_dir: Path | None = None) -> Path:
    out = Path(out_dir) if out_dir else postmortem_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{record.get('id')}.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_postmortem(record, events), encoding="utf-8")
    tmp.replace(path)
    return path


# --- readers (shell) ------------------------------------------------------------------------------------------
def read_backup_sets(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """Set id -> {paths, rpo} from ops/backup/continuity.yml, read defensively (a broken file = no sets)."""
    try:
        doc = load_document(path or paths.backup_config_path())
    except ContinuityError:
        return {}
    sets = doc.data.get("sets") if isinstance(doc.data, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for set_id, body in (sets or {}).items():
        if not isinstance(body, dict):
            continue
        sources = [s for s in body.get("sources") or [] if isinstance(s, dict)]
        srcs = [s["path"] for s in sources if s.get("path")]
        services = [str(s["service"]) for s in sources if s.get("kind") == "service" and s.get("service")]
        try:
            rpo = parse_duration(body["rpo"]) if "rpo" in body else None
        except ValueError:
            rpo = None
        out[str(set_id)] = {"paths": srcs, "services": services, "rpo": rpo}
    return out


def read_backup_status(client: Any, set_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for set_id in set_ids:
        try:
            raw = backups.read(client, set_id)
        except Exception:  # noqa: BLE001
            raw = {}
        if raw:
            out[set_id] = dict(raw)
    return out


def read_drills(client: Any, limit: int = 200) -> list[dict[str, Any]]:
    return [dict(d.doc) for d in drill_state.history(client, limit)]


def read_failovers(client: Any, limit: int = HISTORY_N) -> list[dict[str, Any]]:
    """The newest failover records, newest first (the same records `continuity failover history` reads)."""
    out = []
    for rid in failover_records.history_ids(client, limit):
        raw = failover_records.read(client, rid)
        if raw is not None:
            out.append(failover_records.assemble(raw.fields))
    return out


def build(client: Any, bp: Blueprint, now: float, last_n: int = LAST_N,
          history_n: int = HISTORY_N) -> dict[str, Any]:
    """The scorecard with the recent drills, failovers and every backup set: what ``report`` shows in any form."""
    sets = read_backup_sets()
    drills = read_drills(client)
    status = read_backup_status(client, sets)
    card = scorecard(bp, drills, status, sets, now, last_n)
    card["fleet"] = bp.model.fleet
    card.update(history(drills, read_failovers(client, history_n), now, history_n))
    card["backups"] = backup_freshness(sets, status, now)
    return card
