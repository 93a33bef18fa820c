"""Numbers as text and rounding (engine.numbers): Python's own format() semantics, column-wise."""

from __future__ import annotations

import decimal
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.language.errors import PolicyError
from engine.language.numbers import number_text
from engine.batch.number_columns import format_numbers, number_texts, round_half_away

from .helpers import compile_text

SPECS = ["", ",", ".0f", ".2f", ",.2f", ",.0f", ".1%", ".0%", ",.3%", "d", ",d", "f", "%", ".15f", ".16f",
         ".17f", ".18f", ".19f", ".25f"]


def python(x: float, spec: str) -> str:
    if spec in ("", ","):
        whole = x.is_integer() and abs(x) < 2**53  # whole numbers below 2**53 are shown without `.0`
        return (f"{int(x):,}" if spec else str(int(x))) if whole else format(x, spec) if spec else repr(x)
    return format(x, {"d": ".0f", ",d": ",.0f"}.get(spec, spec))


@pytest.mark.parametrize("x, spec, want", [
    (0.125, ".2f", "0.12"),          # Python rounds the exact binary value; 0.125 is a tie, to even
    (2.675, ".2f", "2.67"),          # 2.675 is 2.67499999... in binary
    (9.5e19, ",.0f", "95,000,000,000,000,000,000"),  # no clipping at 9e18
    (0.1, ".17f", "0.10000000000000001"),
    (0.1, ".19f", "0.1000000000000000056"),          # no OverflowError
    (-0.001, ".2f", "-0.00"),
    (150.0, "", "150"),
    (0.000000000012, "", "1.2e-11"),
])
def test_format_like_python(x, spec, want):
    assert format_numbers(np.array([x]), spec).to_pylist() == [want]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=30),
       st.sampled_from(SPECS))
def test_any_float_formats_as_python_does(xs, spec):
    assert format_numbers(np.array(xs), spec).to_pylist() == [python(x, spec) for x in xs]


def test_cents_and_half_cents_format_as_python_does():
    # the values where a fast float shortcut goes wrong: exact halves and near-halves
    xs = np.array([k / 1000 for k in range(-20000, 20000, 5)] + [k / 8 for k in range(-400, 400)])
    for spec in (".2f", ".1f", ".0f", ",.2f", ".1%"):
        assert format_numbers(xs, spec).to_pylist() == [format(x, spec) for x in xs.tolist()]


def test_number_text_is_the_shortest_form():
    assert [number_text(v) for v in (150.0, -0.0, 0.1, 1e16, 12.5, None, math.nan)] == \
        ["150", "0", "0.1", "1e+16", "12.5", "missing", "missing"]
    assert number_texts(np.array([1234567.0, -1234.5]), grouped=True).to_pylist() == ["1,234,567", "-1,234.5"]


def as_written(x: float, digits: int) -> float:
    ctx = decimal.Context(prec=800, rounding=decimal.ROUND_HALF_UP)
    return float(ctx.quantize(decimal.Decimal(repr(x)), decimal.Decimal(1).scaleb(-digits)))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(-1e12, 1e12, allow_nan=False), min_size=1, max_size=20), st.integers(-3, 6))
def test_round_rounds_the_decimal_as_written_halves_away_from_zero(xs, digits):
    got = round_half_away(np.array(xs), digits)
    assert [float(g) for g in got] == [as_written(x, digits) for x in xs]


def test_round_examples():
    assert round_half_away(np.array([2.675, -0.5, 77.92999999999999, 1.005]), 2).tolist() == [2.68, -0.5, 77.93, 1.01]
    assert round_half_away(np.array([1250.0, -1250.0]), -2).tolist() == [1300.0, -1300.0]


POLICY = """
policy: p
entity: customer
facts:
  id: {type: string, key: true}
  x: {type: number}
derive:
  r: "WHEN"
decisions:
  d:
    values: [a]
    rules:
      - {id: a, then: a, because: "TEXT"}
"""


@pytest.mark.parametrize("derive, text, words", [
    ("round(x, 400)", "{x}", "from -15 to 15"),
    ("round(x, 2.5)", "{x}", "fixed whole number"),
    ("round(x, x)", "{x}", "fixed whole number"),
    ("x", "{x:.2}", "significant digits"),
    ("x", "{x:.2d}", "has no decimals"),
    ("x", "{x!r}", "`{x!r}`"),
])
def test_what_cannot_run_is_a_check_error(tmp_path, derive, text, words):
    with pytest.raises(PolicyError) as exc:
        compile_text(tmp_path, POLICY.replace("WHEN", derive).replace("TEXT", text))
    rendered = "\n".join(p.render() for p in exc.value.problems)
    assert words in rendered, rendered


SURFACE_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**60), 2**60).map(float),  # whole numbers on both sides of 2**53
    st.sampled_from([150.0, 0.1, -0.0, 2.0**53 - 1, 2.0**53, 2.0**53 + 2, 9.1e15, 1e15, 1e16, 1e300, -5.0]),
)


@settings(max_examples=500)
@given(SURFACE_NUMBERS)
def test_every_surface_shows_a_number_the_same_way(x):
    """One definition of a whole number (below 2**53: no `.0`): the text kam shows, the JSON it writes
    (JSON Lines, the manifest, `kam stream`, `kam history`), a trace's source text and what
    durable_rules is given agree for every number (they used limits of 1e15, 1e16, 2**53 and none);
    a workbook cell holds the number itself (its text in the file reads back as the same double)."""
    import json

    import pandas as pd

    from engine.engines.durable import _posted
    from engine.language.nodes import Num, to_text
    from engine.language.numbers import plain_number
    from engine.engines.stream import _jsonable
    from engine.history.questions import _plain
    from engine.batch.workbook_out import number_cells, typed

    shown = number_text(x)
    assert json.dumps(plain_number(x)) == shown
    assert to_text(Num(x)) == shown
    assert json.dumps(_jsonable(x)) == shown
    assert json.dumps(_plain(x)) == shown
    assert json.dumps(_posted(x)) == shown
    kind, cells = typed(pd.Series([x]))
    assert kind == "number" and float(number_cells(cells)[0].as_py()) == x
    assert number_texts(np.array([x])).to_pylist() == [shown]
