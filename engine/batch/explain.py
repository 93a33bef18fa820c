"""Stage 7, explain: decided rules to output columns with rendered `because` texts, and full traces.

Texts are rendered column-wise with pyarrow string kernels (no Python loop per row): each rule's
template is split into literal pieces and formatted value columns, then joined.
"""

from __future__ import annotations

import functools
import string
from collections import ChainMap
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .evaluate import CONFLICT, NO_RULE, DecisionResult, EntityResult, ListVec, Text, Tri, Vec, collected, \
    decision_vectors, evaluate_node, list_order, scalar_at, take
from ..language.model import Expr, Rule
from ..language.nodes import PREVIOUS, Bool, Call, ListLit, Logic, MapLit, Name, Node, Not, Num, Str, children, \
    to_text, walk
from ..language.numbers import MISSING_TEXT, list_text, number_text
from .number_columns import format_number, format_numbers
from ..language.plan import DecisionStep, DeriveStep


# -- value formatting (shared by every backend, so texts cannot drift) ------------------------------

def format_vector(v: Vec, spec: str) -> pa.Array:
    """Any vector as text for a `because` placeholder (see engine.language.numbers for numbers)."""
    if isinstance(v, Tri):
        text = np.where(v.value, "true", "false").astype(object)
        text[~v.known] = MISSING_TEXT
        return pa.array(text, type=pa.string())
    if isinstance(v, Text):
        codes = pa.array(v.codes.astype(np.int32), mask=v.codes < 0)
        labels = pa.DictionaryArray.from_arrays(codes, pa.array(v.categories, type=pa.string()))
        return pc.fill_null(labels.cast(pa.string()), MISSING_TEXT)
    if isinstance(v, ListVec):
        texts = pa.array([list_text(lst) for lst in v.lists] + [MISSING_TEXT], pa.string())
        return texts.take(pa.array(np.where(v.codes >= 0, v.codes, len(v.lists))))
    return format_numbers(v.astype(float), spec)


FEW_ROWS = 4


def cell_text(v: Vec, i: int, spec: str) -> str:
    """Row i of a vector as a `because` placeholder shows it: `format_vector` for one row."""
    if isinstance(v, Tri):
        return ("true" if v.value[i] else "false") if v.known[i] else MISSING_TEXT
    if isinstance(v, Text):
        code = int(v.codes[i])
        return str(v.categories[code]) if code >= 0 else MISSING_TEXT
    if isinstance(v, ListVec):
        code = int(v.codes[i])
        return list_text(v.lists[code]) if code >= 0 else MISSING_TEXT
    return format_number(float(v[i]), spec)


@dataclass(frozen=True)
class CompiledTemplate:
    pieces: tuple[tuple[str, str | None, str], ...]  # (literal, field name or None, spec)

    @staticmethod
    @functools.lru_cache(maxsize=4096)  # parsed once per text: `kam stream` renders every event
    def of(text: str | None) -> "CompiledTemplate":
        if not text:
            return CompiledTemplate(())
        return CompiledTemplate(tuple((lit, name, spec or "") for lit, name, spec, _ in string.Formatter().parse(text)))

    @property
    def static(self) -> bool:
        return all(name is None for _, name, _ in self.pieces)

    def static_text(self) -> str:
        return "".join(lit for lit, _, _ in self.pieces)

    def render(self, env: Mapping[str, Vec], rows: np.ndarray) -> pa.Array:
        """The text for the given rows (a boolean mask or index array) of the environment."""
        count = int(rows.sum()) if rows.dtype == bool else rows.size
        if self.static:
            return pa.array([self.static_text()] * count, type=pa.string()) if count else pa.array([], pa.string())
        if count <= FEW_ROWS:  # `kam stream`, `kam explain`: string formatting beats column kernels
            idx = np.flatnonzero(rows) if rows.dtype == bool else rows
            return pa.array(["".join(lit + (cell_text(env[name], int(i), spec) if name is not None else "")
                                     for lit, name, spec in self.pieces) for i in idx.tolist()], pa.string())
        parts: list[Any] = []
        for lit, name, spec in self.pieces:
            if lit:
                parts.append(lit)
            if name is not None:
                parts.append(format_vector(take(env[name], rows), spec))
        if not any(isinstance(p, pa.Array) for p in parts):
            return pa.array(["".join(parts)] * count, type=pa.string())
        arrays = [p if isinstance(p, pa.Array) else p for p in parts]
        return pc.binary_join_element_wise(*arrays, "")


def _texts_env(res: DecisionResult, env: Mapping[str, Vec], rule_pos: int) -> Mapping[str, Vec]:
    qvars = res.quota_vars.get(rule_pos)
    return ChainMap(qvars, env) if qvars else env  # type: ignore[arg-type]


def because_column(res: DecisionResult, env: dict[str, Vec], lo: int = 0, hi: int | None = None) -> pa.Array:
    """The rendered `because` of every row (or of rows lo..hi): one template per rule, assembled
    with `take`."""
    hi = res.rule_index.size if hi is None else hi
    n = hi - lo
    idx = res.rule_index[lo:hi]
    pieces: list[pa.Array] = []
    positions = np.zeros(n, dtype=np.int64)
    offset = 0
    if 0 < n <= FEW_ROWS:
        return pa.array([row_because(res, env, lo + i) for i in range(n)], pa.string())
    if res.collected is not None:
        return _collect_because(res, env, lo, hi)
    for i, rule in enumerate(res.rules):
        rows = np.flatnonzero(idx == i)
        if rows.size == 0:
            continue
        tpl = CompiledTemplate.of(rule.because.text if rule.because else f"rule {rule.id}")
        if tpl.static:
            pieces.append(pa.array([tpl.static_text()], pa.string()))
            positions[rows] = offset
            offset += 1
        else:
            pieces.append(tpl.render(_texts_env(res, env, i), lo + rows))
            positions[rows] = offset + np.arange(rows.size)
            offset += rows.size
    none_rows = np.flatnonzero(idx == NO_RULE)
    if none_rows.size:
        pieces.append(pa.array(["no rule matched"], pa.string()))
        positions[none_rows] = offset
        offset += 1
    conflict_rows = np.flatnonzero(idx == CONFLICT)
    if conflict_rows.size:
        assert res.conflict_with is not None
        pairs = res.conflict_with[lo + conflict_rows]
        uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
        texts = [conflict_text(res, int(a), int(b)) for a, b in uniq]
        pieces.append(pa.array(texts, pa.string()))
        positions[conflict_rows] = offset + inverse.reshape(-1)
        offset += len(texts)
    if not pieces:
        return pa.array([], pa.string())
    table = pa.concat_arrays([p.cast(pa.string()) for p in pieces])
    return table.take(pa.array(positions))


def row_because(res: DecisionResult, env: dict[str, Vec], i: int) -> str:
    """One row's because text, as `because_column` gives it for many rows (string formatting)."""
    rows = np.array([i])

    def text(k: int, where: Mapping[str, Vec]) -> str:
        rule = res.rules[k]
        tpl = CompiledTemplate.of(rule.because.text if rule.because else f"rule {rule.id}")
        return tpl.static_text() if tpl.static else tpl.render(where, rows)[0].as_py()

    if res.collected is not None:
        matched = [k for k in list_order(res) if res.collected[i, k]]
        return "; ".join(text(k, env) for k in matched) if matched else "no rule matched"
    k = int(res.rule_index[i])
    if k >= 0:
        return text(k, _texts_env(res, env, k))
    if k == NO_RULE:
        return "no rule matched"
    assert res.conflict_with is not None
    a, b = res.conflict_with[i]
    return conflict_text(res, int(a), int(b))


def conflict_text(res: DecisionResult, a: int, b: int) -> str:
    d = res.decision
    return (f"error: rules `{res.rules[a].id}` and `{res.rules[b].id}` both match "
            f"(hit policy {d.hit} allows only one)")


def _collect_because(res: DecisionResult, env: dict[str, Vec], lo: int, hi: int) -> pa.Array:
    """Texts of every collected rule joined by "; " (rows lo..hi).

    Built without nulls: pyarrow's null_handling="skip" join returns a short array when the last
    row is null (seen with pyarrow 26), so unmatched rules contribute "" and matched ones "; text".
    """
    assert res.collected is not None
    collected_rows = res.collected[lo:hi]
    n = hi - lo
    sep = "; "
    columns = []
    for i in list_order(res):
        rule = res.rules[i]
        mask = collected_rows[:, i]
        tpl = CompiledTemplate.of(rule.because.text if rule.because else f"rule {rule.id}")
        rows = np.flatnonzero(mask)
        prefixed = pc.binary_join_element_wise(sep, tpl.render(env, lo + rows), "") if rows.size else \
            pa.array([], pa.string())
        positions = np.zeros(n, dtype=np.int64)
        positions[rows] = np.arange(1, rows.size + 1)
        columns.append(pa.concat_arrays([pa.array([""], pa.string()), prefixed.cast(pa.string())])
                       .take(pa.array(positions)))
    if not columns or n == 0:
        return pa.array(["no rule matched"] * n, pa.string())
    joined = pc.binary_join_element_wise(*columns, "") if len(columns) > 1 else columns[0]
    joined = pc.utf8_slice_codeunits(joined, start=len(sep))
    return pc.if_else(pa.array(collected_rows.any(axis=1)), joined, "no rule matched")


def rule_column(res: DecisionResult) -> pd.Categorical | np.ndarray:
    """The id of the deciding rule per row (for `collect`: the list of every matching rule's id)."""
    if res.collected is not None:
        return collected(res, "", values=False).objects()
    ids = [r.id for r in res.rules]
    codes = res.rule_index.copy()
    codes[codes < 0] = -1
    return pd.Categorical.from_codes(codes, categories=pd.Index(ids, dtype=object).unique()
                                     if len(set(ids)) == len(ids) else ids)


def _whole_numbers(res: DecisionResult, output: str) -> bool:
    """Whether every rule gives a fixed whole number (hours, days): written without decimals."""
    given = [dict(r.then).get(output) for r in res.rules]
    return all(isinstance(g, (int, float)) and float(g).is_integer() for g in given if g is not None)


def value_columns(res: DecisionResult) -> dict[str, Any]:
    """The decided output values as output columns (categoricals where the set is closed)."""
    d = res.decision
    out: dict[str, Any] = {}
    vectors = decision_vectors(res)
    for o in d.outputs:
        v = vectors[o.name]
        if isinstance(v, ListVec):
            out[o.name] = v.objects()
            continue
        if isinstance(v, Tri):
            out[o.name] = pd.array(np.where(v.known, v.value, False), dtype="boolean")
            out[o.name][~v.known] = pd.NA
        elif isinstance(v, Text):
            out[o.name] = pd.Categorical.from_codes(v.codes, categories=pd.Index(v.categories, dtype=object))
        elif (d.hit == "collect" and d.aggregate == "count") or _whole_numbers(res, o.name):
            # whole-number outputs (hours, days) are written as whole numbers
            out[o.name] = pd.array(np.where(np.isnan(v), 0, v).astype(np.int64), dtype="Int64")
            out[o.name][np.isnan(v)] = pd.NA
        else:
            out[o.name] = v
    return out


def output_frame(result: EntityResult, pool: Executor | None = None) -> pd.DataFrame:
    """Key column, then per decision its value columns, rule id and because text.

    With a thread pool the texts of the decisions are rendered side by side: the pyarrow string
    kernels release the GIL, so this uses every core.
    """
    return next(output_chunks(result, pool, None))


CHUNK_ROWS = 100_000  # rows of an output table rendered (and written) at a time by `kam run`: two slices
# of texts are in memory at once (one written, the next rendered), about 50 MB each for the shipped policies


def output_chunks(result: EntityResult, pool: Executor | None = None,
                  rows: int | None = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """The output table in slices of `rows` rows (one slice with None; at least one, maybe empty):
    a writer that takes them one at a time never holds all the because texts of a big table."""
    key_name = result.plan.key
    decisions = result.plan.decisions
    n = result.ctx.n
    fixed: dict[str, Any] = {key_name: pd.array(result.ctx.key, dtype="string")}
    lists: dict[str, str] = {}
    for d in decisions:
        res = result.decisions[d.name]
        fixed.update(value_columns(res))
        fixed[f"{d.name}_rule"] = rule_column(res)
        fixed[f"{d.name}_because"] = None  # rendered per slice
        if res.collected is not None and d.gives_list:
            lists.update({o.name: o.type for o in d.outputs})
        if res.collected is not None:
            lists[f"{d.name}_rule"] = "string"
    step = max(n, 1) if rows is None else rows
    for lo in range(0, max(n, 1), step):
        hi = min(n, lo + step)

        def render(d: Any, lo: int = lo, hi: int = hi) -> pa.Array:
            return because_column(result.decisions[d.name], result.ctx.env, lo, hi)

        texts = list(pool.map(render, decisions)) if pool is not None else [render(d) for d in decisions]
        because = dict(zip((f"{d.name}_because" for d in decisions), texts))
        columns = {}
        for name, col in fixed.items():
            if name in because:
                t = because[name]
                columns[name] = pd.arrays.ArrowStringArray(t) if len(t) else pd.array([], dtype="string")
            else:
                columns[name] = col[lo:hi] if (lo, hi) != (0, n) else col
        frame = pd.DataFrame(columns, copy=False)
        # the item type of each list column, from the policies: a column whose lists are all empty
        # (or a table without rows) is written with the same type as any other
        frame.attrs["kam_list_types"] = lists
        yield frame


def decision_counts(result: EntityResult) -> dict[str, dict[str, int]]:
    """Per decision, how many entities got each value (a conflict or no match counted too)."""
    if result.counts is not None:
        return result.counts
    out: dict[str, dict[str, int]] = {}
    for d in result.plan.decisions:
        res = result.decisions[d.name]
        counts: dict[str, int] = {}
        idx = res.rule_index
        if d.gives_list:
            per_output = [collected(res, o.name) for o in d.outputs]
            codes = per_output[0].codes  # the same matches for every output
            for code, k in enumerate(np.bincount(codes, minlength=len(per_output[0].lists))):
                if not k:
                    continue
                if d.single:
                    label = list_text(per_output[0].lists[code])
                else:  # one row of outputs per matching rule
                    label = "; ".join(", ".join(f"{o.name}={value_text(lst.lists[code][j])}"
                                                for o, lst in zip(d.outputs, per_output))
                                      for j in range(len(per_output[0].lists[code])))
                label = label or "(no rule matched)"
                counts[label] = counts.get(label, 0) + int(k)
        elif d.hit == "collect":
            v = decision_vectors(res)[d.main.name]
            assert isinstance(v, np.ndarray)
            values, k = np.unique(v[~np.isnan(v)], return_counts=True)
            counts = {number_text(float(x)): int(c) for x, c in zip(values, k)}
            if np.isnan(v).any():
                counts["(no rule matched)"] = int(np.isnan(v).sum())
        else:
            for i, r in enumerate(res.rules):
                hits = int((idx == i).sum())
                if hits:
                    label = _count_label(r, d.single, d.main.name)
                    counts[label] = counts.get(label, 0) + hits
        for code, label in ((NO_RULE, "(no rule matched)"), (CONFLICT, "(conflict)")):
            k = int((idx == code).sum())
            if k and res.collected is None:
                counts[label] = k
        out[d.name] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def _then_text(rule: Rule) -> str:
    return ", ".join(f"{k}={then_text(v)}" for k, v in rule.then)


def _count_label(rule: Rule, single: bool, main: str) -> str:
    """What a rule's entities are counted under: its fixed values. A computed output has a value per
    entity, not one to count by: it is left out, and a rule that computes all it gives is named."""
    fixed = [(k, v) for k, v in rule.then if not isinstance(v, Expr) and (not single or k == main)]
    if not fixed:
        return f"(computed by rule {rule.id})"
    return value_text(fixed[0][1]) if single else ", ".join(f"{k}={value_text(v)}" for k, v in fixed)


def then_text(v: Any) -> str:
    """A rule's value as written: a fixed value, or the expression that computes it."""
    return v.source if isinstance(v, Expr) else value_text(v)


# -- traces for one entity ----------------------------------------------------------------------

@dataclass
class Trace:
    """Structured trace events for one entity; `render_text` and `to_dict` present them."""

    entity: str
    key: str
    facts: list[tuple[str, Any]] = field(default_factory=list)
    joined: list[tuple[str, str, Any]] = field(default_factory=list)
    features: list[tuple[str, str, Any]] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)  # feature -> e.g. how a tie in its rank was settled
    invariants: list[dict[str, Any]] = field(default_factory=list)  # whether this entity keeps each one
    previous: list[dict[str, Any]] = field(default_factory=list)  # the earlier values previous() read

    def to_dict(self) -> dict[str, Any]:
        return {
            "entity": self.entity,
            "key": self.key,
            "facts": {k: v for k, v in self.facts},
            "joined": [{"name": n, "from": e, "value": v} for n, e, v in self.joined],
            "features": [{"name": n, "expression": e, "value": v,
                          **({"note": self.notes[n]} if n in self.notes else {})} for n, e, v in self.features],
            "previous": self.previous,
            "decisions": self.decisions,
            "invariants": self.invariants,
        }

    def render_text(self) -> str:
        lines = [f"{self.entity} {self.key}", "", "facts:"]
        lines += [f"  {k} = {show(v)}" for k, v in self.facts]
        if self.joined:
            lines += ["", "joined:"]
            lines += [f"  {n} = {show(v)}   (from {e})" for n, e, v in self.joined]
        if self.previous:
            lines += ["", "previous periods:"]
            lines += [f"  {p['call']} = {show(p['value'])}   ({p['period'] or p['why']})" for p in self.previous]
        if self.features:
            lines += ["", "derived features:"]
            lines += [f"  {n} = {show(v)}   <- {e}" + (f"   ({self.notes[n]})" if n in self.notes else "")
                      for n, e, v in self.features]
        for d in self.decisions:
            lines += ["", f"decision {d['decision']} (hit policy {d['hit']}): {show(d['value'])}"]
            lines.append(f"  rule: {show(d['rule']) if d['rule'] else '-'}")
            lines.append(f"  because: {d['because']}")
            lines.append(f"  why: {d['why']}")
            for r in d["rules"]:
                mark = {"matched": "+", "no match": "-", "unknown": "?", "default": "*", "not reached": " ",
                        "outside quota": "-", "within quota": "+"}.get(r["result"], " ")
                lines.append(f"  [{mark}] {r['id']}: {r['result']}" + (f" -> {r['then']}" if r["then"] else ""))
                for c in r["conditions"]:
                    operands = ", ".join(f"{k} = {show(v)}" for k, v in c["operands"])
                    suffix = f"   ({operands})" if operands else ""
                    lines.append(f"        {c['condition']}: {c['result']}{suffix}")
                if r.get("quota"):
                    lines.append(f"        {r['quota']}")
        if self.invariants:
            lines += ["", "invariants:"]
            lines += [f"  [{'ok' if i['result'] == 'holds' else '!!'}] {i['id']}: {i['result']}   ({i['condition']})"
                      for i in self.invariants]
        return "\n".join(lines) + "\n"


def show(v: Any) -> str:
    """A value as shown in traces: numbers as everywhere else (engine.language.numbers), lists as in texts."""
    if isinstance(v, list):
        return list_text(v)
    return value_text(v)


def value_text(v: Any) -> str:
    """One plain value as text: `missing`, true/false, numbers by `number_text`, text as it is."""
    if v is None:
        return MISSING_TEXT
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number_text(float(v))
    return str(v)


def _rank_tie_note(node: Node | None, result: EntityResult, row: int) -> str:
    """For a feature computed with `rank`, whether this entity's value ties others and how it was settled."""
    for call in (n for n in walk(node) if isinstance(n, Call) and n.func == "rank") if node is not None else ():
        x = evaluate_node(call.args[0], result.ctx)
        assert isinstance(x, np.ndarray)
        if np.isnan(x[row]):
            continue
        by = call.kwarg("by")
        codes, _ = result.ctx.groups(by.name if isinstance(by, Name) else None)
        others = int(np.count_nonzero((x == x[row]) & (codes == codes[row]))) - 1
        if others:
            together = isinstance(call.kwarg("ties"), Str) and call.kwarg("ties").value == "together"  # type: ignore[union-attr]
            settled = "all share the best rank" if together else f"the smaller {result.ctx.key_name} ranks first"
            return f"tied with {others} other{'s' if others > 1 else ''}; {settled}"
    return ""


def _tri_word(v: Any) -> str:
    return "unknown (missing value)" if v is None else ("true" if v else "false")


def _leaves(node: Node) -> list[Node]:
    """The conditions joined by `and` / `or`: each is traced on its own."""
    if isinstance(node, Logic):
        return [leaf for item in node.items for leaf in _leaves(item)]
    return [node]


def _conditions(node: Node, result: EntityResult, row: int) -> list[dict[str, Any]]:
    """Each condition of a rule with its operand values and result for one row."""
    out = []
    for leaf in _leaves(node):
        value = scalar_at(evaluate_node(leaf, result.ctx), row)
        operands = []
        inner = leaf.operand if isinstance(leaf, Not) else leaf
        # previous(x) used as a condition shows its own value, not the value x has now
        subs = [inner] if isinstance(inner, Call) and inner.func == PREVIOUS else list(children(inner))
        for sub in subs:
            if isinstance(sub, (Num, Str, Bool, MapLit, ListLit, Logic, Not)):
                continue
            operands.append((to_text(sub), scalar_at(evaluate_node(sub, result.ctx), row)))
        out.append({"condition": to_text(leaf), "result": _tri_word(value), "operands": operands})
    return out


def trace_row(result: EntityResult, row: int, fact_names: list[str], past_periods: list[str] | None = None) -> Trace:
    """The full trace of one entity: facts, the earlier values it read (from `past_periods`, most
    recent first), features, every rule of every decision."""
    env = result.ctx.env
    trace = Trace(result.entity, str(result.ctx.key[row]))
    trace.facts = [(name, scalar_at(env[name], row)) for name in fact_names]
    periods = past_periods or []
    for r in result.plan.past:
        period = periods[r.back - 1] if len(periods) >= r.back else None
        why = "" if period else "no history given" if past_periods is None else \
            f"the history has no period {r.back} back"
        trace.previous.append({"call": f"previous({r.name})" if r.back == 1 else f"previous({r.name}, {r.back})",
                               "name": r.name, "back": r.back, "value": scalar_at(env[r.key], row),
                               "period": period, **({"why": why} if why else {})})
    for j in result.plan.joins:
        for name in j.take:
            trace.joined.append((name, f"{j.entity} via {j.on}", scalar_at(env[name], row)))
    for step in result.plan.steps:
        if isinstance(step, DeriveStep):
            trace.features.append((step.name, step.derive.expr.source, scalar_at(env[step.name], row)))
            note = _rank_tie_note(step.derive.expr.node, result, row)
            if note:
                trace.notes[step.name] = note
        elif isinstance(step, DecisionStep):
            trace.decisions.append(_trace_decision(result, result.decisions[step.name], row))
    for inv in result.plan.invariants:
        broken = bool(result.violations.get(inv.id, np.zeros(row + 1, bool))[row])
        trace.invariants.append({"id": inv.id, "condition": inv.text, "result": "broken" if broken else "holds"})
    return trace


def _trace_decision(result: EntityResult, res: DecisionResult, row: int) -> dict[str, Any]:
    d = res.decision
    idx = int(res.rule_index[row])
    one = np.zeros(res.rule_index.size, dtype=bool)
    one[row] = True
    values = value_columns(res)
    because = because_column(res, result.ctx.env)[row].as_py()
    if d.single:
        value: Any = plain_value(values[d.name][row])
    else:
        value = ", ".join(f"{o.name}={show(plain_value(values[o.name][row]))}" for o in d.outputs)
    rules_out = []
    decided_at = idx if idx >= 0 else None
    for i, rule in enumerate(d.rules):
        entry: dict[str, Any] = {"id": rule.id, "then": _then_text(rule) if not d.single else
                                 then_text(dict(rule.then)[d.name]), "conditions": []}
        if rule.when is not None and rule.when.node is not None:
            m = res.matches[i]
            matched = scalar_at(m, row)
            entry["conditions"] = _conditions(rule.when.node, result, row)
            entry["result"] = {True: "matched", False: "no match", None: "unknown"}[matched]
        else:
            entry["result"] = "default"
        if d.hit == "first" and decided_at is not None and i > decided_at and decided_at < len(d.rules):
            entry["result"] = "not reached"
        if rule.quota is not None and i in res.quota_vars:
            q = res.quota_vars[i]
            rank = scalar_at(q["quota_rank"], row)
            if rank is not None:
                within = idx == i
                entry["result"] = "within quota" if within else "outside quota"
                group = f" in its `{rule.quota.per}` group" if rule.quota.per else ""
                entry["quota"] = (f"ranked {show(rank)} of {show(scalar_at(q['quota_size'], row))} eligible{group}; "
                                  f"quota keeps the top {rule.quota.describe_top()} "
                                  f"({show(scalar_at(q['quota_limit'], row))})"
                                  f"{scalar_at(q['quota_tie'], row) or ''}")
        rules_out.append(entry)
    rule_id = res.rules[idx].id if idx >= 0 else None
    if res.collected is not None:
        ids = [res.rules[i].id for i in list_order(res) if res.collected[row, i]]
        rule_id = ids  # type: ignore[assignment]
        order = "in rule order" if d.hit == "collect" else "in the order of the declared values"
        why = f"hit policy {d.hit} gathers every matching rule, {order}: {list_text(ids) or 'none matched'}"
    elif idx == CONFLICT:
        why = because
    elif idx == NO_RULE:
        why = "no rule matched and the decision has no default rule"
    else:
        why = _why(res, idx, row)
    return {"decision": d.name, "hit": d.hit, "value": value, "rule": rule_id, "because": because,
            "why": why, "rules": rules_out}


def plain_value(v: Any) -> Any:
    """One cell of an output column as a plain Python value: lists for `collect`, None when missing."""
    if isinstance(v, (list, np.ndarray)):
        return [plain_value(x) for x in v]
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _why(res: DecisionResult, idx: int, row: int) -> str:
    d = res.decision
    rule = res.rules[idx]
    if idx >= len(d.rules):
        owner = next(r for r in d.rules if r.quota is not None and r.quota.else_rule is rule)
        return f"it matched `{owner.id}` but fell outside its quota, so the quota's `else` rule `{rule.id}` applies"
    if rule.is_default:
        return "no other rule matched, so the default rule applies"
    if d.hit == "first":
        return f"`{rule.id}` is the first rule, in written order, whose condition is true"
    if d.hit == "unique":
        return f"`{rule.id}` is the only rule whose condition is true"
    if d.hit == "any":
        return f"`{rule.id}` is the first of the matching rules, which all give the same result"
    if d.hit == "priority":
        order = "; ".join(f"{o.name}: {', '.join(map(value_text, o.values or ()))}" for o in d.outputs) \
            if not d.single else ", ".join(map(value_text, d.main.values or ()))
        return f"of the matching rules, `{rule.id}` gives the value with the highest priority (order: {order})"
    return ""

