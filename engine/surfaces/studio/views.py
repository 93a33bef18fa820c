"""What the studio page shows, as JSON: the policies in the words their files use (descriptions and
the comments written above each entry), the edit paths of every cell, and the impact of the edits.

Every figure is formatted here, through the same `Reader` and units `kam diff` prints with (money by
its unit with the currency in its label, shares as %, counts grouped, in the readers' locale), so the
page and the command line show one value one way; the page only places the texts.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...language.load import LocatedDoc, load_text
from ...language.edit import comment_above
from ...language.errors import PolicyError
from ...language.figures import Reader, reader as locale_reader
from ...language.plan import Plan
from ...language.units import COUNT, MONEY, PERCENT, PLAIN, Unit, units_of
from ...run.impact import DecisionDiff, NONE
from ...run.replay import PeriodReplay
from ...run.workspace import Evaluation, Workspace
from ..policy_tests import SuiteResult

HIT_WORDS = {
    "first": "the first rule that matches decides",
    "unique": "exactly one rule may match",
    "priority": "of the rules that match, the highest value wins",
    "any": "the rules that match must agree",
    "collect": "every rule that matches is listed",
    "output-order": "every rule that matches is listed, in the order of the values",
}
SHOWN_MOVERS = 50


def _none(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def money(v: float | None, unit: Unit | None = None, reader: Reader | None = None) -> str:
    """An amount as `kam diff` prints it: by its unit (grouped, its decimals), in the reader's locale;
    the currency is in its label (`label`)."""
    return "-" if _none(v) else (reader or locale_reader(None)).number(v, unit or Unit(MONEY))


def share(v: float | None, reader: Reader | None = None) -> str:
    """A share as %, in the reader's locale."""
    return "-" if _none(v) else (reader or locale_reader(None)).number(v, Unit(PERCENT))


def count(n: int, reader: Reader | None = None) -> str:
    """A number of entities, grouped in the reader's locale."""
    return (reader or locale_reader(None)).number(n, Unit(COUNT))


def figure(v: Any, unit: Unit | None = None, reader: Reader | None = None) -> str:
    """A measure's value by its unit (a share as %, money with its decimals, a count grouped)."""
    if _none(v):
        return "missing"
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return (reader or locale_reader(None)).number(float(v), unit or PLAIN)
    return str(v)


def label(name: str, unit: Unit | None, reader: Reader | None = None) -> str:
    """A figure's name as a heading: with the currency where it is money (`profit (CN¥)`)."""
    unit = unit or PLAIN
    return (reader or locale_reader(None)).label(name, unit) if unit.kind == MONEY else name



def _header(lines: list[str]) -> str:
    out = []
    for ln in lines:
        s = ln.strip()
        if not s.startswith("#"):
            break
        if "yaml-language-server" not in s:
            out.append(s.lstrip("#").strip())
    return "\n".join(out).strip()


def _scalar_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return "" if v is None else str(v)


def _param_unit(name: str, value: Any, sources: list[str], facts: Mapping[str, Any]) -> str:
    """percent for a share written with %, money for a cutoff compared with a money fact (`measure:
    true`), count for one compared with a whole-number fact, else number."""
    if isinstance(value, str) and value.strip().endswith("%"):
        return "percent"
    for src in sources:
        n = re.escape(name)
        for m in re.finditer(rf"(\w+)\s*(?:<=|>=|<|>|==|!=)\s*{n}\b|\b{n}\s*(?:<=|>=|<|>|==|!=)\s*(\w+)", src):
            other = facts.get(m.group(1) or m.group(2))
            if other is not None and other.measure:
                return "money"
            if other is not None and other.type == "integer":
                return "count"
    return "number"


def _readers(name: str, data: Mapping[str, Any]) -> list[str]:
    """Where a parameter is read: features, rule conditions and reason texts that name it."""
    word = re.compile(rf"(?<![\w.]){re.escape(name)}(?![\w])")
    out = []
    for feature, src in (data.get("derive") or {}).items():
        if isinstance(src, str) and word.search(src):
            out.append(f"feature {feature}")
    for d in (data.get("decisions") or {}).values():
        for r in (d or {}).get("rules") or []:
            if not isinstance(r, dict):
                continue
            if word.search(str(r.get("when", ""))):
                out.append(f"rule {r.get('id')} (condition)")
            if word.search(str(r.get("because", ""))):
                out.append(f"rule {r.get('id')} (reason)")
    for m, src in (data.get("measures") or {}).items():
        if isinstance(src, str) and word.search(src):
            out.append(f"measure {m}")
    return out


_LOOKUP = re.compile(r"\s*lookup\(\s*(\w+)\s*,\s*\{([^{}]*)\}\s*\)\s*")
_ENTRY = re.compile(r"\s*([\w-]+)\s*:\s*(-?[0-9.]+%?)\s*")


def lookup_table(source: str) -> dict[str, Any] | None:
    """A feature that is a table of numbers by a value (`lookup(tier, {A: 0.80, B: 0.85})`, a floor per
    tier) as its cells, when it is written in the one form the page writes back; else None."""
    m = _LOOKUP.fullmatch(source)
    if not m:
        return None
    entries = []
    for part in m.group(2).split(","):
        e = _ENTRY.fullmatch(part)
        if not e:
            return None
        entries.append([e.group(1), e.group(2)])
    if source != f"lookup({m.group(1)}, {{{', '.join(f'{k}: {v}' for k, v in entries)}}})":
        return None
    return {"over": m.group(1), "entries": entries}


def _rule_view(r: Any, i: int, lines: list[str], doc: LocatedDoc, path: tuple[Any, ...]) -> dict[str, Any]:
    r = r if isinstance(r, dict) else {}
    then = r.get("then")
    line = doc.loc(path).line if doc.locs else 0
    return {
        "index": i, "id": _scalar_text(r.get("id")), "when": _scalar_text(r.get("when")),
        "then": _scalar_text(then) if not isinstance(then, (dict, list)) else None,
        "then_text": _scalar_text(then) if not isinstance(then, (dict, list)) else
        ", ".join(f"{k}: {v}" for k, v in then.items()) if isinstance(then, dict) else str(then),
        "because": _scalar_text(r.get("because")), "quota": "quota" in r, "path": list(path),
        "comment": comment_above(lines, line) if line else "",
    }


def _decision_view(name: str, d: Any, lines: list[str], doc: LocatedDoc) -> dict[str, Any]:
    d = d if isinstance(d, dict) else {}
    hit = str(d.get("hit", "first"))
    rules = d.get("rules") or []
    return {
        "name": name, "description": _scalar_text(d.get("description")), "hit": hit,
        "hit_words": HIT_WORDS.get(hit, hit), "values": [str(v) for v in d.get("values") or []],
        "target": {str(k): _scalar_text(v) for k, v in (d.get("target") or {}).items()},
        "path": ["decisions", name],
        "rules": [_rule_view(r, i, lines, doc, ("decisions", name, "rules", i)) for i, r in enumerate(rules)],
    }


def policy_view(name: str, text: str, folder: Path, plan: Plan | None) -> dict[str, Any]:
    """One policy file as the page shows it."""
    lines = text.splitlines()
    try:
        doc = load_text(text, str(folder / name))
    except PolicyError as exc:
        return {"file": name, "broken": exc.problems[0].message}
    data = doc.data if isinstance(doc.data, dict) else {}
    entity = str(data.get("entity", ""))
    facts: Mapping[str, Any] = {}
    if plan is not None and entity in plan.checked.policy_set.entities:
        facts = plan.checked.policy_set.facts(entity)
    sources = [str(s) for s in (data.get("derive") or {}).values()] + [
        str(r.get("when", "")) for d in (data.get("decisions") or {}).values() if isinstance(d, dict)
        for r in d.get("rules") or [] if isinstance(r, dict)]
    params = []
    for pname, value in (data.get("params") or {}).items():
        line = doc.key_loc(("params", pname)).line
        params.append({"name": pname, "value": value if not isinstance(value, bool) else str(value).lower(),
                       "text": _scalar_text(value), "unit": _param_unit(pname, value, sources, facts),
                       "comment": comment_above(lines, line), "readers": _readers(pname, data),
                       "path": ["params", pname]})
    return {
        "file": name, "policy": _scalar_text(data.get("policy")), "entity": entity,
        "description": _scalar_text(data.get("description")), "header": _header(lines),
        "params": params,
        "derive": [{"name": k, "source": _scalar_text(v), "path": ["derive", k], "table": lookup_table(_scalar_text(v)),
                    "comment": comment_above(lines, doc.key_loc(("derive", k)).line)}
                   for k, v in (data.get("derive") or {}).items()],
        "decisions": [_decision_view(k, v, lines, doc) for k, v in (data.get("decisions") or {}).items()],
        "invariants": [{"id": _scalar_text(i.get("id")), "kind": "never" if "never" in i else "always",
                        "condition": _scalar_text(i.get("never", i.get("always"))),
                        "because": _scalar_text(i.get("because"))}
                       for i in data.get("invariants") or [] if isinstance(i, dict)],
        "measures": [{"name": k, "source": _scalar_text(v)} for k, v in (data.get("measures") or {}).items()],
    }


def _order(values: list[str], declared: list[str]) -> list[str]:
    rank = {v: i for i, v in enumerate(declared)}
    return sorted(values, key=lambda v: (v == NONE, rank.get(v, len(rank)), v))


def decision_impact(d: DecisionDiff, declared: list[str], measures: list[str], reader: Reader | None = None,
                    units: Mapping[str, Unit] | None = None) -> dict[str, Any]:
    """One decision's transition matrix with the entities and money per cell (`labels`: the headings of
    the money, with its currency)."""
    units = units or {}
    out: dict[str, Any] = {"entity": d.entity, "decision": d.decision, "status": d.status, "total": d.total,
                           "changed": d.changed, "changed_text": f"{count(d.changed, reader)} of "
                           f"{count(d.total, reader)} ({share(d.share, reader)})",
                           "money": {m: money(v, units.get(m), reader) for m, v in d.money.items()},
                           "labels": {m: label(m, units.get(m), reader) for m in [*d.money, *measures]},
                           "rules": [{"rule": r, "before": count(b, reader), "after": count(n, reader),
                                      "delta": ("+" if n > b else "") + count(n - b, reader)}
                                     for r, b, n in d.rules]}
    if d.cells is None or d.status in ("added", "removed"):
        out.update(rows=[], cols=[], cells={})
        return out
    rows = _order([str(x) for x in d.matrix.index], declared)
    cols = _order([str(x) for x in d.matrix.columns], declared)
    cells: dict[str, dict[str, Any]] = {}
    for (b, n), rec in d.cells.iterrows():
        n_in = int(rec["entities"])
        cells[f"{b}\u0000{n}"] = {"entities": n_in, "entities_text": count(n_in, reader),
                                  "money": {m: money(float(rec[m]), units.get(m), reader) for m in measures}}
    out.update(rows=rows, cols=cols, cells=cells, measures=measures)
    return out


def impact_view(ws: Workspace, ev: Evaluation, reader: Reader | None = None) -> dict[str, Any]:
    """Everything the impact panel shows for one set of edits, the figures in the reader's locale."""
    problems = [{"file": f, "path": list(p), "line": pr.loc.line, "col": pr.loc.col, "severity": pr.severity,
                 "code": pr.code, "message": pr.message, "hint": pr.hint} for pr, f, p in ev.problem_paths]
    out: dict[str, Any] = {"ok": ev.ok, "problems": problems, "diff": ws.diff(ev.texts),
                           "changed_files": [n for n, t in ev.texts.items() if t != ws.sources[n].text]}
    if not ev.ok or ev.comparison is None or ev.run is None or ev.findings.plan is None:
        return out
    plan = ev.findings.plan
    decisions = []
    for d in ev.comparison.decisions:
        declared = []
        if d.status != "removed":
            dec = next(x for x in plan.entity(d.entity).decisions if x.name == d.decision)
            declared = [str(v) for v in dec.main.values or ()]
        measures = [c for c in (d.cells.columns if d.cells is not None else []) if c != "entities"]
        # revenue and profit first: what a cell's money means to a sales director
        measures.sort(key=lambda m: (0 if "revenue" in m else 1 if "profit" in m else 2))
        decisions.append(decision_impact(d, declared, measures, reader, ev.comparison.units.get(d.entity)))
    out["decisions"] = decisions
    out["invariants"] = [{**i.to_dict(), "because": i.because, "text": i.text(reader)}
                         for i in ev.comparison.invariants]
    before, after = ws.run.measures(), ev.run.measures()
    units = {e: units_of(plan.checked.policy_set, e) for e in after}
    out["measures"] = [{"entity": e, "name": k, "label": label(k, units[e].get(k), reader),
                        "before": figure(before.get(e, {}).get(k), units[e].get(k), reader),
                        "after": figure(v, units[e].get(k), reader), "changed": before.get(e, {}).get(k) != v}
                       for e, ms in after.items() for k, v in ms.items()]
    out["targets"] = _targets(ws, ev, plan, reader)
    out["rule_counts"] = _rule_counts(ws, ev, plan, reader)
    return out


def _rule_counts(ws: Workspace, ev: Evaluation, plan: Plan, reader: Reader | None = None
                 ) -> dict[str, dict[str, list[str]]]:
    """Per decision (`entity.decision`), per rule id: how many entities it decides now and edited."""
    assert ev.run is not None
    out: dict[str, dict[str, list[str]]] = {}
    for ep in plan.entities:
        for d in ep.decisions:
            after = ws.counted(ev.run, ep.entity, d.name)
            before = ws.counted(ws.run, ep.entity, d.name) if ep.entity in ws.run.results and \
                d.name in ws.run.results[ep.entity].decisions else {}
            out[f"{ep.entity}.{d.name}"] = {r: [count(before.get(r, 0), reader), count(after.get(r, 0), reader)]
                                            for r in dict.fromkeys([*before, *after])}
    return out


def _targets(ws: Workspace, ev: Evaluation, plan: Plan, reader: Reader | None = None) -> list[dict[str, Any]]:
    assert ev.run is not None
    out = []
    before_counts, after_counts = ws.run.counts(), ev.run.counts()
    for ep in plan.entities:
        for d in ep.decisions:
            if not d.target:
                continue
            n = len(ev.run.frames_in[ep.entity]) or 1
            b = before_counts.get(ep.entity, {}).get(d.name, {})
            a = after_counts.get(ep.entity, {}).get(d.name, {})
            out.append({"entity": ep.entity, "decision": d.name, "rows": [
                {"value": str(v), "target": share(float(t), reader), "before": share(b.get(str(v), 0) / n, reader),
                 "after": share(a.get(str(v), 0) / n, reader), "target_share": float(t),
                 "after_share": a.get(str(v), 0) / n}
                for v, t in d.target]})
    return out


def tests_view(suite: SuiteResult) -> dict[str, Any]:
    """The policy test cases re-run on the edited policies."""
    return {"passed": suite.passed, "failed": suite.failed,
            "cases": [{"file": Path(r.file).name, "line": r.loc.line, "name": r.name, "passed": r.passed,
                       "failures": r.failures} for r in suite.results]}


def pareto(ws: Workspace, points: int = 200) -> list[dict[str, Any]]:
    """For each parameter compared with a cumulative share (`x: cumshare(fact)` and `x <= param`), the
    curve of that share over the entities ranked by the fact: what the page draws the cutoff on."""
    out = []
    for name, src in ws.sources.items():
        doc = load_text(src.text, str(ws.folder / name))
        data = doc.data if isinstance(doc.data, dict) else {}
        derive = {k: str(v) for k, v in (data.get("derive") or {}).items()}
        entity = str(data.get("entity", ""))
        for feature, expr in derive.items():
            m = re.fullmatch(r"\s*cumshare\((\w+)\)\s*", expr)
            if not m or entity not in ws.run.frames_in:
                continue
            fact = m.group(1)
            for pname in data.get("params") or {}:
                pattern = rf"\b{re.escape(feature)}\s*<=?\s*{re.escape(str(pname))}\b"
                compared = [s for s in list(derive.values()) if re.search(pattern, s)]
                if not compared:
                    continue
                values = ws.run.frames_in[entity][fact].to_numpy(dtype=float)
                values = np.sort(values[~np.isnan(values)])[::-1]
                total = values.sum()
                if not len(values) or not total:
                    continue
                cum = np.cumsum(values) / total
                idx = np.unique(np.linspace(0, len(values) - 1, min(points, len(values))).astype(int))
                out.append({"file": name, "param": pname, "feature": feature, "fact": fact, "entity": entity,
                            "n": int(len(values)),
                            "x": [round(float((i + 1) / len(values)), 5) for i in idx],
                            "y": [round(float(cum[i]), 5) for i in idx]})
    return out


def replay_view(periods: list[PeriodReplay], reader: Reader | None = None,
                units: Mapping[str, Mapping[str, Unit]] | None = None) -> dict[str, Any]:
    """The replay over the recorded periods: per decision that differs anywhere, a row per period (the
    figures in the reader's locale, money by its unit in `units` per entity, headed by `labels`)."""
    units = units or {}
    names: list[tuple[str, str]] = []
    for p in periods:
        for d in p.decisions:
            then, mine, _ = p.bounced.get((d.entity, d.decision), (0, 0, 0))
            if (d.changed or then != mine) and (d.entity, d.decision) not in names:
                names.append((d.entity, d.decision))
    out = []
    for entity, decision in names:
        rows: list[dict[str, Any]] = []
        for p in periods:
            found = next((x for x in p.decisions if (x.entity, x.decision) == (entity, decision)), None)
            if found is None:
                rows.append({"period": p.period, "note": p.note or "not in this period"})
                continue
            d = found
            then, mine, both = p.bounced.get((entity, decision), (0, 0, 0))
            measures = sorted(d.money, key=lambda m: (0 if "revenue" in m else 1 if "profit" in m else 2))[:2]
            known = units.get(entity, {})
            rows.append({"period": p.period, "entities": count(d.total, reader), "changed": count(d.changed, reader),
                         "money": {m: money(d.money[m], known.get(m), reader) for m in measures},
                         "labels": {m: label(m, known.get(m), reader) for m in measures},
                         "bounced_then": count(then, reader) if both else "-",
                         "bounced_edited": count(mine, reader) if both else "-", "present_both": count(both, reader)})
        out.append({"entity": entity, "decision": decision, "rows": rows})
    return {"periods": [p.period for p in periods], "decisions": out,
            "notes": [f"{p.period}: {p.note}" for p in periods if p.note]}
