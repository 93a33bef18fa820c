"""Property-based: the vectorized compiler agrees with the per-row reference on random expressions."""

from __future__ import annotations

import functools
import math
import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.batch.evaluate import Context, Text, Tri, evaluate_node, scalar_at
from engine.language.nodes import Arith, Bool, Call, Compare, In, Logic, MapLit, Name, Neg, Node, Not, Num, Str, to_text
from engine.language.parse import parse_expression

from .reference import Table, evaluate_row

TEXTS = ["north", "south", "东区", "Zürich", ""]
numbers = st.one_of(st.none(), st.integers(-20, 20).map(float))
texts = st.one_of(st.none(), st.sampled_from(TEXTS))
flags = st.one_of(st.none(), st.booleans())


@st.composite
def tables(draw):
    n = draw(st.integers(1, 12))
    keys = draw(st.lists(st.text("0123456789ab", min_size=1, max_size=4), min_size=n, max_size=n, unique=True))
    return Table({
        "a": draw(st.lists(numbers, min_size=n, max_size=n)),
        "b": draw(st.lists(numbers, min_size=n, max_size=n)),
        "s": draw(st.lists(texts, min_size=n, max_size=n)),
        "f": draw(st.lists(flags, min_size=n, max_size=n)),
    }, keys)


lit_num = st.integers(-10, 10).map(lambda v: Num(float(v)))
lit_text = st.sampled_from(TEXTS).map(Str)


# cached: a strategy is immutable, and building the tree again for every draw (the random policies
# draw a few per example) cost more than running the engines on them
@functools.cache
def num_expr(depth: int) -> st.SearchStrategy[Node]:
    base = st.one_of(lit_num, st.sampled_from([Name("a"), Name("b")]))
    if depth <= 0:
        return base
    sub = num_expr(depth - 1)
    col = st.sampled_from([Name("a"), Name("b")])
    by = st.sampled_from([(), (("by", Name("s")),)])
    return st.one_of(
        base,
        sub.map(Neg),
        st.tuples(st.sampled_from("+-*/"), sub, sub).map(lambda t: Arith(*t)),
        st.tuples(st.sampled_from(["min", "max", "coalesce"]), sub, sub).map(lambda t: Call(t[0], (t[1], t[2]))),
        sub.map(lambda e: Call("abs", (e,))),
        sub.map(lambda e: Call("log", (e,))),
        st.tuples(sub, st.integers(0, 2)).map(lambda t: Call("round", (t[0], Num(float(t[1]))))),
        st.tuples(bool_expr(depth - 1), sub, sub).map(lambda t: Call("if", t)),
        st.tuples(st.dictionaries(st.sampled_from(TEXTS[:4]), lit_num, max_size=3), st.booleans()).map(
            lambda t: Call("lookup", (Name("s"), MapLit(tuple(t[0].items())))
                           + ((Num(-1.0),) if t[1] else ()))),
        st.tuples(st.sampled_from(["rank", "pct_rank", "cumshare", "mean", "sum", "count", "zscore"]), col, by)
        .map(lambda t: Call(t[0], (t[1],), t[2])),
        st.tuples(col, by).map(lambda t: Call("rank", (t[0],), t[1] + (("ties", Str("together")),))),
        st.tuples(col, st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]), by)
        .map(lambda t: Call("quantile", (t[0], Num(t[1])), t[2])),
    )


@functools.cache
def bool_expr(depth: int) -> st.SearchStrategy[Node]:
    num = num_expr(max(depth - 1, 0))
    ops = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    base = st.one_of(
        st.tuples(ops, num, num).map(lambda t: Compare((t[0],), (t[1], t[2]))),
        st.tuples(ops, lit_num, num).map(lambda t: Compare((t[0],), (t[1], t[2]))),  # a constant first
        st.tuples(ops, ops, num, num, num).map(lambda t: Compare((t[0], t[1]), (t[2], t[3], t[4]))),
        # text, with every operator, the constant on either side
        st.tuples(ops, lit_text).map(lambda t: Compare((t[0],), (Name("s"), t[1]))),
        st.tuples(ops, lit_text).map(lambda t: Compare((t[0],), (t[1], Name("s")))),
        st.tuples(st.lists(lit_text, min_size=1, max_size=3), st.booleans())
        .map(lambda t: In(Name("s"), tuple(t[0]), t[1])),
        st.sampled_from([Name("f"), Bool(True), Bool(False)]),
        num.map(lambda e: Call("is_missing", (e,))),
    )
    if depth <= 0:
        return base
    sub = bool_expr(depth - 1)
    return st.one_of(
        base,
        sub.map(Not),
        st.tuples(st.sampled_from(["and", "or"]), st.lists(sub, min_size=2, max_size=3))
        .map(lambda t: Logic(t[0], tuple(t[1]))),
    )


def context(t: Table) -> Context:
    env = {
        "a": np.array([np.nan if v is None else v for v in t.columns["a"]], dtype=float),
        "b": np.array([np.nan if v is None else v for v in t.columns["b"]], dtype=float),
        "s": Text.of_objects(np.array(t.columns["s"], dtype=object)),
        "f": Tri(np.array([bool(v) for v in t.columns["f"]]), np.array([v is not None for v in t.columns["f"]])),
    }
    return Context(env, t.n, np.array(t.keys, dtype=object))


def same(x, y) -> bool:
    if x is None or y is None:
        return x is None and y is None
    if isinstance(x, bool) or isinstance(y, bool):
        return x == y
    if isinstance(x, str) or isinstance(y, str):
        return x == y
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def check(expr: Node, t: Table) -> None:
    # through text and back: the parser and the printer are part of the compiler under test
    parsed = parse_expression(to_text(expr))
    vec = evaluate_node(parsed, context(t))
    for row in range(t.n):
        got = scalar_at(vec, row)
        want = evaluate_row(parsed, t, row)
        assert same(got, want), f"row {row}: {to_text(parsed)} gave {got!r}, reference {want!r}"


# KAM_EXAMPLES=5000 python -m pytest tests/test_properties.py  for a longer search
SETTINGS = settings(max_examples=int(os.environ.get("KAM_EXAMPLES", "300")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(num_expr(3), tables())
def test_number_expressions_agree_with_reference(expr, t):
    check(expr, t)


@SETTINGS
@given(bool_expr(3), tables())
def test_conditions_agree_with_reference(expr, t):
    check(expr, t)
