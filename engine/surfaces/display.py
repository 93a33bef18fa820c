"""How the Python API's objects show in a notebook: the policy set, a run's decisions, an explanation
and problems as small HTML tables (every text escaped: ids, names and reasons come from files), and
one plain line each for `repr`."""

from __future__ import annotations

import html
from typing import Any, Iterable

import pandas as pd

from ..batch.explain import Trace
from ..batch.result import RunResult
from ..language.errors import Problem
from ..language.numbers import number_text
from ..language.plan import Plan

_STYLE = ("<style>.kam table{border-collapse:collapse;margin:0 0 1em 0}.kam th,.kam td{padding:2px 8px;"
          "text-align:left;vertical-align:top;border-bottom:1px solid #ddd}.kam td.n{text-align:right;"
          "font-variant-numeric:tabular-nums}.kam caption{text-align:left;font-weight:bold;padding:4px 0}"
          ".kam .error{color:#b00020}.kam .warning{color:#8a5a00}.kam td.where{white-space:nowrap}</style>")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(caption: str, header: list[str], rows: Iterable[list[Any]],
           numeric: frozenset[int] | set[int] = frozenset()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td class="n">{_e(c)}</td>' if i in numeric else f"<td>{_e(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number_text(float(v))
    return "missing" if v is None else str(v)


def policies_text(plan: Plan) -> str:
    """`<Policies policies: 6 policies, 9 decisions, 37 rules for customer, quote, prospect>`."""
    return f"<Policies {_policies_summary(plan)}>"


def _policies_summary(plan: Plan) -> str:
    ps = plan.checked.policy_set
    decisions = [d for p in ps.policies for d in p.decisions]
    rules = sum(len(d.all_rules) for d in decisions)
    return (f"{ps.directory}: {len(ps.policies)} policies, {len(decisions)} decisions, {rules} rules for "
            f"{', '.join(ep.entity for ep in plan.entities)}")


def policies_html(plan: Plan, proofs: dict[str, str]) -> str:
    """Per policy: its decisions (hit policy, values, rules), params and invariants with their proof."""
    ps = plan.checked.policy_set
    parts = [f"<div class='kam'>{_STYLE}<p><b>{_e(_policies_summary(plan))}</b></p>"]
    for p in ps.policies:
        parts.append(f"<h4>{_e(p.name)} <small>({_e(p.entity)}, {_e(p.file)})</small></h4>")
        if p.decisions:
            parts.append(_table("decisions", ["decision", "hit policy", "values", "rules"], [
                [d.name, d.hit, ", ".join(_value(v) for o in d.outputs for v in (o.values or ())) or
                 ", ".join(f"{o.name} ({o.type})" for o in d.outputs), len(d.all_rules)] for d in p.decisions],
                numeric={3}))
        if p.params:
            parts.append(_table("params", ["param", "value"], [[prm.name, _value(prm.value)] for prm in p.params]))
        if p.invariants:
            parts.append(_table("invariants", ["invariant", "condition", "proof"], [
                [inv.id, inv.text, proofs.get(inv.id, "not analysed")] for inv in p.invariants]))
    parts.append("</div>")
    return "".join(parts)


def decisions_text(result: RunResult) -> str:
    """`<Decisions customer: 1,000 rows; quote: 3,000 rows>`."""
    return "<Decisions " + "; ".join(f"{e}: {len(f):,} rows" for e, f in result.frames_in.items()) + ">"


def counts_frame(result: RunResult) -> pd.DataFrame:
    """Per entity, decision and value: how many entities got it, and their share of the entity."""
    rows = []
    for entity, decisions in result.counts().items():
        n = len(result.frames_in[entity])
        for decision, values in decisions.items():
            for value, count in values.items():
                rows.append({"entity": entity, "decision": decision, "value": value, "count": count,
                             "share": count / n if n else float("nan")})
    return pd.DataFrame(rows, columns=["entity", "decision", "value", "count", "share"])


def decisions_html(result: RunResult) -> str:
    """The counts per decision and value, the measures and the warnings of one run."""
    rows = "; ".join(f"{e}: {len(f):,} decided" for e, f in result.frames_in.items())
    parts = [f"<div class='kam'>{_STYLE}<p><b>{_e(rows)}</b></p>"]
    counts = counts_frame(result)
    for entity, part in counts.groupby("entity", sort=False):
        first = ~part["decision"].duplicated()  # a decision's name on its first row only, as `kam run` prints it
        parts.append(_table(f"{entity}: decisions", ["decision", "value", "count", "share"], [
            [r.decision if shown else "", r.value, f"{r.count:,}", f"{r.share:.1%}"]
            for r, shown in zip(part.itertuples(), first)], numeric={2, 3}))
    for entity, measures in result.measures().items():
        parts.append(_table(f"{entity}: measures", ["measure", "value"],
                            [[name, _value(v)] for name, v in measures.items()], numeric={1}))
    warnings = result.warnings() + result.conflicts()
    if warnings:
        parts.append("<p class='warning'>" + "<br>".join(_e(w) for w in warnings) + "</p>")
    parts.append("</div>")
    return "".join(parts)


def trace_html(trace: Trace) -> str:
    """The trace as `kam explain` prints it."""
    return f"<div class='kam'>{_STYLE}<pre>{_e(trace.render_text())}</pre></div>"


def problems_html(problems: list[Problem]) -> str:
    """Problems as located lines: where, severity and code, message and hint."""
    if not problems:
        return f"<div class='kam'>{_STYLE}<p>no problems</p></div>"
    rows = "".join(
        f"<tr><td class='where'>{_e(p.loc)}</td><td class='where {_e(p.severity)}'>{_e(p.severity)}[{_e(p.code)}]</td>"
        f"<td>{_e(p.message)}{'<br><small>hint: ' + _e(p.hint) + '</small>' if p.hint else ''}</td></tr>"
        for p in problems)
    return (f"<div class='kam'>{_STYLE}<table><thead><tr><th>where</th><th>problem</th><th>message</th></tr>"
            f"</thead><tbody>{rows}</tbody></table></div>")
