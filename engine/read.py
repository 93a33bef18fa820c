"""Facts in: read a CSV / Parquet / JSON Lines file and check it against the declared facts.

Every problem names the file, the column and the first offending rows; nothing is evaluated
until the whole table is sound. Identifiers stay text, so leading zeros survive.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InputError, Location, Problem
from .model import Fact

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TRUE_WORDS = {"true", "yes", "1", "y", "t"}
FALSE_WORDS = {"false", "no", "0", "n", "f"}
SHOW_ROWS = 5


def detect_format(path: Path, given: str | None = None) -> str:
    """The facts format: given explicitly, or from the file extension."""
    if given:
        return given
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(Problem("input-format", f"cannot tell the format of {path.name} from its extension",
                                 Location(str(path)), "use .csv, .parquet or .jsonl, or pass --format"))
    return fmt


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _raw_frame(path: Path, fmt: str, wanted: list[str]) -> pd.DataFrame:
    if fmt == "csv":
        # everything as text first: numbers are converted and checked column by column below
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
    if fmt == "parquet":
        # only the declared columns: a wide export may carry many the policies never read
        present = set(pq.read_schema(path).names)
        table = pq.read_table(path, columns=[c for c in wanted if c in present] or None)
        return table.to_pandas(types_mapper={pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}.get)
    if fmt == "jsonl":
        # no type guessing: a yes/no column with gaps would otherwise come back as 0.0 / NaN
        # (pandas 3 converts no dates once dtype=False; older versions need telling)
        older = {"convert_dates": False} if int(pd.__version__.split(".")[0]) < 3 else {}
        return pd.read_json(path, lines=True, dtype=False, **older)
    raise InputError(Problem("input-format", f"unknown format {fmt!r}", Location(str(path)),
                             "use csv, parquet or jsonl"))


def _row_label(fmt: str, positions: np.ndarray) -> str:
    # CSV: line numbers as an editor shows them (the header is line 1)
    if fmt == "csv":
        shown = ", ".join(str(int(p) + 2) for p in positions[:SHOW_ROWS])
        word = "line" if len(positions) == 1 else "lines"
    else:
        shown = ", ".join(str(int(p) + 1) for p in positions[:SHOW_ROWS])
        word = "row" if len(positions) == 1 else "rows"
    more = f" and {len(positions) - SHOW_ROWS} more" if len(positions) > SHOW_ROWS else ""
    return f"{word} {shown}{more}"


def _as_text(col: pd.Series) -> pd.Series:
    return col.astype("string").str.strip().replace("", pd.NA)


def _examples(values: pd.Series, positions: np.ndarray) -> str:
    shown = [repr(v) for v in values.iloc[positions[:3]].tolist()]
    return ", ".join(shown)


def check_column(fact: Fact, col: pd.Series, fmt: str, loc: Location, problems: list[Problem]) -> pd.Series:
    """Convert one column to its declared type, recording every problem found."""
    name = fact.name
    if fact.type in ("number", "integer"):
        if pd.api.types.is_bool_dtype(col):
            values = pd.Series(np.nan, index=col.index)
            bad = np.flatnonzero(col.notna().to_numpy())
        elif pd.api.types.is_numeric_dtype(col):
            values = col.astype("float64")
            bad = np.array([], dtype=np.int64)
        else:
            text = _as_text(col)
            values = pd.to_numeric(text, errors="coerce").astype("float64")
            bad = np.flatnonzero((values.isna() & text.notna()).to_numpy())
            if bad.size:
                problems.append(Problem("input-not-number",
                                        f"column `{name}` must hold numbers, but {_row_label(fmt, bad)} "
                                        f"hold {_examples(text, bad)}",
                                        loc, "remove units and thousands separators; leave a cell empty if unknown"))
        arr = values.to_numpy(dtype=float, na_value=np.nan)
        inf = np.flatnonzero(np.isinf(arr))
        if inf.size:
            problems.append(Problem("input-range", f"column `{name}` holds an infinite value at {_row_label(fmt, inf)}",
                                    loc))
        if fact.type == "integer":
            frac = np.flatnonzero(~np.isnan(arr) & np.isfinite(arr) & (arr != np.round(arr)))
            if frac.size:
                problems.append(Problem("input-not-integer",
                                        f"column `{name}` must hold whole numbers, but {_row_label(fmt, frac)} "
                                        f"hold {_examples(values, frac)}", loc))
        for bound, op, word in ((fact.min, np.less, "below the minimum"), (fact.max, np.greater, "above the maximum")):
            if bound is None:
                continue
            with np.errstate(invalid="ignore"):
                out = np.flatnonzero(op(arr, bound))
            if out.size:
                problems.append(Problem("input-range",
                                        f"column `{name}` has values {word} {bound:g} at {_row_label(fmt, out)}: "
                                        f"{_examples(values, out)}", loc,
                                        f"the policy of `{name}` (at {fact.loc}) allows "
                                        f"{'at least' if op is np.less else 'at most'} {bound:g}"))
        result = pd.Series(arr, index=col.index, name=name)
    elif fact.type == "boolean":
        if pd.api.types.is_bool_dtype(col):
            result = col.astype("boolean")
        else:
            text = _as_text(col).str.lower()
            true = text.isin(TRUE_WORDS).to_numpy(dtype=bool, na_value=False)
            false = text.isin(FALSE_WORDS).to_numpy(dtype=bool, na_value=False)
            bad = np.flatnonzero(~true & ~false & text.notna().to_numpy())
            if bad.size:
                problems.append(Problem("input-not-boolean",
                                        f"column `{name}` must hold yes/no values, but {_row_label(fmt, bad)} "
                                        f"hold {_examples(text, bad)}", loc, "use true/false, yes/no or 1/0"))
            result = pd.Series(pd.array(np.where(true, True, False), dtype="boolean"), index=col.index)
            result[~true & ~false] = pd.NA
    else:
        result = _as_text(col)
        if fact.values is not None:
            allowed = {str(v) for v in fact.values}
            bad = np.flatnonzero((~result.isin(allowed) & result.notna()).to_numpy(dtype=bool))
            if bad.size:
                problems.append(Problem("input-value",
                                        f"column `{name}` holds values outside its declared set at "
                                        f"{_row_label(fmt, bad)}: {_examples(result, bad)}", loc,
                                        f"allowed: {', '.join(sorted(allowed))}"))
    if fact.required:
        missing = np.flatnonzero(result.isna().to_numpy())
        if missing.size:
            problems.append(Problem("input-missing-value",
                                    f"column `{name}` must not be empty, but it is at {_row_label(fmt, missing)}",
                                    loc))
    if fact.key:
        dup = result.duplicated(keep=False) & result.notna()
        pos = np.flatnonzero(dup.to_numpy())
        if pos.size:
            problems.append(Problem("input-duplicate-key",
                                    f"key column `{name}` repeats a value at {_row_label(fmt, pos)}: "
                                    f"{_examples(result, pos)}", loc, "each entity must appear once"))
    return result.rename(name)


def read_facts(path: Path, facts: dict[str, Fact], fmt: str | None = None) -> pd.DataFrame:
    """Read and check one facts file; raise InputError naming file, column and rows on any problem."""
    loc = Location(str(path))
    if not path.exists():
        raise InputError(Problem("input-missing-file", f"facts file {path} does not exist", loc))
    if path.stat().st_size == 0:
        raise InputError(Problem("input-empty-file", f"facts file {path} is empty (zero bytes)", loc,
                                 "a file with only the header line is fine and gives empty outputs"))
    fmt = detect_format(path, fmt)
    try:
        raw = _raw_frame(path, fmt, list(facts))
    except InputError:
        raise
    except Exception as exc:  # a parser's own message is the most precise we have
        raise InputError(Problem("input-unreadable", f"cannot read {path.name} as {fmt}: {exc}", loc)) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [name for name in facts if name not in raw.columns]
    if missing:
        hint = f"the file has: {', '.join(map(str, raw.columns[:20]))}"
        raise InputError(Problem("input-missing-column",
                                 f"{path.name} lacks the column{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join('`' + m + '`' for m in missing)} that the policies read", loc, hint))
    problems: list[Problem] = []
    columns = {name: check_column(f, raw[name].reset_index(drop=True), fmt, loc, problems)
               for name, f in facts.items()}
    if problems:
        raise InputError(problems)
    return pd.DataFrame(columns, copy=False)
