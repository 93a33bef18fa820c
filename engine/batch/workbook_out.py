"""Stage 8, write, as one workbook: `decisions.xlsx`, for people who read decisions in Excel.

A finance controller asks the workbook with Excel's own tools: tier-A customers with a negative
profit (the table's filters), the revenue the company would let go (the summary, or SUMIFS over the
table). So each entity's sheet is one Excel table: the key, each decision's value(s), rule and
reason, then the facts the policies declare, the values joined from other entities and the derived
figures. Cells are typed (numbers, TRUE/FALSE, text, empty where missing) and formatted by each
figure's unit (`engine.language.units`, `figures.excel_format`); money headers say the currency.
The `summary` sheet holds the run (period, policies, inputs), the measures the policies state, and
per entity and decision the count, share and money of every value.

XlsxWriter writes the frame of the workbook: styles, the tables and their header rows, the notes
on the headers, the print setup and the summary sheet. The entity sheets' rows are rendered here
column-wise with Arrow (as the CSV writer renders its lines) and streamed into the package a slice of
rows at a time, so a sheet of a million rows neither sits in memory as Python objects nor is written
cell by cell. Each entity's table is made over its header and one placeholder row whose blank cells
carry each column's style; the rows then take the placeholder's place and the table's range is
widened to them. Text is only ever written as text (inline strings): a reason or an id starting
with `=` is never a formula.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..language.errors import InputError, Location, PolicyError, Problem
from ..language.figures import DEFAULT_LOCALE, Reader, excel_format, reader
from ..language.load import load_text
from ..language.numbers import list_text
from ..language.units import MONEY, PERCENT, Unit, units_of
from ..language.version import __version__
from .extras import need
from .facts import CELL_CHARS, excel_length
from .text_columns import is_list_column, list_codes, write_texts
from .workbook import column_letters

if TYPE_CHECKING:
    from ..language.model import PolicySet
    from .result import RunResult

SUMMARY = "summary"
XLSX_ROWS = 1_048_575  # rows a sheet holds below its header
SLICE_CELLS = 1_000_000  # cells rendered at a time: the text of a big sheet never sits in memory whole
WIDEST = {"text": 40, "because": 60, "number": 22}  # column widths, in characters, are sized to content up to these
LABEL_CHARS = 30  # a decision's description is its header where it is a label this short (not a sentence)
TABLE_STYLE = "Table Style Medium 2"


# -- what the workbook tells beyond the decisions ----------------------------------------------------

@dataclass(frozen=True)
class RunSheets:
    """What a run gives the workbook beside its output tables: the policies (units, descriptions,
    locale), per entity the figures to put beside the decisions (name, role, values, in the rows'
    order; role `fact`, `joined` or `derived`), the measures, the inputs and the period."""

    policy_set: "PolicySet"
    figures: Mapping[str, Sequence[tuple[str, str, pa.Array]]]
    measures: Mapping[str, Mapping[str, Any]]
    inputs: Sequence[Mapping[str, Any]] = ()
    period: str | None = None


def run_sheets(result: "RunResult", inputs: Sequence[Mapping[str, Any]], period: str | None = None) -> RunSheets:
    """The workbook's view of a run: each entity's declared facts (its key aside), the values its
    joins take and its derived features, in the policies' order; the measures; the inputs (as the
    manifest lists them) and the period."""
    from .evaluate import vector_arrow

    ps = result.plan.checked.policy_set
    figures: dict[str, list[tuple[str, str, pa.Array]]] = {}
    for entity, r in result.results.items():
        key = ps.key(entity)
        facts = result.frames_in[entity]
        columns: list[tuple[str, str, pa.Array]] = []
        for name in ps.facts(entity):
            if (key is None or name != key.name) and name in facts.columns:
                columns.append((name, "fact", _as_array(facts[name])))
        seen = {name for name, _, _ in columns} | ({key.name} if key else set())
        policies = ps.of_entity(entity)
        for role, names in (("joined", [n for p in policies for j in p.joins for n in j.take]),
                            ("derived", [d.name for p in policies for d in p.derives])):
            for name in names:
                if name not in seen and name in r.ctx.env:
                    seen.add(name)
                    columns.append((name, role, vector_arrow(r.ctx.env[name])))
        figures[entity] = columns
    return RunSheets(ps, figures, result.measures(), tuple(inputs), period)


def _as_array(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pd.Series):
        values = pa.array(values.tolist(), from_pandas=True) if values.dtype == object \
            else pa.Array.from_pandas(values)
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


# -- the columns of an entity's sheet ----------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of an entity's sheet: its name in the output table or the policies, its header, what
    it holds (`text`, `number`, `bool`), its values, its unit (numbers), its role (`key`, `value`,
    `rule`, `because`, `fact`, `joined`, `derived`) and the note its header carries."""

    name: str
    label: str
    kind: str
    values: pa.Array
    unit: Unit | None
    role: str
    note: str = ""


def typed(values: pd.Series | pa.Array) -> tuple[str, pa.Array]:
    """A column's cells as a workbook holds them: `number` (float64; missing and non-finite as null),
    `bool`, or `text` (ids, values, reasons; lists as `a, b`, as in CSV; a dictionary array where the
    column has few distinct values), missing as null."""
    if isinstance(values, pd.Series) and is_list_column(values):
        codes, lists = list_codes(values)
        texts = pa.array([None if v is None else list_text(v) for v in lists], pa.string())
        return "text", texts.take(pa.array(codes))
    arr = _as_array(values)
    t = arr.type
    if pa.types.is_dictionary(t):  # text kept as codes into the distinct texts: rendered a slice at a time
        if not (pa.types.is_string(t.value_type) or pa.types.is_large_string(t.value_type)):
            return typed(arr.dictionary_decode())  # numbers or yes/no with declared values
        return "text", arr
    if pa.types.is_boolean(t):
        return "bool", arr
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        x = arr.cast(pa.float64())
        return "number", pc.if_else(pc.is_finite(x), x, pa.scalar(None, pa.float64()))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "text", pa.array([None if v is None else list_text(v) for v in arr.to_pylist()], pa.string())
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text", arr
    return "text", arr.cast(pa.string())


def distinct_texts(values: pa.Array) -> pa.Array:
    """The texts of a text column, once each where it holds them as a dictionary."""
    return values.dictionary if isinstance(values, pa.DictionaryArray) else values


def plain_texts(values: pa.Array) -> pa.Array:
    """A text column as one text per row."""
    return values.cast(pa.string()) if isinstance(values, pa.DictionaryArray) else values


def spaced(name: str) -> str:
    """A name as words: `profit_prev_year` -> `profit prev year`."""
    return name.replace("_", " ").strip() or name


def _descriptions(ps: "PolicySet") -> dict[str, dict[str, str]]:
    """Per entity, the `description` of each fact and decision, as the policy files write them (the
    policy model keeps no descriptions: they are read from the compiled sources)."""
    out: dict[str, dict[str, str]] = {}
    for file, text in ps.sources:
        try:
            data = load_text(text, file).data
        except PolicyError:
            continue
        if not isinstance(data, dict):
            continue
        found = out.setdefault(str(data.get("entity", "")), {})
        for section in ("facts", "decisions"):
            specs = data.get(section)
            for name, spec in (specs.items() if isinstance(specs, dict) else ()):
                if isinstance(spec, dict) and isinstance(spec.get("description"), str):
                    found.setdefault(str(name), " ".join(spec["description"].split()))
    return out


def _is_label(text: str) -> bool:
    """Whether a description reads as a column header: short, and not a sentence."""
    return 0 < len(text) <= LABEL_CHARS and not text.endswith((".", "?", "!", ":"))


def entity_columns(entity: str, frame: pd.DataFrame, run: RunSheets | None, rd: Reader,
                   descriptions: Mapping[str, Mapping[str, str]] | None = None) -> list[Column]:
    """An entity's sheet, column by column: the key, each decision's value(s), rule and reason (as in
    the output table), then the facts, joined values and derived figures. Headers are the policies'
    words: a decision's description where it is a short label, else its name as words; a decision's
    rule and reason `tier: rule`, `tier: why`; a figure's name as words, with its unit's currency
    (`profit (CN¥)`). Headers are unique (Excel compares them without regard to case)."""
    ps = run.policy_set if run is not None else None
    units = units_of(ps, entity) if ps is not None and entity in ps.entities else {}
    if descriptions is None:
        descriptions = _descriptions(ps) if ps is not None else {}
    about = descriptions.get(entity, {})
    decisions = {d.name: d for d in ps.decisions(entity)} if ps is not None and entity in ps.entities else {}
    facts = ps.facts(entity) if ps is not None and entity in ps.entities else {}
    derives = {d.name: d for p in ps.of_entity(entity) for d in p.derives} if ps is not None else {}

    def decision_label(name: str) -> str:
        text = about.get(name, "") if name in decisions else ""
        return text if _is_label(text) else spaced(name)

    def decision_note(name: str) -> str:
        d = decisions.get(name)
        text = about.get(name, "") if d is not None else ""
        return "\n".join(x for x in (text, f"decision `{name}` ({d.policy})" if d is not None else "") if x)

    def fact_note(name: str) -> str:
        fact = facts.get(name)
        where = f"fact `{name}` ({fact.policy})" if fact is not None else ""
        return "\n".join(x for x in (about.get(name, ""), where) if x)

    names = [str(c) for c in frame.columns]
    owner: dict[str, tuple[str, str]] = {}  # column -> (decision, role)
    pending: list[str] = []
    for name in names[1:]:
        if name.endswith("_rule") and (pending or name[: -len("_rule")] in decisions):
            d = name[: -len("_rule")]
            owner.update({v: (d, "value") for v in pending})
            owner[name] = (d, "rule")
            pending = []
        elif name.endswith("_because") and name[: -len("_because")] in {o for o, _ in owner.values()}:
            owner[name] = (name[: -len("_because")], "because")
        else:
            pending.append(name)

    columns: list[Column] = []
    for i, name in enumerate(names):
        kind, values = typed(frame[name])
        unit = units.get(name) if kind == "number" else None
        if i == 0:
            columns.append(Column(name, spaced(name), kind, values, None, "key", fact_note(name)))
            continue
        d, role = owner.get(name, (name, "value"))
        if role == "rule":
            label, note = f"{decision_label(d)}: rule", f"the rule of decision `{d}` that decided it"
        elif role == "because":
            label, note = f"{decision_label(d)}: why", f"the reason decision `{d}` gives"
        else:
            label = decision_label(d) if name == d else spaced(name)
            note = decision_note(d) if name == d else f"`{name}`, an output of decision `{d}`"
        columns.append(Column(name, rd.label(label, unit), kind, values, unit, role, note))
    for name, role, array in (run.figures.get(entity, ()) if run is not None else ()):
        kind, values = typed(array)
        unit = units.get(name) if kind == "number" else None
        if role == "fact":
            note = fact_note(name)
        elif role == "derived":
            step = derives.get(name)
            note = f"{name} = {step.expr.source}\n({step.policy})" if step is not None else name
        else:
            note = f"`{name}`, joined from another entity"
        columns.append(Column(name, rd.label(spaced(name), unit), kind, values, unit, role, note))
    return _unique_labels(columns)


def _unique_labels(columns: list[Column]) -> list[Column]:
    taken: set[str] = set()
    out = []
    for c in columns:
        label, n = c.label, 1
        while label.lower() in taken:
            n += 1
            label = f"{c.label} ({n})"
        taken.add(label.lower())
        out.append(c if label == c.label else Column(c.name, label, c.kind, c.values, c.unit, c.role, c.note))
    return out


# -- checks before anything is written ----------------------------------------------------------------

def _not_a_workbook(message: str, hint: str, path: Path) -> InputError:
    """What cannot be written as a workbook, named by the file (not the staging folder it is made in)."""
    return InputError(Problem("output-xlsx", message, Location(path.name), hint))


def _refuse_long_texts(entity: str, columns: list[Column], path: Path) -> None:
    """A text longer than a cell holds is refused (XlsxWriter, and Excel, would cut it, an id included)."""
    key = columns[0].values if columns else None
    for c in columns:
        if c.kind != "text" or not len(c.values):
            continue
        texts = distinct_texts(c.values)
        maybe = pc.fill_null(pc.greater(pc.utf8_length(texts), CELL_CHARS // 2), False)
        for at in np.flatnonzero(maybe.to_numpy(zero_copy_only=False)):
            value = texts[int(at)].as_py()
            if excel_length(value) <= CELL_CHARS:
                continue
            row = int(at) if texts is c.values else \
                int(np.flatnonzero(c.values.indices.to_numpy(zero_copy_only=False) == at)[0])
            k = str(key[row].as_py()) if key is not None else ""
            raise _not_a_workbook(f"{entity} {k if len(k) <= 40 else k[:40] + '…'}: its `{c.name}` holds "
                                  f"{excel_length(value):,} characters, and an Excel cell holds at most "
                                  f"{CELL_CHARS:,}", "use --output-format csv, parquet or jsonl, which keep "
                                  "every character", path)


# -- widths --------------------------------------------------------------------------------------------

def text_width(text: str) -> int:
    """How many character widths a text takes on screen: East Asian wide characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _sample(values: pa.Array, most: int) -> list[Any]:
    """Up to `most` values spread evenly over a column (the same ones for the same column)."""
    if len(values) <= most:
        return values.to_pylist()
    return values.take(pa.array(np.linspace(0, len(values) - 1, most).astype(np.int64))).to_pylist()


def _widest_text(values: pa.Array, cap: int) -> int:
    """The widest of some texts on screen, up to `cap`: measured from the longest down, until no
    shorter text can be wider (a character takes at most two widths, an ASCII one one)."""
    texts = pc.drop_null(values)
    if not len(texts):
        return 0
    lengths = pc.utf8_length(texts).to_numpy(zero_copy_only=False)
    bounds = np.where(pc.string_is_ascii(texts).to_numpy(zero_copy_only=False), lengths, 2 * lengths)
    best = 0
    for i in np.argsort(-bounds, kind="stable"):
        if bounds[i] <= best or best >= cap:
            break
        best = max(best, text_width(texts[int(i)].as_py()))
    return min(best, cap)


def _content_width(c: Column, cap: int) -> int:
    if c.kind == "bool":
        return 5
    if c.kind == "text":
        texts = distinct_texts(c.values)
        return _widest_text(pc.unique(texts) if len(texts) > 2000 else texts, cap)
    finite = pc.drop_null(c.values)
    if not len(finite):
        return 0
    low, high = pc.min(finite).as_py(), pc.max(finite).as_py()
    if (c.unit or Unit()).shown_decimals is None:  # General: as many digits as the value needs, up to 11
        return min(11, max(len(repr(v)) for v in _sample(finite, 200)))
    return max(number_width(low, c.unit), number_width(high, c.unit))


def number_width(value: float, unit: Unit | None) -> int:
    """The characters a number takes in its unit's format: digits, grouping, decimals, sign, `%`."""
    unit = unit or Unit()
    decimals = unit.shown_decimals or 0
    x = abs(value) * (100 if unit.kind == PERCENT else 1)
    digits = len(f"{x:.0f}")
    return digits + (digits - 1) // 3 + (decimals + 1 if decimals else 0) + (value < 0) + (unit.kind == PERCENT)


def column_width(c: Column) -> tuple[float, int]:
    """A column's width in characters, and how many lines its header takes: the content's width (up to a
    bound: reasons wrap), at least the header's widest word and room for the filter button."""
    cap = WIDEST["because"] if c.role == "because" else WIDEST["number"] if c.kind == "number" else WIDEST["text"]
    content = min(_content_width(c, cap), cap) + 2
    label = text_width(c.label) + 4  # the filter button sits at the header's right
    words = max((text_width(w) for w in c.label.split()), default=0) + 4
    if label <= max(content, 12):
        return float(max(content, label, 6)), 1
    width = max(content, words, 12, math.ceil(label / 2) + 2)
    return float(min(width, max(cap, words))), min(3, math.ceil(label / width))


# -- writing --------------------------------------------------------------------------------------------

def sheet_names(entities: list[str]) -> dict[str, str]:
    """Each entity's sheet: its name, cut to Excel's 31 characters and made unique beside `summary` and
    each other (Excel compares sheet names without regard to case) with a ` (2)`, ` (3)`, ... ."""
    taken = {SUMMARY}
    out = {}
    for entity in entities:
        name, n = entity[:31], 1
        while name.lower() in taken:
            n += 1
            name = f"{entity[:31 - len(f' ({n})')]} ({n})"
        taken.add(name.lower())
        out[entity] = name
    return out


def write_workbook(frames: dict[str, pd.DataFrame], path: Path, run: RunSheets | None = None) -> None:
    """One Excel workbook: a `summary` sheet and a sheet per entity holding one Excel table (see the
    module's docstring). Refused before anything is written: a sheet of more rows than Excel holds, a
    text longer than a cell holds."""
    xlsxwriter = need("xlsxwriter")

    too_big = {e: len(f) for e, f in frames.items() if len(f) > XLSX_ROWS}
    if too_big:
        raise _not_a_workbook(f"an Excel sheet holds at most {XLSX_ROWS:,} rows; "
                              + ", ".join(f"{e} has {n:,}" for e, n in too_big.items()),
                              "use --output-format csv or parquet for this many", path)
    ps = run.policy_set if run is not None else None
    rd = reader((ps.locale if ps is not None else None) or DEFAULT_LOCALE)
    descriptions = _descriptions(ps) if ps is not None else {}
    columns = {e: entity_columns(e, f, run, rd, descriptions) for e, f in frames.items()}
    for entity, cols in columns.items():
        _refuse_long_texts(entity, cols, path)
    sheets = sheet_names(list(frames))
    tables = _table_names(list(frames))

    frame_bytes = BytesIO()
    # text that looks like a formula or a link stays text: policies' and facts' texts are never Excel's to run
    book = xlsxwriter.Workbook(frame_bytes, {"in_memory": True, "strings_to_formulas": False,
                                             "strings_to_urls": False, "strings_to_numbers": False})
    book.set_properties({"created": _FIXED_TIME, "title": "kam decisions"})  # the same run, the same bytes
    styles = _Styles(book)
    summary = book.add_worksheet(SUMMARY)
    placeholders: dict[str, tuple[int, int]] = {}  # entity -> (sheet number, columns)
    for i, (entity, frame) in enumerate(frames.items()):
        _entity_sheet(book.add_worksheet(sheets[entity]), entity, columns[entity], len(frame), tables[entity], styles,
                      run)
        placeholders[entity] = (i + 2, len(columns[entity]))
    _summary_sheet(summary, frames, columns, run, rd, styles, tables)
    book.close()
    _package(frame_bytes.getvalue(), path, frames, columns, placeholders, tables)


_FIXED_TIME = pd.Timestamp("2000-01-01T00:00:00Z").to_pydatetime()


class _Styles:
    """The workbook's cell formats, one per look (XlsxWriter keeps one style per distinct format)."""

    def __init__(self, book: Any):
        self.book = book
        self._made: dict[tuple[tuple[str, Any], ...], Any] = {}

    def get(self, **props: Any) -> Any:
        key = tuple(sorted(props.items()))
        if key not in self._made:
            self._made[key] = self.book.add_format(dict(props))
        return self._made[key]

    def cell(self, c: Column) -> Any:
        """The format of a column's cells."""
        props: dict[str, Any] = {"valign": "top"}
        if c.kind == "number":
            props["num_format"] = excel_format(c.unit)
        elif c.role == "key":
            props["num_format"] = "@"  # an id typed into the column stays text
        if c.role == "because":
            props["text_wrap"] = True
        return self.get(**props)

    @property
    def header(self) -> Any:
        return self.get(bold=True, text_wrap=True, valign="top")


def _table_names(entities: list[str]) -> dict[str, str]:
    """Each entity's table name (`customer_decisions`), valid in Excel's formulas and unique."""
    taken = {"measures", "inputs"}
    out = {}
    for entity in entities:
        base = re.sub(r"[^A-Za-z0-9_.]", "_", entity) + "_decisions"
        base = base if re.match(r"[A-Za-z_]", base) else "_" + base
        name, n = base, 1
        while name.lower() in taken or f"{name}_summary".lower() in taken:
            n += 1
            name = f"{base}{n}"
        taken.update({name.lower(), f"{name}_summary".lower()})
        out[entity] = name
    return out


def _print_setup(sheet: Any, wide: bool, title: str) -> None:
    """Landscape where wide, one page wide (as many pages down as it takes), the header row on every
    page, margins, and the sheet's name, the run and the page numbers in the header and footer."""
    if wide:
        sheet.set_landscape()
    sheet.fit_to_pages(1, 0)
    sheet.repeat_rows(0)
    sheet.set_margins(left=0.4, right=0.4, top=0.75, bottom=0.75)
    words = title.replace("&", "&&")[:120]  # `&` starts a code in Excel's headers
    sheet.set_header(f'&L&"-,Bold"&A&R{words}', {"margin": 0.3})
    sheet.set_footer("&Lkam decisions&RPage &P of &N", {"margin": 0.3})


def _folder(ps: "PolicySet") -> str:
    return (Path(ps.directory).name or ps.directory or ".") + "/"


def _run_title(run: RunSheets | None) -> str:
    """The run in a few words, for the printed pages' header: its period, policy folder and hash."""
    if run is None:
        return ""
    ps = run.policy_set
    return " · ".join(x for x in (f"period {run.period}" if run.period else "",
                                  f"{_folder(ps)} {ps.hash[:12]}") if x)


def _entity_sheet(sheet: Any, entity: str, columns: list[Column], rows: int, table: str, styles: _Styles,
                  run: RunSheets | None) -> None:
    """The frame of an entity's sheet: the table over the header and a placeholder row (whose blank
    cells carry each column's style; `_package` puts the rows in its place), widths, notes, frozen
    header and key, print setup."""
    formats = [styles.cell(c) for c in columns]
    lines = 1
    for j, c in enumerate(columns):
        width, n = column_width(c)
        lines = max(lines, n)
        sheet.set_column(j, j, width, formats[j])
    last = max(len(columns) - 1, 0)
    sheet.add_table(0, 0, 1, last, {
        "name": table, "style": TABLE_STYLE, "banded_rows": True, "autofilter": True,
        "columns": [{"header": c.label, "header_format": styles.header} for c in columns]})
    for j, cell_format in enumerate(formats):
        sheet.write_blank(1, j, None, cell_format)
    for j, c in enumerate(columns):
        if c.note:
            sheet.write_comment(0, j, c.note, {"author": "kam", "x_scale": 2, "y_scale": 1.2})
    sheet.set_row(0, 15 * lines + 3)
    sheet.freeze_panes(1, 1)
    _print_setup(sheet, len(columns) > 8 or sum(column_width(c)[0] for c in columns) > 110, _run_title(run))


# -- the rows, rendered column-wise ------------------------------------------------------------------

_CONTROL_RE2 = r"[\x00-\x08\x0b-\x1f\x{fffe}\x{ffff}]|_x[0-9A-Fa-f]{4}_"
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\ufffe\uffff]")
_ESCAPE_LIKE = re.compile("(_x[0-9A-Fa-f]{4}_)")


def _escape_control(text: str) -> str:
    """Excel's escape for characters XML cannot hold (`\\x01` -> `_x0001_`), and for text that reads
    like that escape (`_x0041_` -> `_x005F_x0041_`), as Excel and XlsxWriter write them."""
    text = _ESCAPE_LIKE.sub(r"_x005F\1", text)
    return _CONTROL.sub(lambda m: f"_x{ord(m.group(0)):04X}_", text)


def xml_texts(texts: pa.Array) -> pa.Array:
    """Texts as the content of an XML element: `&`, `<`, `>` escaped, control characters as Excel
    escapes them."""
    t = texts.cast(pa.large_string())
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        t = pc.replace_substring(t, raw, escaped)
    odd = pc.fill_null(pc.match_substring_regex(t, _CONTROL_RE2), False)
    if pc.any(odd).as_py():
        rows = np.flatnonzero(odd.to_numpy(zero_copy_only=False))
        values = t.to_pylist()
        for i in rows:
            values[i] = _escape_control(values[i])
        t = pa.array(values, pa.large_string())
    return t


def number_cells(values: pa.Array) -> pa.Array:
    """Numbers as a cell's value: the shortest text that reads back as the same double (Arrow's, as
    Python's repr), exponent in capitals as Excel writes it."""
    return pc.utf8_upper(values.cast(pa.string())).cast(pa.large_string())


def _cell_pieces(c: Column, letter: str, style: int) -> tuple[str, str, str]:
    """What goes before and after a cell's value (the row number goes between `<c r="B` and the rest)."""
    if c.kind == "text":
        return f'<c r="{letter}', f'" s="{style}" t="inlineStr"><is><t>', "</t></is></c>"
    if c.kind == "bool":
        return f'<c r="{letter}', f'" s="{style}" t="b"><v>', "</v></c>"
    return f'<c r="{letter}', f'" s="{style}"><v>', "</v></c>"


_EDGE_SPACE = r"^\s|\s$"


def sheet_rows(columns: list[Column], styles: list[int], start: int, stop: int) -> pa.Array:
    """Rows `start` to `stop` (0-based, below the header) as `<row>` elements, one text per row."""
    n = stop - start
    large = pa.large_string()
    numbers = pa.array(np.arange(start + 2, stop + 2, dtype=np.int64)).cast(large)
    parts: list[Any] = [pa.scalar('<row r="', large), numbers, pa.scalar('">', large)]
    for j, c in enumerate(columns):
        values = c.values.slice(start, n)
        before, middle, after = _cell_pieces(c, column_letters(j), styles[j])
        between: Any = pa.scalar(middle, large)
        if c.kind == "text":
            distinct = distinct_texts(values)
            texts = xml_texts(distinct)
            # XML drops a text's leading and trailing spaces unless told to keep them
            edges = pc.fill_null(pc.match_substring_regex(distinct, _EDGE_SPACE), False)
            if isinstance(values, pa.DictionaryArray):  # the distinct texts done once, then taken per row
                texts, edges = texts.take(values.indices), edges.take(values.indices)
            if pc.any(edges).as_py():
                between = pc.if_else(edges, pa.scalar(middle.replace("<t>", '<t xml:space="preserve">'), large),
                                     between)
        elif c.kind == "bool":
            texts = pc.if_else(values, "1", "0").cast(large)
        else:
            texts = number_cells(values)
        cell = pc.binary_join_element_wise(pa.scalar(before, large), numbers, between, texts,
                                           pa.scalar(after, large), pa.scalar("", large))
        parts.append(pc.fill_null(cell, pa.scalar("", large)))
    parts.append(pa.scalar("</row>", large))
    return pc.binary_join_element_wise(*parts, pa.scalar("", large))


def _slices(rows: int, ncols: int) -> Iterator[tuple[int, int]]:
    step = max(1000, SLICE_CELLS // max(ncols, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


_PLACEHOLDER = re.compile(rb'<row r="2"[^>]*>(.*?)</row>', re.S)
_STYLE = re.compile(rb'<c r="([A-Z]+)2" s="(\d+)"/>')


def _package(frame: bytes, path: Path, frames: dict[str, pd.DataFrame], columns: dict[str, list[Column]],
             placeholders: dict[str, tuple[int, int]], tables: dict[str, str]) -> None:
    """The final workbook: XlsxWriter's package with each entity sheet's rows streamed in place of its
    placeholder row, and each entity table's range widened to its rows."""
    sheet_of = {f"xl/worksheets/sheet{number}.xml": entity for entity, (number, _) in placeholders.items()}
    ranges = {}
    for entity, name in tables.items():
        last = column_letters(max(len(columns[entity]) - 1, 0))
        ranges[name] = (f'ref="A1:{last}2"', f'ref="A1:{last}{max(len(frames[entity]), 1) + 1}"')
    with zipfile.ZipFile(BytesIO(frame)) as source, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as out:
        for info in source.infolist():
            data = source.read(info)
            sheet = sheet_of.get(info.filename)
            if sheet is not None and len(frames[sheet]):
                _write_sheet(out, info, data, columns[sheet], len(frames[sheet]))
                continue
            if info.filename.startswith("xl/tables/"):
                named = re.search(rb'displayName="([^"]+)"', data)
                if named is not None and named.group(1).decode() in ranges:
                    old, new = ranges[named.group(1).decode()]
                    data = data.replace(old.encode(), new.encode())
            out.writestr(info, data)


def _write_sheet(out: zipfile.ZipFile, info: zipfile.ZipInfo, xml: bytes, columns: list[Column], rows: int) -> None:
    """One entity's sheet: XlsxWriter's XML up to the placeholder row, the rows, the rest of its XML."""
    found = _PLACEHOLDER.search(xml)
    assert found is not None, "the placeholder row of the sheet"
    styles_by_letter = {m.group(1).decode(): int(m.group(2)) for m in _STYLE.finditer(found.group(1))}
    styles = [styles_by_letter.get(column_letters(j), 0) for j in range(len(columns))]
    last = column_letters(max(len(columns) - 1, 0))
    head = re.sub(rb'<dimension ref="[^"]*"/>', f'<dimension ref="A1:{last}{rows + 1}"/>'.encode(),
                  xml[: found.start()], count=1)
    target = zipfile.ZipInfo(info.filename, info.date_time)
    target.compress_type = zipfile.ZIP_DEFLATED
    target.external_attr = info.external_attr
    slices = list(_slices(rows, len(columns)))
    # the next slice is rendered (Arrow) while this one is compressed (zlib): both let go of the GIL
    with ThreadPoolExecutor(max_workers=1) as render:
        pending: Future = render.submit(sheet_rows, columns, styles, *slices[0])
        # past 4 GiB a zip member needs ZIP64 fields, chosen before its first byte: from the size of the
        # first slice, with room to spare (Excel before 2016 does not read them, so only where needed)
        first = pending.result()
        size = len(head) + (pc.sum(pc.binary_length(first)).as_py() or 0) * rows / max(len(first), 1)
        with out.open(target, "w", force_zip64=size * 1.5 > 0xFFFF_FFFF) as fh:
            fh.write(head)
            for start, stop in slices[1:]:
                rendered = render.submit(sheet_rows, columns, styles, start, stop)
                write_texts(fh, [pending.result()])
                pending = rendered
            write_texts(fh, [pending.result()])
            fh.write(xml[found.end():])


# -- the summary ---------------------------------------------------------------------------------------

def _value_groups(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """A decision's values as codes, and each code with its text (lists as `a, b`, missing as
    `(none)`) in order: as the decision declares its values where it does, else most common first."""
    kind, values = typed(frame[column])
    texts = number_cells(values) if kind == "number" else pc.if_else(values, "true", "false") if kind == "bool" \
        else plain_texts(values)
    encoded = pc.dictionary_encode(pc.fill_null(texts.cast(pa.string()), "(none)"))
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    names = encoded.dictionary.to_pylist()
    counts = np.bincount(codes, minlength=len(names))
    declared = [str(v) for v in frame[column].cat.categories] \
        if isinstance(frame[column].dtype, pd.CategoricalDtype) else []
    position = {name: i for i, name in enumerate(names)}
    order = [position[v] for v in declared if v in position]
    rest = sorted((i for i in range(len(names)) if i not in set(order)),
                  key=lambda i: (names[i] == "(none)", -counts[i], names[i]))
    return codes, [(i, names[i]) for i in order + rest]


def _measure_columns(entity: str, columns: list[Column], run: RunSheets | None) -> list[Column]:
    """The money of an entity to sum per decision value: the facts marked `measure: true` (for `kam diff`
    and `kam changes` too), else its money facts."""
    if run is None or entity not in run.policy_set.entities:
        return []
    facts = run.policy_set.facts(entity)
    numbers = [c for c in columns if c.role == "fact" and c.kind == "number"]
    marked = [c for c in numbers if facts.get(c.name) is not None and facts[c.name].measure]
    return marked or [c for c in numbers if c.unit is not None and c.unit.kind == MONEY]


class _Summary:
    """Writes the summary sheet from the top down: labelled values, and real Excel tables whose cells
    are typed and formatted by their units; it widens its columns to what it writes."""

    def __init__(self, sheet: Any, styles: _Styles):
        self.sheet, self.styles, self.row = sheet, styles, 0
        self.widths: dict[int, float] = {0: 16, 1: 16, 2: 10, 3: 9}
        self.plain = styles.get(valign="top")
        self.wrapped = styles.get(valign="top", text_wrap=True)
        self.bold = styles.get(bold=True, valign="top")

    def widen(self, j: int, value: Any, unit: Unit | None = None) -> None:
        if isinstance(value, str):
            width = min(40, text_width(value) + 3)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            width = min(WIDEST["number"], number_width(value, unit) + 3)
        else:
            return
        self.widths[j] = max(self.widths.get(j, 10), width)

    def cell(self, r: int, j: int, value: Any, unit: Unit | None = None) -> None:
        """One value: text always as text, a number in its unit's format, yes/no as TRUE/FALSE."""
        if isinstance(value, str):
            self.sheet.write_string(r, j, value, self.wrapped if j == 1 else self.plain)
        elif isinstance(value, bool):
            self.sheet.write_boolean(r, j, value, self.plain)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            self.sheet.write_number(r, j, value, self.styles.get(num_format=excel_format(unit), valign="top"))
        self.widen(j, value, unit)

    def heading(self, text: str, gap: int = 0) -> None:
        self.sheet.write_string(self.row, 0, text, self.bold)
        self.row += 1 + gap

    def pairs(self, rows: list[tuple[str, str]]) -> None:
        """Labelled values, a label and its value per row (the values run on into the empty cells)."""
        for label, value in rows:
            self.sheet.write_string(self.row, 0, label, self.bold)
            self.sheet.write_string(self.row, 1, value, self.plain)
            self.row += 1
        self.row += 1

    def table(self, name: str, header: list[str], rows: list[list[Any]], units: list[list[Unit | None]]) -> None:
        """A real Excel table (header, filters, banded rows), each cell in the unit given for it."""
        first = self.row
        for j, h in enumerate(header):
            self.widen(j, h)
        self.sheet.add_table(first, 0, first + max(len(rows), 1), len(header) - 1, {
            "name": name, "style": TABLE_STYLE, "banded_rows": True, "autofilter": True,
            "columns": [{"header": h, "header_format": self.styles.header} for h in header]})
        for i, (row, row_units) in enumerate(zip(rows, units)):
            for j, (value, unit) in enumerate(zip(row, row_units)):
                self.cell(first + 1 + i, j, value, unit)
        self.row = first + max(len(rows), 1) + 2

    def finish(self, run: RunSheets | None) -> None:
        for j, w in self.widths.items():
            self.sheet.set_column(j, j, w, self.wrapped if j == 1 else None)
        _print_setup(self.sheet, len(self.widths) > 6 or sum(self.widths.values()) > 95, _run_title(run))


def _summary_sheet(sheet: Any, frames: dict[str, pd.DataFrame], columns: dict[str, list[Column]],
                   run: RunSheets | None, rd: Reader, styles: _Styles, tables: dict[str, str]) -> None:
    """The run (period, policies, inputs), the measures, and per entity a table of each decision's
    values: count, share, and the sum of each money figure."""
    out = _Summary(sheet, styles)
    ps = run.policy_set if run is not None else None
    sheet.write_string(0, 0, f"Decisions of the policies in {_folder(ps)}" if ps is not None else "Decisions",
                       styles.get(bold=True, font_size=14))
    out.row = 2
    out.pairs(_about(run, rd))
    if run is not None and run.inputs:
        out.heading("inputs")
        out.table("inputs", ["entity", "file", "rows"],
                  [[str(i.get("entity", "")), str(i.get("path", "")), int(i.get("rows", 0))] for i in run.inputs],
                  [[None, None, Unit("count")]] * len(run.inputs))
    if run is not None and any(run.measures.values()):
        rows, units = _measure_rows(run)
        out.heading("measures")
        # each measure's value is formatted by its own unit, which the last column names
        out.table("measures", ["entity", "measure", "value", "unit"], rows, units)
    for entity, frame in frames.items():
        money = _measure_columns(entity, columns[entity], run)
        out.heading(f"{entity}: {len(frame):,} decided")
        rows = _value_rows(entity, frame, columns[entity], money)
        unit_row = [None, None, Unit("count"), Unit(PERCENT)] + [c.unit for c in money]
        out.table(f"{tables[entity]}_summary", ["decision", "value", "count", "share"] + [c.label for c in money],
                  rows, [unit_row] * len(rows))
    out.finish(run)


def _about(run: RunSheets | None, rd: Reader) -> list[tuple[str, str]]:
    """The run in labelled values: its period, policies, their hash, kam's version, the locale."""
    if run is None:
        return [("kam version", __version__)]
    ps = run.policy_set
    return [("period", run.period or "none (a run without --history)"), ("policies", ps.directory or "."),
            ("policy files", ", ".join(p.name for p in ps.policies)), ("policy hash", ps.hash),
            ("kam version", __version__), ("locale", ps.locale or rd.locale)]


def _measure_rows(run: RunSheets) -> tuple[list[list[Any]], list[list[Unit | None]]]:
    """Each measure of each entity: entity, measure, value (in its unit) and the unit in words."""
    rows: list[list[Any]] = []
    units: list[list[Unit | None]] = []
    for entity, values in run.measures.items():
        known = units_of(run.policy_set, entity) if entity in run.policy_set.entities else {}
        for name, value in values.items():
            unit = known.get(name)
            rows.append([entity, spaced(name), value, _unit_words(unit)])
            units.append([None, None, unit, None])
    return rows, units


def _value_rows(entity: str, frame: pd.DataFrame, columns: list[Column], money: list[Column]) -> list[list[Any]]:
    """Every entity (`all`), then each decision's values: how many got it, their share, their money."""
    n = len(frame)
    sums = [np.asarray(c.values.to_numpy(zero_copy_only=False), dtype=float) for c in money]
    rows: list[list[Any]] = [["all", f"every {entity}", n, 1.0 if n else None] + [_sum(s) for s in sums]]
    labels = {c.name: c.label for c in columns}
    for column in _decisions_of(columns):
        codes, values = _value_groups(frame, column)
        for code, value in values:
            where = codes == code
            k = int(where.sum())
            rows.append([labels[column], value, k, k / n if n else None] + [_sum(s[where]) for s in sums])
    return rows


def _sum(x: np.ndarray) -> float | None:
    """A sum of money over the rows that have it (None where none does), correctly rounded: the same
    whatever the order of the rows."""
    known = x[~np.isnan(x)]
    return math.fsum(known.tolist()) if known.size else None


def _decisions_of(columns: list[Column]) -> list[str]:
    """The first value column of each decision of an entity's sheet, in order."""
    out: list[str] = []
    first: str | None = None
    for c in columns[1:]:
        if c.role == "value" and first is None:
            first = c.name
        elif c.role == "rule" and first is not None:
            out.append(first)
            first = None
    return out


def _unit_words(unit: Unit | None) -> str:
    if unit is None:
        return ""
    if unit.kind == MONEY:
        return unit.currency or "money"
    return "%" if unit.kind == PERCENT else unit.kind
