"""Excel in and out: facts from a workbook (a sheet per entity, or FILE.xlsx#Sheet) with every check
naming its cell, decisions as one workbook with a summary sheet, and CSV with a byte order mark."""

from __future__ import annotations

import datetime
import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import xlsxwriter
from python_calamine import CalamineWorkbook

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
        assert rows[0] == list(csv.columns) and len(rows) == len(csv) + 1
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
    assert summary[0] == ["entity", "decision", "value", "count", "share"]
    tiers = {row[2]: int(row[3]) for row in summary[1:] if row[:2] == ["customer", "tier"]}
    assert tiers == manifest["decision_counts"]["customer"]["tier"]
    with zipfile.ZipFile(path) as z:  # the header stays in view and every sheet can be filtered
        xml = z.read("xl/worksheets/sheet2.xml").decode()
    assert 'state="frozen"' in xml and "<autoFilter" in xml


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
    from engine.errors import InputError
    from engine.write import write_workbook

    with pytest.raises(InputError) as exc:
        write_workbook({"customer": pd.DataFrame({"customer_id": pd.RangeIndex(rows).astype(str)})},
                       tmp_path / "d.xlsx")
    assert "at most 1,048,575 rows" in str(exc.value) and not (tmp_path / "d.xlsx").exists()
