"""Every comparison operator in every form it takes, on values below, equal to and above the other side
and on missing values, decided by both backends and checked against Python's own comparison.

The operator tables (`engine.nodes.COMPARE`, `FLIPPED`, `NEGATED`) are each read by several engines;
a wrong entry is wrong only where both sides are equal or one is missing, which random data rarely
hits. This file hits every entry there on purpose; `tests/planted_bugs.py` checks that it does.
"""

from __future__ import annotations

import itertools
import json
import operator

import pandas as pd
import pytest

from engine.run import service as api
from engine.batch.explain import output_frame
from engine.language.nodes import COMPARE, FLIPPED, NEGATED

from .test_differential import compile_random, deadline

# Python's operators, written out here rather than taken from the engine's tables under test
PYTHON = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq,
          "!=": operator.ne}
NUMBERS = [4, 5, 6, None]
TEXTS = ["l", "m", "n", None]


def test_the_tables_say_what_python_does():
    assert set(COMPARE) == set(FLIPPED) == set(NEGATED) == set(PYTHON)
    for op, (x, y) in itertools.product(PYTHON, itertools.product([1, 2, 3], repeat=2)):
        assert COMPARE[op](x, y) == PYTHON[op](x, y), (op, x, y)
        assert PYTHON[FLIPPED[op]](y, x) == PYTHON[op](x, y), (op, x, y)
        assert PYTHON[NEGATED[op]](x, y) == (not PYTHON[op](x, y)), (op, x, y)


# (the condition, what it means given the row's values, or None where a value it reads is missing)
FORMS = [
    ("a {op} 5", lambda op, r: None if r["a"] is None else PYTHON[op](r["a"], 5)),
    ("5 {op} a", lambda op, r: None if r["a"] is None else PYTHON[op](5, r["a"])),
    ("not (a {op} 5)", lambda op, r: None if r["a"] is None else not PYTHON[op](r["a"], 5)),
    ("not (5 {op} a)", lambda op, r: None if r["a"] is None else not PYTHON[op](5, r["a"])),
    ("a {op} b", lambda op, r: None if None in (r["a"], r["b"]) else PYTHON[op](r["a"], r["b"])),
    ("not (a {op} b)", lambda op, r: None if None in (r["a"], r["b"]) else not PYTHON[op](r["a"], r["b"])),
    ("a + 0 {op} b * 1", lambda op, r: None if None in (r["a"], r["b"]) else PYTHON[op](r["a"], r["b"])),
    ("s {op} 'm'", lambda op, r: None if r["s"] is None else PYTHON[op](r["s"], "m")),
    ("'m' {op} s", lambda op, r: None if r["s"] is None else PYTHON[op]("m", r["s"])),
    ("not (s {op} 'm')", lambda op, r: None if r["s"] is None else not PYTHON[op](r["s"], "m")),
    ("not ('m' {op} s)", lambda op, r: None if r["s"] is None else not PYTHON[op]("m", r["s"])),
    ("s {op} t", lambda op, r: None if None in (r["s"], r["t"]) else PYTHON[op](r["s"], r["t"])),
    ("not (s {op} t)", lambda op, r: None if None in (r["s"], r["t"]) else not PYTHON[op](r["s"], r["t"])),
    ("4 < a {op} 5", lambda op, r: None if r["a"] is None else 4 < r["a"] and PYTHON[op](r["a"], 5)),
    ("not (4 <= a {op} 6)", lambda op, r: None if r["a"] is None else not (4 <= r["a"] and PYTHON[op](r["a"], 6))),
    # `and`, `or` and `not` over comparisons that may be unknown (a missing side): Kleene's logic, which
    # the durable translation reaches by pushing `not` down (De Morgan)
    ("not (a {op} 5 and b > 4)", lambda op, r: _not(_and(_cmp(op, r["a"], 5), _cmp(">", r["b"], 4)))),
    ("not (a {op} 5 or b > 4)", lambda op, r: _not(_or(_cmp(op, r["a"], 5), _cmp(">", r["b"], 4)))),
    ("a {op} 5 or not (b > 4)", lambda op, r: _or(_cmp(op, r["a"], 5), _not(_cmp(">", r["b"], 4)))),
]
# membership: a missing value is in no list and out of none (unknown), an empty list included
MEMBERSHIP = [
    ("s in ['m', 'n']", lambda r: None if r["s"] is None else r["s"] in ("m", "n")),
    ("s not in ['m']", lambda r: None if r["s"] is None else r["s"] != "m"),
    ("not (s in ['m'])", lambda r: None if r["s"] is None else r["s"] != "m"),
    ("s in []", lambda r: None if r["s"] is None else False),
    ("not (s in [])", lambda r: None if r["s"] is None else True),
    ("not (s not in ['l'] and a > 4)", lambda r: _not(_and(None if r["s"] is None else r["s"] != "l",
                                                           _cmp(">", r["a"], 4)))),
]


def _cmp(op: str, x: object, y: object) -> bool | None:
    return None if x is None or y is None else PYTHON[op](x, y)


def _not(x: bool | None) -> bool | None:
    return None if x is None else not x


def _and(x: bool | None, y: bool | None) -> bool | None:
    return False if x is False or y is False else None if x is None or y is None else True


def _or(x: bool | None, y: bool | None) -> bool | None:
    return True if x is True or y is True else None if x is None or y is None else False
CASES = [(form, op) for form, _ in FORMS for op in PYTHON] + [(form, "") for form, _ in MEMBERSHIP]
MEANING = {**{(form, op): (lambda r, m=m, op=op: m(op, r)) for form, m in FORMS for op in PYTHON},
           **{(form, ""): m for form, m in MEMBERSHIP}}


def _policy() -> str:
    decisions = "".join(
        f"  d{i}:\n    hit: first\n    values: ['yes', 'no']\n    rules:\n"
        f"      - id: holds\n        when: {json.dumps(form.format(op=op))}\n        then: 'yes'\n"
        f"      - id: otherwise\n        then: 'no'\n"
        for i, (form, op) in enumerate(CASES)
    )
    return ("policy: operators\nentity: customer\nfacts:\n  id: {type: string, key: true}\n"
            "  a: {type: number}\n  b: {type: number}\n  s: {type: string}\n  t: {type: string}\n"
            "decisions:\n" + decisions)


def _table() -> pd.DataFrame:
    rows = [{"a": a, "b": b, "s": s, "t": t}
            for (a, b), (s, t) in zip(itertools.product(NUMBERS, repeat=2), itertools.product(TEXTS, repeat=2),
                                      strict=True)]
    # every number pair and every text pair once (16 each), read as floats as a facts file gives them
    return pd.DataFrame([{"id": f"c{i}", **row} for i, row in enumerate(rows)])


@pytest.fixture(scope="module")
def decided(tmp_path_factory) -> dict[str, pd.DataFrame]:
    table = _table()
    pl, frame = compile_random(tmp_path_factory.mktemp("ops"), _policy(), table)
    out = {"pandas": output_frame(api.run(pl, {"customer": frame}).results["customer"])}
    with deadline(120):
        out["durable"] = output_frame(api.run(pl, {"customer": frame}, backend="durable").results["customer"])
    return out


@pytest.mark.parametrize("backend", ["pandas", "durable"])
def test_every_operator_in_every_form_on_equal_and_missing_values(decided, backend):
    out = decided[backend].set_index("id")
    rows = _table().astype(object).where(_table().notna(), None).to_dict("records")
    wrong = []
    for i, (form, op) in enumerate(CASES):
        for row in rows:
            held = MEANING[(form, op)](row)
            expected = "yes" if held else "no"  # unknown (a missing side) does not hold
            got = out.loc[row["id"], f"d{i}"]
            if got != expected:
                wrong.append(f"{form.format(op=op)} with a={row['a']} b={row['b']} s={row['s']} t={row['t']}: "
                             f"{got}, expected {expected}")
    assert not wrong, f"{len(wrong)} wrong decisions, e.g.\n" + "\n".join(wrong[:10])
