"""How the Python API's objects show in a notebook: the policy set, a run's decisions, an explanation
and problems as small HTML tables (every text escaped: ids, names and reasons come from files), and
one plain line each for `repr`. Every figure goes through a `Reader` (engine.language.figures) with
its unit: counts grouped, shares as %, money with the currency in its label, in the reader's locale."""

from __future__ import annotations

import html
from typing import Any, Iterable

import pandas as pd

from ..batch.explain import Trace
from ..batch.result import RunResult
from ..language.errors import Problem
from ..language.figures import Reader
from ..language.numbers import number_text
from ..language.plan import Plan
from ..language.units import COUNT, MONEY, PERCENT, PLAIN, Unit, units_of

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
    """A decided value as a label (`A`, `4`, `true`): a name for a group, not a figure."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number_text(float(v))
    return "missing" if v is None else str(v)


def _figure(v: Any, unit: Unit, reader: Reader) -> str:
    """A figure (a parameter, a measure) by its unit, in the reader's locale."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return reader.number(v, unit) if isinstance(v, (int, float)) else _value(v)


def _named(name: str, unit: Unit, reader: Reader) -> str:
    """A figure's name, with the currency where it is money (a share shows its % itself)."""
    return reader.label(name, unit) if unit.kind == MONEY else name


def policies_text(plan: Plan) -> str:
    """`<Policies policies: 6 policies, 9 decisions, 37 rules for customer, quote, prospect>`."""
    return f"<Policies {_policies_summary(plan)}>"


def _policies_summary(plan: Plan) -> str:
    ps = plan.checked.policy_set
    decisions = [d for p in ps.policies for d in p.decisions]
    rules = sum(len(d.all_rules) for d in decisions)
    return (f"{ps.directory}: {len(ps.policies)} policies, {len(decisions)} decisions, {rules} rules for "
            f"{', '.join(ep.entity for ep in plan.entities)}")


def policies_html(plan: Plan, proofs: dict[str, str], reader: Reader) -> str:
    """Per policy: its decisions (hit policy, values, rules), params (by their units, in the reader's
    locale) and invariants with their proof."""
    ps = plan.checked.policy_set
    figures = reader
    parts = [f"<div class='kam'>{_STYLE}<p><b>{_e(_policies_summary(plan))}</b></p>"]
    for p in ps.policies:
        parts.append(f"<h4>{_e(p.name)} <small>({_e(p.entity)}, {_e(p.file)})</small></h4>")
        if p.decisions:
            parts.append(_table("decisions", ["decision", "hit policy", "values", "rules"], [
                [d.name, d.hit, ", ".join(_value(v) for o in d.outputs for v in (o.values or ())) or
                 ", ".join(f"{o.name} ({o.type})" for o in d.outputs), len(d.all_rules)] for d in p.decisions],
                numeric={3}))
        if p.params:
            units = units_of(ps, p.entity)
            parts.append(_table("params", ["param", "value"], [
                [_named(prm.name, units.get(prm.name, PLAIN), figures),
                 _figure(prm.value, units.get(prm.name, PLAIN), figures)] for prm in p.params], numeric={1}))
        if p.invariants:
            parts.append(_table("invariants", ["invariant", "condition", "proof"], [
                [inv.id, inv.text, proofs.get(inv.id, "not analysed")] for inv in p.invariants]))
    parts.append("</div>")
    return "".join(parts)


def decisions_text(result: RunResult, reader: Reader) -> str:
    """`<Decisions customer: 1,000 rows; quote: 3,000 rows>`."""
    count = reader.number
    return "<Decisions " + "; ".join(f"{e}: {count(len(f), Unit(COUNT))} rows" for e, f in result.frames_in.items()) \
        + ">"


def counts_frame(result: RunResult) -> pd.DataFrame:
    """Per entity, decision and value: how many entities got it, and their share of the entity (exact
    numbers, for code: the notebook display writes them for people)."""
    rows = []
    for entity, decisions in result.counts().items():
        n = len(result.frames_in[entity])
        for decision, values in decisions.items():
            for value, count in values.items():
                rows.append({"entity": entity, "decision": decision, "value": value, "count": count,
                             "share": count / n if n else float("nan")})
    return pd.DataFrame(rows, columns=["entity", "decision", "value", "count", "share"])


def decisions_html(result: RunResult, reader: Reader) -> str:
    """The counts per decision and value, the measures (each by its unit) and the warnings of one run,
    the figures in the reader's locale."""
    ps = result.plan.checked.policy_set
    figures = reader
    count, share = Unit(COUNT), Unit(PERCENT)
    rows = "; ".join(f"{e}: {figures.number(len(f), count)} decided" for e, f in result.frames_in.items())
    parts = [f"<div class='kam'>{_STYLE}<p><b>{_e(rows)}</b></p>"]
    counts = counts_frame(result)
    for entity, part in counts.groupby("entity", sort=False):
        first = ~part["decision"].duplicated()  # a decision's name on its first row only, as `kam run` prints it
        parts.append(_table(f"{entity}: decisions", ["decision", "value", "count", "share"], [
            [r.decision if shown else "", r.value, figures.number(r.count, count), figures.number(r.share, share)]
            for r, shown in zip(part.itertuples(), first)], numeric={2, 3}))
    for entity, measures in result.measures().items():
        units = units_of(ps, entity)
        parts.append(_table(f"{entity}: measures", ["measure", "value"], [
            [_named(name, units.get(name, PLAIN), figures), _figure(v, units.get(name, PLAIN), figures)]
            for name, v in measures.items()], numeric={1}))
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
