"""The workbook read back: bounded before a cell is read, then every sheet kam wrote read against the
tables of the texts it was exported from, each edited cell parsed into the YAML value it means.

A workbook comes from outside. Before it is opened: its size (`MAX_BYTES`), the zip bounds every
facts workbook gets (`engine.batch.workbook.bounded`: parts, ratios, cells beyond Excel's sheet),
and the rows and columns of each sheet (`MAX_ROWS`, `MAX_COLUMNS`: a decision of a thousand rules is
already far beyond what a person edits). Formula cells a spreadsheet never calculated are refused.

A cell that does not read (a condition with a syntax error, text in a number cell, a value the
decision does not declare, a read-only cell changed) is a problem naming the cell (`tier!B7`); all
of them are reported together, and nothing is written.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import math
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from ...batch.extras import need
from ...batch.workbook import bounded, column_letters
from ...language.errors import InputError, Location, Problem
from ...language.numbers import number_text
from ...language.parse import ExprSyntaxError, parse_expression
from ...language.validate import param_value
from .tables import PERCENT, Derive, Entry, Output, Param, Scalar, Source, Table, Tables, cell_text, lookup_grid, \
    lookup_source, text_sha
from .writer import DERIVE_HEADERS, FORMAT, MARKER, META_SHEET, PARAM_HEADERS, TITLE_ROWS, VERSION, LISTS_SHEET, \
    lookup_marker

MAX_BYTES = 20 << 20  # a workbook of every policy of a company is well under 1 MiB
MAX_ROWS = 10_000  # rows of one sheet
MAX_COLUMNS = 100
MAX_RECORD = 64 << 20  # bytes the record of the exported texts may unpack to
_ROW_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?row[\s/>]")
_ROW_AT = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?row\s[^>]*?\br\s*=\s*["']\s*([0-9]{1,12})""")
_CELL_AT = re.compile(rb"""<(?:[A-Za-z_][\w.-]*:)?c\s[^>]*?\br\s*=\s*["']\s*([A-Za-z]{1,4})[0-9]""")
_KEY = re.compile(r"[\w-]+")
_SKIP = object()  # a cell that did not read (its problem is recorded)


@dataclass(frozen=True)
class Exported:
    """What a workbook records of its export: the folder and the policy files as they were then."""

    folder: str
    kam: str
    sources: tuple[Source, ...]


@dataclass(frozen=True)
class Book:
    """A workbook kam wrote, bounded and read: its record and the values of every sheet, row by row."""

    path: Path
    exported: Exported
    sheets: Mapping[str, list[list[Any]]]
    hidden: frozenset[str]


def _refuse(path: Path, message: str, hint: str = "") -> InputError:
    return InputError(Problem("workbook", message, Location(str(path)), hint))


def _columns(letters: bytes) -> int:
    n = 0
    for ch in letters.upper():
        n = n * 26 + ch - 64
    return n


def _extent(path: Path, info: zipfile.ZipInfo) -> tuple[int, int]:
    """The rows and columns a sheet part reaches (rows without a number counted one after another).
    Read only once `bounded` has checked what the part unpacks to."""
    rows = count = columns = 0
    tail = b""
    with zipfile.ZipFile(path) as z, z.open(info) as fh:
        while True:
            chunk = fh.read(1 << 20)
            data = tail + chunk
            cut = data.rfind(b"<") if chunk else len(data)
            cut = len(data) if cut < 0 else cut
            done, tail = data[:cut], data[cut:]
            count += len(_ROW_TAG.findall(done))
            rows = max([rows, *(int(r) for r in _ROW_AT.findall(done))])
            columns = max([columns, *(_columns(c) for c in _CELL_AT.findall(done))])
            if not chunk:
                return max(rows, count), columns


def _record(path: Path, rows: list[list[Any]]) -> Exported:
    """The export's record, from the very hidden sheet: checked as data from outside."""
    damaged = _refuse(path, f"{path.name}: the record of its export (sheet {META_SHEET}) is damaged",
                      "export the workbook again with kam export")
    cells = [r[0] if r else "" for r in rows]
    if not cells or cells[0] != MARKER or not all(isinstance(c, str) for c in cells):
        raise damaged
    try:
        packed = base64.b64decode("".join(cells[1:]), validate=True)
        unpack = zlib.decompressobj()
        raw = unpack.decompress(packed, MAX_RECORD)
        if unpack.unconsumed_tail or not unpack.eof:
            raise damaged
        doc = json.loads(raw.decode("utf-8"))
    except (binascii.Error, zlib.error, UnicodeDecodeError, ValueError, RecursionError):
        raise damaged from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("files"), list):
        raise damaged
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise _refuse(path, f"{path.name} was exported by a newer kam ({doc.get('kam')})",
                      "update kam, or export again")
    sources = []
    for f in doc["files"]:
        if not (isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("text"), str)
                and f.get("sha256") == text_sha(f["text"]) and "/" not in f["name"] and "\\" not in f["name"]
                and f["name"].endswith((".yaml", ".yml")) and not f["name"].startswith(".")):
            raise damaged
        sources.append(Source(f["name"], f["text"], f["sha256"], ""))
    return Exported(str(doc.get("folder", "")), str(doc.get("kam", "")), tuple(sources))


def read_book(path: Path) -> Book:
    """Open a workbook `kam export` wrote: bounded first (size, zip parts, rows, columns), then every
    sheet's values read. Raises InputError (exit 2) for anything else."""
    calamine = need("python_calamine")
    if not path.is_file():
        raise _refuse(path, f"workbook {path} does not exist", "export one with kam export POLICY_DIR --to FILE")
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise _refuse(path, f"{path.name} is {size / (1 << 20):,.1f} MiB: a workbook of policies is far smaller "
                      f"(kam reads up to {MAX_BYTES >> 20} MiB)", "export the policies again with kam export")
    parts = bounded(path)
    for sheet, info in parts.sheet_parts.items():
        rows, columns = _extent(path, info)
        if rows > MAX_ROWS or columns > MAX_COLUMNS:
            raise _refuse(path, f"{path.name}: sheet {sheet} reaches row {rows:,}, column {columns:,} (kam reads "
                          f"policy sheets of up to {MAX_ROWS:,} rows and {MAX_COLUMNS} columns)",
                          "delete what lies below or beside the table, or export again")
    try:
        wb = calamine.CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # the reader's own errors (a damaged part) have no common base
        raise _refuse(path, f"{path.name} cannot be read: {exc}", "save it again in Excel as .xlsx") from None
    hidden = frozenset(m.name for m in wb.sheets_metadata if str(m.visible).rsplit(".", 1)[-1] != "Visible")
    if META_SHEET not in wb.sheet_names:
        raise _refuse(path, f"{path.name} is not a workbook kam export wrote (it has no record of an export)",
                      "export the policies with kam export POLICY_DIR --to FILE, edit that workbook and import it")
    sheets = {name: wb.get_sheet_by_name(name).to_python(skip_empty_area=False) for name in wb.sheet_names}
    exported = _record(path, sheets.pop(META_SHEET))
    sheets.pop(LISTS_SHEET, None)
    for name, rows in sheets.items():
        width = max((len(r) for r in rows), default=0)
        formulas = parts.uncalculated(name, {column_letters(c) for c in range(width)})
        if formulas:
            refs = ", ".join(f"{name}!{f.ref} (={f.formula})" for f in formulas[:5])
            raise _refuse(path, f"{path.name}: formula cells with no calculated value: {refs}",
                          "type the values themselves, or open and save the workbook in Excel or LibreOffice")
    return Book(path, exported, sheets, hidden)


@dataclass
class Cells:
    """The problems of the cells read so far, and the notes (cells kam does not read)."""

    path: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def refuse(self, ref: str, message: str, hint: str = "") -> Any:
        self.problems.append(Problem("workbook-cell", f"{ref} {message}", Location(str(self.path)), hint))
        return _SKIP


def ref(sheet: str, row: int, col: int) -> str:
    """A cell's reference as Excel writes it, from 0-based row and column: `tier!B7`."""
    name = sheet if re.fullmatch(r"[A-Za-z_][\w.]*", sheet) else "'" + sheet.replace("'", "''") + "'"
    return f"{name}!{column_letters(col)}{row + 1}"


def _cell(rows: list[list[Any]], r: int, c: int) -> Any:
    """A cell's value: None for an empty one."""
    if r >= len(rows) or c >= len(rows[r]):
        return None
    v = rows[r][c]
    return None if v == "" else v


def _equal(a: float, b: float) -> bool:
    """Equal as Excel keeps numbers (15 significant digits): 0.8 typed is the 0.8 written."""
    return f"{a:.15g}" == f"{b:.15g}"


def _number(v: Any) -> float | None:
    """A number cell, or a text that is one (`0.86`, `86%`); None for anything else."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, str):
        text = v.strip().replace("_", "x")  # Python reads `1_000` as a number; Excel and YAML 1.2 do not
        try:
            x = float(param_value(text)) if PERCENT.match(text) else float(text)
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def _whole(x: float) -> int | float:
    """A number as the YAML writes it: whole numbers without `.0`."""
    return int(x) if x.is_integer() and abs(x) < 2.0 ** 53 else x


def _percent_text(x: float) -> str:
    """A share as a percent text that `validate.param_value` reads back: 0.75 is `75%`."""
    text = f"{round(x * 100, 10):.10f}".rstrip("0").rstrip(".")
    return f"{'0' if text in ('', '-0') else text}%"


def _text(cells: Cells, where: str, v: Any) -> Any:
    """A text cell's text: a number typed into it is its text (`100`), TRUE/FALSE `true`/`false`."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return number_text(v)
    if isinstance(v, (datetime.date, datetime.time, datetime.timedelta)):
        return cells.refuse(where, f"holds a date or time ({v}), where kam reads text",
                            "type the text with a leading ' so that Excel keeps it as typed")
    return cells.refuse(where, f"holds {v!r}, which kam cannot read")


def _expression(cells: Cells, where: str, text: str, what: str) -> Any:
    """`text` when it parses as kam's language, else a problem naming the cell and the spot."""
    try:
        parse_expression(text)
    except ExprSyntaxError as exc:
        spot = f" (at character {exc.pos + 1}: {text[exc.pos:exc.pos + 20]!r})" if exc.pos < len(text) else ""
        return cells.refuse(where, f"holds a {what} that does not read: {exc.message}{spot}", exc.hint)
    return text


def _output_value(cells: Cells, where: str, v: Any, output: Output, base: Scalar | None, what: str) -> Any:
    """The YAML value an outcome cell means: the rule's value as written where the cell shows it
    unchanged, else a declared value, a number, yes/no or (for a number or yes/no) an expression."""
    if v is None:
        return base if base == "" else None  # an empty text is shown as an empty cell
    if base is not None and _shown_equal(v, base):
        return base
    if output.values:
        for allowed in output.values:
            if _shown_equal(v, allowed):
                return allowed
        listed = ", ".join(cell_text(a) for a in output.values)
        return cells.refuse(where, f"holds {cell_text(v) if not isinstance(v, str) else v!r}, which is not a value "
                            f"of {what}", f"choose one of: {listed}")
    if output.type == "number":
        x = _number(v)
        if x is not None and not (isinstance(v, str) and v.strip().endswith("%")):
            return _whole(x)
        if isinstance(v, str):
            return _expression(cells, where, v, "computed value")
        return cells.refuse(where, f"holds {cell_text(v)}, where {what} is a number")
    if output.type == "boolean":
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in ("true", "false"):
            return v.strip().lower() == "true"
        if isinstance(v, str):
            return _expression(cells, where, v, "computed yes/no")
        return cells.refuse(where, f"holds {cell_text(v)}, where {what} is yes/no (TRUE or FALSE)")
    return _text(cells, where, v)


def _shown_equal(v: Any, value: Scalar) -> bool:
    """Whether a cell holds what a YAML value is shown as (a number as the number, yes/no as TRUE/FALSE
    or as its text)."""
    if isinstance(value, bool):
        return v is value or (isinstance(v, str) and v == cell_text(value))
    if isinstance(value, (int, float)):
        x = _number(v) if not isinstance(v, bool) else None
        return x is not None and not isinstance(v, str) and _equal(x, float(value))
    # a text value typed as something Excel converts (`1` to a number, `true` to TRUE) is still that text
    return v == value if isinstance(v, str) else isinstance(v, (bool, int, float)) and cell_text(v) == value


@dataclass(frozen=True)
class WantedRule:
    """A row of a decision sheet as the YAML values it means, with the reference of each cell."""

    id: str
    when: Scalar | None
    then: Any  # a scalar, or a tuple of (output, value) for several outputs
    because: Scalar | None
    refs: Mapping[str, str]  # id, when, then, then:<output>, because -> cell


@dataclass(frozen=True)
class Wanted:
    """What the workbook says, in the YAML's terms: every param and feature by (file, name), every
    decision's rules in the order of its rows."""

    params: Mapping[tuple[str, str], tuple[Scalar, str]]  # value, cell
    derives: Mapping[tuple[str, str], tuple[str, str]]  # expression, cell
    tables: Mapping[tuple[str, str], tuple[WantedRule, ...]]
    sheets: Mapping[tuple[str, str], str]  # a decision's sheet


def _param_value_of(cells: Cells, where: str, v: Any, p: Param) -> Any:
    """The YAML value a params cell means, the parameter's own text where it is unchanged: a share
    written `80%` stays `80%` when the cell holds 0.8, and becomes `75%` for 0.75."""
    unit = p.unit
    if v is None and unit != "text":  # a text may be empty
        return cells.refuse(where, f"is empty: parameter {p.name} needs a value")
    if unit in ("%", "number"):
        x = _number(v)
        if x is None or isinstance(v, bool):
            return cells.refuse(where, f"holds {cell_text(v) if not isinstance(v, str) else repr(v)}, where "
                                f"{p.name} is a {'share in % (e.g. 75%)' if unit == '%' else 'number'}")
        if _equal(x, float(param_value(p.value))):
            return p.value
        return _percent_text(x) if unit == "%" else _whole(x)
    if unit == "yes/no":
        if isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in ("true", "false")):
            value = v if isinstance(v, bool) else v.strip().lower() == "true"
            return p.value if value == p.value else value
        return cells.refuse(where, f"holds {cell_text(v)!r}, where {p.name} is yes/no (TRUE or FALSE)")
    text = _text(cells, where, v)
    return p.value if (text or "") == p.value else text or ""


def _grid_token(x: float, base: Entry | None, style: Entry) -> str:
    """A lookup number written as the grid writes its others: `0.86` among `0.80`, `86%` among `80%`."""
    if base is not None and _equal(x, base.value):
        return base.token
    if style.token.endswith("%"):
        return _percent_text(x)
    decimals = len(style.token.partition(".")[2])
    shortest = number_text(_whole(x))
    if "e" in shortest:
        shortest = f"{x:.15f}".rstrip("0").rstrip(".")
    needed = len(shortest.partition(".")[2])
    return f"{x:.{max(decimals, needed)}f}" if max(decimals, needed) else shortest


def _iter_rows(rows: list[list[Any]], start: int, width: int) -> Iterator[tuple[int, list[Any], list[Any]]]:
    """(row index, the values of the table's columns, those beside it) of every row from `start` that
    holds anything."""
    for r in range(start, len(rows)):
        values = [_cell(rows, r, c) for c in range(width)]
        beyond = [v for v in rows[r][width:] if v not in ("", None)]
        if any(v is not None for v in values) or beyond:
            yield r, values, beyond


def _header_ok(cells: Cells, rows: list[list[Any]], sheet: str, at: int, headers: tuple[str, ...]) -> bool:
    found = tuple(cell_text(_cell(rows, at, c)) for c in range(len(headers)))
    if found != headers:
        cells.refuse(f"{sheet}!{at + 1}:{at + 1}", f"is not the header row kam wrote ({', '.join(found)}; kam "
                     f"wrote {', '.join(headers)}): a column was inserted, moved or renamed",
                     "undo that (kam reads the columns where it wrote them), or export again")
        return False
    return True


def _read_only(cells: Cells, where: str, v: Any, shown: str, what: str, file: str) -> None:
    """A cell that is only shown must hold what was written into it."""
    if cell_text(v) != shown and not (isinstance(v, str) and v == shown):
        cells.refuse(where, f"is read-only ({what}) and was changed", f"change it in {file}; put back "
                     f"{shown[:80]!r}" if shown else f"change it in {file}; leave the cell empty")


def _note_beyond(cells: Cells, sheet: str, r: int, width: int, beyond: list[Any]) -> None:
    if beyond:
        cells.notes.append(f"{ref(sheet, r, width)}: cells beside the table are not read")


def _read_params(cells: Cells, rows: list[list[Any]], tables: Tables) -> dict[tuple[str, str], tuple[Scalar, str]]:
    """Every parameter's value cell, matched by policy and name."""
    out: dict[tuple[str, str], tuple[Scalar, str]] = {}
    if not _header_ok(cells, rows, "params", 0, PARAM_HEADERS):
        return out
    by_name = {(p.policy, p.name): p for p in tables.params}
    seen: set[tuple[str, str]] = set()
    for r, values, beyond in _iter_rows(rows, 1, len(PARAM_HEADERS)):
        _note_beyond(cells, "params", r, len(PARAM_HEADERS), beyond)
        key = (cell_text(values[0]), cell_text(values[1]))
        p = by_name.get(key)
        if p is None:
            cells.refuse(ref("params", r, 1), f"names parameter {key[1]!r} of policy {key[0]!r}, which the exported "
                         "policies do not have", "a parameter is added or renamed in the YAML file")
            continue
        if key in seen:
            cells.refuse(ref("params", r, 1), f"names parameter {p.name} of {p.policy} a second time")
            continue
        seen.add(key)
        value = _param_value_of(cells, ref("params", r, 2), values[2], p)
        for c, shown, what in ((3, p.unit, "the unit"), (4, p.description, "a comment in the YAML file"),
                               (5, p.used_by, "where the parameter is read")):
            _read_only(cells, ref("params", r, c), values[c], shown, what, p.file)
        if value is not _SKIP:
            out[(p.file, p.name)] = (value, ref("params", r, 2))
    for p in tables.params:
        if (p.policy, p.name) not in seen:
            cells.refuse("params", f"has no row for parameter {p.name} of {p.policy}",
                         "a parameter is removed in the YAML file: put its row back")
    return out


def _grid(cells: Cells, d: Derive, found: list[tuple[int, list[Any]]]) -> tuple[Any, str]:
    """The expression a feature's lookup rows mean (its numbers by key, as the grid writes them), and the
    first cell that changes it."""
    assert d.over is not None
    entries: list[Entry] = []
    base = {e.key: e for e in d.entries}
    changed: list[str] = []
    for i, (r, values) in enumerate(found):
        _read_only(cells, ref("derive", r, 2), values[2], lookup_marker(d.over) if i == 0 else "",
                  "what the feature looks up", d.file)
        key = _text(cells, ref("derive", r, 3), values[3])
        key = key.strip() or None if isinstance(key, str) else key
        x = _number(values[4])
        if key is _SKIP:
            continue
        if key is None or not _KEY.fullmatch(key):
            cells.refuse(ref("derive", r, 3), f"holds {key!r}: a key of {d.name} is a value of {d.over} "
                         "(letters, digits, _ or -)")
        elif key in (e.key for e in entries):
            cells.refuse(ref("derive", r, 3), f"holds key {key} of {d.name} a second time")
        elif x is None or isinstance(values[4], bool):
            shown = values[4] if isinstance(values[4], str) else cell_text(values[4])
            cells.refuse(ref("derive", r, 4), f"holds {shown!r}, where the value of {d.name} for {key} is a number")
        else:
            entries.append(Entry(key, _grid_token(x, base.get(key), d.entries[0])))
            if base.get(key) != entries[-1] or len(entries) > len(d.entries) or d.entries[len(entries) - 1].key != key:
                changed.append(ref("derive", r, 4))
    where = (changed or [ref("derive", found[0][0], 4)])[0]
    if not entries:
        return cells.refuse(ref("derive", found[0][0], 3), f"leaves the lookup {d.name} without a key"), where
    source = lookup_source(d.over, tuple(entries))
    return (d.source if lookup_grid(source) == lookup_grid(d.source) else source), where


def _read_derives(cells: Cells, rows: list[list[Any]], tables: Tables) -> dict[tuple[str, str], tuple[str, str]]:
    """Every feature's expression: its cell, or the expression its lookup rows mean."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    if not _header_ok(cells, rows, "derive", 0, DERIVE_HEADERS):
        return out
    by_name = {(d.policy, d.name): d for d in tables.derives}
    found: dict[tuple[str, str], list[tuple[int, list[Any]]]] = {}
    for r, values, beyond in _iter_rows(rows, 1, len(DERIVE_HEADERS)):
        _note_beyond(cells, "derive", r, len(DERIVE_HEADERS), beyond)
        key = (cell_text(values[0]), cell_text(values[1]))
        if key not in by_name:
            cells.refuse(ref("derive", r, 1), f"names feature {key[1]!r} of policy {key[0]!r}, which the exported "
                         "policies do not have", "a feature is added or renamed in the YAML file; a new key of a "
                         "lookup needs the policy and the name of its feature in columns A and B")
        else:
            found.setdefault(key, []).append((r, values))
    for key, d in by_name.items():
        rows_of = found.get(key)
        if not rows_of:
            cells.refuse("derive", f"has no row for feature {d.name} of {d.policy}",
                         "a feature is removed in the YAML file: put its row back")
            continue
        r, values = rows_of[0]
        _read_only(cells, ref("derive", r, 5), values[5], d.description, "a comment in the YAML file", d.file)
        if d.over is not None:
            value, where = _grid(cells, d, rows_of)
        elif len(rows_of) > 1:
            value = cells.refuse(ref("derive", rows_of[1][0], 1), f"names feature {d.name} a second time")
        else:
            for c in (3, 4):
                _read_only(cells, ref("derive", r, c), values[c], "", "a lookup's cell, and this feature is none",
                          d.file)
            text, where = _text(cells, ref("derive", r, 2), values[2]), ref("derive", r, 2)
            text = text.strip() or None if isinstance(text, str) else text
            if text is None:
                value = cells.refuse(where, f"is empty: feature {d.name} needs an expression")
            elif text is _SKIP or text == d.source.strip():
                value = text if text is _SKIP else d.source
            else:
                value = _expression(cells, where, text, "feature expression")
        if value is not _SKIP:
            out[(d.file, d.name)] = (value, where)
    return out


def _rule_row(cells: Cells, t: Table, r: int, values: list[Any], base: Any, rule_id: str) -> WantedRule | None:
    """One row of a decision sheet as the rule it means (None when a cell did not read)."""
    cols = t.columns
    refs = {("then" if col.output is None or col.output.name is None else f"then:{col.output.name}")
            if col.kind == "then" else col.kind: ref(t.sheet, r, c) for c, col in enumerate(cols)}
    got: dict[str, Any] = {}
    then: list[tuple[str, Any]] = []
    for c, col in enumerate(cols):
        v, where = values[c], ref(t.sheet, r, c)
        if col.kind in ("when", "because"):
            text = _text(cells, where, v)
            if col.kind == "when" and isinstance(text, str):
                text = text.strip() or None  # spaces around a condition change nothing
            was = getattr(base, col.kind) if base is not None else None
            shown = cell_text(was).strip() if col.kind == "when" else cell_text(was)
            if text is not _SKIP and was is not None and (text or "") == shown:
                text = was  # unchanged: the YAML keeps what it holds (`when: true` stays a yes/no)
            elif col.kind == "when" and isinstance(text, str):
                text = _expression(cells, where, text, "condition")
            got[col.kind] = text
        elif col.kind == "then" and col.output is not None:
            name = col.output.name
            what = f"{t.name}" if name is None else f"{name} ({t.name})"
            value = _output_value(cells, where, v, col.output, base.output(name) if base is not None else None, what)
            then.append((name or "", value))
        elif col.kind in ("quota", "note"):
            words = "the rule's quota" if col.kind == "quota" else "a comment in the YAML file"
            _read_only(cells, where, v, getattr(base, col.kind) if base is not None else "", words, t.file)
    if any(v is _SKIP for v in got.values()) or any(v is _SKIP for _, v in then):
        return None
    if t.single:
        value = then[0][1]
    else:
        value = tuple((n, v) for n, v in then if v is not None) or None
    if value is None:
        cells.refuse(refs.get("then") or ref(t.sheet, r, 2), f"is empty: rule {rule_id} needs an outcome (then)")
        return None
    return WantedRule(rule_id, got.get("when"), value, got.get("because"), refs)


def _read_table(cells: Cells, rows: list[list[Any]], t: Table) -> tuple[WantedRule, ...] | None:
    """The rules of a decision sheet, in the order of its rows, matched to the exported rules by id."""
    cols = t.columns
    if not _header_ok(cells, rows, t.sheet, TITLE_ROWS - 1, tuple(col.header for col in cols)):
        return None
    out: list[WantedRule] = []
    seen: set[str] = set()
    for r, values, beyond in _iter_rows(rows, TITLE_ROWS, len(cols)):
        _note_beyond(cells, t.sheet, r, len(cols), beyond)
        rule_id = _text(cells, ref(t.sheet, r, 0), values[0])
        rule_id = rule_id.strip() or None if isinstance(rule_id, str) else rule_id
        if rule_id is _SKIP:
            continue
        if rule_id is None:
            cells.refuse(ref(t.sheet, r, 0), f"is empty, but row {r + 1} holds a rule: every rule needs an id",
                         "give it a new id (a new rule), or the id of the rule it is")
            continue
        if rule_id in seen:
            cells.refuse(ref(t.sheet, r, 0), f"holds rule id {rule_id} a second time: rows are matched by id",
                         "give the new rule an id of its own")
            continue
        seen.add(rule_id)
        wanted = _rule_row(cells, t, r, values, t.rule(rule_id), rule_id)
        if wanted is not None:
            out.append(wanted)
    if not seen:
        cells.refuse(f"{t.sheet}!A{TITLE_ROWS + 1}", f"starts no rule: decision {t.name} needs at least one")
    return tuple(out)


def read_wanted(cells: Cells, book: Book, tables: Tables) -> Wanted:
    """Everything the workbook says, read against the tables it was exported as; the problems of its
    cells are in `cells`."""
    missing = [(name, what) for name, what in [("params", "the parameters"), ("derive", "the derived features")]
               + [(t.sheet, f"decision {t.name} of {t.file}") for t in tables.decisions] if name not in book.sheets]
    for name, what in missing:
        cells.refuse(f"sheet {name!r}", f"({what}) is missing from {book.path.name}",
                     "a renamed or deleted sheet cannot be read back: give it its name again, or export again")
    known = {"instructions", "params", "derive", *(t.sheet for t in tables.decisions)}
    for name in sorted((known - {"instructions"}) & book.hidden & set(book.sheets)):
        # an edit nobody reviewing the workbook in Excel can see is not taken
        cells.refuse(f"sheet {name!r}", "is hidden: its cells are read back into the policies, so they must be "
                     "seen", "unhide the sheet (right-click a sheet tab, Unhide) and import again")
    cells.notes += [f"sheet {name!r} is not one kam export wrote: it was not read"
                    for name in book.sheets if name not in known and name not in book.hidden]
    params = _read_params(cells, book.sheets["params"], tables) if "params" in book.sheets else {}
    derives = _read_derives(cells, book.sheets["derive"], tables) if "derive" in book.sheets else {}
    rules = {}
    for t in tables.decisions:
        if t.sheet in book.sheets:
            got = _read_table(cells, book.sheets[t.sheet], t)
            if got is not None:
                rules[(t.file, t.name)] = got
    return Wanted(params, derives, rules, {(t.file, t.name): t.sheet for t in tables.decisions})
