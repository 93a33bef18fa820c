"""Stage explain: number formatting for `because` texts, templates, and trace structure."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from engine.batch.evaluate import Text, Tri
from engine.batch.explain import CompiledTemplate, format_vector
from engine.batch.number_columns import format_numbers


@pytest.mark.parametrize(
    "x, spec, want",
    [
        (1234567.891, ",.0f", "1,234,568"),
        (-1234567.891, ",.2f", "-1,234,567.89"),
        (999.5, ",.0f", "1,000"),
        (0.1234, ".1%", "12.3%"),
        (0.125, ".0%", "12%"),  # as Python: 12.5 exactly, a tie, goes to even
        (-0.004, ".2f", "-0.00"),  # as Python
        (2.5, "d", "2"),  # `d` is `.0f`
        (12.0, "", "12"),
        (12.5, "", "12.5"),
        (12.345, "", "12.345"),  # no format: the number as it is
        (123.0, ",", "123"),
        (float("nan"), ".2f", "missing"),
        (0.0, ",.0f", "0"),
    ],
)
def test_format_numbers(x, spec, want):
    assert format_numbers(np.array([x]), spec).to_pylist() == [want]


def test_format_numbers_matches_python_away_from_ties():
    rng = np.random.default_rng(7)
    xs = np.round(rng.normal(0, 1e6, size=500), 3) + 0.0001  # never exactly on a rounding tie
    for spec in (",.0f", ".2f", ",.1f"):
        assert format_numbers(xs, spec).to_pylist() == [format(x, spec) for x in xs]


def test_format_vector_for_text_and_conditions():
    text = Text(np.array([1, -1, 0]), np.array(["北区", "south"], dtype=object))
    assert format_vector(text, "").to_pylist() == ["south", "missing", "北区"]
    tri = Tri(np.array([True, False, False]), np.array([True, True, False]))
    assert format_vector(tri, "").to_pylist() == ["true", "false", "missing"]


def test_templates_render_rows_and_keep_literal_text():
    env = {"x": np.array([1.5, 2.25, 3.0]), "name": Text(np.array([0, 0, 1]), np.array(["甲", "乙"], dtype=object))}
    tpl = CompiledTemplate.of("{name}: {x:.1f} ({x:.0%}) {{kept}}")
    assert tpl.render(env, np.array([2, 0])).to_pylist() == ["乙: 3.0 (300%) {kept}", "甲: 1.5 (150%) {kept}"]
    assert CompiledTemplate.of("plain").static


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.none(), st.floats(-1e7, 1e7), st.sampled_from([0.5, 2.675, -0.0, 0.125, 1e16])),
                min_size=1, max_size=6),
       st.sampled_from(["", ",", ".0f", ",.2f", ".1%", ".0%", "d", ",d", ".3f"]))
def test_a_few_rows_are_rendered_as_many_rows_are(values, spec):
    """`kam stream` and `kam explain` render a handful of rows with Python's string formatting; the
    same template over the same values gives what the column kernels give."""
    import engine.batch.explain as ex
    from engine.batch.evaluate import ListVec, Text, Tri

    n = len(values)
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    env = {"x": x,
           "t": Text.of_objects(np.array([None if v is None else f"v{i}" for i, v in enumerate(values)], dtype=object)),
           "b": Tri(np.array([bool(i % 2) for i in range(n)]), np.array([v is not None for v in values])),
           "l": ListVec(np.array([i % 3 - 1 for i in range(n)]), [("a", "b"), (1.5,)])}
    tpl = ex.CompiledTemplate.of(f"x={{x:{spec}}} t={{t}} b={{b}} l={{l}} 规则")
    rows = np.arange(n)
    few = tpl.render(env, rows).to_pylist()
    saved = ex.FEW_ROWS
    ex.FEW_ROWS = -1
    try:
        many = tpl.render(env, rows).to_pylist()
    finally:
        ex.FEW_ROWS = saved
    assert few == many
