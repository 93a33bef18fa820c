"""The workbook a person edits: the instructions first, then the params, the derived features and a
sheet per decision; the header rows bold and frozen, long texts wrapped, the declared values of an
outcome offered as a list, the cells that are only shown in grey.

Every text is written as a text cell (`write_string`, and the workbook converts no string into a
formula, a number or a link): a reason that starts with `=`, `+`, `-` or `@` stays the text it is,
and keeps Excel's quote prefix, so that typing in the cell again does not make it a formula either.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...batch.extras import need
from ...batch.workbook import column_letters
from ...language.errors import InputError, Location, Problem
from ...language.version import __version__
from .tables import PERCENT, Derive, Param, Table, Tables, cell_text

FORMAT = "kam-decision-tables"
VERSION = 1
MARKER = "kam decision tables: the policy texts this workbook was exported from (do not edit)"
META_SHEET, LISTS_SHEET = "_kam", "lists"
CHUNK = 30_000  # characters of the record per cell (a cell holds 32,767)
CELL_CHARS = 32_767
TITLE_ROWS = 2  # a decision sheet: its title, then its header row; rules from the third row
VALIDATED_ROWS = 1_000  # rows below the header that offer a decision's values (rows added later too)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

HIT_WORDS = {
    "first": "the first rule that matches decides, so the order of the rows matters",
    "unique": "exactly one rule may match",
    "priority": "of the rules that match, the highest value wins",
    "any": "the rules that match must agree",
    "collect": "every rule that matches is listed",
    "output-order": "every rule that matches is listed, in the order of the values",
}
PARAM_HEADERS = ("policy", "name", "value", "unit", "description (read-only)", "used by (read-only)")
DERIVE_HEADERS = ("policy", "name", "expression", "key", "value", "description (read-only)")


def lookup_marker(over: str) -> str:
    """What the expression cell of a lookup grid shows (read-only): the grid is in the rows below it."""
    return f"lookup({over}, …): a value per {over}, in the key and value cells"


def number_format(token: str) -> str:
    """The Excel number format that shows a number as the YAML wrote it: `0%` for `80%`, `0.00` for `0.80`."""
    m = PERCENT.match(token)
    digits = (m.group(1) if m else token.strip()).partition(".")[2]
    zeros = "0" + ("." + "0" * len(digits) if digits else "")
    return zeros + "%" if m else (zeros if digits else "0")


@dataclass
class _Styles:
    """The workbook's formats, made once per combination."""

    book: Any
    made: dict[tuple[Any, ...], Any] = field(default_factory=dict)

    def get(self, kind: str = "text", number: str | None = None, prefix: bool = False) -> Any:
        key = (kind, number, prefix)
        if key not in self.made:
            props: dict[str, Any] = {"valign": "top"}
            if kind in ("text", "grey", "header"):
                props["text_wrap"] = True
            if kind == "grey":
                props.update(bg_color="#F2F2F2", font_color="#595959")
            if kind == "header":
                props.update(bold=True, bg_color="#DDEBF7", bottom=1)
            if kind == "title":
                props.update(bold=True, font_size=12)
            if kind == "heading":
                props.update(bold=True)
            if number:
                props["num_format"] = number
            if prefix:
                props["quote_prefix"] = True
            self.made[key] = self.book.add_format(props)
        return self.made[key]


def _too_long(where: str) -> InputError:
    return InputError(Problem("tables", f"{where} is longer than the {CELL_CHARS:,} characters an Excel cell holds",
                              Location("kam export"), "shorten it in the YAML file, or edit it there"))


def _put(ws: Any, styles: _Styles, row: int, col: int, value: Any, kind: str = "text",
         number: str | None = None) -> None:
    """One cell: text as text (never a formula), numbers and yes/no as such, nothing as an empty cell that
    still has its style (a grey cell stays grey)."""
    if value is None or value == "":
        ws.write_blank(row, col, None, styles.get(kind, number))
    elif isinstance(value, bool):
        ws.write_boolean(row, col, value, styles.get(kind, number))
    elif isinstance(value, (int, float)):
        ws.write_number(row, col, value, styles.get(kind, number))
    else:
        text = str(value)
        if len(text.encode("utf-16-le")) // 2 > CELL_CHARS:
            raise _too_long(f"a text of {ws.name}")
        ws.write_string(row, col, text, styles.get(kind, number, prefix=text.startswith(FORMULA_START)))


def _width(texts: list[str], least: int, most: int) -> int:
    longest = max((max((len(line) for line in t.splitlines()), default=0) for t in texts), default=0)
    return max(least, min(most, longest + 2))


def _param_cell(p: Param) -> tuple[Any, str | None]:
    if p.unit == "%":
        return float(PERCENT.match(str(p.value)).group(1)) / 100, number_format(str(p.value))  # type: ignore[union-attr]
    return p.value, None


def _params_sheet(book: Any, styles: _Styles, tables: Tables) -> None:
    ws = book.add_worksheet("params")
    for c, h in enumerate(PARAM_HEADERS):
        _put(ws, styles, 0, c, h, "header")
    for r, p in enumerate(tables.params, start=1):
        value, number = _param_cell(p)
        for c, v in enumerate((p.policy, p.name)):
            _put(ws, styles, r, c, v, "grey")
        _put(ws, styles, r, 2, value, "text", number)
        if p.unit in ("%", "number"):
            ws.data_validation(r, 2, r, 2, {"validate": "decimal", "criteria": "between", "minimum": -1e300,
                                            "maximum": 1e300, "error_title": "a number",
                                            "error_message": f"{p.name} is a number" +
                                            (" (a share: type 75%)" if p.unit == "%" else "")})
        for c, v in enumerate((p.unit, p.description, p.used_by), start=3):
            _put(ws, styles, r, c, v, "grey")
    _finish(ws, [[p.policy for p in tables.params], [p.name for p in tables.params], ["value"],
                 ["unit"], [p.description for p in tables.params], [p.used_by for p in tables.params]],
            [(10, 20), (12, 32), (10, 14), (6, 8), (20, 60), (16, 50)], PARAM_HEADERS, 1)


def _derive_rows(d: Derive) -> list[tuple[Any, ...]]:
    """(expression, expression kind, key, value, number format) per row of one feature."""
    if d.over is None:
        return [(d.source, "text", None, None, None)]
    rows: list[tuple[Any, ...]] = []
    for i, e in enumerate(d.entries):
        rows.append((lookup_marker(d.over) if i == 0 else None, "grey", e.key, e.value, number_format(e.token)))
    return rows


def _derive_sheet(book: Any, styles: _Styles, tables: Tables) -> None:
    ws = book.add_worksheet("derive")
    for c, h in enumerate(DERIVE_HEADERS):
        _put(ws, styles, 0, c, h, "header")
    r = 1
    for d in tables.derives:
        for i, (expression, kind, key, value, number) in enumerate(_derive_rows(d)):
            _put(ws, styles, r, 0, d.policy, "grey")
            _put(ws, styles, r, 1, d.name, "grey")
            _put(ws, styles, r, 2, expression, kind)
            grid = "text" if d.over is not None else "grey"
            _put(ws, styles, r, 3, key, grid)
            _put(ws, styles, r, 4, value, grid, number)
            if d.over is not None:
                ws.data_validation(r, 4, r, 4, {"validate": "decimal", "criteria": "between", "minimum": -1e300,
                                                "maximum": 1e300, "error_title": "a number",
                                                "error_message": f"a value of {d.name} is a number"})
            _put(ws, styles, r, 5, d.description if i == 0 else None, "grey")
            r += 1
    _finish(ws, [[d.policy for d in tables.derives], [d.name for d in tables.derives],
                 [d.source for d in tables.derives], [e.key for d in tables.derives for e in d.entries],
                 [e.token for d in tables.derives for e in d.entries], [d.description for d in tables.derives]],
            [(10, 20), (12, 32), (30, 70), (6, 16), (8, 12), (20, 60)], DERIVE_HEADERS, 1)


def _finish(ws: Any, texts: list[list[str]], widths: list[tuple[int, int]], headers: tuple[str, ...],
            frozen_rows: int, frozen_cols: int = 0) -> None:
    for c, (column, (least, most)) in enumerate(zip(texts, widths)):
        ws.set_column(c, c, _width([*column, headers[c]], least, most))
    ws.freeze_panes(frozen_rows, frozen_cols)


@dataclass
class _Lists:
    """The declared values that the outcome columns offer as a list, a column each of a hidden sheet
    (a range, not a list written into the rule: that one holds no comma and at most 255 characters)."""

    columns: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, values: tuple[Any, ...]) -> str:
        letters = column_letters(len(self.columns))
        self.columns.append(values)
        return f"={LISTS_SHEET}!${letters}$1:${letters}${len(values)}"

    def write(self, book: Any, styles: _Styles) -> None:
        ws = book.add_worksheet(LISTS_SHEET)
        for c, values in enumerate(self.columns):
            for r, v in enumerate(values):
                _put(ws, styles, r, c, v)
        ws.hide()


def _rule_cell(table: Table, kind: str, rule: Any, output: Any) -> Any:
    if kind == "id":
        return rule.id
    if kind == "then":
        value = rule.output(output.name)
        return value if isinstance(value, (bool, int, float)) else cell_text(value)
    return cell_text(getattr(rule, kind))


def _decision_sheet(book: Any, styles: _Styles, lists: _Lists, t: Table) -> None:
    ws = book.add_worksheet(t.sheet)
    cols = t.columns
    about = f"{t.name} ({t.file})" + (f": {t.description.rstrip('.')}" if t.description else "")
    _put(ws, styles, 0, 0, f"{about}. Hit policy {t.hit}: {HIT_WORDS.get(t.hit, t.hit)}.", "title")
    for c, col in enumerate(cols):
        _put(ws, styles, 1, c, col.header, "header")
    for r, rule in enumerate(t.rules, start=TITLE_ROWS):
        for c, col in enumerate(cols):
            _put(ws, styles, r, c, _rule_cell(t, col.kind, rule, col.output), "text" if col.editable else "grey")
    for c, col in enumerate(cols):
        if col.output is not None and col.output.values:
            source = lists.add(col.output.values)
            ws.data_validation(TITLE_ROWS, c, TITLE_ROWS + VALIDATED_ROWS, c, {
                "validate": "list", "source": source, "error_title": "not a value of this decision",
                "error_message": "choose one of the values the decision declares (values: in the YAML file)"})
    texts = [[_cell_shown(_rule_cell(t, col.kind, r, col.output)) for r in t.rules] for col in cols]
    widths = {"id": (10, 28), "when": (20, 50), "then": (8, 24), "because": (30, 60), "quota": (30, 50),
              "note": (24, 50)}
    _finish(ws, texts, [widths[col.kind] for col in cols], tuple(col.header for col in cols), TITLE_ROWS, 1)


def _cell_shown(value: Any) -> str:
    return cell_text(value) if not isinstance(value, str) else value


def _instructions(book: Any, styles: _Styles, tables: Tables, workbook: str) -> None:
    ws = book.add_worksheet("instructions")
    folder = Path(tables.folder).name or tables.folder
    lines: list[tuple[str, str, str]] = [
        ("title", f"The policies of {tables.folder} as tables (kam {__version__})", ""),
        ("", "", ""),
        ("heading", "What you may edit", ""),
        ("text", "params", "The value (column C) of a parameter: a cutoff, a rate, a limit. A share shows as a "
                           "percent: type 75% (or 0.75)."),
        ("text", "derive", "The expression (column C) of a feature, in kam's language (profit > 0, "
                           "cumshare(profit)). A lookup table, such as a price floor per tier, has a row per key: "
                           "change its number in the value column (E); add a row with the same policy and name for "
                           "a new key, or delete one."),
        ("text", "a sheet per decision", "A row per rule, in order. Edit a condition (when), an outcome (then: the "
                 "list offers the values the decision declares) or a reason (because: {name} inserts a value, "
                 "{share:.0%} one as a percent). A rule with no condition is the default: it takes everyone the "
                 "rules above it leave. Add a rule: insert a row and give it a new rule id. Delete a rule: delete "
                 "its row. Move a rule: cut its row and insert it elsewhere; sorting a sheet moves rules too. Rows "
                 "are matched by rule id: keep the id of a rule you change."),
        ("text", "text with =", "Excel takes a text that starts with =, +, - or @ for a formula: type a ' "
                                "before it to keep it text."),
        ("text", "grey cells", "Shown for reading only: a rule's quota, the notes and descriptions (comments in the "
                               "YAML files). Change them in the YAML file. Do not rename the sheets or insert "
                               "columns: kam reads them as it wrote them."),
        ("", "", ""),
        ("heading", "Bringing it back", ""),
        ("text", "check first", f"kam import {workbook} {folder} --dry-run  shows the change to the YAML files as a "
                                "diff and writes nothing."),
        ("text", "then write", f"kam import {workbook} {folder}  writes only the values you edited: every comment, "
                               "blank line and key order in the files stays."),
        ("text", "refused", "Nothing is written when a cell cannot be read (its reference is named, e.g. tier!B5), "
                            "when kam check finds an error in the edited policies, or when a file changed since "
                            "this export in a place you also edited."),
        ("", "", ""),
        ("heading", "Sheets", ""),
        ("text", "params", "the parameters of every policy"),
        ("text", "derive", "the derived features of every policy"),
    ]
    lines += [("text", t.sheet, f"decision {t.name} of {t.file}" + (f": {t.description}" if t.description else ""))
              for t in tables.decisions]
    for r, (kind, a, b) in enumerate(lines):
        if kind in ("title", "heading"):
            _put(ws, styles, r, 0, a, kind)
        elif kind:
            _put(ws, styles, r, 0, a, "heading")
            _put(ws, styles, r, 1, b, "text")
    ws.set_column(0, 0, 22)
    ws.set_column(1, 1, 100)


def record(tables: Tables) -> list[str]:
    """The texts the workbook is exported from, packed into cells (zlib, then base64: a spreadsheet keeps
    such a text as it is, line breaks and spaces included)."""
    doc = {"format": FORMAT, "version": VERSION, "kam": __version__, "folder": str(Path(tables.folder).resolve()),
           "files": [{"name": s.name, "sha256": s.sha, "text": s.text} for s in tables.sources]}
    packed = base64.b64encode(zlib.compress(json.dumps(doc, ensure_ascii=False).encode("utf-8"), 9)).decode("ascii")
    return [packed[i:i + CHUNK] for i in range(0, len(packed), CHUNK)] or [""]


def write_workbook(tables: Tables, path: Path) -> None:
    """Write the workbook of `tables` to `path`, atomically (beside it, then renamed over it)."""
    xlsxwriter = need("xlsxwriter")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.absolute().parent)
    os.close(fd)
    try:
        book = xlsxwriter.Workbook(tmp, {"strings_to_formulas": False, "strings_to_numbers": False,
                                         "strings_to_urls": False})
        styles = _Styles(book)
        _instructions(book, styles, tables, path.name)
        _params_sheet(book, styles, tables)
        _derive_sheet(book, styles, tables)
        lists = _Lists()
        for t in tables.decisions:
            _decision_sheet(book, styles, lists, t)
        lists.write(book, styles)
        meta = book.add_worksheet(META_SHEET)
        for r, text in enumerate([MARKER, *record(tables)]):
            meta.write_string(r, 0, text)
        meta.very_hidden()
        book.close()
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

