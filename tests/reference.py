"""A deliberately plain per-row evaluator of the expression language, written for the tests.

It follows the written semantics one row at a time with Python scalars (None = missing) and naive
definitions of the population functions, so the vectorized backend can be checked against it.
"""

from __future__ import annotations

import decimal
import math
from typing import Any

from engine.language.nodes import Arith, Bool, Call, Compare, In, Logic, MapLit, Name, Neg, Node, Not, Num, Str


class Table:
    def __init__(self, columns: dict[str, list[Any]], keys: list[str]):
        self.columns = columns
        self.keys = keys
        self.n = len(keys)


def _cmp(op: str, a: Any, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]


def _and(values: list[bool | None]) -> bool | None:
    if any(v is False for v in values):
        return False
    if all(v is True for v in values):
        return True
    return None


def _or(values: list[bool | None]) -> bool | None:
    if any(v is True for v in values):
        return True
    if all(v is False for v in values):
        return False
    return None


def _num(x: Any) -> float | None:
    return None if x is None else float(x)


def _quantile(sorted_vals: list[float], q: float) -> float:
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def _population(node: Call, t: Table, row: int) -> Any:
    by = node.kwarg("by")
    group_of = (lambda i: evaluate_row(by, t, i)) if by is not None else (lambda i: 0)
    g = group_of(row)
    if g is None:
        return None
    members = [i for i in range(t.n) if group_of(i) == g]
    if node.func == "count":
        if not node.args:
            return float(len(members))
        return float(sum(1 for i in members if evaluate_row(node.args[0], t, i) is not None))
    xs = {i: evaluate_row(node.args[0], t, i) for i in members}
    present = {i: v for i, v in xs.items() if v is not None}
    x = xs[row]
    if node.func == "sum":
        return float(math.fsum(present.values()))
    if not present:
        return None
    vals = sorted(present.values())
    if node.func == "mean":
        return math.fsum(vals) / len(vals)
    if node.func == "quantile":
        return _quantile(vals, float(node.args[1].value))  # type: ignore[union-attr]
    if x is None:
        return None
    if node.func == "rank":
        ties = node.kwarg("ties")
        if ties is not None and ties.value == "together":  # type: ignore[union-attr]
            return float(1 + sum(1 for v in present.values() if v > x))
        return float(1 + sum(1 for i, v in present.items() if v > x or (v == x and t.keys[i] < t.keys[row])))
    if node.func == "pct_rank":
        return sum(1 for v in vals if v <= x) / len(vals)
    if node.func == "cumshare":
        total = math.fsum(vals)
        return None if total == 0 else math.fsum(v for v in vals if v >= x) / total
    if node.func == "zscore":
        mean = math.fsum(vals) / len(vals)
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / len(vals))
        return None if std == 0 else (x - mean) / std
    raise NotImplementedError(node.func)


def evaluate_row(node: Node, t: Table, row: int) -> Any:
    """The value of `node` for one row."""
    if isinstance(node, (Num, Str, Bool)):
        return float(node.value) if isinstance(node, Num) else node.value
    if isinstance(node, Name):
        return t.columns[node.name][row]
    if isinstance(node, Neg):
        v = evaluate_row(node.operand, t, row)
        return None if v is None else -v
    if isinstance(node, Arith):
        a, b = evaluate_row(node.left, t, row), evaluate_row(node.right, t, row)
        if a is None or b is None:
            return None
        if node.op == "+":
            return a + b
        if node.op == "-":
            return a - b
        if node.op == "*":
            return a * b
        return None if b == 0 else a / b
    if isinstance(node, Compare):
        vals = [evaluate_row(o, t, row) for o in node.operands]
        return _and([_cmp(op, vals[i], vals[i + 1]) for i, op in enumerate(node.ops)])
    if isinstance(node, Logic):
        items = [evaluate_row(i, t, row) for i in node.items]
        return _and(items) if node.op == "and" else _or(items)
    if isinstance(node, Not):
        v = evaluate_row(node.operand, t, row)
        return None if v is None else not v
    if isinstance(node, In):
        x = evaluate_row(node.operand, t, row)
        hit = _or([_cmp("==", x, evaluate_row(i, t, row)) for i in node.items]) if node.items else \
            (None if x is None else False)
        return (None if hit is None else not hit) if node.negate else hit
    if isinstance(node, Call):
        return _call(node, t, row)
    raise NotImplementedError(type(node).__name__)


def _call(node: Call, t: Table, row: int) -> Any:
    f = node.func
    if f in ("rank", "pct_rank", "cumshare", "quantile", "mean", "sum", "count", "zscore"):
        return _population(node, t, row)
    if f == "if":
        cond = evaluate_row(node.args[0], t, row)
        return evaluate_row(node.args[1] if cond is True else node.args[2], t, row)
    if f == "lookup":
        key = evaluate_row(node.args[0], t, row)
        table = node.args[1]
        assert isinstance(table, MapLit)
        for k, v in table.items:
            if key is not None and (k == key if isinstance(key, str) else _same_number(k, key)):
                return evaluate_row(v, t, row)
        return evaluate_row(node.args[2], t, row) if len(node.args) > 2 else None
    args = [evaluate_row(a, t, row) for a in node.args]
    if f == "is_missing":
        return args[0] is None
    if f == "coalesce":
        return next((a for a in args if a is not None), None)
    if any(a is None for a in args):
        return None
    if f == "min":
        return min(args)
    if f == "max":
        return max(args)
    if f == "abs":
        return abs(args[0])
    if f == "round":
        # the number as written in decimal, halves away from zero
        digits = int(args[1]) if len(args) > 1 else 0
        exact = decimal.Context(prec=800, rounding=decimal.ROUND_HALF_UP)
        return float(exact.quantize(decimal.Decimal(repr(float(args[0]))), decimal.Decimal(1).scaleb(-digits)))
    if f == "log":
        return math.log(args[0]) if args[0] > 0 else None
    raise NotImplementedError(f)


def _same_number(text: str, x: float) -> bool:
    try:
        return float(text) == x
    except ValueError:
        return False
