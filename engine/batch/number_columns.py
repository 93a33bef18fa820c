"""Numbers as text and rounding, for whole columns: the column forms of `engine.language.numbers`.

* `number_texts`: `number_text` for a column.
* `format_numbers`: a `because` placeholder with a format (`{x:.2f}`, `{x:,.0f}`, `{x:.1%}`) gives
  exactly what Python's `format(x, spec)` gives, including its rounding of the exact binary value
  (0.125 with `.2f` is `0.12`, as in Python); `d` is kam's name for `.0f`.
* `round_half_away`: `round(x, n)` and `decimals:` round the number as it is written in decimal,
  halves away from zero, as people do (2.675 -> 2.68).

The common case is decided with float arithmetic; only values where that could be wrong (a half
within a few units in the last place, or too large for it) are done one at a time with Python's
exact routines, so the result is always Python's.
"""

from __future__ import annotations

import decimal
from typing import TYPE_CHECKING

import numpy as np

from ..language.numbers import MISSING_TEXT, SPEC, WHOLE_LIMIT, python_spec

if TYPE_CHECKING:
    import pyarrow as pa

_EXACT_INT = 2.0 ** 52  # below this, float arithmetic on whole numbers is exact


def number_texts(x: np.ndarray, missing: str | None = MISSING_TEXT, grouped: bool = False) -> pa.Array:
    """`number_text` for a column (None or `missing` for NaN); `grouped` adds thousands separators."""
    import pyarrow as pa
    import pyarrow.compute as pc

    x = np.asarray(x, dtype=float)
    nan = np.isnan(x)
    whole = ~nan & (np.abs(x) < WHOLE_LIMIT) & (x == np.floor(np.where(nan, 0.0, x)))
    ints = pa.array(np.where(whole, x, 0.0).astype(np.int64)).cast(pa.string())
    if grouped:
        ints = _grouped(ints)
    out = ints
    rest = np.flatnonzero(~nan & ~whole)
    if rest.size:
        texts = [format(v, ",") if grouped else repr(v) for v in x[rest].tolist()]
        out = _patch(out, rest, texts)
    if missing is None:
        return pc.if_else(pa.array(nan), pa.scalar(None, pa.string()), out)
    return pc.if_else(pa.array(nan), missing, out)


def _patch(column: pa.Array, rows: np.ndarray, texts: list[str]) -> pa.Array:
    """`column` with the given rows replaced by `texts`."""
    import pyarrow as pa

    positions = np.arange(len(column))
    positions[rows] = len(column) + np.arange(rows.size)
    return pa.concat_arrays([column.cast(pa.string()), pa.array(texts, pa.string())]).take(pa.array(positions))


def _grouped(digits: pa.Array) -> pa.Array:
    """'-1234567' -> '-1,234,567' for integer strings, column-wise."""
    import pyarrow.compute as pc

    if len(digits) == 0:
        return digits
    negative = pc.starts_with(digits, "-")
    digits = pc.utf8_ltrim(digits, characters="-")
    width = max(pc.max(pc.utf8_length(digits)).as_py() or 1, 1)
    width = -(-width // 3) * 3
    padded = pc.utf8_lpad(digits, width=width, padding=" ")
    chunks = [pc.utf8_slice_codeunits(padded, start=i, stop=i + 3) for i in range(0, width, 3)]
    joined = pc.utf8_ltrim(pc.binary_join_element_wise(*chunks, ","), characters=" ,")
    return pc.if_else(negative, pc.binary_join_element_wise("-", joined, ""), joined)

def format_numbers(x: np.ndarray, spec: str, missing: str = MISSING_TEXT) -> pa.Array:
    """`format(v, spec)` for every v of a float column (`missing` for NaN), as Python gives it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    m = SPEC.match(spec)
    if m is None:
        raise ValueError(f"unsupported format {spec!r}")
    x = np.asarray(x, dtype=float)
    if not spec or spec == ",":
        return number_texts(x, missing, grouped=spec == ",")
    spec = python_spec(spec)
    m = SPEC.match(spec)
    assert m is not None
    comma, kind = bool(m.group("comma")), m.group("kind")
    prec = int(m.group("prec")) if m.group("prec") is not None else 6
    nan = np.isnan(x)
    # Python's `%` multiplies the float by 100 first (one float rounding), then formats as `f`
    with np.errstate(over="ignore"):
        v = np.where(nan, 0.0, x) * (100.0 if kind == "%" else 1.0)
    fast = np.zeros(x.size, dtype=bool)
    scaled = np.zeros(x.size)
    if prec <= 15:
        with np.errstate(over="ignore", invalid="ignore"):
            y = np.abs(v) * (10.0 ** prec)  # exact power of ten: one rounding in the product
            frac = y - np.floor(y)
            # the product is within half a unit in the last place of the exact one, so unless it lies
            # within a few such units of a half, rounding it gives what rounding the exact value gives
            fast = np.isfinite(y) & (y < _EXACT_INT) & (np.abs(frac - 0.5) > 4 * np.spacing(y))
        scaled = np.where(fast, np.floor(np.where(fast, y, 0.0) + 0.5), 0.0)
    text = fixed_texts(scaled.astype(np.int64), prec if prec <= 15 else 0, comma, kind == "%", np.signbit(v))
    slow = np.flatnonzero(~fast & ~nan)
    if slow.size:
        text = _patch(text, slow, [format(value, spec) for value in x[slow].tolist()])
    return pc.if_else(pa.array(nan), missing, text) if nan.any() else text


_POWERS = 10 ** np.arange(19, dtype=np.int64)


def fixed_texts(ints: np.ndarray, prec: int, comma: bool, percent: bool, negative: np.ndarray) -> pa.Array:
    """Fixed-point texts of whole numbers `ints` (>= 0, < 2**53) with `prec` of their digits after the
    point: `-1,234.50%`. Each row is laid out right-aligned in a byte matrix, column by column, and
    the matrix's used bytes, read row by row, are the texts one after the other (an Arrow string
    array made from those bytes and their lengths): a few numpy operations per column, instead of
    a string kernel pass per piece."""
    import pyarrow as pa

    n = ints.size
    int_part, frac = np.divmod(ints, _POWERS[prec])
    ndigits = np.maximum(np.searchsorted(_POWERS, int_part, side="right"), 1)
    most = int(ndigits.max()) if n else 1
    commas = (ndigits - 1) // 3 if comma else np.zeros(n, dtype=np.int64)
    width = int(percent) + prec + int(prec > 0) + most + (most - 1) // 3 * int(comma) + 1
    m = np.zeros((n, width), dtype=np.uint8)
    col = width - 1
    if percent:
        m[:, col] = ord("%")
        col -= 1
    for _ in range(prec):
        frac, digit = np.divmod(frac, 10)
        m[:, col] = digit + ord("0")
        col -= 1
    if prec:
        m[:, col] = ord(".")
        col -= 1
    for j in range(most):
        if comma and j and j % 3 == 0:
            m[:, col] = ord(",")
            col -= 1
        int_part, digit = np.divmod(int_part, 10)
        m[:, col] = digit + ord("0")
        col -= 1
    lengths = int(percent) + prec + int(prec > 0) + ndigits + commas
    # the sign goes right before the first digit of each row
    neg_rows = np.flatnonzero(negative)
    m[neg_rows, width - 1 - lengths[neg_rows]] = ord("-")
    lengths = lengths + negative
    used = np.arange(width) >= (width - lengths)[:, None]
    data = m[used]
    offsets = np.zeros(n + 1, dtype=np.int64 if data.size >= 2**31 else np.int32)
    np.cumsum(lengths, out=offsets[1:])
    kind = pa.large_string() if data.size >= 2**31 else pa.string()
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def format_number(x: float | None, spec: str) -> str:
    """One number with a kam format spec (the same result as `format_numbers`)."""
    if x is None or x != x:
        return MISSING_TEXT
    if not spec or spec == ",":
        return number_texts(np.array([x]), grouped=spec == ",")[0].as_py()
    return format(float(x), python_spec(spec))


_DECIMAL = decimal.Context(prec=800, rounding=decimal.ROUND_HALF_UP)


def round_half_away(x: np.ndarray, digits: int = 0) -> np.ndarray:
    """Round to `digits` decimals (negative: tens, hundreds, ...) as the numbers read in decimal,
    halves away from zero: 2.675 -> 2.68, -0.5 -> -1, 77.92999999999999 -> 77.93."""
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore", invalid="ignore"):
        # powers of ten are exact as floats; multiplying or dividing by one rounds once
        f = 10.0 ** abs(digits)
        y = np.abs(x) * f if digits >= 0 else np.abs(x) / f
        frac = y - np.floor(y)
        # a value written with a 5 right after the last kept digit may sit a hair below or above
        # the half in binary; those, and values too large for exact float steps, are done exactly
        fast = np.isfinite(y) & (y < _EXACT_INT) & (np.abs(frac - 0.5) > 1e-9 * np.maximum(y, 1.0))
        r = np.floor(np.where(fast, y, 0.0) + 0.5)
        out = np.copysign(r / f if digits >= 0 else r * f, x)
    slow = np.flatnonzero(~fast & np.isfinite(x))
    if slow.size:
        out[slow] = [_round_exact(v, digits) for v in x[slow].tolist()]
    out[~np.isfinite(x)] = x[~np.isfinite(x)]
    return out


def _round_exact(v: float, digits: int) -> float:
    quantum = decimal.Decimal(1).scaleb(-digits)
    return float(_DECIMAL.quantize(decimal.Decimal(repr(v)), quantum))
