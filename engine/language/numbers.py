"""How a number is written as text: one definition for every place kam shows a number.

`number_text` is how a number is shown when no format is asked for (explain, `{x}` in texts, CSV
and JSON Lines cells, the summary, the manifest, messages): whole numbers without a decimal point
(`150`, not `150.0`), anything else in the shortest form that reads back as the same number (`0.1`,
`77.93`, `1.2e-11`), exactly as Python's `repr` writes it. `plain_number` is the number kam hands
on (JSON, durable_rules); `SPEC` the format specs a `because` text may use.

Pure Python, below the policy language (which writes numbers into its messages); the same
definitions for whole columns are in `engine.batch.number_columns`.
"""

from __future__ import annotations

import re
from typing import Iterable

MISSING_TEXT = "missing"
SPEC = re.compile(r"^(?P<comma>,)?(?:\.(?P<prec>\d{1,2}))?(?P<kind>[f%d])?$")
# Whole numbers below this are shown and handed on as whole numbers (150, not 150.0); from here on
# not every whole number is a float, and JSON readers would round an integer: the float it is.
WHOLE_LIMIT = 2.0 ** 53


def plain_number(x: float) -> int | float:
    """A number as kam hands it on (JSON, the manifest, durable_rules, measures): a whole one below
    `WHOLE_LIMIT` as an int, anything else as the float. `json.dumps` of it is its `number_text`."""
    x = float(x)
    return int(x) if x.is_integer() and abs(x) < WHOLE_LIMIT else x


def number_text(x: float | None) -> str:
    """One number as kam shows it everywhere: `150`, `0.1`, `1e+16`; `missing` for None or NaN."""
    if x is None or x != x:
        return MISSING_TEXT
    return repr(plain_number(x))


def python_spec(spec: str) -> str:
    """The Python format spec a kam spec means (`d` is `.0f`, since kam's numbers are floats)."""
    m = SPEC.match(spec)
    if m is None:
        raise ValueError(f"unsupported format {spec!r}")
    if m.group("kind") == "d":
        return ("," if m.group("comma") else "") + ".0f"
    return spec


def list_text(items: Iterable[object], sep: str = ", ") -> str:
    """A collected list as one text: its items as kam shows values, joined by `, `."""
    return sep.join(number_text(v) if isinstance(v, (int, float)) and not isinstance(v, bool)
                    else ("true" if v is True else "false" if v is False else str(v)) for v in items)
