"""Stage 6, evaluate: the pandas/numpy backend. Every expression is computed over the whole table.

Values are held as numpy arrays: numbers as float64 (NaN = missing), text as `Text` (codes into
its distinct values, -1 = missing), conditions as `Tri` (three-valued: true / false / unknown because of a missing
value). A rule matches only where its condition is true; unknown is not true.
"""

from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from . import population
from .population import evaluate_calibrated
from ..language.errors import InputError, Problem
from ..language.functions import POPULATION_FUNCTIONS
from ..language.model import Decision, Expr, Invariant, Measure, Rule
from ..language.numbers import plain_number
from .number_columns import round_half_away
from ..language.nodes import COMPARE, FLIPPED, Arith, Bool, Call, Compare, In, Logic, MapLit, Member, Name, Neg, \
    Node, Not, Num, Str, STREAK, expand_streak, map_children, past_key, to_text, walk
from ..language.plan import DecisionStep, DeriveStep, EntityPlan


@dataclass(frozen=True)
class Tri:
    """A vector of conditions. Invariant: `value` is only true where `known` is true."""

    value: np.ndarray
    known: np.ndarray

    @staticmethod
    def of(value: np.ndarray, known: np.ndarray) -> "Tri":
        return Tri(value & known, known)


@dataclass(frozen=True)
class Text:
    """A text vector stored as codes into its distinct values (-1 = missing).

    Comparisons, `in`, `lookup` and grouping work on the few distinct values and are then spread
    to the rows by their codes, instead of comparing a million Python strings.
    """

    codes: np.ndarray
    categories: np.ndarray  # object array of distinct str

    def __len__(self) -> int:
        return self.codes.size

    def take(self, rows: np.ndarray) -> "Text":
        return Text(self.codes[rows], self.categories)

    def objects(self) -> np.ndarray:
        """The values as an object array, None where missing."""
        table = np.empty(self.categories.size + 1, dtype=object)
        table[:-1] = self.categories
        table[-1] = None
        return table[np.where(self.codes >= 0, self.codes, self.categories.size)]

    def constant(self) -> str | None:
        """The single value every row holds, if that is the case."""
        if self.categories.size == 1 and self.codes.size and not (self.codes < 0).any():
            return str(self.categories[0])
        return None

    @staticmethod
    def of_objects(values: np.ndarray) -> "Text":
        codes, uniques = pd.factorize(pd.Series(values, dtype=object), use_na_sentinel=True)
        return Text(codes.astype(np.int64), np.asarray(uniques, dtype=object))

    @staticmethod
    def of_arrow(array: pa.Array | pa.ChunkedArray) -> "Text":
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks() if array.num_chunks else pa.array([], pa.string())
        encoded = pc.dictionary_encode(array.cast(pa.string()))
        codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return Text(codes, encoded.dictionary.to_numpy(zero_copy_only=False).astype(object))

    @staticmethod
    def full(n: int, value: str) -> "Text":
        return Text(np.zeros(n, dtype=np.int64), np.array([value], dtype=object))


@dataclass(frozen=True)
class ListVec:
    """Per row, the list of values a `collect` decision gathered (rule order), as codes into the
    distinct lists (-1 = missing: a joined entity that was not found). An empty list is not missing."""

    codes: np.ndarray
    lists: tuple[tuple[Any, ...], ...]

    def __len__(self) -> int:
        return self.codes.size

    def take(self, rows: np.ndarray) -> "ListVec":
        return ListVec(self.codes[rows], self.lists)

    def contains(self, value: Any) -> Tri:
        """Whether each row's list holds `value` (unknown where the list is missing)."""
        want = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        per_list = np.array([any(_same_item(x, want) for x in lst) for lst in self.lists] + [False], dtype=bool)
        known = self.codes >= 0
        return Tri.of(per_list[np.where(known, self.codes, len(self.lists))], known)

    def objects(self) -> np.ndarray:
        """The lists as an object array of Python lists, None where missing."""
        table = np.empty(len(self.lists) + 1, dtype=object)
        for i, lst in enumerate(self.lists):
            table[i] = list(lst)
        table[-1] = None
        return table[np.where(self.codes >= 0, self.codes, len(self.lists))]


def _same_item(x: Any, want: Any) -> bool:
    if isinstance(want, float):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and float(x) == want
    return type(x) is type(want) and x == want


Vec = Union[np.ndarray, Tri, Text, ListVec]


def is_missing(v: Vec) -> np.ndarray:
    """Where a vector's value is missing."""
    if isinstance(v, Tri):
        return ~v.known
    if isinstance(v, (Text, ListVec)):
        return v.codes < 0
    if v.dtype == object:
        return pd.isna(v)
    return np.isnan(v)


def take(v: Vec, rows: np.ndarray) -> Vec:
    """Some rows of a vector."""
    if isinstance(v, Tri):
        return Tri(v.value[rows], v.known[rows])
    if isinstance(v, (Text, ListVec)):
        return v.take(rows)
    return v[rows]


def scalar_at(v: Vec, i: int) -> Any:
    """The plain Python value of row `i` (None when missing), for traces and per-row tests."""
    if isinstance(v, Tri):
        return bool(v.value[i]) if v.known[i] else None
    if isinstance(v, Text):
        return None if v.codes[i] < 0 else str(v.categories[v.codes[i]])
    if isinstance(v, ListVec):
        return None if v.codes[i] < 0 else list(v.lists[v.codes[i]])
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
    key: Any  # the key column: a numpy or pandas array of text
    # population functions: read from a calibration instead of this batch, and/or record their
    # arguments so that a calibration can be made (see engine.engines.calibration)
    calibration: dict[str, dict[Any, Any]] | None = None
    record: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
    key_name: str = "key"
    # population functions and quotas answered from outside this table (engine.distributed: the
    # table is one partition of a larger population)
    population: Any = None
    _key_order: np.ndarray | None = None
    _key_objects: np.ndarray | None = None
    _groups: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    _labels: dict[str | None, np.ndarray] = field(default_factory=dict)

    def key_order(self) -> np.ndarray:
        """Position of each row when sorted by key (text order): the deterministic tie-break."""
        if self._key_order is None:
            idx = pc.sort_indices(pa.array(self.key, type=pa.string(), from_pandas=True)).to_numpy()
            order = np.empty(self.n, dtype=np.int64)
            order[idx] = np.arange(self.n)
            self._key_order = order
        return self._key_order

    def group_labels(self, name: str | None) -> np.ndarray:
        """The group value of each row ("" without `by=`; None where the group is missing); made once
        per grouping (the same array each time: a partition's hook codes it once), not to be changed."""
        if name not in self._labels:
            self._labels[name] = self._make_labels(name)
        return self._labels[name]

    def _make_labels(self, name: str | None) -> np.ndarray:
        if name is None:
            return np.full(self.n, "", dtype=object)
        col = self.env[name]
        if isinstance(col, Text):
            return col.objects()
        if isinstance(col, Tri):
            return np.where(col.known, col.value, None).astype(object)
        return np.where(np.isnan(col), None, col).astype(object)

    def key_objects(self) -> np.ndarray:
        if self._key_objects is None:  # asked for by every population call against a calibration
            self._key_objects = np.asarray(pd.Series(self.key).astype(object).to_numpy(), dtype=object)
        return self._key_objects

    def groups(self, name: str | None) -> tuple[np.ndarray, int]:
        """Group codes (-1 for a missing group value) and the number of groups."""
        if name is None:
            return np.zeros(self.n, dtype=np.int64), 1 if self.n else 0
        if name not in self._groups:
            col = self.env[name]
            if isinstance(col, Text):
                self._groups[name] = (col.codes, col.categories.size)
                return self._groups[name]
            if isinstance(col, Tri):
                col = np.where(col.known, col.value.astype(np.int8), -1).astype(float)
                col[col < 0] = np.nan
            codes, uniques = pd.factorize(col, sort=True)
            self._groups[name] = (codes.astype(np.int64), len(uniques))
        return self._groups[name]


def pop_rank(x: np.ndarray, ctx: Context, by: str | None, ties: str = "key") -> np.ndarray:
    """Rank within the group, 1 = best; missing stays missing. Equal values are ordered by key
    (`ties="key"`: 1, 2, 3) or share the best rank of their tie group (`ties="together"`: 1, 2, 2, 4)."""
    codes, _ = ctx.groups(by)
    return population.rank_values(x, codes, ctx.key_order(), ties)


def pop_pct_rank(x: np.ndarray, ctx: Context, by: str | None) -> np.ndarray:
    """Share of the group's non-missing values that are at or below x, in (0, 1]."""
    return population.pct_rank_values(x, ctx.groups(by)[0])


def pop_cumshare(x: np.ndarray, ctx: Context, by: str | None) -> np.ndarray:
    """Pareto position: sum of the group's values >= x, divided by the group total."""
    return population.cumshare_values(x, ctx.groups(by)[0])


def pop_stat(kind: str, x: np.ndarray, ctx: Context, by: str | None, q: float = 0.5) -> np.ndarray:
    """A group statistic broadcast to every row: mean, sum, count, quantile, zscore."""
    codes, ngroups = ctx.groups(by)
    return population.group_stat(kind, x, codes, ngroups, q)


# -- expressions ----------------------------------------------------------------------------------

def _full(ctx: Context, value: Any) -> Vec:
    if isinstance(value, bool):
        return Tri(np.full(ctx.n, value), np.ones(ctx.n, dtype=bool))
    if isinstance(value, str):
        return Text.full(ctx.n, value)
    return np.full(ctx.n, float(value))


def _text_compare(op: str, a: Text, b: Text) -> Tri:
    known = (a.codes >= 0) & (b.codes >= 0)
    for text, other, oper in ((b, a, op), (a, b, FLIPPED[op])):
        literal = text.constant()
        if literal is not None:
            # decide once per distinct value, then spread to the rows
            per_value = np.array([bool(COMPARE[oper](c, literal)) for c in other.categories] + [False])
            return Tri.of(per_value[other.codes], known)
    x, y = a.objects(), b.objects()
    x = np.where(known, x, "")
    y = np.where(known, y, "")
    return Tri.of(np.asarray(COMPARE[op](x, y), dtype=bool), known)


def _compare(op: str, a: Vec, b: Vec) -> Tri:
    if isinstance(a, Tri) and isinstance(b, Tri):
        known = a.known & b.known
        eq = a.value == b.value
        return Tri.of(eq if op == "==" else ~eq, known)
    if isinstance(a, Text) and isinstance(b, Text):
        return _text_compare(op, a, b)
    known = ~is_missing(a) & ~is_missing(b)
    with np.errstate(invalid="ignore"):
        v = COMPARE[op](a, b)
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
    if isinstance(a, Text):
        assert isinstance(b, Text)
        if a.categories is b.categories:
            return Text(np.where(cond, a.codes, b.codes), a.categories)
        return Text.of_objects(np.where(cond, a.objects(), b.objects()))
    return np.where(cond, a, b)


def _lookup(node: Call, key: Vec) -> Vec:
    """`lookup(key, table, default)`: decided once per distinct key, then spread to the rows."""
    table = node.args[1]
    assert isinstance(table, MapLit)
    default = fixed_value(node.args[2]) if len(node.args) > 2 else None
    entries = [(k, fixed_value(v)) for k, v in table.items]
    sample = entries[0][1] if entries else default
    if isinstance(key, Tri):
        raise TypeError("lookup on a yes/no key")
    if isinstance(key, Text):
        mapping: dict[Any, Any] = dict(entries)
        codes, distinct = key.codes, list(key.categories)
    else:
        mapping = {float(k): v for k, v in entries if _is_number(k)}
        factor, uniques = pd.factorize(key, use_na_sentinel=True)
        codes, distinct = factor.astype(np.int64), list(uniques)
    # the last slot answers rows whose key is missing
    per_key = [mapping.get(k, default) for k in distinct] + [default]
    slot = np.where(codes >= 0, codes, len(distinct))
    if isinstance(sample, bool):
        known = np.array([v is not None for v in per_key])
        value = np.array([bool(v) for v in per_key])
        return Tri(value[slot] & known[slot], known[slot])
    if isinstance(sample, str):
        names = list(dict.fromkeys(v for v in per_key if v is not None))
        index = np.array([names.index(v) if v is not None else -1 for v in per_key], dtype=np.int64)
        return Text(index[slot], np.array(names, dtype=object))
    numbers = np.array([np.nan if v is None else float(v) for v in per_key])
    return numbers[slot]


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
    if f == STREAK:
        return ev(expand_streak(node))
    if f == "previous":
        return ctx.env[past_key(node.args[0].name, int(fixed_value(node.args[1])) if len(node.args) > 1 else 1)]  # type: ignore[union-attr]
    if f == "lookup":
        return _lookup(node, ev(node.args[0]))
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
    xs = [a for a in args if isinstance(a, np.ndarray)]
    x = xs[0] if xs else np.zeros(ctx.n)
    if f == "count":
        x = np.zeros(ctx.n) if not args else np.where(is_missing(args[0]), np.nan, 0.0)
    if f in POPULATION_FUNCTIONS and ctx.population is not None:
        ties = _ties(node)
        q = float(fixed_value(node.args[1])) if f == "quantile" else 0.5
        keys = ctx.key_objects() if f == "rank" and ties == "key" else None
        return ctx.population.value(to_text(node), f, np.asarray(x, dtype=float), ctx.group_labels(by), keys, q, ties)
    if f in POPULATION_FUNCTIONS and (ctx.record is not None or ctx.calibration is not None):
        call = to_text(node)
        if ctx.record is not None:
            ctx.record[call] = (np.asarray(x, dtype=float).copy(), ctx.group_labels(by), ctx.key_objects())
        if ctx.calibration is not None:
            q = float(node.args[1].value) if f == "quantile" else 0.5  # type: ignore[union-attr]
            return evaluate_calibrated(ctx.calibration.get(call, {}), f, np.asarray(x, dtype=float),
                                       ctx.group_labels(by), ctx.key_objects(), q, _ties(node))
    if f == "count":
        return pop_stat("count", x, ctx, by)
    with np.errstate(invalid="ignore", divide="ignore"):
        if f == "min":
            return np.minimum.reduce(xs)
        if f == "max":
            return np.maximum.reduce(xs)
        if f == "abs":
            return np.abs(x)
        if f == "round":
            digits = int(fixed_value(node.args[1])) if len(node.args) > 1 else 0
            return round_half_away(x, digits)
        if f == "log":
            return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.nan)
    if f == "rank":
        return pop_rank(x, ctx, by, ties=_ties(node))
    if f == "pct_rank":
        return pop_pct_rank(x, ctx, by)
    if f == "cumshare":
        return pop_cumshare(x, ctx, by)
    if f == "quantile":
        return pop_stat("quantile", x, ctx, by, float(node.args[1].value))  # type: ignore[union-attr]
    if f in ("mean", "sum", "zscore"):
        return pop_stat(f, x, ctx, by)
    raise NotImplementedError(f"function {f} has no pandas implementation")


def _ties(node: Call) -> str:
    ties = node.kwarg("ties")
    return str(fixed_value(ties)) if ties is not None else "key"


def fixed_value(node: Node) -> Any:
    """The value of a literal (or a negated number), as the type checker allows in fixed places."""
    if isinstance(node, Neg):
        return -fixed_value(node.operand)
    if isinstance(node, (Num, Str, Bool)):
        return node.value
    raise TypeError(f"not a fixed value: {to_text(node)}")


class Overflow(Exception):
    """A number grew too large to hold (infinite) in `node`, at `rows` (empty: in a population figure).
    Raised while evaluating and turned into a located InputError by the step that evaluated it."""

    def __init__(self, node: Node | None, rows: np.ndarray) -> None:
        super().__init__(to_text(node) if node is not None else "")
        self.node, self.rows = node, rows

    def __reduce__(self) -> tuple[Any, ...]:  # from a Dask worker to the driver
        return (Overflow, (self.node, self.rows))


def _arith(op: str, a: Any, b: Any) -> Any:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


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
        try:
            # numpy's overflow flag costs nothing where nothing overflows; the rows are found only when it is set
            with np.errstate(invalid="ignore", divide="ignore", over="raise"):
                return _arith(node.op, a, b)
        except FloatingPointError:
            with np.errstate(all="ignore"):
                rows = np.flatnonzero(np.isinf(np.asarray(_arith(node.op, a, b), dtype=float)))
            raise Overflow(node, rows) from None
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
    if isinstance(node, Member):
        collection = ev(node.collection)
        assert isinstance(collection, ListVec)
        found = collection.contains(fixed_value(node.item))
        return Tri(~found.value & found.known, found.known) if node.negate else found
    if isinstance(node, In):
        x = ev(node.operand)
        hits = [_compare("==", x, ev(item)) for item in node.items]
        result = logic_or(hits) if hits else Tri(np.zeros(ctx.n, bool), ~is_missing(x))
        return Tri(~result.value & result.known, result.known) if node.negate else result
    if isinstance(node, Call):
        out = _call(node, ctx, ev)
        if node.func in POPULATION_FUNCTIONS and isinstance(out, np.ndarray) and out.dtype.kind == "f":
            # a sum (or a mean, a spread) of numbers that each fit can be too large to hold
            rows = np.flatnonzero(np.isinf(out))
            if rows.size:
                raise Overflow(node, rows)
        return out
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
    quota_vars: dict[int, dict[str, Vec]] = field(default_factory=dict)
    values: dict[str, Vec] = field(default_factory=dict)  # per output, what was decided


def _quota_select(rule: Rule, eligible: np.ndarray, ctx: Context) -> tuple[np.ndarray, dict[str, Vec]]:
    """Among `eligible` rows, those within the quota; plus rank/size/limit for the texts."""
    q = rule.quota
    assert q is not None
    codes, _ = ctx.groups(q.per)
    idx = np.flatnonzero(eligible & (codes >= 0))
    n = ctx.n
    rank = np.full(n, np.nan)
    size = np.full(n, np.nan)
    limit = np.full(n, np.nan)
    tied = np.zeros(n, dtype=np.int64)
    if idx.size:
        keys = []
        for k in q.rank_by:
            v = evaluate_node(k.expr.node, ctx)[idx]  # type: ignore[arg-type, index]
            v = -v if k.descending else v
            keys.append(np.where(np.isnan(v), np.inf, v))  # missing ranks last
        if ctx.population is not None:
            ranks, sizes, ties, order = ctx.population.quota(
                f"quota of rule {rule.id}", ctx.group_labels(q.per)[idx], keys, ctx.key_objects()[idx], q.ties)
        else:
            ranks, sizes, ties, order = population.quota_ranks(codes[idx], keys, ctx.key_order()[idx], q.ties)
        rows = idx[order]
        rank[rows] = ranks
        size[rows] = sizes
        limit[rows] = population.quota_limit(sizes, q.top_n, q.top_share)
        tied[rows] = ties
    selected = eligible & (rank <= limit)
    return selected, {"quota_rank": rank, "quota_size": size, "quota_limit": limit,
                      "quota_tie": _tie_texts(tied, q.ties, ctx.key_name)}


def _tie_texts(tied: np.ndarray, ties: str, key_name: str) -> Text:
    """`{quota_tie}`: empty without a tie, else who shares the ranking values and how the tie was settled."""
    counts = np.unique(tied[tied > 0])
    settle = f"ties go to the smaller {key_name}" if ties == "key" else "all share the best rank of the tie"
    texts = [f" (tied with {k} other{'s' if k > 1 else ''} on the ranking; {settle})" for k in counts]
    codes = np.where(tied > 0, np.searchsorted(counts, tied) + 1, 0)
    return Text(codes.astype(np.int64), np.array([""] + texts, dtype=object))


def _first_set(stack: np.ndarray) -> np.ndarray:
    """Per row, the index of the first true column, or -1."""
    if stack.shape[1] == 0:
        return np.full(stack.shape[0], -1)
    first = np.argmax(stack, axis=1)
    return np.where(stack.any(axis=1), first, -1)


def condition_matches(d: Decision, ctx: Context) -> list[Tri]:
    """Where each rule's condition is true (a rule without `when` matches everywhere)."""
    out: list[Tri] = []
    for r in d.rules:
        if r.when is None:
            out.append(Tri(np.ones(ctx.n, bool), np.ones(ctx.n, bool)))
        else:
            t = evaluate_node(r.when.node, ctx)  # type: ignore[arg-type]
            assert isinstance(t, Tri)
            out.append(t)
    return out


def decide(d: Decision, ctx: Context, matches: list[Tri] | None = None) -> DecisionResult:
    """Apply a decision's rules to every row under its hit policy, then compute the decided values.

    `matches` (where each rule's condition is true) is computed here unless a backend that matches
    conditions itself, such as durable_rules, passes it in; the hit policy is the same for all.
    """
    result = _apply_hit_policy(d, ctx, matches)
    result.values = _decided_values(result, ctx)
    return result


def _apply_hit_policy(d: Decision, ctx: Context, matches: list[Tri] | None) -> DecisionResult:
    rules = d.all_rules
    n = ctx.n
    matches = list(matches) if matches is not None else condition_matches(d, ctx)
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
        # rank the rules by their values (first output first), written order among equals
        keys = [d.priority(d.rules[i]) for i in conditional]
        rank = {k: r for r, k in enumerate(sorted(set(keys)))}
        prio = np.array([rank[k] for k in keys], dtype=np.int64)
        score = np.where(stack, prio * (len(conditional) + 1) + np.arange(len(conditional)), np.iinfo(np.int64).max)
        best = np.argmin(score, axis=1) if conditional else np.zeros(n, np.int64)
        result_index[:] = np.where(none, NO_RULE, cond_idx[best] if conditional else NO_RULE)
    elif d.hit in ("collect", "output-order"):
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
    violations: dict[str, np.ndarray] = field(default_factory=dict)  # invariant id -> rows that break it
    measures: dict[str, Any] = field(default_factory=dict)  # measure name -> its value (None when unknown)
    # per decision, how many got each value: kept here when the vectors are released (engine.batch.result)
    counts: dict[str, dict[str, int]] | None = None


def invariant_violations(ep: EntityPlan, ctx: Context) -> dict[str, np.ndarray]:
    """Per invariant, the rows that break it: where a `never` condition is true, or an `always`
    condition false. Unknown (a missing value) breaks neither, as a rule with it would not match."""
    return {inv.id: invariant_violation(inv, ctx) for inv in ep.invariants}


def invariant_violation(inv: Invariant, ctx: Context) -> np.ndarray:
    """The rows that break one invariant."""
    t = evaluate_node(inv.expr.node, ctx)  # type: ignore[arg-type]
    assert isinstance(t, Tri)
    return t.value.copy() if inv.kind == "never" else (t.known & ~t.value)


def measure_values(ep: EntityPlan, ctx: Context) -> dict[str, Any]:
    """Each measure's value: the same for every row by construction (the type checker sees to it), so
    the first row's; missing (None) for an empty population or an undefined figure (0 / 0)."""
    return {m.name: measure_value(m, ctx) for m in ep.measures}


def measure_value(m: Measure, ctx: Context) -> Any:
    """One measure's value (see `measure_values`)."""
    if ctx.n == 0:  # no row to read the figure from: worked out for a population of no one
        vec = evaluate_node(_over_no_one(m.expr.node), Context({}, 1, np.array([""], dtype=object)))  # type: ignore[arg-type]
    else:
        vec = evaluate_node(m.expr.node, ctx)  # type: ignore[arg-type]
    if isinstance(vec, Tri):
        return bool(vec.value[0]) if vec.known[0] else None
    value = float(np.asarray(vec, dtype=float)[0])
    if np.isinf(value):
        raise Overflow(None, np.zeros(0, np.int64))
    return plain_number(value) if np.isfinite(value) else None


def _refuse_overflow(res: "DecisionResult", vectors: dict[str, Vec], key: Any) -> None:
    """A computed output too large for a number (infinite) is an error naming the rule and the
    entities: written, it would be `inf` in one format and empty in another."""
    for name, v in vectors.items():
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            continue
        rows = np.flatnonzero(np.isinf(v))
        if not rows.size:
            continue
        d = res.decision
        i = int(res.rule_index[rows[0]]) if res.collected is None else -1
        rule = res.rules[i] if 0 <= i < len(res.rules) else None
        more = f" (and {rows.size - 1:,} more)" if rows.size > 1 else ""
        ids = str(key.iloc[rows[0]]) if hasattr(key, "iloc") else str(key[rows[0]])
        by = f"rule `{rule.id}` of decision `{d.name}`" if rule is not None else f"decision `{d.name}`"
        raise InputError(Problem("overflow", f"{by} computes an infinite `{name}` for {ids}{more}: the number is "
                                 "too large to hold", rule.loc if rule is not None else d.loc,
                                 "check the facts of that entity, or the formula; nothing was written"))


def _over_no_one(node: Node) -> Node:
    """A measure of an empty population: each aggregate is what it is over no rows (a count or a sum
    is 0, a mean or a quantile missing); the rest reads no entity (the type checker sees to that)."""
    if isinstance(node, Call) and node.func in ("count", "sum"):
        return Num(0.0, node.pos)
    if isinstance(node, Call) and node.func in ("mean", "quantile"):
        return Num(math.nan, node.pos)
    return map_children(node, _over_no_one)


def column_to_vec(series: pd.Series, kind: str) -> Vec:
    """A typed fact column as an evaluation vector."""
    if kind in ("number", "integer"):
        return series.to_numpy(dtype=float, na_value=np.nan)
    if kind == "boolean":
        known = ~series.isna().to_numpy()
        value = series.fillna(False).to_numpy(dtype=bool)
        return Tri(value & known, known)
    return Text.of_arrow(pa.array(series, type=pa.string(), from_pandas=True))


def missing_vector(kind: str, n: int) -> Vec:
    """`n` missing values of a kind (number, string or boolean)."""
    if kind == "boolean":
        return Tri(np.zeros(n, bool), np.zeros(n, bool))
    if kind == "string":
        return Text(np.full(n, -1, dtype=np.int64), np.array([], dtype=object))
    return np.full(n, np.nan)


class FactEnv(dict):
    """Names to vectors; a fact column (or a parameter, for texts) is made the first time it is read."""

    def __init__(self, frame: pd.DataFrame | Mapping[str, pd.Series], fact_types: dict[str, str],
                 n: int = 0, params: Mapping[str, Any] | None = None,
                 past: Mapping[str, pd.Series] | None = None, past_kinds: Mapping[str, str] | None = None):
        super().__init__()
        self.frame = frame
        self.fact_types = fact_types
        self.n = n
        self.params = dict(params or {})
        self.past = past if past is not None else {}
        self.past_kinds = dict(past_kinds or {})
        # the writer's and the recorder's threads read columns too: each is made once, by one of them
        self._making = threading.Lock()

    def __missing__(self, name: str) -> Vec:
        with self._making:
            if dict.__contains__(self, name):  # made by another thread while this one waited
                return dict.__getitem__(self, name)
            vec = self._make(name)
            self[name] = vec
            return vec

    def _make(self, name: str) -> Vec:
        if name in self.params:
            vec = _full(Context({}, self.n, None), self.params[name])
        elif name in self.fact_types:
            col = self.frame[name]
            # a column may come as a vector already (`kam stream`'s one-row events)
            vec = col if isinstance(col, (np.ndarray, Text, Tri)) else column_to_vec(col, self.fact_types[name])
        elif name in self.past_kinds:
            # a value of an earlier period; missing for everyone when the history does not have it
            column = self.past.get(name) if hasattr(self.past, "get") else None
            vec = column_to_vec(column, self.past_kinds[name]) if column is not None else \
                missing_vector(self.past_kinds[name], self.n)
        else:
            raise KeyError(name)
        return vec


def _output_text(res: DecisionResult, name: str, categories: list[Any]) -> Text:
    """A text output as codes: each rule's value looked up once, spread by the deciding rule."""
    cats = list(dict.fromkeys(categories))
    per_rule = [cats.index(dict(r.then)[name]) if name in dict(r.then) else -1 for r in res.rules]
    table = np.array(per_rule + [-1, -1], dtype=np.int64)  # NO_RULE and CONFLICT slots
    codes = table[res.rule_index]  # -1 and -2 index the two trailing slots
    return Text(codes, np.array(cats, dtype=object))


def mask_codes(mask: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Rows of a bool matrix as codes of their distinct patterns (packed into one integer per row)."""
    if mask.shape[1] > 62:
        uniq, inverse = np.unique(mask, axis=0, return_inverse=True)
        return inverse.reshape(-1), list(uniq)
    packed = mask.astype(np.int64) @ (np.int64(1) << np.arange(mask.shape[1], dtype=np.int64))
    codes, uniques = pd.factorize(packed)
    patterns = [((int(u) >> np.arange(mask.shape[1])) & 1).astype(bool) for u in uniques]
    return codes.astype(np.int64), patterns


def list_order(res: DecisionResult) -> list[int]:
    """The order in which a list decision gathers its rules: written order for `collect`, by the
    declared values for `output-order` (written order among equal values)."""
    d = res.decision
    positions = list(range(len(res.rules)))
    if d.hit == "output-order":
        positions.sort(key=lambda i: (d.priority(res.rules[i]), i))
    return positions


def collected(res: DecisionResult, name: str, values: bool = True) -> ListVec:
    """What a list decision gathered per row: the values of output `name` (or the rule ids) of every
    matching rule, in its order."""
    assert res.collected is not None
    codes, patterns = mask_codes(res.collected)
    order = list_order(res)
    lists = tuple(tuple((dict(res.rules[i].then)[name] if values else res.rules[i].id) for i in order if pattern[i])
                  for pattern in patterns)
    return ListVec(codes, lists)


def decision_vectors(res: DecisionResult) -> dict[str, Vec]:
    """The decided values as vectors, so later decisions and joins can read them."""
    return res.values


def _rule_values(res: DecisionResult, output: str, ctx: Context) -> list[Any]:
    """Per rule, its value of an output: a fixed value, or the vector its expression computes."""
    out: list[Any] = []
    for r in res.rules:
        v = dict(r.then).get(output)
        out.append(evaluate_node(v.node, ctx) if isinstance(v, Expr) and v.node is not None else v)
    return out


def _decided_values(res: DecisionResult, ctx: Context) -> dict[str, Vec]:
    d = res.decision
    out: dict[str, Vec] = {}
    idx = res.rule_index
    n = idx.size
    for o in d.outputs:
        if d.gives_list:
            out[o.name] = collected(res, o.name)
            continue
        values = _rule_values(res, o.name, ctx)
        computed = any(isinstance(v, (np.ndarray, Tri)) for v in values)
        if d.hit == "collect":
            assert res.collected is not None
            m = res.collected
            if d.aggregate == "count":
                # counts the rules that matched, whatever the type of their values
                out[o.name] = m.sum(axis=1).astype(float)
                continue
            grid = np.column_stack([np.broadcast_to(np.asarray(v if v is not None else np.nan, dtype=float), (n,))
                                    for v in values]) if values else np.zeros((n, 0))
            with np.errstate(invalid="ignore"):
                if d.aggregate == "sum":
                    vec = np.where(m.any(axis=1), np.where(m, np.nan_to_num(grid), 0.0).sum(axis=1), np.nan)
                elif d.aggregate == "min":
                    vec = np.where(m.any(axis=1), np.where(m, grid, np.inf).min(axis=1), np.nan)
                else:
                    vec = np.where(m.any(axis=1), np.where(m, grid, -np.inf).max(axis=1), np.nan)
            out[o.name] = _rounded(vec, o.decimals)
            continue
        if computed:
            out[o.name] = _assemble(o.type, values, idx)
        elif o.type == "boolean":
            value = np.array([bool(v) for v in values] + [False, False])[idx]
            known = np.array([v is not None for v in values] + [False, False])[idx]
            out[o.name] = Tri(value & known, known)
        elif o.type == "number":
            out[o.name] = np.array([np.nan if v is None else float(v) for v in values] + [np.nan, np.nan])[idx]
        else:
            out[o.name] = _output_text(res, o.name, list(o.values or ()) + [v for v in values if v is not None])
        if o.type == "number" and o.decimals is not None:
            out[o.name] = _rounded(out[o.name], o.decimals)  # type: ignore[arg-type]
    return out


def _assemble(kind: str, values: list[Any], idx: np.ndarray) -> Vec:
    """Per row, the value of the rule that decided it (computed values taken row by row)."""
    n = idx.size
    if kind == "boolean":
        value, known = np.zeros(n, bool), np.zeros(n, bool)
        for i, v in enumerate(values):
            rows = idx == i
            if isinstance(v, Tri):
                value[rows], known[rows] = v.value[rows], v.known[rows]
            elif v is not None:
                value[rows], known[rows] = bool(v), True
        return Tri(value & known, known)
    number = np.full(n, np.nan)
    for i, v in enumerate(values):
        rows = idx == i
        if isinstance(v, np.ndarray):
            number[rows] = v[rows]
        elif v is not None:
            number[rows] = float(v)
    return number


def _rounded(v: np.ndarray, decimals: int | None) -> np.ndarray:
    return v if decimals is None else round_half_away(v, decimals)


def _missing_like(col: Vec, n: int) -> Vec:
    if isinstance(col, Tri):
        return Tri(np.zeros(n, bool), np.zeros(n, bool))
    if isinstance(col, Text):
        return Text(np.full(n, -1, dtype=np.int64), col.categories)
    if isinstance(col, ListVec):
        return ListVec(np.full(n, -1, dtype=np.int64), col.lists)
    return np.full(n, np.nan)


def _joined(col: Vec, pos: np.ndarray) -> Vec:
    """Rows of another entity's column at `pos` (-1: no such entity, so missing)."""
    found = pos >= 0
    if len(col) == 0:
        return _missing_like(col, pos.size)
    at = take(col, np.maximum(pos, 0))
    if isinstance(at, Tri):
        return Tri(at.value & found, at.known & found)
    if isinstance(at, Text):
        return Text(np.where(found, at.codes, -1), at.categories)
    if isinstance(at, ListVec):
        return ListVec(np.where(found, at.codes, -1), at.lists)
    return np.where(found, at, np.nan)


def _positions(ref: Vec, other_key: Any) -> np.ndarray:
    """For each row, the row of the other entity whose key equals `ref`, or -1."""
    keys = pa.array(other_key, type=pa.string(), from_pandas=True)
    if isinstance(ref, Text):
        per_value = pc.index_in(pa.array(ref.categories, type=pa.string()), value_set=keys)
        table = np.append(per_value.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64), -1)
        return table[np.where(ref.codes >= 0, ref.codes, table.size - 1)]
    values = pa.array(np.asarray(ref, dtype=object), type=pa.string(), from_pandas=True)
    return pc.index_in(values, value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _unknown_refs(ep: EntityPlan, key: pd.Series, on: str, ref: Vec, rows: np.ndarray) -> pd.DataFrame:
    refs = take(ref, rows)
    return pd.DataFrame({ep.key: key.iloc[rows].to_numpy(dtype=object),
                         on: refs.objects() if isinstance(refs, Text) else refs})


Decider = Callable[[Decision, Context], DecisionResult]


def evaluate_entity(ep: EntityPlan, frame: pd.DataFrame | Mapping[str, pd.Series], fact_types: dict[str, str],
                    joined: dict[str, "EntityResult"], calibration: dict[str, Any] | None = None,
                    record: dict[str, Any] | None = None, decider: Decider = decide,
                    n: int | None = None, past: Mapping[str, pd.Series] | None = None,
                    population: Any = None, measures: bool = True,
                    reuse: Mapping[str, Any] | None = None) -> EntityResult:
    """Evaluate every derived feature and decision of one entity over the whole table.

    `frame` is a DataFrame, or a mapping of columns with `n` rows; `calibration` makes population
    functions read a saved population; `record` collects their arguments for a new calibration;
    `decider` decides each decision (pandas by default); `past` holds, per `previous(x, k)` the
    entity reads (`PastRead.key`), the earlier values row by row (a column left out is missing);
    `measures=False` skips the population's measures (an event of `kam stream` has no population);
    `reuse` holds, per step name, what an earlier evaluation of the same step on the same inputs gave
    (a feature's vector or a decision's result), taken instead of computing it again (the studio page
    re-evaluates only what an edit reaches; the caller answers for the sameness).
    """
    n = len(frame) if n is None else n
    env = FactEnv(frame, fact_types, n, {p.name: p.value for p in ep.params}, past,
                  {r.key: r.kind for r in ep.past})
    key = frame[ep.key].reset_index(drop=True) if ep.key else pd.Series(np.arange(n).astype(str))
    ctx = Context(env, n, key, calibration=calibration, record=record, key_name=ep.key or "key",
                  population=population)
    unknown: dict[str, pd.DataFrame] = {}
    for j in ep.joins:
        ref = env[j.on]
        if population is not None:  # the other entity is partitioned too: its columns come looked up
            taken, missing_ref = population.join(j, ref)
            env.update(taken)
            if missing_ref.size:
                unknown[j.name] = _unknown_refs(ep, key, j.on, ref, missing_ref)
            continue
        other = joined[j.entity]
        pos = _positions(ref, other.ctx.key)
        missing_ref = np.flatnonzero((pos < 0) & ~is_missing(ref))
        if missing_ref.size:
            unknown[j.name] = _unknown_refs(ep, key, j.on, ref, missing_ref)
        for name in j.take:
            env[name] = _joined(other.ctx.env[name], pos)
    results: dict[str, DecisionResult] = {}
    if decider is decide and reuse is None and calibration is None and record is None and population is None \
            and n >= SIDE_BY_SIDE_ROWS and 0 < len(ep.waves) < len(ep.steps) and _cores() > 1:
        done = _evaluate_waves(ep, ctx, measures)
        if done is not None:
            return EntityResult(ep.entity, ep, ctx, done[0], unknown, done[1], done[2])
    # an overflow anywhere (a population sum too) raises, and is reported at the step that computed it
    with np.errstate(over="raise"):
        for step in ep.steps:
            kept = reuse.get(step.name) if reuse is not None else None
            if kept is not None:
                if isinstance(step, DeriveStep):
                    env[step.name] = kept
                else:
                    results[step.name] = kept
                    env.update(decision_vectors(kept))
                continue
            with _overflow_at(step, key):
                out = _step_value(step, ctx, decider)
            if isinstance(step, DeriveStep):
                env[step.name] = out
            else:
                results[step.name] = out
                env.update(decision_vectors(out))
        violations = {}
        for inv in ep.invariants:
            with _overflow_at(inv, key):
                violations[inv.id] = _checked_value(inv, ctx)
        figures = {}
        for m in ep.measures if measures else ():
            with _overflow_at(m, key):
                figures[m.name] = _checked_value(m, ctx)
    return EntityResult(ep.entity, ep, ctx, results, unknown, violations, figures)


def _step_value(step: DeriveStep | DecisionStep, ctx: Context, decider: Decider) -> Any:
    """A feature's vector or a decision's result (refused where a figure it reads overflowed)."""
    if isinstance(step, DeriveStep):
        return _finite(evaluate_node(step.derive.expr.node, ctx))  # type: ignore[arg-type]
    res = decider(step.decision, ctx)
    _refuse_overflow(res, decision_vectors(res), ctx.key)
    return res


def _checked_value(item: Invariant | Measure, ctx: Context) -> Any:
    """An invariant's breaking rows or a measure's value, once every step is done."""
    return invariant_violation(item, ctx) if isinstance(item, Invariant) else measure_value(item, ctx)


SIDE_BY_SIDE_ROWS = 50_000  # below this, evaluating steps on threads costs more than it saves


def _cores() -> int:
    return os.cpu_count() or 1


def _evaluate_waves(ep: EntityPlan, ctx: Context, with_measures: bool
                    ) -> tuple[dict[str, "DecisionResult"], dict[str, np.ndarray], dict[str, Any]] | None:
    """The steps of each wave of the plan evaluated side by side on threads (sorts, sums and array
    arithmetic release the GIL, so a table's independent ranks and shares use every core), then the
    invariants and measures side by side. Each step reads only earlier waves, so every vector is
    the one the sequential order makes. On any error this gives None and the caller evaluates again
    in order, so a failure is reported exactly as without threads (at the first step that fails)."""
    from concurrent.futures import ThreadPoolExecutor

    env = ctx.env

    def one(step: DeriveStep | DecisionStep) -> Any:
        with np.errstate(over="raise"):  # numpy's error state is per thread
            return _step_value(step, ctx, decide)

    def check(item: Invariant | Measure) -> Any:
        with np.errstate(over="raise"):
            return _checked_value(item, ctx)

    results: dict[str, DecisionResult] = {}
    made: dict[str, Vec] = {}
    try:
        with ThreadPoolExecutor(max_workers=_cores()) as pool:
            for wave in ep.waves:
                steps = [ep.steps[i] for i in wave]
                for step, out in zip(steps, pool.map(one, steps)):
                    if isinstance(step, DeriveStep):
                        made[step.name] = env[step.name] = out
                    else:
                        results[step.name] = out
                        made.update(decision_vectors(out))
                        env.update(decision_vectors(out))  # the same vectors: `made` says what to undo
            measures = list(ep.measures) if with_measures else []
            last = list(pool.map(check, list(ep.invariants) + measures))
    except Exception:
        for name in made:  # the sequential evaluation starts from the facts alone
            env.pop(name, None)
        return None
    violations = {inv.id: v for inv, v in zip(ep.invariants, last)}
    figures = {m.name: v for m, v in zip(measures, last[len(ep.invariants):])}
    return results, violations, figures


def _finite(v: Vec) -> Vec:
    """A feature's values, refused where a population figure it reads (a sum) is too large to hold."""
    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
        rows = np.flatnonzero(np.isinf(v))
        if rows.size:
            raise Overflow(None, rows)
    return v


@contextmanager
def _overflow_at(step: DeriveStep | DecisionStep | Invariant | Measure, key: Any) -> Iterator[None]:
    """An Overflow in what `step` computes, as an InputError naming it, where it is written, and the
    first entity it happened for."""
    try:
        yield
    except (Overflow, FloatingPointError) as exc:
        node, rows = (exc.node, exc.rows) if isinstance(exc, Overflow) else (None, np.zeros(0, np.int64))
        if isinstance(step, DecisionStep):
            d = step.decision
            # the condition or the computed output that holds the operation
            found = [(r, e) for r in d.all_rules for e in [r.when] + [v for _, v in r.then if isinstance(v, Expr)]
                     if node is not None and e is not None and any(n is node for n in walk(e.node))]
            what = f"rule `{found[0][0].id}` of decision `{d.name}`" if found else f"decision `{d.name}`"
            loc = found[0][1].loc if found else d.loc
        elif isinstance(step, DeriveStep):
            what, loc = f"feature `{step.name}`", step.derive.expr.loc
        elif isinstance(step, Invariant):
            what, loc = f"invariant `{step.id}`", step.expr.loc
        else:
            what, loc = f"measure `{step.name}`", step.expr.loc
        text = to_text(node) if node is not None else ""
        text = text[1:-1] if isinstance(node, Arith) else text  # an operation's own parentheses
        if node is not None:
            part = f"`{text}`"
        elif isinstance(step, DecisionStep):
            part = "a total it collects"
        else:
            part = "a population figure (a sum, mean, share or spread)"
        if rows.size:
            first = str(key.iloc[rows[0]]) if hasattr(key, "iloc") else str(key[rows[0]])
            more = f" (and {rows.size - 1:,} more)" if rows.size > 1 else ""
            whom = f" for {first}{more}"
        else:
            whom = ""
        raise InputError(Problem("overflow", f"{what}: {part} is too large to hold (beyond about 1.8e308){whom}", loc,
                                 "check the facts of that entity, or the formula; nothing was written")) from None


def vector_arrow(vec: Vec) -> pa.Array:
    """An evaluation vector as an Arrow array (missing as null)."""
    if isinstance(vec, Tri):
        return pa.array(vec.value, mask=~vec.known)
    if isinstance(vec, Text):
        codes = pa.array(vec.codes.astype(np.int32), mask=vec.codes < 0)
        return pa.DictionaryArray.from_arrays(codes, pa.array(vec.categories, type=pa.string()))
    if isinstance(vec, ListVec):
        lists = pa.array([list(x) for x in vec.lists])
        return lists.take(pa.array(vec.codes, mask=vec.codes < 0))
    return pa.array(np.asarray(vec, dtype=float), from_pandas=True)
