"""Decision tables edited in Excel: `kam export` writes the policies as a workbook, `kam import` reads it
back into the YAML, changing only what was edited (every comment, blank line and quoting kept), and
refuses, writing nothing, a cell that does not read, an edited folder with a check error, a workbook
of another folder and a file changed since the export in the place the workbook edits."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from engine.analysis.findings import check_policies
from engine.language.compile import compile_policies
from engine.language.edit import set_value
from engine.surfaces.decision_tables.tables import SHEET_CHARS, sheet_name

from .conftest import ROOT, kam, kam_here

SHIPPED = sorted(p.name for p in (ROOT / "policies").glob("*.yaml"))
SEG = (ROOT / "policies" / "segmentation.yaml").read_text(encoding="utf-8")
TREATMENT = (ROOT / "policies" / "treatment.yaml").read_text(encoding="utf-8")
FLOOR = 'floor_ratio: "lookup(tier, {A: 0.80, B: 0.85, C: 0.90, D: 0.95})"'


def export(folder: Path, to: Path | None = None) -> Path:
    to = to or folder.parent / "policies.xlsx"
    r = kam_here("export", str(folder), "--to", str(to))
    assert r.returncode == 0, r.stderr
    return to


def imp(book: Path, folder: Path, *extra: str):
    return kam_here("import", str(book), str(folder), *extra)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def edit(book: Path, cells: dict[str, object], name: str = "edited.xlsx") -> Path:
    """The workbook with cells set as a person would type them (`tier!B5`), saved by openpyxl."""
    wb = openpyxl.load_workbook(book)
    for where, value in cells.items():
        sheet, _, at = where.partition("!")
        wb[sheet][at].value = value
        if isinstance(value, str):
            wb[sheet][at].data_type = "s"  # typed text, even when it starts with `=`
    out = book.with_name(name)
    wb.save(out)
    return out


def changed_lines(diff: str) -> list[str]:
    return [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def block(text: str, rule_id: str) -> str:
    """The lines of one rule of a shipped file (its own comment lines included)."""
    m = re.search(rf"((?:      #.*\n)*      - id: {re.escape(rule_id)}\n(?:        .*\n)*)", text)
    assert m, rule_id
    return m.group(1)


def no_errors(folder: Path) -> None:
    """`kam check` finds no error in the folder as written."""
    errors = [p.render() for p in check_policies(folder).problems if p.severity == "error"]
    assert not errors, errors


def compiles(folder: Path) -> None:
    """The folder as written loads and compiles (the import ran the whole check on these very texts
    before writing them; the proofs are what takes the time)."""
    compile_policies(folder)


# -- the round trip ---------------------------------------------------------------------------------

def test_an_unchanged_round_trip_leaves_every_shipped_file_byte_identical(folder, tmp_path):
    before = files(folder)
    assert sorted(n for n in before if n.endswith(".yaml")) == SHIPPED
    book = export(folder)
    r = imp(book, folder)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and "no changes" in r.stderr
    # a workbook saved again by another program (shared strings, its own styles) reads back the same
    wb = openpyxl.load_workbook(book)
    wb.save(tmp_path / "saved.xlsx")
    r = imp(tmp_path / "saved.xlsx", folder)
    assert r.returncode == 0 and r.stdout == "" and "no changes" in r.stderr, r.stderr
    assert files(folder) == before


def test_the_workbook_is_made_for_people(folder):
    wb = openpyxl.load_workbook(export(folder))
    assert wb.sheetnames[:3] == ["instructions", "params", "derive"]
    assert wb.sheetnames[3:12] == ["approval", "pursue", "protected_by", "retention", "tier", "service",
                                   "service_review", "offer", "value_group"]
    assert wb["lists"].sheet_state == "hidden" and wb["_kam"].sheet_state == "veryHidden"
    assert "kam import policies.xlsx policies --dry-run" in " ".join(str(c.value) for c in wb["instructions"]["B"])
    tier = wb["tier"]
    assert [c.value for c in tier[2]] == ["rule id", "when (condition)", "then", "because (reason)", "note (read-only)"]
    assert tier.freeze_panes == "B3" and tier["A2"].font.b and tier["D3"].alignment.wrap_text
    assert tier.column_dimensions["D"].width >= 60 and tier.column_dimensions["A"].width < 30
    assert [tier.cell(r, 1).value for r in range(3, 8)] == ["key-account", "key-account-held", "important", "general",
                                                             "maintenance"]
    assert tier["E4"].value.startswith("Hysteresis") and tier["E4"].fill.fgColor.rgb.endswith("F2F2F2")
    (validation,) = tier.data_validations.dataValidation
    assert str(validation.sqref) == "C3:C1003" and validation.type == "list"
    sheet, _, cells = validation.formula1.partition("!")
    assert sheet == "lists" and [c.value for (c,) in wb["lists"][cells.replace("$", "")]] == ["A", "B", "C", "D"]
    service = wb["service"]
    assert [c.value for c in service[2]][:5] == ["rule id", "when (condition)", "then: service_level",
                                                 "then: response_hours", "then: account_manager"]
    assert service["D3"].value == 72 and service["D3"].data_type == "n"
    params = wb["params"]
    assert [c.value for c in params[2]][:4] == ["segmentation", "key_share", 0.8, "%"]
    assert params["C2"].number_format == "0%" and params["E2"].value.startswith("Key accounts")
    derive = wb["derive"]
    rows = [[c.value for c in row][:5] for row in derive.iter_rows(min_row=2, max_row=5)]
    assert rows[0][:2] == ["pricing", "floor_ratio"] and rows[0][2].startswith("lookup(tier, …)")
    assert [(r[3], r[4]) for r in rows] == [("A", 0.8), ("B", 0.85), ("C", 0.9), ("D", 0.95)]
    assert derive["E3"].number_format == "0.00"


def test_a_floor_edited_in_one_cell_is_one_changed_line(folder):
    before = files(folder)
    book = edit(export(folder), {"derive!E3": 0.86})
    r = imp(book, folder)
    assert r.returncode == 0, r.stderr
    assert changed_lines(r.stdout) == [f"-  {FLOOR}", f"+  {FLOOR.replace('B: 0.85', 'B: 0.86')}"]
    assert r.stderr.strip().endswith(f"wrote {folder / 'pricing.yaml'}")
    after = files(folder)
    assert after["pricing.yaml"] == before["pricing.yaml"].replace(b"B: 0.85", b"B: 0.86")
    assert {n: b for n, b in after.items() if n != "pricing.yaml"} == \
        {n: b for n, b in before.items() if n != "pricing.yaml"}
    no_errors(folder)
    # the same workbook imported again: its edit is in the file already
    r = imp(book, folder)
    assert r.returncode == 0 and r.stdout == "" and "no changes" in r.stderr, r.stderr
    assert files(folder) == after


def _swap(text: str, a: str, b: str) -> str:
    first, second = block(text, a), block(text, b)
    return text.replace(first + second, second + first)


NEW_RULE = ("      - id: loss-maker\n        when: profit < 0\n        then: D\n"
            "        because: loses money ({profit:,.0f})\n")
EDITS = {
    "a share param and a whole number": ({"params!C2": 0.75, "params!C3": 65}, "segmentation.yaml",
                                         lambda t: t.replace("key_share: 80%", "key_share: 75%")
                                         .replace("key_min_credit: 60", "key_min_credit: 65")),
    "a reason": ({"tier!D7": "bottom {general_from:.0%}: maintenance"}, "segmentation.yaml",
                 lambda t: t.replace(block(SEG, "maintenance").splitlines(keepends=True)[2],
                                     '        because: "bottom {general_from:.0%}: maintenance"\n')),
    "conditions changed, taken away and added": (
        {"tier!B5": "value_position >= important_from and credit_score >= 40", "tier!B6": None,
         "tier!B7": "value_position < general_from"}, "segmentation.yaml",
        lambda t: t.replace("when: value_position >= important_from\n",
                            "when: value_position >= important_from and credit_score >= 40\n")
        .replace("        when: value_position >= general_from\n", "")
        .replace("      - id: maintenance\n", "      - id: maintenance\n        when: value_position < general_from\n")),
    "an outcome of several": ({"service!D5": 6}, "treatment.yaml",
                              lambda t: t.replace("response_hours: 4,", "response_hours: 6,")),
}


@pytest.mark.parametrize("cells, file, expected", EDITS.values(), ids=list(EDITS))
def test_an_edited_cell_changes_only_its_value(folder, cells, file, expected):
    before = files(folder)
    r = imp(edit(export(folder), cells), folder)
    assert r.returncode == 0, r.stderr
    after = files(folder)
    assert after[file].decode("utf-8") == expected(before[file].decode("utf-8"))
    assert after[file] != before[file]
    assert {n for n in after if after[n] != before[n]} == {file}
    compiles(folder)


def _rows(book: Path, name: str, change) -> Path:
    wb = openpyxl.load_workbook(book)
    change(wb[name])
    out = book.with_name(f"{name}-rows.xlsx")
    wb.save(out)
    return out


def _swap_rows(ws, a: int, b: int) -> None:
    first, second = [c.value for c in ws[a]], [c.value for c in ws[b]]
    for i, (x, y) in enumerate(zip(first, second), start=1):
        ws.cell(a, i).value, ws.cell(b, i).value = y, x


def _insert(ws, row: int, values: list[object]) -> None:
    ws.insert_rows(row)
    for i, v in enumerate(values, start=1):
        ws.cell(row, i).value = v


def _add_rule(ws) -> None:
    _insert(ws, 7, ["loss-maker", "profit < 0", "D", "loses money ({profit:,.0f})"])


ROWS = {
    "rules swapped, a commented one with its comment": (
        "tier", lambda ws: (_swap_rows(ws, 3, 4), _swap_rows(ws, 5, 6)), "segmentation.yaml",
        lambda t: _swap(_swap(t, "important", "general"), "key-account", "key-account-held")),
    "a rule deleted": ("service", lambda ws: ws.delete_rows(4), "treatment.yaml",
                       lambda t: t.replace(block(TREATMENT, "downgraded"), "")),
    "a rule added": ("tier", _add_rule, "segmentation.yaml",
                     lambda t: t.replace(block(SEG, "maintenance"), NEW_RULE + block(SEG, "maintenance"))),
    "a rule of several outputs added": (
        "service", lambda ws: _insert(ws, 3, ["vip", "tier == 'A' and revenue > 1000000", "platinum", 2, "dedicated",
                                              "a very big key account"]),
        "treatment.yaml",
        lambda t: t.replace(block(TREATMENT, "exit-self-service"),
                            "      - id: vip\n        when: tier == 'A' and revenue > 1000000\n"
                            "        then: {service_level: platinum, response_hours: 2, account_manager: dedicated}\n"
                            "        because: a very big key account\n" + block(TREATMENT, "exit-self-service"))),
}


@pytest.mark.parametrize("sheet, change, file, expected", ROWS.values(), ids=list(ROWS))
def test_rows_added_removed_or_moved_are_rules_inserted_deleted_or_moved(folder, sheet, change, file, expected):
    before = files(folder)
    r = imp(_rows(export(folder), sheet, change), folder)
    assert r.returncode == 0, r.stderr
    after = files(folder)
    assert after[file].decode("utf-8") == expected(before[file].decode("utf-8"))
    assert {n for n in after if after[n] != before[n]} == {file}
    compiles(folder)


def test_dry_run_prints_the_diff_and_writes_nothing(folder):
    before = files(folder)
    r = imp(edit(export(folder), {"params!C2": 0.7}), folder, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert changed_lines(r.stdout) == ["-  key_share: 80%", "+  key_share: 70%"]
    assert r.stdout.startswith("--- a/policies/segmentation.yaml\n+++ b/policies/segmentation.yaml\n")
    assert "dry run: nothing written" in r.stderr and "wrote" not in r.stderr
    assert files(folder) == before


# -- refusals: nothing written ------------------------------------------------------------------------

REFUSED = {
    "a condition that does not read": ({"tier!B5": "value_position >= and credit_score"},
                                       "tier!B5 holds a condition that does not read"),
    "a value outside the list": ({"tier!C6": "E"}, "tier!C6 holds 'E', which is not a value of tier"),
    "text in a number cell": ({"derive!E3": "lots"}, "derive!E3 holds 'lots', where the value of floor_ratio for B "
                                                     "is a number"),
    "text in a share param": ({"params!C2": "most"}, "params!C2 holds 'most', where key_share is a share in %"),
    "an outcome outside the list": ({"service!C3": "gold-plated"}, "service!C3 holds 'gold-plated', which is not "
                                                                   "a value of service_level (service)"),
    "a read-only quota": ({"pursue!E5": "top 50%"}, "pursue!E5 is read-only (the rule's quota) and was changed"),
    "a rule without an id": ({"tier!A6": None}, "tier!A6 is empty, but row 6 holds a rule"),
    "an id twice": ({"tier!A6": "important"}, "tier!A6 holds rule id important a second time"),
    "a formula": ({"tier!D5": "=1+1"}, "formula"),
}


@pytest.mark.parametrize("cells, message", REFUSED.values(), ids=list(REFUSED))
def test_a_cell_that_does_not_read_is_refused_with_its_reference(folder, cells, message):
    before = files(folder)
    book = export(folder)
    if "formula" in message:
        wb = openpyxl.load_workbook(book)
        wb["tier"]["D5"] = "=1+1"  # a formula, as a script writes it: no calculated value
        wb.save(book)
    else:
        book = edit(book, cells)
    r = imp(book, folder)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert files(folder) == before


def test_every_bad_cell_is_named_at_once(folder):
    r = imp(edit(export(folder), {"tier!B5": "x >", "tier!C6": "E", "params!C3": "sixty"}), folder)
    assert r.returncode == 2
    assert [ln.split(": ")[2].split(" ")[0] for ln in r.stderr.splitlines() if "error[" in ln] == \
        ["params!C3", "tier!B5", "tier!C6"]


def test_an_edit_in_a_hidden_sheet_is_refused(folder):
    """A reviewer opening the workbook in Excel cannot see a hidden sheet: its edit was taken silently."""
    book = edit(export(folder), {"tier!C5": "B"})
    wb = openpyxl.load_workbook(book)
    wb["tier"].sheet_state = "hidden"
    wb.save(book)
    before = files(folder)
    r = imp(book, folder)
    assert r.returncode == 2 and "sheet 'tier'" in r.stderr and "is hidden" in r.stderr
    assert files(folder) == before


def test_a_check_error_exits_1_located_in_the_yaml_and_the_workbook(folder):
    before = files(folder)
    r = imp(edit(export(folder), {"tier!B5": "value_positon >= important_from"}), folder)
    assert r.returncode == 1, r.stderr
    line = SEG[:SEG.index("when: value_position >= important_from")].count("\n") + 1
    assert f"policies/segmentation.yaml:{line}:15: error[unknown-name]" in r.stderr
    assert "(workbook cell tier!B5)" in r.stderr and "did you mean `value_position`?" in r.stderr
    assert files(folder) == before


def test_a_workbook_not_exported_by_kam_or_of_another_folder(folder, tmp_path):
    plain = tmp_path / "plain.xlsx"
    openpyxl.Workbook().save(plain)
    r = imp(plain, folder)
    assert r.returncode == 2 and "plain.xlsx is not a workbook kam export wrote" in r.stderr
    other = tmp_path / "other"
    other.mkdir()
    (other / "mine.yaml").write_text((ROOT / "policies" / "pricing.yaml").read_text(encoding="utf-8"))
    r = imp(export(folder), other)
    assert r.returncode == 2 and "was exported from another folder" in r.stderr and "none of its policy files" in \
        r.stderr, r.stderr
    (tmp_path / "text.xlsx").write_text("not a zip")
    r = imp(tmp_path / "text.xlsx", folder)
    assert r.returncode == 2 and "is not an .xlsx workbook" in r.stderr
    assert (other / "mine.yaml").read_bytes() == (ROOT / "policies" / "pricing.yaml").read_bytes()


def test_a_file_changed_since_the_export_is_a_conflict_only_where_the_workbook_edits(folder):
    book = edit(export(folder), {"params!C2": 0.75})
    seg = folder / "segmentation.yaml"
    seg.write_text(SEG.replace("key_share: 80%", "key_share: 85%"), encoding="utf-8")
    before = files(folder)
    r = imp(book, folder)
    assert r.returncode == 2 and "params!C2: segmentation.yaml changed parameter key_share since the export" in r.stderr
    assert files(folder) == before
    floor = imp(edit(book, {"derive!E4": 0.91}, "floor.xlsx"),
                _with(folder, "pricing.yaml", lambda t: t.replace("C: 0.90", "C: 0.92")))
    assert floor.returncode == 2 and "derive!E4: pricing.yaml changed feature floor_ratio" in floor.stderr
    # changed elsewhere: the edit is made on the file as it is now
    seg.write_text(SEG.replace("key_min_credit: 60", "key_min_credit: 65"), encoding="utf-8")
    r = imp(book, folder)
    assert r.returncode == 0, r.stderr
    assert seg.read_text(encoding="utf-8") == SEG.replace("key_min_credit: 60", "key_min_credit: 65") \
        .replace("key_share: 80%", "key_share: 75%")


def _with(folder: Path, name: str, change) -> Path:
    path = folder / name
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


def test_a_rule_changed_on_disk_and_deleted_in_the_workbook_conflicts(folder):
    book = _rows(export(folder), "tier", lambda ws: ws.delete_rows(6))
    seg = folder / "segmentation.yaml"
    seg.write_text(SEG.replace("when: value_position >= general_from", "when: value_position >= 0.3"),
                   encoding="utf-8")
    r = imp(book, folder)
    assert r.returncode == 2 and "changed rule general, which the workbook deletes" in r.stderr, r.stderr


def test_rules_moved_on_disk_and_in_the_workbook_conflict(folder):
    book = _rows(export(folder), "tier", _add_rule)
    seg = folder / "segmentation.yaml"
    seg.write_text(_swap(SEG, "important", "general"), encoding="utf-8")
    r = imp(book, folder)
    assert r.returncode == 2 and "tier!A3: segmentation.yaml changed the rules of decision tier" in r.stderr
    assert seg.read_text(encoding="utf-8") == _swap(SEG, "important", "general")


def test_the_workbook_is_bounded_before_it_is_read(folder, tmp_path):
    huge = tmp_path / "huge.xlsx"
    with huge.open("wb") as fh:
        fh.truncate(21 << 20)
    r = imp(huge, folder)
    assert r.returncode == 2 and "21.0 MiB" in r.stderr and "up to 20 MiB" in r.stderr
    wb = openpyxl.load_workbook(export(folder))
    wb["tier"].cell(20_000, 1).value = "far-below"
    wb.save(tmp_path / "long.xlsx")
    r = imp(tmp_path / "long.xlsx", folder)
    assert r.returncode == 2 and "sheet tier reaches row 20,000" in r.stderr, r.stderr


# -- texts that look like formulas ----------------------------------------------------------------------

HOSTILE = ['=HYPERLINK("http://example.com/x","click")', "+1", "@SUM(1)", "-1+2", "=1+1"]


def test_hostile_texts_are_text_cells_and_come_back_as_written(folder, tmp_path):
    text = SEG
    for i, bad in enumerate(HOSTILE[:4]):
        text = set_value(text, ("decisions", "tier", "rules", i, "because"), bad)
    (folder / "segmentation.yaml").write_text(text, encoding="utf-8")
    before = files(folder)
    book = export(folder)
    wb = openpyxl.load_workbook(book)
    cells = [wb["tier"].cell(r, 4) for r in range(3, 7)]
    assert [c.value for c in cells] == HOSTILE[:4] and {c.data_type for c in cells} == {"s"}
    with zipfile.ZipFile(book) as z:
        assert not any(re.search(rb"<f[ >]", z.read(n)) for n in z.namelist() if n.startswith("xl/worksheets/"))
    r = imp(book, folder)
    assert r.returncode == 0 and "no changes" in r.stderr, r.stderr
    assert files(folder) == before
    # typed into the workbook as text, a formula-like reason is written to the YAML as the text it is
    r = imp(edit(book, {"tier!D7": HOSTILE[4]}), folder)
    assert r.returncode == 0, r.stderr
    assert changed_lines(r.stdout)[1] == '+        because: "=1+1"'


# -- names ---------------------------------------------------------------------------------------------

def test_sheet_names_are_valid_and_unique():
    taken: set[str] = set()
    long = "a_decision_name_that_is_far_too_long_for_excel"
    names = [sheet_name(n, taken) for n in (long, long + "_too", "params", "History", "x[1]:*?/\\", "tier", "TIER")]
    assert all(len(n) <= SHEET_CHARS and not re.search(r"[\[\]:*?/\\]", n) for n in names)
    assert len({n.lower() for n in names}) == len(names)
    assert names[2] == "params (2)" and names[3] == "History (2)" and names[6] == "TIER (2)"


ODD = """\
policy: a
entity: customer
facts:
  customer_id: {type: string, key: true}
  x: {type: number}
  flag: {type: boolean}
params:
  label: ""             # an empty text
  strict: true          # yes/no
  growth: 12.5%
  limit: 1.50
derive:
  share: "lookup(tier, {A: 20%, B: 7.5%})"
  tier: if(x > limit, 'A', 'B')
  odd: 'lookup(tier, {A: 1}, 0)'
decisions:
  LONG_a:
    values: [yes, no]
    rules:
      - id: big
        when: x > limit and flag
        then: yes
        because: ""
      - id: always
        when: true
        then: no
  LONG_b:
    type: boolean
    rules:
      - {id: flow, when: flag, then: false}
      - id: rest
        then: true
        because: '=x'
"""


def test_a_folder_of_odd_shapes_round_trips(tmp_path):
    """Long decision names, empty texts, yes/no and text params, shares with decimals, a lookup of shares,
    a lookup with a default (an expression), `when: true`, a rule written `{...}`, a reason like a formula."""
    folder = tmp_path / "p"
    folder.mkdir()
    long = "who_gets_the_year_end_bonus_letter_first"
    (folder / "a.yaml").write_text(ODD.replace("LONG", long), encoding="utf-8")
    no_errors(folder)
    before = files(folder)
    book = export(folder)
    wb = openpyxl.load_workbook(book)
    assert wb.sheetnames[3:5] == [long[:31], long[:27] + " (2)"]
    assert [[c.value for c in row][2:4] for row in wb["params"].iter_rows(min_row=2)] == \
        [[None, "text"], [True, "yes/no"], [0.125, "%"], [1.5, "number"]]
    assert wb["params"]["C4"].number_format == "0.0%" and wb["derive"]["E3"].number_format == "0.0%"
    r = imp(book, folder)
    assert r.returncode == 0 and "no changes" in r.stderr, r.stderr
    assert files(folder) == before
    r = imp(edit(book, {"params!C4": 0.15, "params!C5": 2, "derive!E3": 0.1, f"{long[:31]}!D3": "big one",
                        "params!C3": "FALSE"}), folder)
    assert r.returncode == 0, r.stderr
    assert changed_lines(r.stdout) == [
        "-  strict: true          # yes/no", "-  growth: 12.5%", "-  limit: 1.50",
        "+  strict: false          # yes/no", "+  growth: 15%", "+  limit: 2",
        '-  share: "lookup(tier, {A: 20%, B: 7.5%})"', '+  share: "lookup(tier, {A: 20%, B: 10%})"',
        '-        because: ""', '+        because: "big one"']


# -- the commands, end to end ---------------------------------------------------------------------------

def test_kam_export_end_to_end(folder, tmp_path):
    to = tmp_path / "tables.xlsx"
    r = kam("export", str(folder), "--to", str(to))
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == f"wrote {to}: 9 decision sheets, 7 params, 21 features of 6 policy files"
    assert openpyxl.load_workbook(to, read_only=True).sheetnames[0] == "instructions"
    again = kam_here("export", str(folder), "--to", str(to))
    assert again.returncode == 2 and "exists" in again.stderr and "--force" in again.stderr


def test_kam_import_end_to_end(folder):
    before = files(folder)
    book = edit(export(folder), {"derive!E3": 0.86, "params!C2": 0.75})
    r = kam("import", str(book), str(folder))
    assert r.returncode == 0, r.stderr
    assert changed_lines(r.stdout) == [f"-  {FLOOR}", f"+  {FLOOR.replace('B: 0.85', 'B: 0.86')}",
                                       "-  key_share: 80%", "+  key_share: 75%"]
    assert r.stderr.splitlines() == [f"wrote {folder / 'pricing.yaml'}", f"wrote {folder / 'segmentation.yaml'}"]
    assert files(folder)["segmentation.yaml"] == before["segmentation.yaml"].replace(b"key_share: 80%",
                                                                                     b"key_share: 75%")
    compiles(folder)


@pytest.mark.parametrize("module, command", [("xlsxwriter", "export"), ("python_calamine", "import")])
def test_a_missing_extra_is_named(folder, tmp_path, monkeypatch, module, command):
    import sys

    book = export(folder)
    monkeypatch.setitem(sys.modules, module, None)  # `import module` raises ImportError
    args = ["export", str(folder), "--to", str(tmp_path / "new.xlsx")] if command == "export" else \
        ["import", str(book), str(folder)]
    r = kam_here(*args)
    assert r.returncode == 2 and "pip install 'kam[excel]'" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "new.xlsx").exists()


def test_export_refuses_a_folder_it_cannot_read_and_writes_nothing(folder, tmp_path):
    (folder / "pricing.yaml").write_text("policy: pricing\nentity: [quote\n", encoding="utf-8")
    r = kam_here("export", str(folder), "--to", str(tmp_path / "out.xlsx"))
    assert r.returncode == 1 and "pricing.yaml:3:1: error[yaml-syntax]" in r.stderr, r.stderr
    assert not (tmp_path / "out.xlsx").exists() and not list(tmp_path.glob(".out.xlsx*"))
