"""Stage 6, evaluate: the pandas/numpy backend. Every expression is computed over the whole table.

Values are held as numpy arrays: numbers as float64 (NaN = missing), text as object arrays
(None = missing), conditions as `Tri` (three-valued: true / false / unknown because of a missing
value). A rule matches only where its condition is true; unknown is not true.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .model import Decision, Rule
from .nodes import Arith, Bool, Call, Compare, In, Logic, MapLit, Name, Neg, Node, Not, Num, Str
from .plan import DecisionStep, DeriveStep, EntityPlan, Plan


@dataclass(frozen=True)
class Tri:
    """A vector of conditions. Invariant: `value` is only true where `known` is true."""

    value: np.ndarray
    known: np.ndarray

    @staticmethod
    def of(value: np.ndarray, known: np.ndarray) -> "Tri":
        return Tri(value & known, known)


Vec = Union[np.ndarray, Tri]


def is_missing(v: Vec) -> np.ndarray:
    """Where a vector's value is missing."""
    if isinstance(v, Tri):
        return ~v.known
    if v.dtype == object:
        return pd.isna(v)
    return np.isnan(v)


def scalar_at(v: Vec, i: int) -> Any:
    """The plain Python value of row `i` (None when missing), for traces and per-row tests."""
    if isinstance(v, Tri):
        return bool(v.value[i]) if v.known[i] else None
    x = v[i]
    if v.dtype == object:
        return None if x is None or x is pd.NA or (isinstance(x, float) and np.isnan(x)) else x
    return None if np.isnan(x) else float(x)


# -- population helpers ---------------------------------------------------------------------------

@dataclass
class Context:
    """What an expression can see: the columns of one entity and cached helpers."""

    env: dict[str, Vec]
    n: int
    key: np.ndarray
    _key_order: np.ndarray | None = None
    _groups: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)

    def key_order(self) -> np.ndarray:
        """Position of each row when sorted by key (text order): the deterministic tie-break."""
        if self._key_order is None:
            idx = pc.sort_indices(pa.array(self.key, type=pa.string())).to_numpy()
            order = np.empty(self.n, dtype=np.int64)
            order[idx] = np.arange(self.n)
            self._key_order = order
        return self._key_order

    def groups(self, name: str | None) -> tuple[np.ndarray, int]:
        """Group codes (-1 for a missing group value) and the number of groups."""
        if name is None:
            return np.zeros(self.n, dtype=np.int64), 1 if self.n else 0
        if name not in self._groups:
            col = self.env[name]
            if isinstance(col, Tri):
                col = np.where(col.known, col.value.astype(np.int8), -1).astype(float)
                col[col < 0] = np.nan
            codes, uniques = pd.factorize(col, sort=True)
            self._groups[name] = (codes.astype(np.int64), len(uniques))
        return self._groups[name]


def _grouped(values: np.ndarray, codes: np.ndarray) -> "pd.core.groupby.SeriesGroupBy":
    return pd.Series(values).groupby(codes)


def pop_rank(x: np.ndarray, ctx: Context, by: str | None, descending: bool = True) -> np.ndarray:
    """Ordinal rank within the group: 1 = best; ties go to the smaller key; missing stays missing."""
    codes, _ = ctx.groups(by)
    valid = ~np.isnan(x) & (codes >= 0)
    idx = np.flatnonzero(valid)
    out = np.full(ctx.n, np.nan)
    if idx.size == 0:
        return out
    xv = x[idx] if not descending else -x[idx]
    order = np.lexsort((ctx.key_order()[idx], xv, codes[idx]))
    sorted_codes = codes[idx][order]
    pos = np.arange(idx.size)
    starts = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
    start_pos = np.maximum.accumulate(np.where(starts, pos, 0))
    out[idx[order]] = pos - start_pos + 1
    return out


def pop_pct_rank(x: np.ndarray, ctx: Context, by: str | None) -> np.ndarray:
    """Share of the group's non-missing values that are at or below x, in (0, 1]."""
    codes, _ = ctx.groups(by)
    x = np.where(codes >= 0, x, np.nan)
    return _grouped(x, codes).rank(method="max", pct=True).to_numpy(dtype=float, na_value=np.nan)


def pop_cumshare(x: np.ndarray, ctx: Context, by: str | None) -> np.ndarray:
    """Pareto position: sum of the group's values >= x, divided by the group total."""
    codes, _ = ctx.groups(by)
    valid = ~np.isnan(x) & (codes >= 0)
    idx = np.flatnonzero(valid)
    out = np.full(ctx.n, np.nan)
    if idx.size == 0:
        return out
    xv, cv = x[idx], codes[idx]
    order = np.lexsort((xv, cv))  # ascending within group
    xs, cs = xv[order], cv[order]
    pos = np.arange(xs.size)
    csum = np.cumsum(xs)
    group_start = np.r_[True, cs[1:] != cs[:-1]]
    block_start = group_start | np.r_[True, xs[1:] != xs[:-1]]
    gstart_pos = np.maximum.accumulate(np.where(group_start, pos, 0))
    bstart_pos = np.maximum.accumulate(np.where(block_start, pos, 0))
    before_group = np.where(gstart_pos > 0, csum[gstart_pos - 1], 0.0)
    group_end = np.r_[np.flatnonzero(group_start)[1:], xs.size] - 1
    totals = csum[group_end] - np.where(np.flatnonzero(group_start) > 0, csum[np.flatnonzero(group_start) - 1], 0.0)
    group_id = np.cumsum(group_start) - 1
    total = totals[group_id]
    below = np.where(bstart_pos > 0, csum[bstart_pos - 1], 0.0) - before_group
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total != 0, (total - below) / total, np.nan)
    out[idx[order]] = share
    return out


def pop_stat(kind: str, x: np.ndarray, ctx: Context, by: str | None, q: float = 0.5) -> np.ndarray:
    """A group statistic broadcast to every row: mean, sum, count, quantile, zscore."""
    codes, ngroups = ctx.groups(by)
    if ngroups == 0:
        return np.full(ctx.n, np.nan)
    if kind == "count":
        present = (~np.isnan(x)).astype(float)
        per = np.bincount(codes[codes >= 0], weights=present[codes >= 0], minlength=ngroups)
        return np.where(codes >= 0, per[np.maximum(codes, 0)], np.nan)
    g = _grouped(x, codes)
    if kind == "quantile":
        per = g.quantile(q)
    elif kind == "sum":
        per = g.sum(min_count=0)
    elif kind in ("mean", "zscore"):
        per = g.mean()
    else:
        raise ValueError(kind)
    per = per.reindex(range(ngroups)).to_numpy(dtype=float, na_value=np.nan)
    result = np.where(codes >= 0, per[np.maximum(codes, 0)], np.nan)
    if kind == "zscore":
        std = g.std(ddof=0).reindex(range(ngroups)).to_numpy(dtype=float, na_value=np.nan)
        s = np.where(codes >= 0, std[np.maximum(codes, 0)], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(s > 0, (x - result) / s, np.nan)
    return result


# -- expressions ----------------------------------------------------------------------------------

def _full(ctx: Context, value: Any) -> Vec:
    if isinstance(value, bool):
        return Tri(np.full(ctx.n, value), np.ones(ctx.n, dtype=bool))
    if isinstance(value, str):
        out = np.empty(ctx.n, dtype=object)
        out[:] = value
        return out
    return np.full(ctx.n, float(value))


def round_half_away(x: np.ndarray, digits: int = 0) -> np.ndarray:
    """Round halves away from zero (as people do), not to even."""
    f = 10.0 ** digits
    return np.sign(x) * np.floor(np.abs(x) * f + 0.5) / f


def _compare(op: str, a: Vec, b: Vec) -> Tri:
    if isinstance(a, Tri) and isinstance(b, Tri):
        known = a.known & b.known
        eq = a.value == b.value
        return Tri.of(eq if op == "==" else ~eq, known)
    known = ~is_missing(a) & ~is_missing(b)
    if a.dtype == object or b.dtype == object:
        a = np.where(known, a, "")
        b = np.where(known, b, "")
    with np.errstate(invalid="ignore"):
        if op == "<":
            v = a < b
        elif op == "<=":
            v = a <= b
        elif op == ">":
            v = a > b
        elif op == ">=":
            v = a >= b
        elif op == "==":
            v = a == b
        else:
            v = a != b
    return Tri.of(np.asarray(v, dtype=bool), known)


def logic_and(items: list[Tri]) -> Tri:
    """Kleene and: false if any is false, true if all are true, unknown otherwise."""
    all_true = items[0].value.copy()
    any_false = items[0].known & ~items[0].value
    for t in items[1:]:
        all_true &= t.value
        any_false |= t.known & ~t.value
    return Tri(all_true, all_true | any_false)


def logic_or(items: list[Tri]) -> Tri:
    """Kleene or: true if any is true, false if all are false, unknown otherwise."""
    any_true = items[0].value.copy()
    all_false = items[0].known & ~items[0].value
    for t in items[1:]:
        any_true |= t.value
        all_false &= t.known & ~t.value
    return Tri(any_true, any_true | all_false)


def _where(cond: np.ndarray, a: Vec, b: Vec) -> Vec:
    if isinstance(a, Tri):
        assert isinstance(b, Tri)
        return Tri(np.where(cond, a.value, b.value), np.where(cond, a.known, b.known))
    return np.where(cond, a, b)


def _lookup(ctx: Context, node: Call, key: Vec) -> Vec:
    table = node.args[1]
    assert isinstance(table, MapLit)
    default = node.args[2] if len(node.args) > 2 else None
    entries = [(k, v.value) for k, v in table.items]  # type: ignore[union-attr]
    sample = entries[0][1] if entries else (default.value if default else 0.0)  # type: ignore[union-attr]
    if isinstance(key, Tri):
        raise TypeError("lookup on a yes/no key")
    if key.dtype == object:
        mapping = {k: v for k, v in entries}
    else:
        mapping = {float(k): v for k, v in entries if _is_number(k)}
    s = pd.Series(key)
    if isinstance(sample, bool):
        val = s.map(mapping).to_numpy(dtype=object)
        found = ~pd.isna(val)
        value = np.where(found, val, False).astype(bool)
        out: Vec = Tri(value, found)
    elif isinstance(sample, str):
        out = s.map(mapping).to_numpy(dtype=object, na_value=None)
        out = np.where(pd.isna(out), None, out)
    else:
        out = s.map(mapping).to_numpy(dtype=float, na_value=np.nan)
    if default is not None:
        fallback = _full(ctx, default.value)  # type: ignore[union-attr]
        out = _where(is_missing(out), fallback, out)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _call(node: Call, ctx: Context, ev: Callable[[Node], Vec]) -> Vec:
    f = node.func
    by_node = node.kwarg("by")
    by = by_node.name if isinstance(by_node, Name) else None
    if f == "lookup":
        return _lookup(ctx, node, ev(node.args[0]))
    if f == "if":
        cond = ev(node.args[0])
        assert isinstance(cond, Tri)
        return _where(cond.value, ev(node.args[1]), ev(node.args[2]))
    args = [ev(a) for a in node.args]
    if f == "is_missing":
        m = is_missing(args[0])
        return Tri(m, np.ones(ctx.n, dtype=bool))
    if f == "coalesce":
        out = args[0]
        for a in args[1:]:
            out = _where(is_missing(out), a, out)
        return out
    if f == "count":
        x = np.zeros(ctx.n) if not args else np.where(is_missing(args[0]), np.nan, 0.0)
        return pop_stat("count", x, ctx, by)
    xs = [a for a in args if not isinstance(a, Tri)]
    x = xs[0] if xs else np.zeros(ctx.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        if f == "min":
            return np.minimum.reduce(xs)
        if f == "max":
            return np.maximum.reduce(xs)
        if f == "abs":
            return np.abs(x)
        if f == "round":
            digits = int(node.args[1].value) if len(node.args) > 1 else 0  # type: ignore[union-attr]
            return round_half_away(x, digits)
        if f == "log":
            return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)
    if f == "rank":
        return pop_rank(x, ctx, by)
    if f == "pct_rank":
        return pop_pct_rank(x, ctx, by)
    if f == "cumshare":
        return pop_cumshare(x, ctx, by)
    if f == "quantile":
        return pop_stat("quantile", x, ctx, by, float(node.args[1].value))  # type: ignore[union-attr]
    if f in ("mean", "sum", "zscore"):
        return pop_stat(f, x, ctx, by)
    raise NotImplementedError(f"function {f} has no pandas implementation")


def evaluate_node(node: Node, ctx: Context) -> Vec:
    """Evaluate an expression over every row of the context."""

    def ev(n: Node) -> Vec:
        return evaluate_node(n, ctx)

    if isinstance(node, (Num, Str, Bool)):
        return _full(ctx, node.value)
    if isinstance(node, Name):
        return ctx.env[node.name]
    if isinstance(node, Neg):
        return -ev(node.operand)  # type: ignore[operator]
    if isinstance(node, Arith):
        a, b = ev(node.left), ev(node.right)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if node.op == "+":
                return a + b  # type: ignore[operator]
            if node.op == "-":
                return a - b  # type: ignore[operator]
            if node.op == "*":
                return a * b  # type: ignore[operator]
            return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)  # type: ignore[operator]
    if isinstance(node, Compare):
        values = [ev(o) for o in node.operands]
        parts = [_compare(op, values[i], values[i + 1]) for i, op in enumerate(node.ops)]
        return parts[0] if len(parts) == 1 else logic_and(parts)
    if isinstance(node, Logic):
        items = [ev(i) for i in node.items]
        return logic_and(items) if node.op == "and" else logic_or(items)  # type: ignore[arg-type]
    if isinstance(node, Not):
        t = ev(node.operand)
        assert isinstance(t, Tri)
        return Tri(~t.value & t.known, t.known)
    if isinstance(node, In):
        x = ev(node.operand)
        hits = [_compare("==", x, ev(item)) for item in node.items]
        result = logic_or(hits) if hits else Tri(np.zeros(ctx.n, bool), ~is_missing(x))
        return Tri(~result.value & result.known, result.known) if node.negate else result
    if isinstance(node, Call):
        return _call(node, ctx, ev)
    raise NotImplementedError(f"{type(node).__name__} has no pandas implementation")


# -- decisions ------------------------------------------------------------------------------------

NO_RULE = -1
CONFLICT = -2


@dataclass
class DecisionResult:
    """Which rule decided each row. `rules` lists the decision's rules then the quota else-rules."""

    decision: Decision
    rules: list[Rule]
    rule_index: np.ndarray  # index into `rules`; NO_RULE or CONFLICT
    matches: list[Tri]  # per rule in `rules` (else-rules: where they applied)
    conflict_with: np.ndarray | None = None  # for CONFLICT rows: (first, second) rule indices
    collected: np.ndarray | None = None  # collect: bool matrix rows x rules
    quota_vars: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


def _rule_table(d: Decision) -> list[Rule]:
    rules = list(d.rules)
    rules += [r.quota.else_rule for r in d.rules if r.quota is not None]
    return rules


def _quota_select(rule: Rule, eligible: np.ndarray, ctx: Context) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Among `eligible` rows, those within the quota; plus rank/size/limit for the texts."""
    q = rule.quota
    assert q is not None
    codes, ngroups = ctx.groups(q.per)
    idx = np.flatnonzero(eligible & (codes >= 0))
    n = ctx.n
    rank = np.full(n, np.nan)
    size = np.full(n, np.nan)
    limit = np.full(n, np.nan)
    if idx.size:
        keys = []
        for k in reversed(q.rank_by):
            v = evaluate_node(k.expr.node, ctx)[idx]  # type: ignore[arg-type, index]
            v = -v if k.descending else v
            keys.append(np.where(np.isnan(v), np.inf, v))  # missing ranks last
        cidx = codes[idx]
        order = np.lexsort([ctx.key_order()[idx]] + keys + [cidx])
        sorted_codes = cidx[order]
        pos = np.arange(idx.size)
        starts = np.r_[True, sorted_codes[1:] != sorted_codes[:-1]]
        start_pos = np.maximum.accumulate(np.where(starts, pos, 0))
        group_size = np.bincount(cidx, minlength=ngroups)
        if q.top_n is not None:
            group_limit = np.minimum(group_size, q.top_n)
        else:
            group_limit = np.floor(group_size * (q.top_share or 0.0) + 1e-9).astype(np.int64)
        rows = idx[order]
        rank[rows] = pos - start_pos + 1
        size[rows] = group_size[sorted_codes]
        limit[rows] = group_limit[sorted_codes]
    selected = eligible & (rank <= limit)
    return selected, {"quota_rank": rank, "quota_size": size, "quota_limit": limit}


def _first_set(stack: np.ndarray) -> np.ndarray:
    """Per row, the index of the first true column, or -1."""
    if stack.shape[1] == 0:
        return np.full(stack.shape[0], -1)
    first = np.argmax(stack, axis=1)
    return np.where(stack.any(axis=1), first, -1)


def decide(d: Decision, ctx: Context) -> DecisionResult:
    """Apply a decision's rules to every row under its hit policy."""
    rules = _rule_table(d)
    n = ctx.n
    matches: list[Tri] = []
    for r in d.rules:
        if r.when is None:
            matches.append(Tri(np.ones(n, bool), np.ones(n, bool)))
        else:
            t = evaluate_node(r.when.node, ctx)  # type: ignore[arg-type]
            assert isinstance(t, Tri)
            matches.append(t)
    result_index = np.full(n, NO_RULE, dtype=np.int64)
    result = DecisionResult(d, rules, result_index, matches)
    default = next((i for i, r in enumerate(d.rules) if r.is_default), None)

    if d.hit == "first":
        remaining = np.ones(n, dtype=bool)
        else_pos = len(d.rules)
        for i, r in enumerate(d.rules):
            hit = matches[i].value & remaining
            if r.quota is not None:
                selected, qvars = _quota_select(r, hit, ctx)
                result.quota_vars[i] = qvars
                result.quota_vars[else_pos] = qvars
                rejected = hit & ~selected
                result_index[rejected] = else_pos
                matches.append(Tri(rejected, np.ones(n, bool)))
                else_pos += 1
                hit = selected
            result_index[hit] = i
            remaining &= ~(hit | (result_index >= 0))
        return result

    for _ in rules[len(d.rules):]:
        matches.append(Tri(np.zeros(n, bool), np.ones(n, bool)))
    conditional = [i for i, r in enumerate(d.rules) if not r.is_default]
    stack = np.column_stack([matches[i].value for i in conditional]) if conditional else np.zeros((n, 0), bool)
    count = stack.sum(axis=1)
    none = count == 0
    first = _first_set(stack)
    cond_idx = np.array(conditional, dtype=np.int64)
    first_rule = np.where(first >= 0, cond_idx[np.maximum(first, 0)], NO_RULE)

    if d.hit in ("unique", "any"):
        conflict = count >= 2
        if d.hit == "any" and conflict.any():
            outs = {r.then for r in d.rules}
            code_of = {t: c for c, t in enumerate(sorted(outs, key=repr))}
            codes = np.array([code_of[d.rules[i].then] for i in conditional], dtype=np.int64)
            big = np.iinfo(np.int64).max
            lo = np.where(stack, codes, big).min(axis=1)
            hi = np.where(stack, codes, -1).max(axis=1)
            conflict &= lo != hi
        result_index[:] = first_rule
        if conflict.any():
            second_stack = stack.copy()
            second_stack[np.arange(n), np.maximum(first, 0)] = False
            second = _first_set(second_stack)
            pairs = np.stack([first_rule, np.where(second >= 0, cond_idx[np.maximum(second, 0)], NO_RULE)], axis=1)
            result.conflict_with = pairs
            result_index[conflict] = CONFLICT
    elif d.hit == "priority":
        values = list(d.main.values or ())
        prio = np.array([values.index(dict(d.rules[i].then)[d.name]) for i in conditional], dtype=np.int64)
        score = np.where(stack, prio * (len(conditional) + 1) + np.arange(len(conditional)), np.iinfo(np.int64).max)
        best = np.argmin(score, axis=1) if conditional else np.zeros(n, np.int64)
        result_index[:] = np.where(none, NO_RULE, cond_idx[best] if conditional else NO_RULE)
    elif d.hit == "collect":
        result_index[:] = first_rule
        full = np.zeros((n, len(rules)), dtype=bool)
        if conditional:
            full[:, cond_idx] = stack
        if default is not None:
            full[none, default] = True
        result.collected = full
    else:
        raise NotImplementedError(f"hit policy {d.hit}")
    if default is not None:
        result_index[none] = default
    return result


# -- entities -------------------------------------------------------------------------------------

@dataclass
class EntityResult:
    entity: str
    plan: EntityPlan
    ctx: Context
    decisions: dict[str, DecisionResult]
    unknown_refs: dict[str, pd.DataFrame] = field(default_factory=dict)  # join name -> rows not found


def column_to_vec(series: pd.Series, kind: str) -> Vec:
    """A typed fact column as an evaluation vector."""
    if kind in ("number", "integer"):
        return series.to_numpy(dtype=float, na_value=np.nan)
    if kind == "boolean":
        known = ~series.isna().to_numpy()
        value = series.fillna(False).to_numpy(dtype=bool)
        return Tri(value & known, known)
    out = series.to_numpy(dtype=object, na_value=None)
    return out


def decision_vectors(res: DecisionResult) -> dict[str, Vec]:
    """The decided values as vectors, so later decisions and joins can read them."""
    d = res.decision
    out: dict[str, Vec] = {}
    idx = res.rule_index
    for o in d.outputs:
        if d.hit == "collect" and d.aggregate != "list":
            assert res.collected is not None
            vals = np.array([float(dict(r.then).get(o.name, np.nan)) for r in res.rules])
            m = res.collected
            with np.errstate(invalid="ignore"):
                if d.aggregate == "count":
                    out[o.name] = m.sum(axis=1).astype(float)
                elif d.aggregate == "sum":
                    out[o.name] = np.where(m.any(axis=1), (m * np.nan_to_num(vals)).sum(axis=1), np.nan)
                elif d.aggregate == "min":
                    out[o.name] = np.where(m.any(axis=1), np.where(m, vals, np.inf).min(axis=1), np.nan)
                else:
                    out[o.name] = np.where(m.any(axis=1), np.where(m, vals, -np.inf).max(axis=1), np.nan)
            continue
        table = [dict(r.then).get(o.name) for r in res.rules]
        if o.type == "boolean":
            value = np.array([bool(v) for v in table] + [False, False])[idx]
            known = np.array([True] * len(table) + [False, False])[idx]
            out[o.name] = Tri(value & known, known)
        elif o.type == "number":
            out[o.name] = np.array([float(v) for v in table] + [np.nan, np.nan])[idx]
        else:
            arr = np.empty(len(table) + 2, dtype=object)
            arr[: len(table)] = table
            arr[len(table):] = None
            if d.hit == "collect":
                assert res.collected is not None
                out[o.name] = first_collected(res, arr)
            else:
                out[o.name] = arr[idx]
    return out


def first_collected(res: DecisionResult, table: np.ndarray) -> np.ndarray:
    """For `collect` with a list: the value of the first collected rule (what other rules can read)."""
    assert res.collected is not None
    first = _first_set(res.collected)
    return table[np.where(first >= 0, first, len(table) - 1)]


def evaluate_entity(ep: EntityPlan, frame: pd.DataFrame, fact_types: dict[str, str],
                    joined: dict[str, "EntityResult"]) -> EntityResult:
    """Evaluate every derived feature and decision of one entity over the whole table."""
    n = len(frame)
    env: dict[str, Vec] = {name: column_to_vec(frame[name], kind) for name, kind in fact_types.items()}
    key = env[ep.key] if ep.key else np.arange(n).astype(str).astype(object)
    ctx = Context(env, n, np.asarray(key))
    unknown: dict[str, pd.DataFrame] = {}
    for j in ep.joins:
        other = joined[j.entity]
        index = pd.Index(other.ctx.key)
        ref = env[j.on]
        pos = index.get_indexer(pd.Series(ref, dtype=object))
        missing_ref = (pos < 0) & ~is_missing(ref)
        if missing_ref.any():
            unknown[j.name] = pd.DataFrame({ep.key: ctx.key[missing_ref], j.on: ref[missing_ref]})
        take = np.where(pos >= 0, pos, 0)
        for name in j.take:
            col = other.ctx.env[name]
            if isinstance(col, Tri):
                env[name] = Tri(np.where(pos >= 0, col.value[take], False) if len(col.value) else np.zeros(n, bool),
                                np.where(pos >= 0, col.known[take], False) if len(col.known) else np.zeros(n, bool))
            elif col.dtype == object:
                vals = col[take] if len(col) else np.full(n, None, dtype=object)
                env[name] = np.where(pos >= 0, vals, None)
            else:
                vals = col[take] if len(col) else np.full(n, np.nan)
                env[name] = np.where(pos >= 0, vals, np.nan)
    results: dict[str, DecisionResult] = {}
    for step in ep.steps:
        if isinstance(step, DeriveStep):
            env[step.name] = evaluate_node(step.derive.expr.node, ctx)  # type: ignore[arg-type]
        elif isinstance(step, DecisionStep):
            res = decide(step.decision, ctx)
            results[step.name] = res
            env.update(decision_vectors(res))
    return EntityResult(ep.entity, ep, ctx, results, unknown)


def evaluate(plan: Plan, frames: dict[str, pd.DataFrame]) -> dict[str, EntityResult]:
    """Evaluate every entity of the plan, joined entities first."""
    out: dict[str, EntityResult] = {}
    ps = plan.checked.policy_set
    for ep in plan.entities:
        types = {name: f.type for name, f in ps.facts(ep.entity).items()}
        out[ep.entity] = evaluate_entity(ep, frames[ep.entity], types, out)
    return out
