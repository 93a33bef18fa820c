"""Excel in and out: facts from a workbook (a sheet per entity, or FILE.xlsx#Sheet) with every check
naming its cell, decisions as one workbook with a summary sheet, and CSV with a byte order mark."""

from __future__ import annotations

import datetime
import json
import re
import zipfile
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import xlsxwriter
from python_calamine import CalamineWorkbook

from engine.language.errors import InputError

from .conftest import ROOT, kam_here, write_policy

EXAMPLES = ROOT / "examples"


def workbook(path: Path, sheets: dict[str, list[list]], date_format: bool = True) -> Path:
    """A workbook as Excel users make them: ids typed as text, numbers as numbers, TRUE/FALSE, dates."""
    book = xlsxwriter.Workbook(str(path), {"strings_to_numbers": False})
    date = book.add_format({"num_format": "yyyy-mm-dd"})
    for name, rows in sheets.items():
        sheet = book.add_worksheet(name)
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                if isinstance(v, datetime.date) and date_format:
                    sheet.write_datetime(r, c, datetime.datetime.combine(v, datetime.time()), date)
                elif isinstance(v, str):
                    sheet.write_string(r, c, v)
                elif v is None or (isinstance(v, float) and v != v):
                    continue
                else:
                    sheet.write(r, c, v)
    book.close()
    return path


def rows_of(frame: pd.DataFrame) -> list[list]:
    return [list(frame.columns)] + [[None if pd.isna(v) else v for v in row] for row in frame.itertuples(index=False)]


def test_facts_from_a_workbook_decide_as_the_csv_does(tmp_path):
    customers = pd.read_csv(EXAMPLES / "customers.csv", dtype={"customer_id": str})
    book = workbook(tmp_path / "crm.xlsx", {"Notes": [["exported from the CRM"]], "Customers": rows_of(customers)})
    r = kam_here("run", "--entity", "customer", "--input", f"customer={book}", "--out", str(tmp_path / "x"), "-q")
    assert r.returncode == 0, r.stderr
    assert kam_here("run", "--entity", "customer", "--out", str(tmp_path / "c"), "-q").returncode == 0
    assert (tmp_path / "x" / "customer_decisions.csv").read_bytes() == \
        (tmp_path / "c" / "customer_decisions.csv").read_bytes()
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["inputs"][0]["path"].endswith("crm.xlsx") and manifest["inputs"][0]["rows"] == len(customers)


def test_every_problem_of_a_sheet_names_its_cell(tmp_path):
    customers = pd.read_csv(EXAMPLES / "customers.csv", dtype={"customer_id": str}).head(5)
    rows = rows_of(customers)
    at = {name: (i, chr(65 + i)) for i, name in enumerate(rows[0])}
    rows[1][at["customer_id"][0]] = 123  # an id typed as a number (its leading zeros are gone)
    rows[3][at["revenue"][0]] = "lots"
    rows[4][at["credit_score"][0]] = 700  # at most 100
    rows[5][at["strategic_account"][0]] = "maybe"
    book = workbook(tmp_path / "crm.xlsx", {"Sheet 1": rows, "other": [["x"]]})
    out = tmp_path / "out"
    r = kam_here("run", "--entity", "customer", "--input", f"customer={book}#Sheet 1", "--out", str(out))
    assert r.returncode == 2 and not out.exists()
    for cell in (f"'Sheet 1'!{at['customer_id'][1]}2 holds 123", f"'Sheet 1'!{at['revenue'][1]}4 holds 'lots'",
                 f"'Sheet 1'!{at['credit_score'][1]}5: 700", f"'Sheet 1'!{at['strategic_account'][1]}6 holds 'maybe'"):
        assert cell in r.stderr, r.stderr
    assert "format the column `customer_id` as Text in Excel" in r.stderr
    r = kam_here("run", "--entity", "customer", "--input", f"customer={book}", "--out", str(out))
    assert r.returncode == 2 and "has several sheets (Sheet 1, other)" in r.stderr
    assert "--input 'customer=crm.xlsx#Sheet 1'" in r.stderr
    r = kam_here("run", "--entity", "customer", "--input", f"customer={book}#Shet 1", "--out", str(out))
    assert r.returncode == 2 and "no sheet `Shet 1`" in r.stderr and "did you mean `Sheet 1`?" in r.stderr
    doubled = workbook(tmp_path / "twice.xlsx", {"customers": [rows[0] + ["revenue"]]})
    r = kam_here("run", "--entity", "customer", "--input", f"customer={doubled}", "--out", str(out))
    assert r.returncode == 2 and "the header names `revenue` twice" in r.stderr
    assert f"customers!{at['revenue'][1]}1, {chr(65 + len(rows[0]))}1:" in r.stderr
    blank = workbook(tmp_path / "blank.xlsx", {"customers": []})
    r = kam_here("run", "--entity", "customer", "--input", f"customer={blank}", "--out", str(out))
    assert r.returncode == 2 and "it has no header: its first row must name the columns" in r.stderr


def test_dates_booleans_and_empty_rows_are_read_sensibly(tmp_path):
    policies = tmp_path / "p"
    write_policy(policies, "a.yaml", """
        policy: a
        entity: customer
        facts:
          customer_id: {type: string, key: true}
          since: {type: string}
          vip: {type: boolean}
          x: {type: number}
        decisions:
          d:
            values: [yes, no]
            rules:
              - {id: vip, when: vip, then: yes, because: "vip since {since}, x {x}"}
              - {id: other, then: no, because: "since {since}"}
        """)
    book = workbook(tmp_path / "c.xlsx", {"customer": [
        ["customer_id", "since", "vip", "x"],
        ["001", datetime.date(2026, 1, 2), True, 1.5],
        ["002", "long ago", False, None],
        [None, None, None, None],  # formatting below the table, not an entity
    ]})
    r = kam_here("run", "--policies", str(policies), "--input", f"customer={book}", "--out", str(tmp_path / "o"), "-q")
    assert r.returncode == 0, r.stderr
    out = pd.read_csv(tmp_path / "o" / "customer_decisions.csv", dtype=str)
    assert out["d_because"].tolist() == ["vip since 2026-01-02, x 1.5", "since long ago"]


def test_decisions_as_one_workbook_with_a_summary(tmp_path):
    r = kam_here("run", "--output-format", "xlsx", "--out", str(tmp_path / "x"), "-q")
    assert r.returncode == 0, r.stderr
    assert kam_here("run", "--output-format", "xlsx", "--out", str(tmp_path / "y"), "-q").returncode == 0
    assert kam_here("run", "--out", str(tmp_path / "c"), "-q").returncode == 0
    path = tmp_path / "x" / "decisions.xlsx"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["decisions.xlsx", "manifest.json"]
    assert path.read_bytes() == (tmp_path / "y" / "decisions.xlsx").read_bytes()  # the same run, the same bytes
    book = CalamineWorkbook.from_path(str(path))
    assert book.sheet_names == ["summary", "customer", "quote", "prospect"]
    manifest = json.loads((tmp_path / "x" / "manifest.json").read_text(encoding="utf-8"))
    assert [(o["entity"], o["path"], o["sheet"]) for o in manifest["outputs"]] == \
        [(e, "decisions.xlsx", e) for e in ("customer", "quote", "prospect")]
    for entity in ("customer", "quote", "prospect"):
        rows = book.get_sheet_by_name(entity).to_python()
        csv = pd.read_csv(tmp_path / "c" / f"{entity}_decisions.csv", dtype=str, keep_default_na=False)
        # the decisions first, in the CSV's order, under readable headers; the facts and figures after them
        assert rows[0][0] == f"{entity} id" and rows[0][2] == rows[0][1] + ": rule" and len(rows) == len(csv) + 1
        assert len(rows[0]) > len(csv.columns)
        for j, column in enumerate(csv.columns):
            cells = [row[j] for row in rows[1:]]
            if column.endswith("_id"):  # ids stay text, leading zeros and all
                assert cells == csv[column].tolist(), column
            elif all(isinstance(v, (int, float)) or v == "" for v in cells) and any(v != "" for v in cells):
                assert [float(v) if v != "" else None for v in cells] == \
                    [float(v) if v else None for v in csv[column]], column
            elif all(isinstance(v, bool) or v == "" for v in cells):
                assert ["" if v == "" else str(v).lower() for v in cells] == csv[column].tolist(), column
            else:  # text, Chinese included, and collected lists as `a, b`
                assert cells == csv[column].tolist(), column
    summary = book.get_sheet_by_name("summary").to_python()
    header = summary.index(["decision", "value", "count", "share", "revenue (CN¥)", "gross margin (CN¥)",
                            "cost to serve (CN¥)", "profit (CN¥)"])
    tiers = {row[1]: int(row[2]) for row in summary[header + 1:] if row[0] == "tier"}
    assert tiers == manifest["decision_counts"]["customer"]["tier"]
    with zipfile.ZipFile(path) as z:  # the header stays in view and every sheet can be filtered
        xml = z.read("xl/worksheets/sheet2.xml").decode()
        table = z.read("xl/tables/table1.xml").decode()
    assert 'state="frozen"' in xml and "<tablePart" in xml and "<autoFilter" in table


def test_csv_with_a_byte_order_mark_for_excel(tmp_path):
    r = kam_here("run", "--csv-bom", "--out", str(tmp_path / "b"), "-q")
    assert r.returncode == 0, r.stderr
    assert kam_here("run", "--out", str(tmp_path / "c"), "-q").returncode == 0
    for entity in ("customer", "quote", "prospect"):
        data = (tmp_path / "b" / f"{entity}_decisions.csv").read_bytes()
        assert data.startswith(b"\xef\xbb\xbf") and data[3:] == (tmp_path / "c" / f"{entity}_decisions.csv").read_bytes()
    r = kam_here("run", "--csv-bom", "--output-format", "parquet", "--out", str(tmp_path / "p"))
    assert r.returncode == 2 and "--csv-bom is for --output-format csv" in r.stderr and not (tmp_path / "p").exists()


@pytest.mark.parametrize("rows", [1_048_576])
def test_a_sheet_too_long_for_excel_is_refused_before_anything_is_written(tmp_path, rows):
    from engine.language.errors import InputError
    from engine.batch.write import write_workbook

    with pytest.raises(InputError) as exc:
        write_workbook({"customer": pd.DataFrame({"customer_id": pd.RangeIndex(rows).astype(str)})},
                       tmp_path / "d.xlsx")
    assert "at most 1,048,575 rows" in str(exc.value) and not (tmp_path / "d.xlsx").exists()


# -- workbooks from outside, bounded ------------------------------------------------------------------

CUSTOMER_POLICY = """
policy: c
entity: customer
facts:
  customer_id: {type: string, key: true}
  profit: {type: number}
decisions:
  tier:
    values: [A, B]
    rules:
      - {id: a, when: profit > 10000, then: A}
      - {id: b, then: B}
"""


def _with_sheet(source: Path, path: Path, rows: int, row: bytes, lie: bool = False) -> Path:
    """`source` with its sheet replaced by `rows` copies of `row` (a zip bomb when the row repeats well);
    `lie`: the zip directory and the local header say the sheet unpacks to twice its packed size."""
    src = zipfile.ZipFile(source)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for info in src.infolist():
            if info.filename == "xl/worksheets/sheet1.xml":
                with out.open(info.filename, "w") as fh:
                    fh.write(b"<worksheet><sheetData>")
                    block = row * 1000
                    for _ in range(rows // 1000):
                        fh.write(block)
                    fh.write(b"</sheetData></worksheet>")
            else:
                out.writestr(info, src.read(info))
    if lie:
        data = bytearray(path.read_bytes())
        info = zipfile.ZipFile(path).getinfo("xl/worksheets/sheet1.xml")
        small = (info.compress_size * 2).to_bytes(4, "little")
        data[info.header_offset + 22: info.header_offset + 26] = small  # the local header's size
        central = data.index(b"PK\x01\x02" + data[data.index(b"PK\x01\x02") + 4:][:0])
        while True:  # the sheet's entry in the central directory
            name_len = int.from_bytes(data[central + 28: central + 30], "little")
            if data[central + 46: central + 46 + name_len] == b"xl/worksheets/sheet1.xml":
                data[central + 24: central + 28] = small
                break
            extra = int.from_bytes(data[central + 30: central + 32], "little")
            comment = int.from_bytes(data[central + 32: central + 34], "little")
            central += 46 + name_len + extra + comment
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("lie", [False, True], ids=["directory", "lying-directory"])
def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path, lie):
    """A 3 MB workbook holding a 3 GiB sheet ran the reader past 16 GB. A sheet that packs far better
    than real sheets do is refused from the zip directory, or, where the directory lies about the
    size, while it is unpacked: the reader never sees it."""
    import resource

    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    row = b'<row><c t="inlineStr"><is><t>' + b"A" * 1000 + b"</t></is></c></row>"
    bomb = _with_sheet(plain, tmp_path / "bomb.xlsx", 20_000, row, lie)
    assert bomb.stat().st_size < 200_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={bomb}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "error[input-workbook]: bomb.xlsx is not a workbook kam reads: its part xl/worksheets/sheet1.xml " \
           "unpacks to" in r.stderr
    assert ("at least" in r.stderr) == lie  # counted while unpacking where the directory lied
    assert not (tmp_path / "o").exists()
    # the 20 MB sheet was never held: the process grew by far less than it
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 15_000  # kilobytes


def test_a_workbook_of_ordinary_size_and_packing_is_read(tmp_path):
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    # 40,000 rows of varied ids pack like a real sheet
    rows = b"".join(b'<row><c t="inlineStr"><is><t>%06d</t></is></c><c><v>%d</v></c></row>' % (i, i * 7919 % 100003)
                    for i in range(40_000))
    header = b'<row><c t="inlineStr"><is><t>customer_id</t></is></c><c t="inlineStr"><is><t>profit</t></is></c></row>'
    src = zipfile.ZipFile(plain)
    with zipfile.ZipFile(tmp_path / "real.xlsx", "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = b"<worksheet><sheetData>" + header + rows + b"</sheetData></worksheet>"
            out.writestr(info.filename, data)
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={tmp_path / 'real.xlsx'}",
                 "--out", str(tmp_path / "o"), "-q")
    assert r.returncode == 0, r.stderr
    assert len(pd.read_csv(tmp_path / "o" / "customer_decisions.csv")) == 40_000


def test_a_cell_longer_than_excel_allows_is_refused(tmp_path):
    """Excel holds 32,767 characters in a cell (XlsxWriter cuts longer texts); a longer one was made by
    something else, and an id that long is no id."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    src = zipfile.ZipFile(plain)
    with zipfile.ZipFile(tmp_path / "long.xlsx", "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = (b'<worksheet><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>customer_id</t></is></c>'
                        b'<c r="B1" t="inlineStr"><is><t>profit</t></is></c></row><row r="2"><c r="A2" t="inlineStr">'
                        b'<is><t>001</t></is></c><c r="B2"><v>5</v></c></row><row r="3"><c r="A3" t="inlineStr">'
                        b"<is><t>" + b"x" * 40_000 + b'</t></is></c><c r="B3"><v>7</v></c></row>'
                        b"</sheetData></worksheet>")
            out.writestr(info.filename, data)
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={tmp_path / 'long.xlsx'}",
                 "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "customers!A3 holds 40,000 characters; an Excel cell holds at most 32,767" in r.stderr


@pytest.mark.parametrize("engine", ["openpyxl", "xlsxwriter"])
def test_a_formula_without_a_calculated_value_is_refused_with_its_cell(tmp_path, engine):
    """pandas `to_excel` writes a text starting with = as a formula: openpyxl stores no value (read as
    an empty fact: the customer moved from C to D with exit 0), XlsxWriter a placeholder 0. Both ask
    the spreadsheet to calculate on opening; no spreadsheet has, so the cell is refused."""
    pytest.importorskip(engine)
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    path = tmp_path / f"{engine}.xlsx"
    pd.DataFrame({"customer_id": ["001", "002", "003"], "note": ["=1+1", "", ""],
                  "profit": ["=10000+898.16", 5, "=2*3"]}).to_excel(path, index=False, engine=engine,
                                                                   sheet_name="customers")
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={path}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "error[input-formula]: customers!C2, C4 hold formulas" in r.stderr  # not B2: no policy reads `note`
    assert "(=10000+898.16" in r.stderr and "open and save the workbook in Excel" in r.stderr
    assert not (tmp_path / "o").exists()


def _rewritten(source: Path, path: Path, change: dict[str, Callable[[bytes], bytes]]) -> Path:
    """`source` with some of its parts changed."""
    src = zipfile.ZipFile(source)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            out.writestr(info.filename, change.get(info.filename, lambda b: b)(data))
    return path


REWRITES = {
    # what the XML standard allows and Excel or other writers produce, each once bypassed the formula check
    "r:id before name": {"xl/workbook.xml": lambda b: re.sub(
        rb'<sheet name="customers" sheetId="1" state="visible" r:id="rId1" ?/>',
        b'<sheet r:id="rId1" sheetId="1" name="customers"/>', b)},
    "name with character references": {"xl/workbook.xml": lambda b: b.replace(b'name="customers"',
                                                                              b'name="&#99;ustomer&#x73;"')},
    "cells and rows without references": {"xl/worksheets/sheet1.xml": lambda b: re.sub(rb' r="[A-Z]*[0-9]+"', b"", b)},
    # found by an outside tester after the three above were fixed: each hid the formula cells
    "single quotes": {"xl/workbook.xml": lambda b: b.replace(b'name="customers" sheetId="1" state="visible" '
                                                               b'r:id="rId1"', b"name='customers' sheetId='1' r:id='rId1'"),
                      "xl/_rels/workbook.xml.rels": lambda b: b.replace(b'Target="/xl/worksheets/sheet1.xml" Id="rId1"',
                                                                        b"Target = '/xl/worksheets/sheet1.xml' Id='rId1'")},
    "a prefix with a hyphen": {"xl/workbook.xml": lambda b: b.replace(b"xmlns:r=", b"xmlns:r-1=")
                               .replace(b"r:id=", b"r-1:id=")},
    "part names in capitals": {"xl/_rels/workbook.xml.rels": lambda b: b.replace(b"/xl/worksheets/sheet1.xml",
                                                                                 b"/XL/Worksheets/Sheet1.xml")},
    "a commented relationship": {"xl/_rels/workbook.xml.rels": lambda b: b.replace(
        b"</Relationships>", b'<!-- <Relationship Target="styles.xml" Id="rId1"/> --></Relationships>')},
    "a prefixed formula element": {"xl/worksheets/sheet1.xml": lambda b: b.replace(
        b"<worksheet ", b'<worksheet xmlns:m-1="http://schemas.openxmlformats.org/spreadsheetml/2006/main" ', 1)
        .replace(b"<f>", b"<m-1:f>").replace(b"</f>", b"</m-1:f>")},
    "a commented cell before the formula": {"xl/worksheets/sheet1.xml": lambda b: re.sub(
        rb'<c r="C([0-9])"', rb'<!-- <c r="Y\1"/> --><c', b)},
}


@pytest.mark.parametrize("rewrite", list(REWRITES))
def test_the_formula_check_holds_however_the_workbook_is_written(tmp_path, rewrite):
    pytest.importorskip("openpyxl")
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    path = tmp_path / "book.xlsx"
    pd.DataFrame({"customer_id": ["001", "002", "003"], "note": ["=1+1", "", ""],
                  "profit": ["=10000+898.16", 5, "=2*3"]}).to_excel(path, index=False, engine="openpyxl",
                                                                   sheet_name="customers")
    changed = _rewritten(path, tmp_path / "changed.xlsx", REWRITES[rewrite])
    assert any(zipfile.ZipFile(changed).read(part) != zipfile.ZipFile(path).read(part) for part in REWRITES[rewrite])
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={changed}", "--out",
                 str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "error[input-formula]: customers!C2, C4 hold formulas" in r.stderr


@pytest.mark.parametrize("calc", ["fullCalcOnLoad='1'", 'fullCalcOnLoad = "1"', 'fullCalcOnLoad="&#49;"',
                                  'fullCalcOnLoad=" 1 "', 'fullCalcOnLoad="true"'])
def test_a_request_to_calculate_is_read_however_it_is_written(tmp_path, calc):
    """XlsxWriter stores a placeholder 0 with each formula and asks to be calculated when opened; written
    differently, the request went unseen and the 0 was read as the calculated value."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    path = tmp_path / "book.xlsx"
    pd.DataFrame({"customer_id": ["001", "002"], "profit": ["=10000+898.16", 5]}).to_excel(
        path, index=False, engine="xlsxwriter", sheet_name="customers")
    changed = _rewritten(path, tmp_path / "changed.xlsx", {"xl/workbook.xml": lambda b: b.replace(
        b'fullCalcOnLoad="1"', calc.encode())})
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={changed}", "--out",
                 str(tmp_path / "o"))
    assert r.returncode == 2 and "error[input-formula]: customers!B2 holds a formula" in r.stderr, r.stderr


def _plus_parts(source: Path, path: Path, parts: dict[str, bytes]) -> Path:
    """`source` with more parts."""
    src = zipfile.ZipFile(source)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info))
        for name, data in parts.items():
            out.writestr(name, data)
    return path


def test_thousands_of_small_parts_that_pack_too_well_are_refused(tmp_path):
    """5,000 parts of 1 MiB of zeros (each within the per-part bounds) took 13 s to unpack: the bounds
    hold for the workbook as a whole too, from the directory, before anything is unpacked."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    zeros = b"\0" * (1 << 20)
    _plus_parts(plain, tmp_path / "many.xlsx", {f"xl/media/pad{i}.bin": zeros for i in range(200)})
    assert (tmp_path / "many.xlsx").stat().st_size < 1 << 20
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={tmp_path / 'many.xlsx'}",
                 "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "many.xlsx is not a workbook kam reads: its parts together unpack to 200.0 MiB from " in r.stderr
    # a directory that hides the parts' sizes is caught while they are unpacked
    from engine.batch import workbook as wb

    with pytest.raises(InputError, match="its parts together unpack to at least"):
        tally = wb.Tally()
        with zipfile.ZipFile(tmp_path / "many.xlsx") as z:
            for info in z.infolist():
                for _ in wb._stream(tmp_path / "many.xlsx", info, tally):
                    pass


def test_a_workbook_of_too_many_parts_is_refused(tmp_path):
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    _plus_parts(plain, tmp_path / "parts.xlsx", {f"xl/media/p{i}": b"" for i in range(10_001)})
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={tmp_path / 'parts.xlsx'}",
                 "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert re.search(r"parts.xlsx is not a workbook kam reads: it holds 10,0\d\d parts \(kam reads workbooks of up "
                     r"to 10,000\)", r.stderr), r.stderr


def test_formulas_with_values_saved_by_a_spreadsheet_are_read(tmp_path):
    """What Excel saves: the formula and its last result (no request to calculate on opening)."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    src = zipfile.ZipFile(plain)
    with zipfile.ZipFile(tmp_path / "saved.xlsx", "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = (b'<worksheet><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>customer_id</t></is></c>'
                        b'<c r="B1" t="inlineStr"><is><t>profit</t></is></c></row><row r="2"><c r="A2" t="inlineStr">'
                        b'<is><t>001</t></is></c><c r="B2"><f>10000+898.16</f><v>10898.16</v></c></row>'
                        b"</sheetData></worksheet>")
            elif info.filename == "xl/workbook.xml":
                data = data.replace(b' fullCalcOnLoad="1"', b"")
            out.writestr(info.filename, data)
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={tmp_path / 'saved.xlsx'}",
                 "--out", str(tmp_path / "o"), "-q")
    assert r.returncode == 0, r.stderr
    assert pd.read_csv(tmp_path / "o" / "customer_decisions.csv", dtype=str)["tier"].tolist() == ["A"]


def test_an_old_excel_file_gets_a_hint(tmp_path):
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    old = tmp_path / "crm.xls"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    for given in (str(old), f"{old}"):
        r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={given}",
                     "--out", str(tmp_path / "o"))
        assert r.returncode == 2 and "save it as .xlsx" in r.stderr, r.stderr
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={old}", "--facts-format", "xlsx",
                 "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "it is an old Excel file (.xls)" in r.stderr, r.stderr


def test_a_text_longer_than_a_cell_is_never_cut_in_the_workbook(tmp_path):
    """XlsxWriter cuts a text past 32,767 characters, an id's included, and says nothing."""
    folder = tmp_path / "p"
    write_policy(folder, "c.yaml", CUSTOMER_POLICY.replace("{id: b, then: B}", '{id: b, then: B, because: "{note}"}')
                 .replace("  profit: {type: number}", "  profit: {type: number}\n  note: {type: string}"))
    (tmp_path / "c.csv").write_text(f"customer_id,profit,note\n001,5,{'n' * 40_000}\n002,7,short\n", encoding="utf-8")
    out = tmp_path / "o"
    r = kam_here("run", "--policies", str(folder), "--input", f"customer={tmp_path / 'c.csv'}", "--out", str(out),
                 "--output-format", "xlsx")
    assert r.returncode == 2, r.stderr
    assert "decisions.xlsx: error[output-xlsx]: customer 001: its `tier_because` holds 40,000 characters, and an " \
           "Excel cell holds at most 32,767" in r.stderr
    assert ".kam-" not in r.stderr  # the file is named, not the folder it was being made in
    assert not out.exists()
    r = kam_here("run", "--policies", str(folder), "--input", f"customer={tmp_path / 'c.csv'}", "--out", str(out), "-q")
    assert r.returncode == 0 and len(pd.read_csv(out / "customer_decisions.csv")["tier_because"][0]) == 40_000
    # Excel (and XlsxWriter) count UTF-16 units: 20,000 emoji are 40,000 of them
    (tmp_path / "c.csv").write_text(f"customer_id,profit,note\n001,5,{'😀' * 20_000}\n", encoding="utf-8")
    r = kam_here("run", "--policies", str(folder), "--input", f"customer={tmp_path / 'c.csv'}", "--out",
                 str(tmp_path / "o2"), "--output-format", "xlsx")
    assert r.returncode == 2, r.stderr
    assert "customer 001: its `tier_because` holds 40,000 characters, and an Excel cell holds at most 32,767" \
        in r.stderr


def test_a_data_folder_with_an_old_excel_file_says_what_to_do(tmp_path):
    """`--data` with customers.xls only said "no facts file": the file is there, in a format kam cannot read."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "customers.xls").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 512)
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--data", str(tmp_path / "data"), "--out",
                 str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "no facts file for entity `customer`" in r.stderr
    assert "hint: customers.xls is an old Excel file (.xls): open it in Excel and save it as .xlsx" in r.stderr


@pytest.mark.parametrize("cell", [b'<row r="1048576"><c r="XFD1048576" t="n"><v>1</v></c></row>',
                                  b"<row r='7'><c r = 'ZZ1048576' t='n'><v>1</v></c></row>",
                                  b'<row><c r="B99999999999999999999" t="n"><v>1</v></c></row>'])
def test_a_cell_placed_far_away_is_refused_before_the_reader_makes_room_for_it(tmp_path, cell):
    """A 5 KB workbook with one cell at XFD1048576 made the reader ask for 512 GiB (the process was
    killed): how far a sheet's cells reach is bounded like its size."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    far = _rewritten(plain, tmp_path / "far.xlsx", {"xl/worksheets/sheet1.xml": lambda b: b.replace(
        b"</sheetData>", cell + b"</sheetData>")})
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={far}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "far.xlsx is not a workbook kam reads: its part xl/worksheets/sheet1.xml places a cell at row" in r.stderr


def test_sheet_names_stay_apart_from_the_summary_and_each_other(tmp_path):
    """An entity named `summary`, or two whose names share their first 31 characters, was a
    DuplicateWorksheetName traceback."""
    from openpyxl import load_workbook

    from engine.batch.write import write_workbook

    frame = pd.DataFrame({"id": ["1"], "tier": ["A"], "tier_rule": ["a"], "tier_because": ["x"]})
    long = "prospect_of_the_northern_region_" + "a"
    write_workbook({"summary": frame, "Customer": frame, long: frame, long[:-1] + "b": frame}, tmp_path / "d.xlsx")
    names = load_workbook(tmp_path / "d.xlsx").sheetnames
    assert names == ["summary", "summary (2)", "Customer", long[:31], long[:27] + " (2)"]


def test_a_formula_whose_result_is_an_error_is_refused(tmp_path):
    """Excel saves `=1/0` as the error `#DIV/0!`; the reader gave it as an empty cell, a missing fact
    (the same text in a CSV is refused)."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5], ["002", 7]]})
    bad = _rewritten(plain, tmp_path / "err.xlsx", {"xl/worksheets/sheet1.xml": lambda b: re.sub(
        rb'<c r="B3"[^>]*>.*?</c>', b'<c r="B3" t="e"><f>1/0</f><v>#DIV/0!</v></c>', b)})
    assert b"#DIV/0!" in zipfile.ZipFile(bad).read("xl/worksheets/sheet1.xml")
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={bad}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2, r.stderr
    assert "customers!B3 holds a formula whose result is an error (#DIV/0!, from =1/0)" in r.stderr


def test_a_far_cell_across_the_pieces_a_part_is_read_in_is_still_found(tmp_path):
    """The bounds read a part a megabyte at a time: a cell whose tag straddles two pieces (padded with
    attributes past any fixed overlap) is found all the same."""
    write_policy(tmp_path / "p", "c.yaml", CUSTOMER_POLICY)
    plain = workbook(tmp_path / "plain.xlsx", {"customers": [["customer_id", "profit"], ["001", 5]]})
    sheet = zipfile.ZipFile(plain).read("xl/worksheets/sheet1.xml")
    at = sheet.index(b"</sheetData>")
    row = b"<row><c><v>1</v></c></row>"
    filler = row * ((1_048_576 - 2_500 - at) // len(row))  # the first megabyte ends inside the far cell's tag
    far = b'<row><c ' + b'x="' + b"y" * 5000 + b'" r="XFD1048576"><v>1</v></c></row>'
    assert at + len(filler) < 1_048_576 < at + len(filler) + len(far)
    path = tmp_path / "far.xlsx"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in zipfile.ZipFile(plain).infolist():
            data = zipfile.ZipFile(plain).read(info)
            out.writestr(info.filename, sheet[:at] + filler + far + sheet[at:] if info.filename ==
                         "xl/worksheets/sheet1.xml" else data)
    r = kam_here("run", "--policies", str(tmp_path / "p"), "--input", f"customer={path}", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "places a cell at row 1,048,576, column 16,384" in r.stderr, r.stderr
