"""Facts in: read a CSV / Parquet / JSON Lines file and check it against the declared facts.

Every problem names the file, the column and the first offending lines (as an editor counts them,
also after a quoted value that spans lines), and nothing is evaluated until the whole table is
sound. Identifiers stay text, so leading zeros survive: a key or join column stored as numbers is
refused rather than silently turned into `5193.0`. Numbers declared with `decimals:` are rounded
as they are read, so equal amounts compare equal.
"""

from __future__ import annotations

import codecs
import csv
import datetime
import hashlib
import io
import json
import mmap
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.json as pj
import pyarrow.parquet as pq

from ..language.errors import InputError, Location, Problem, did_you_mean
from ..language.model import Fact
from ..language.plan import Plan
from ..language.numbers import number_text
from .extras import need
from .number_columns import round_half_away
from .workbook import column_letters

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".xlsx": "xlsx"}
TRUE_WORDS = {"true", "yes", "1", "y", "t"}
FALSE_WORDS = {"false", "no", "0", "n", "f"}
SHOW_ROWS = 5
SHOW_CHARS = 60
_SURROGATE = re.compile("[\ud800-\udfff]")
CELL_CHARS = 32_767  # the most characters an Excel cell holds, counted as Excel counts them (excel_length)


@dataclass(frozen=True)
class FactsOptions:
    """How facts files are read: `format` (default: by extension), text encoding, CSV delimiter."""

    format: str | None = None
    encoding: str = "utf-8"
    delimiter: str = ","


def split_sheet(path: Path) -> tuple[Path, str | None]:
    """`crm.xlsx#Customers` is the sheet Customers of crm.xlsx (a file of that very name wins)."""
    text = str(path)
    if "#" in text and not path.exists():
        file, _, sheet = text.rpartition("#")
        if file.lower().endswith(".xlsx"):
            return Path(file), sheet
    return path, None


def detect_format(path: Path, given: str | None = None) -> str:
    """The facts format: given explicitly, or from the file extension."""
    if given:
        return given
    suffix = split_sheet(path)[0].suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        hint = ("it is the old Excel format: open it in Excel and save it as .xlsx (Excel Workbook)" if suffix == ".xls"
                else "use .csv, .parquet, .jsonl or .xlsx, or pass --facts-format")
        raise InputError(Problem("input-format", f"cannot tell the format of {path.name} from its extension",
                                 Location(str(path)), hint))
    return fmt


def file_sha256(path: Path) -> str:
    """The sha256 of a file, read a megabyte at a time (inputs, outputs and Dask parts alike)."""
    h = hashlib.sha256()
    with split_sheet(path)[0].open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def release_memory() -> None:
    """Give the memory Arrow has freed back to the system: its allocator keeps freed pages for reuse,
    so a big file read (or written) earlier would otherwise stay in the process's footprint while
    the next entity is worked on."""
    pa.default_memory_pool().release_unused()


def shown(value: Any) -> str:
    """An offending value as it reads in the file: text quoted, numbers plain, JSON true as true,
    anything long cut short."""
    if isinstance(value, (bool, np.bool_)):
        text = "true" if value else "false"
    elif isinstance(value, (int, float, np.integer, np.floating)):
        text = number_text(float(value))
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = repr(str(value))
    if len(text) > SHOW_CHARS:
        text = f"{text[:SHOW_CHARS - 1]}… ({len(text):,} characters)"
    return text


# -- where a row is in the file ----------------------------------------------------------------------

class Lines:
    """Maps data rows (0-based) to the line numbers an editor shows (CSV) or JSON Lines line numbers."""

    def __init__(self, fmt: str, mapper: Callable[[], list[int]] | None = None, sheet: str = "",
                 letters: dict[str, str] | None = None):
        self.fmt = fmt
        self._mapper = mapper
        self._lines: list[int] | None = None
        self.sheet = sheet  # for xlsx: problems name cells, `customers!C17`
        self.letters = letters or {}

    def of(self, row: int) -> int:
        if self.fmt == "parquet":
            return row + 1
        if self._mapper is not None:
            if self._lines is None:
                self._lines = self._mapper()
            if row < len(self._lines):
                return self._lines[row]
        return row + 2 if self.fmt in ("csv", "xlsx") else row + 1

    def label(self, positions: np.ndarray, column: str = "") -> str:
        """`line 7` / `lines 5, 12 and 3 more` (`row` for Parquet, which has no lines; the cells, as
        `customers!C17, C20`, for a sheet)."""
        more = f" and {len(positions) - SHOW_ROWS} more" if len(positions) > SHOW_ROWS else ""
        if self.fmt == "xlsx" and column in self.letters:
            # the header is the sheet's first row: data row 0 is row 2
            cells = ", ".join(f"{self.letters[column]}{int(p) + 2}" for p in positions[:SHOW_ROWS])
            return f"{_sheet_ref(self.sheet)}!{cells}{more}"
        shown_ = ", ".join(str(self.of(int(p))) for p in positions[:SHOW_ROWS])
        word = "row" if self.fmt in ("parquet", "frame", "xlsx") else "line"
        word += "" if len(positions) == 1 else "s"
        return f"{word} {shown_}{more}"


def _verb(positions: np.ndarray, one: str, many: str) -> str:
    return one if len(positions) == 1 else many


def _csv_records(path: Path, options: FactsOptions) -> list[tuple[int, list[str]]]:
    """Every record of a CSV file with the line it starts on (slow; only for error messages)."""
    out = []
    with path.open(encoding=options.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=options.delimiter)
        start = 1
        for fields in reader:
            out.append((start, fields))
            start = reader.line_num + 1
    return out


# -- reading ------------------------------------------------------------------------------------------

def _decode_problem(path: Path, options: FactsOptions, exc: Exception) -> InputError:
    with path.open("rb") as fh:
        head = fh.read(4096)
    hint = "pass --encoding with the file's encoding, or save it as UTF-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        hint = "it is UTF-16 (Excel's \"Unicode text\"): pass --encoding utf-16, or save it as CSV UTF-8"
    elif options.encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        try:
            head.decode("gb18030")
            hint = ("it may be GBK/GB18030 (Chinese Windows): pass --encoding gb18030, or save it as CSV UTF-8; "
                    "for Western European Windows files, --encoding cp1252")
        except UnicodeDecodeError:
            pass
    return InputError(Problem("input-encoding", f"{path.name} is not {options.encoding} text: {exc}",
                              Location(str(path)), hint))


def _read_csv(path: Path, options: FactsOptions, loc: Location) -> tuple[pd.DataFrame, Lines]:
    try:
        with path.open(encoding=options.encoding, newline="") as fh:
            first = fh.readline()
            while first and not first.strip():
                first = fh.readline()
    except UnicodeDecodeError as exc:
        raise _decode_problem(path, options, exc) from None
    except LookupError:
        raise InputError(Problem("usage", f"unknown encoding {options.encoding!r}", Location("command line"),
                                 "e.g. --encoding utf-8, gb18030, utf-16, cp1252")) from None
    raw_header = next(csv.reader(io.StringIO(first.lstrip("\ufeff")), delimiter=options.delimiter), [])
    header = [h.strip() for h in raw_header]
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            raise InputError(Problem("input-duplicate-column",
                                     f"{path.name} has the column `{name}` twice in its header (columns "
                                     f"{seen[name]} and {i})", loc, "rename or remove one of them"))
        seen[name] = i
    if _odd_quotes(path):
        records = _csv_records_strict(path, options)
        raise InputError(Problem("input-unreadable", f"{path.name}: a quoted value that starts on line {records} "
                                 "is never closed", loc, 'close it with "; a quote inside a value is written ""'))
    invalid: list[Any] = []

    def on_invalid(row: Any) -> str:
        invalid.append(row)
        return "skip"

    if not _has_rows(path, options.encoding):  # only a header, maybe without a line end: empty, not an error
        return pd.DataFrame({name: pd.Series([], dtype="string") for name in header}), Lines("csv")
    try:
        table = pv.read_csv(
            path,
            read_options=pv.ReadOptions(encoding=options.encoding),
            parse_options=pv.ParseOptions(delimiter=options.delimiter, newlines_in_values=True,
                                          invalid_row_handler=on_invalid),
            # every column as text: numbers are converted and checked column by column below
            convert_options=pv.ConvertOptions(column_types={name: pa.string() for name in raw_header},
                                              strings_can_be_null=True, null_values=[""],
                                              quoted_strings_can_be_null=True),
        )
    except UnicodeDecodeError as exc:
        raise _decode_problem(path, options, exc) from None
    except (pa.ArrowInvalid, ValueError) as exc:
        if "UTF8" in str(exc) or "utf8" in str(exc).lower():
            raise _decode_problem(path, options, exc) from None
        raise
    table = table.rename_columns([str(c).strip() for c in table.column_names])
    if invalid:
        records = _csv_records(path, options)
        width = len(header)
        wrong = [(line, len(fields)) for line, fields in records[1:] if fields and len(fields) != width]
        shown_ = ", ".join(f"line {line} has {n}" for line, n in wrong[:SHOW_ROWS])
        more = f" and {len(wrong) - SHOW_ROWS} more" if len(wrong) > SHOW_ROWS else ""
        raise InputError(Problem("input-row-length",
                                 f"{path.name}: the header has {width} fields, but {shown_}{more}", loc,
                                 "every line needs a value (or an empty place) for every column; "
                                 "a value containing the delimiter must be in quotes"))

    def lines() -> list[int]:
        return [line for line, fields in _csv_records(path, options)[1:] if fields]

    multiline = any(c.null_count < len(c) and pc.any(pc.match_substring(c, "\n")).as_py() for c in table.columns)
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
    return frame, Lines("csv", lines if multiline else None)


def _odd_quotes(path: Path) -> bool:
    """Whether the file has an odd number of `"`: a quoted value is then never closed (a quote in a
    value is doubled, so a well-formed file always has an even number)."""
    if path.stat().st_size == 0:
        return False
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        count = 0
        step = 1 << 26
        for start in range(0, len(mm), step):
            count += int(np.count_nonzero(np.frombuffer(mm[start:start + step], dtype=np.uint8) == 34))
    return count % 2 == 1


def _csv_records_strict(path: Path, options: FactsOptions) -> int:
    """The line where the value that is never closed starts (slow; only for the message)."""
    start = 1
    with path.open(encoding=options.encoding, newline="") as fh:
        reader = csv.reader(fh, delimiter=options.delimiter, strict=True)
        try:
            for _ in reader:
                start = reader.line_num + 1
        except csv.Error:
            return start
    return start


def _has_rows(path: Path, encoding: str) -> bool:
    """Whether anything but blank lines follows the header (read lazily, a few lines at most)."""
    with path.open(encoding=encoding, errors="replace", newline="") as fh:
        seen_header = False
        for line in fh:
            if not seen_header:
                seen_header = bool(line.strip())
            elif line.strip():
                return True
    return False


def _read_jsonl(path: Path, options: FactsOptions, loc: Location) -> tuple[pd.DataFrame, Lines]:
    if options.encoding.lower().replace("_", "-") in ("utf-8", "utf8"):
        try:
            # the fast reader; anything unusual (a bad line, a column of mixed types, another encoding)
            # is read line by line below, which also names the line of a problem
            table = pj.read_json(path)
            frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype()}.get)
            return frame, Lines("jsonl", lambda: _nonblank_lines(path))
        except (pa.ArrowInvalid, ValueError, TypeError):
            pass
    return _read_jsonl_lines(path, options)


def _nonblank_lines(path: Path) -> list[int]:
    with path.open(encoding="utf-8", newline="\n") as fh:  # lines end at \n, as the readers split them
        return [i for i, line in enumerate(fh, start=1) if line.strip()]


def _read_jsonl_lines(path: Path, options: FactsOptions) -> tuple[pd.DataFrame, Lines]:
    try:
        text = path.read_text(encoding=options.encoding)
    except UnicodeDecodeError as exc:
        raise _decode_problem(path, options, exc) from None
    except LookupError:
        raise InputError(Problem("usage", f"unknown encoding {options.encoding!r}", Location("command line"),
                                 "e.g. --encoding utf-8, gb18030, utf-16")) from None
    records: list[Any] = []
    line_of: list[int] = []
    decoder = json.JSONDecoder()
    # lines end at \n only (a \r before it is JSON whitespace): `splitlines` also cuts at U+2028, U+0085
    # and the like, which JSON allows unescaped inside a string
    for number, line in enumerate(text.lstrip("\ufeff").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = decoder.decode(line)
        except json.JSONDecodeError as exc:
            raise InputError(Problem("input-unreadable", f"{path.name} line {number} is not valid JSON: "
                                     f"{exc.msg} (column {exc.colno})", Location(str(path), number, exc.colno),
                                     "each line must hold one JSON object, like {\"customer_id\": \"000123\", ...}")) \
                from None
        if not isinstance(record, dict):
            raise InputError(Problem("input-unreadable", f"{path.name} line {number} holds a JSON "
                                     f"{type(record).__name__}, not an object", Location(str(path), number, 1),
                                     "each line must hold one JSON object, like {\"customer_id\": \"000123\", ...}"))
        bad = next((k for k, v in record.items() if isinstance(v, str) and _SURROGATE.search(v)), None)
        if bad is not None:  # `\ud800` alone is valid JSON but no character: no text can hold it
            raise InputError(Problem("input-unreadable", f"{path.name} line {number}: `{bad}` holds half of a "
                                     "UTF-16 pair (an escape like \\ud800 with no partner), which is no character",
                                     Location(str(path), number, 1), "write the character itself, or its pair"))
        records.append(record)
        line_of.append(number)
    columns: dict[str, list[Any]] = {}
    for i, record in enumerate(records):
        for name in record:
            if name not in columns:
                columns[name] = [None] * i
        for name, values in columns.items():
            values.append(record.get(name))
    frame = pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})
    return frame, Lines("jsonl", lambda: line_of)


def _sheet_ref(sheet: str) -> str:
    """A sheet's name as Excel writes it in a cell reference (quoted when it has spaces and the like)."""
    return sheet if sheet.replace("_", "").isalnum() else "'" + sheet.replace("'", "''") + "'"


def _cell_value(v: Any) -> Any:
    """A cell as the checks take it: empty is missing, a date or time is its ISO text."""
    if v == "" or v is None:
        return None
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat(sep=" ") if isinstance(v, datetime.datetime) else v.isoformat()
    if isinstance(v, datetime.timedelta):
        return str(v)
    return v


def _sheet_column(cells: tuple[Any, ...]) -> pd.Series:
    """One column of a sheet: numbers (empty cells missing) as numbers, text as text, yes/no as yes/no;
    a column mixing them (or holding dates) cell by cell, for the checks to name each cell."""
    kinds = set(map(type, cells))
    if kinds <= {float, int, str} and kinds & {float, int} and all(v == "" for v in cells if type(v) is str):
        return pd.Series(np.array([np.nan if v == "" else v for v in cells], dtype=float))
    if kinds <= {str}:
        return pd.Series(pd.array([v if v != "" else None for v in cells], dtype="string"))
    if kinds <= {bool, str} and all(v == "" for v in cells if type(v) is str):
        return pd.Series(pd.array([None if v == "" else v for v in cells], dtype="boolean"))
    return pd.Series([_cell_value(v) for v in cells], dtype=object)


def _read_xlsx(path: Path, sheet: str | None, entity: str, loc: Location,
               wanted: list[str]) -> tuple[pd.DataFrame, Lines]:
    from .workbook import bounded

    CalamineWorkbook = need("python_calamine").CalamineWorkbook

    parts = bounded(path)  # before a cell is read: a small file may unpack to gigabytes
    book = CalamineWorkbook.from_path(str(path))
    try:
        sheet, rows = _sheet_rows(book, path, sheet, entity, loc)
    finally:
        book.close()
    header = [str(h).strip() for h in rows[0]] if rows else []
    width = len(header)
    body = rows[1:]
    # trailing rows that are empty in every column are the sheet's formatting, not entities
    while body and all(v == "" or v is None for v in body[-1]):
        body.pop()
    columns = list(zip(*[r[:width] + [""] * (width - len(r)) for r in body])) if body else [()] * width
    doubled = sorted({h for h in header if h and header.count(h) > 1})
    if doubled:
        cells = ", ".join(f"{column_letters(j)}1" for j, h in enumerate(header) if h in doubled)
        raise InputError(Problem("input-duplicate-column", f"{_sheet_ref(sheet)}!{cells}: the header names "
                                 f"{', '.join('`' + h + '`' for h in doubled)} twice", loc, "keep one of them"))
    letters = {name: column_letters(j) for j, name in enumerate(header)}
    read = {letters[name] for name in wanted if name in letters}
    _refuse_long_cells(columns, header, sheet, loc, read)
    uncalculated = parts.uncalculated(sheet, read)
    if uncalculated:
        first = uncalculated[0]
        more = f" and {len(uncalculated) - SHOW_ROWS} more" if len(uncalculated) > SHOW_ROWS else ""
        refs = ", ".join(c.ref for c in uncalculated[:SHOW_ROWS])
        holds = "holds a formula" if len(uncalculated) == 1 else "hold formulas"
        if first.error:
            why = f"whose result is an error ({first.value}, from ={first.formula[:SHOW_CHARS]})"
        elif parts.recalculate and first.value is not None:
            why = (f"whose value was never calculated (={first.formula[:SHOW_CHARS]}: the workbook was written by a "
                   f"program and asks to be calculated when opened, so the stored {first.value[:SHOW_CHARS]} is "
                   "no result)")
        else:
            why = f"with no saved value (={first.formula[:SHOW_CHARS]})"
        raise InputError(Problem("input-formula", f"{_sheet_ref(sheet)}!{refs}{more} {holds} {why}", loc,
                                 "open and save the workbook in Excel or LibreOffice, so that the results are stored, "
                                 "or paste the values in place of the formulas"))
    frame = pd.DataFrame({name: _sheet_column(columns[j]) for j, name in enumerate(header) if name})
    return frame, Lines("xlsx", sheet=sheet, letters=letters)


def excel_length(text: str) -> int:
    """A text's length as Excel counts it: in UTF-16 units, so a character beyond U+FFFF (an emoji, a
    rare CJK character) counts twice."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def too_long_for_a_cell(value: Any) -> bool:
    """Whether a value is a text longer than an Excel cell holds (XlsxWriter would cut it)."""
    return type(value) is str and len(value) > CELL_CHARS // 2 and excel_length(value) > CELL_CHARS


def _refuse_long_cells(columns: list[tuple[Any, ...]], header: list[str], sheet: str, loc: Location,
                       read: set[str]) -> None:
    """A cell longer than Excel allows did not come from Excel: refused, where a policy reads it."""
    for j, cells in enumerate(columns):
        if column_letters(j) not in read:
            continue
        long = [i for i, v in enumerate(cells) if too_long_for_a_cell(v)]
        if long:
            raise InputError(Problem("input-workbook", f"{_sheet_ref(sheet)}!{column_letters(j)}{long[0] + 2} "
                                     f"holds {excel_length(cells[long[0]]):,} characters; an Excel cell holds at most "
                                     f"{CELL_CHARS:,}", loc, "the workbook was not written by Excel: check how it "
                                     "was made, or give the facts as CSV or Parquet"))


def _sheet_rows(book: Any, path: Path, sheet: str | None, entity: str, loc: Location
                ) -> tuple[str, list[list[Any]]]:
    """The sheet to read (the one named, or the one named after the entity, or the only one) and its rows."""
    names = list(book.sheet_names)
    if sheet is None:
        wanted = {entity.casefold(), f"{entity}s".casefold()} if entity else set()
        found = [n for n in names if n.strip().casefold() in wanted]
        if found or len(names) == 1:
            sheet = (found or names)[0]
        else:
            given = shlex.quote(f"{entity or 'ENTITY'}={path.name}#{names[0]}")
            raise InputError(Problem("input-sheet", f"{path.name} has several sheets ({', '.join(names)}) and none "
                                     f"is named {entity or 'after the entity'}", loc,
                                     f"name the sheet: --input {given}"))
    elif sheet not in names:
        raise InputError(Problem("input-sheet", f"{path.name} has no sheet `{sheet}`", loc,
                                 did_you_mean(sheet, names) or f"its sheets: {', '.join(names)}"))
    return sheet, book.get_sheet_by_name(sheet).to_python(skip_empty_area=False)


def _read_parquet(path: Path, wanted: list[str], content: bytes | None = None) -> tuple[pd.DataFrame, Lines]:
    # only the declared columns: a wide export may carry many the policies never read
    source = pq.ParquetFile(pa.BufferReader(content) if content is not None else str(path))
    present = set(source.schema_arrow.names)
    table = source.read(columns=[c for c in wanted if c in present] or None)
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype(), pa.large_string(): pd.StringDtype()}.get)
    return frame, Lines("parquet")


# -- checking -----------------------------------------------------------------------------------------

def _as_text(col: pd.Series) -> pd.Series:
    return col.astype("string").str.strip().replace("", pd.NA)


def _examples(values: pd.Series, positions: np.ndarray) -> str:
    return ", ".join(shown(v) for v in values.iloc[positions[:3]].tolist())


def _object_kinds(col: pd.Series) -> np.ndarray:
    """For a column of JSON values: 's' text, 'n' number, 'b' yes/no, 'o' object or list, '' missing."""
    def kind(v: Any) -> str:
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return ""
        if isinstance(v, bool):
            return "b"
        if isinstance(v, (int, float)):
            return "n"
        if isinstance(v, str):
            return "s"
        return "o"

    return np.array([kind(v) for v in col.tolist()], dtype=object)


def _id_hint(name: str, fmt: str) -> str:
    """How to keep ids as text, in the words of the tool that made the file."""
    if fmt == "jsonl":
        return f'write the ids in quotes, e.g. "{name}": "000123"'
    if fmt == "xlsx":
        return (f"format the column `{name}` as Text in Excel before typing or pasting the ids (or type them "
                "with a leading apostrophe, '000123), so the leading zeros stay")
    if fmt == "frame":
        return f"read the ids as text: pd.read_csv(path, dtype={{'{name}': str}}) (or pd.read_excel)"
    return ("store the column as text (string) when the file is made, keeping the leading zeros, e.g. "
            f"frame['{name}'] = frame['{name}'].astype(str).str.zfill(6) before to_parquet")


def _text_column(fact: Fact, col: pd.Series, identifier: bool, where: str, lines: Lines, loc: Location,
                 problems: list[Problem]) -> pd.Series | None:
    """A text fact's column as text, or None after recording why it cannot be (ids must be text)."""
    what = "an id" if identifier else "text"
    fix = ("ids must be text: leading zeros may already be lost (000123 became 123), and numbers never "
           "match the text ids of the other file")
    if col.dtype == object:
        kinds = _object_kinds(col)
        bad_kinds = ("n", "b", "o") if identifier else ("o",)
        bad = np.flatnonzero(np.isin(kinds, bad_kinds))
        if bad.size:
            hint = (_id_hint(fact.name, lines.fmt) if identifier
                    else "a JSON object or list cannot be a fact; give its value as text")
            problems.append(Problem("input-not-text",
                                    f"column `{fact.name}` must hold {what}, but {lines.label(bad, fact.name)} "
                                    f"{_verb(bad, 'holds', 'hold')} {_examples(col, bad)}"
                                    + (f"; {fix}" if identifier else ""), loc, hint))
            return None
        return col.map(lambda v: v if v is None or isinstance(v, str) else
                       ("true" if v is True else "false" if v is False else number_text(float(v))))
    if isinstance(col.dtype, pd.CategoricalDtype) and pd.api.types.is_string_dtype(col.cat.categories.dtype):
        return col.astype("string")
    if pd.api.types.is_string_dtype(col.dtype):
        return col
    kind = "numbers" if pd.api.types.is_numeric_dtype(col.dtype) else str(col.dtype)
    if identifier or pd.api.types.is_float_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype):
        problems.append(Problem(
            "input-not-text", f"column `{fact.name}` is stored as {kind} ({col.dtype}) in {where}, but the "
            f"policies read it as {what}" + (f"; {fix}" if identifier else ""), loc, _id_hint(fact.name, lines.fmt)))
        return None
    return col.astype("Int64").astype("string")  # whole numbers as codes of a text fact: lossless


def check_column(fact: Fact, col: pd.Series, lines: Lines, loc: Location, problems: list[Problem],
                 identifier: bool = False, where: str = "") -> pd.Series:
    """Convert one column to its declared type, recording every problem found."""
    name = fact.name
    if fact.type in ("number", "integer"):
        arr = _checked_numbers(fact, _number_values(name, col, lines, loc, problems), lines, loc, problems)
        result = pd.Series(arr, index=col.index, name=name)
    elif fact.type == "boolean":
        result = _boolean_values(name, col, lines, loc, problems)
    else:
        text_col = _text_column(fact, col, identifier, where, lines, loc, problems)
        if text_col is None:
            return pd.Series(pd.array([pd.NA] * len(col), dtype="string"), index=col.index, name=name)
        result = _text_values(fact, text_col, lines, loc, problems)
    if fact.required:
        missing = np.flatnonzero(result.isna().to_numpy())
        if missing.size:
            problems.append(Problem("input-missing-value",
                                    f"column `{name}` must not be empty, but it is at {lines.label(missing, name)}",
                                    loc))
    if fact.key:
        dup = result.duplicated(keep=False) & result.notna()
        pos = np.flatnonzero(dup.to_numpy())
        if pos.size:
            problems.append(Problem("input-duplicate-key",
                                    f"key column `{name}` repeats a value at {lines.label(pos, name)}: "
                                    f"{_examples(result, pos)}", loc, "each entity must appear once"))
    return result.rename(name)




def _number_values(name: str, col: pd.Series, lines: Lines, loc: Location, problems: list[Problem]) -> pd.Series:
    """A column read as numbers: numbers as they are, text parsed; anything else a problem (and missing)."""
    if col.dtype == object:
        kinds = _object_kinds(col)
        bad = np.flatnonzero(np.isin(kinds, ("b", "o")))
        values = pd.Series(np.nan, index=col.index)
        ok = np.flatnonzero(kinds == "n")
        values.iloc[ok] = col.iloc[ok].astype(float)
        text_rows = np.flatnonzero(kinds == "s")
        if text_rows.size:
            text = _as_text(col.iloc[text_rows])
            parsed = pd.to_numeric(text, errors="coerce")
            values.iloc[text_rows] = parsed.to_numpy(dtype=float, na_value=np.nan)
            bad = np.union1d(bad, text_rows[(parsed.isna() & text.notna()).to_numpy()])
        if bad.size:
            problems.append(Problem("input-not-number", f"column `{name}` must hold numbers, but "
                                    f"{lines.label(bad, name)} {_verb(bad, 'holds', 'hold')} {_examples(col, bad)}",
                                    loc, "remove units and thousands separators; leave it empty if unknown"))
    elif pd.api.types.is_bool_dtype(col):
        values = pd.Series(np.nan, index=col.index)
        bad = np.flatnonzero(col.notna().to_numpy())
        problems.append(Problem("input-not-number", f"column `{name}` must hold numbers, but it holds yes/no "
                                f"values ({lines.label(bad, name)})", loc))
    elif pd.api.types.is_numeric_dtype(col):
        values = col.astype("float64")
    else:
        text = _as_text(col)
        values = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = np.flatnonzero((values.isna() & text.notna()).to_numpy())
        if bad.size:
            problems.append(Problem("input-not-number",
                                    f"column `{name}` must hold numbers, but {lines.label(bad, name)} "
                                    f"{_verb(bad, 'holds', 'hold')} {_examples(text, bad)}",
                                    loc, "remove units and thousands separators; leave it empty if unknown"))
    return values


def _checked_numbers(fact: Fact, values: pd.Series, lines: Lines, loc: Location, problems: list[Problem]
                     ) -> np.ndarray:
    """Numbers rounded to the fact's decimals and checked against what it declares: finite, whole
    (integer), within min and max."""
    name = fact.name
    arr = values.to_numpy(dtype=float, na_value=np.nan)
    inf = np.flatnonzero(np.isinf(arr))
    if inf.size:
        problems.append(Problem("input-range",
                                f"column `{name}` holds an infinite value at {lines.label(inf, name)}", loc))
    if fact.decimals is not None:
        arr = round_half_away(arr, fact.decimals)
    if fact.type == "integer":
        frac = np.flatnonzero(~np.isnan(arr) & np.isfinite(arr) & (arr != np.round(arr)))
        if frac.size:
            problems.append(Problem("input-not-integer",
                                    f"column `{name}` must hold whole numbers, but {lines.label(frac, name)} "
                                    f"{_verb(frac, 'holds', 'hold')} {_examples(pd.Series(arr), frac)}", loc))
    for bound, op, word in ((fact.min, np.less, "below the minimum"), (fact.max, np.greater, "above the maximum")):
        if bound is None:
            continue
        with np.errstate(invalid="ignore"):
            out = np.flatnonzero(op(arr, bound))
        if out.size:
            problems.append(Problem("input-range",
                                    f"column `{name}` has {_verb(out, 'a value', 'values')} {word} "
                                    f"{number_text(bound)} at {lines.label(out, name)}: "
                                    f"{_examples(pd.Series(arr), out)}",
                                    loc, f"the policy of `{name}` (at {fact.loc}) allows "
                                    f"{'at least' if op is np.less else 'at most'} {number_text(bound)}"))
    return arr


def _boolean_values(name: str, col: pd.Series, lines: Lines, loc: Location, problems: list[Problem]) -> pd.Series:
    """A column read as yes/no values (true/false, yes/no, 1/0, in any case)."""
    if pd.api.types.is_bool_dtype(col):
        result = col.astype("boolean")
    else:
        raw = col
        if col.dtype == object:
            kinds = _object_kinds(col)
            raw = col.map(lambda v: ("true" if v else "false") if isinstance(v, bool) else
                          (number_text(float(v)) if isinstance(v, (int, float)) else v))
            objects = np.flatnonzero(kinds == "o")
            raw.iloc[objects] = "\0object"
        text = _as_text(raw).str.lower()
        true = text.isin(TRUE_WORDS).to_numpy(dtype=bool, na_value=False)
        false = text.isin(FALSE_WORDS).to_numpy(dtype=bool, na_value=False)
        bad = np.flatnonzero(~true & ~false & text.notna().to_numpy())
        if bad.size:
            problems.append(Problem("input-not-boolean",
                                    f"column `{name}` must hold yes/no values, but {lines.label(bad, name)} "
                                    f"{_verb(bad, 'holds', 'hold')} {_examples(col, bad)}", loc,
                                    "use true/false, yes/no or 1/0"))
        result = pd.Series(pd.array(np.where(true, True, False), dtype="boolean"), index=col.index)
        result[~true & ~false] = pd.NA
    return result


def _text_values(fact: Fact, text_col: pd.Series, lines: Lines, loc: Location, problems: list[Problem]
                 ) -> pd.Series:
    """A text column, checked against the fact's declared values."""
    name = fact.name
    result = _as_text(text_col)
    if fact.values is not None:
        allowed = {str(v) for v in fact.values}
        bad = np.flatnonzero((~result.isin(allowed) & result.notna()).to_numpy(dtype=bool))
        if bad.size:
            problems.append(Problem("input-value",
                                    f"column `{name}` holds {_verb(bad, 'a value', 'values')} outside its "
                                    f"declared set at {lines.label(bad, name)}: {_examples(result, bad)}", loc,
                                    f"allowed: {', '.join(sorted(allowed))}"))
    return result


def _semicolon_hint(path: Path, columns: list[str], options: FactsOptions) -> str:
    if options.delimiter != ";" and len(columns) == 1 and ";" in columns[0]:
        return "the header is one column with `;` in it: the file uses `;` between fields, so pass --delimiter ';'"
    if options.delimiter != "\t" and len(columns) == 1 and "\t" in columns[0]:
        return "the file uses tabs between fields: pass --delimiter tab"
    return ""


def check_frame(frame: pd.DataFrame, facts: dict[str, Fact], name: str,
                identifiers: set[str] | None = None) -> pd.DataFrame:
    """Check a DataFrame given in Python as a facts file is checked (`read_facts`): the same problems,
    located at `name` and the frame's own row labels (`row 17` is `frame.loc[17]`)."""
    loc = Location(name)
    if not isinstance(frame, pd.DataFrame):
        raise InputError(Problem("input-unreadable", f"{name} is a {type(frame).__name__}, not a pandas DataFrame",
                                 loc, "pass a DataFrame per entity, e.g. {'customer': pd.read_excel(...)}"))
    raw = frame.reset_index(drop=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    doubled = sorted({c for c in raw.columns if list(raw.columns).count(c) > 1} & set(facts))
    if doubled:
        raise InputError(Problem("input-duplicate-column", f"{name} has two columns named "
                                 f"{', '.join('`' + c + '`' for c in doubled)}", loc, "keep one of them"))
    labels = list(frame.index)
    return _check_table(raw, facts, Lines("frame", lambda: labels), loc, identifiers, name)


def _check_table(raw: pd.DataFrame, facts: dict[str, Fact], lines: Lines, loc: Location,
                 identifiers: set[str] | None, where: str, hint: str = "") -> pd.DataFrame:
    """The declared facts of a table read from a file or given as a frame, each converted and checked;
    every problem of every column raised together."""
    missing = [name for name in facts if name not in raw.columns]
    if missing:
        hint = hint or (f"the {'frame' if lines.fmt == 'frame' else 'file'} has: "
                        f"{', '.join(map(str, raw.columns[:20]))}" if len(raw.columns) else
                        "it has no header: its first row must name the columns")
        raise InputError(Problem("input-missing-column",
                                 f"{where} lacks the column{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join('`' + m + '`' for m in missing)} that the policies read", loc, hint))
    identifiers = set(identifiers or ()) | {f.name for f in facts.values() if f.key}
    problems: list[Problem] = []
    columns = {name: check_column(f, raw[name].reset_index(drop=True), lines, loc, problems,
                                  identifier=name in identifiers, where=where)
               for name, f in facts.items()}
    if problems:
        raise InputError(problems)
    return pd.DataFrame(columns, copy=False)


def _parser_errors(fmt: str) -> tuple[type[BaseException], ...]:
    """What the parsers raise on a file they cannot read: these become input errors; anything else is
    kam's own bug and keeps its traceback."""
    errors: tuple[type[BaseException], ...] = (pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError,
                                               csv.Error, UnicodeError, OSError, EOFError)
    if fmt == "xlsx":
        errors += (need("python_calamine").CalamineError,)
    return errors


def read_facts(path: Path, facts: dict[str, Fact], options: FactsOptions | str | None = None,
               identifiers: set[str] | None = None, entity: str = "", content: bytes | None = None) -> pd.DataFrame:
    """Read and check one facts file; raise InputError naming file, column and lines on any problem.

    `identifiers` are the text facts that hold ids (the key, and columns that name another entity):
    they must be text in the file itself. A workbook is read from the sheet named after the `entity`
    (or its only sheet), or the one `crm.xlsx#Sheet` names. `content` holds a Parquet file's bytes
    already read (the Dask engine hashes them as it reads them, so the file is read once)."""
    if not isinstance(options, FactsOptions):
        options = FactsOptions(format=options)
    loc = Location(str(path))
    path, sheet = split_sheet(path)
    if content is None and not path.exists():
        raise InputError(Problem("input-missing-file", f"facts file {path} does not exist", loc))
    if (len(content) if content is not None else path.stat().st_size) == 0:
        raise InputError(Problem("input-empty-file", f"facts file {path} is empty (zero bytes)", loc,
                                 "a file with only the header line is fine and gives empty outputs"))
    fmt = detect_format(path, options.format)
    try:
        if fmt == "csv":
            raw, lines = _read_csv(path, options, loc)
        elif fmt == "jsonl":
            raw, lines = _read_jsonl(path, options, loc)
        elif fmt == "parquet":
            raw, lines = _read_parquet(path, list(facts), content)
        elif fmt == "xlsx":
            raw, lines = _read_xlsx(path, sheet, entity, loc, list(facts))
        else:
            raise InputError(Problem("input-format", f"unknown format {fmt!r}", loc,
                                     "use csv, parquet, jsonl or xlsx"))
    except InputError:
        raise
    except _parser_errors(fmt) as exc:  # a parser's own message is the most precise we have
        raise InputError(Problem("input-unreadable", f"cannot read {path.name} as {fmt}: {exc}", loc)) from None
    raw.columns = [str(c).strip() for c in raw.columns]
    return _check_table(raw, facts, lines, loc, identifiers, f"{path.name}#{lines.sheet}" if lines.sheet else path.name,
                        _semicolon_hint(path, list(raw.columns), options))


def identifier_facts(pl: Plan, entity: str) -> set[str]:
    """The facts of an entity that hold ids: its key and the columns that name another entity."""
    ep = pl.entity(entity)
    return {ep.key} | {j.on for j in ep.joins}
