"""The decisions workbook a finance controller reads (`kam run --output-format xlsx`): every entity's
sheet one Excel table of its decisions, facts and derived figures, typed and formatted by their units,
a summary of the run with its measures and the money per decision value, and print settings that
cut nothing. Read back with openpyxl and compared with a CSV run of the same inputs."""

from __future__ import annotations

import json
import math
import re
import zipfile

import pandas as pd
import pytest
from openpyxl import load_workbook

from engine.language.figures import excel_format
from engine.language.units import COUNT, MONEY, PERCENT, Unit

from .conftest import ROOT, kam_here, write_policy

pytestmark = pytest.mark.xdist_group("decisions_workbook")  # one run of the examples for the module

ENTITIES = ("customer", "quote", "prospect")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped policies over the examples, as a workbook and as CSV, and the run's own figures."""
    from engine.run import service

    out = tmp_path_factory.mktemp("book")
    r = kam_here("run", "--output-format", "xlsx", "--out", str(out / "x"), "-q")
    assert r.returncode == 0, r.stderr
    r = kam_here("run", "--out", str(out / "c"), "-q")
    assert r.returncode == 0, r.stderr
    book = load_workbook(out / "x" / "decisions.xlsx")
    csv = {e: pd.read_csv(out / "c" / f"{e}_decisions.csv", dtype=str, keep_default_na=False) for e in ENTITIES}
    manifest = json.loads((out / "x" / "manifest.json").read_text(encoding="utf-8"))
    result, _ = service.decide_files(service.compile_for_run(ROOT / "policies"), ROOT / "examples", {})
    return book, csv, manifest, result, out / "x" / "decisions.xlsx"


def _table(ws, name):
    """A table's header and rows, as openpyxl reads its cells."""
    ref = ws.tables[name].ref
    rows = [list(row) for row in ws[ref]]
    return [c.value for c in rows[0]], rows[1:]


def test_excel_formats_come_from_the_unit():
    assert excel_format(Unit(MONEY, "CNY")) == "#,##0.00"
    assert excel_format(Unit(MONEY, "JPY", 0)) == "#,##0"
    assert excel_format(Unit(PERCENT)) == "0.0%"
    assert excel_format(Unit(PERCENT, decimals=2)) == "0.00%"
    assert excel_format(Unit(COUNT)) == "#,##0"
    assert excel_format(Unit()) == "General"
    assert excel_format(Unit(decimals=2)) == "#,##0.00"
    assert excel_format(None) == "General"


def test_each_sheet_is_one_table_of_the_decisions_then_the_facts_and_figures(shipped):
    book, csv, _, result, _ = shipped
    assert book.sheetnames == ["summary", *ENTITIES]
    for entity in ENTITIES:
        ws = book[entity]
        frame = csv[entity]
        table = ws.tables[f"{entity}_decisions"]
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", table.name)
        assert table.ref == f"A1:{ws.cell(1, ws.max_column).column_letter}{len(frame) + 1}"
        assert table.autoFilter.ref == table.ref and table.tableStyleInfo.showRowStripes
        assert ws.freeze_panes == "B2"  # the header row and the key column stay in view
        header, rows = _table(ws, table.name)
        for j, column in enumerate(frame.columns):
            cells = [row[j] for row in rows]
            if j == 0:  # the key: text, leading zeros kept
                assert [c.value for c in cells] == frame[column].tolist()
                assert {c.data_type for c in cells} == {"s"}
            elif all(v == "" or re.fullmatch(r"-?\d+(\.\d+)?", v) for v in frame[column]):
                assert [c.value for c in cells] == [float(v) if v else None for v in frame[column]], column
                assert {c.data_type for c in cells if c.value is not None} == {"n"}, column
            else:
                assert [c.value for c in cells] == [v or None for v in frame[column]], column
                assert {c.data_type for c in cells if c.value is not None} == {"s"}, column
        facts = result.frames_in[entity]
        features = result.features(entity)
        for j, label in enumerate(header[len(frame.columns):], start=len(frame.columns)):
            name = next(n for n in [*facts.columns, *features.columns, "tier"]
                        if re.sub(r" \((CN¥|%)\)$", "", label) == n.replace("_", " "))
            source = facts[name] if name in facts.columns else features[name] if name in features.columns \
                else result.results[entity].ctx.env[name].categories[result.results[entity].ctx.env[name].codes]
            values = [c.value for c in (row[j] for row in rows)]
            expected = [None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                        else bool(v) if isinstance(v, bool) or pd.api.types.is_bool_dtype(source.dtype)
                        else float(v) if isinstance(v, (int, float)) else str(v) for v in source.tolist()]
            if entity == "quote" and name == "tier":  # quotes of unknown customers have no tier
                expected = [None if c == -1 else v for v, c in zip(expected, result.results[entity].ctx.env[name].codes)]
            assert values == expected, label
    customer = book["customer"]
    header = [c.value for c in customer[1]]
    assert header[:7] == ["customer id", "protected by", "protected by: rule", "protected by: why", "tier",
                          "tier: rule", "tier: why"]
    assert header[24:28] == ["revenue (CN¥)", "gross margin (CN¥)", "cost to serve (CN¥)", "profit (CN¥)"]
    assert [c.value for c in book["quote"][1]] == [
        "quote id", "approval", "approval: rule", "approval: why", "customer id", "list price (CN¥)",
        "quoted price (CN¥)", "tier", "floor ratio", "floor price (CN¥)", "gap (CN¥)", "shortfall (CN¥)",
        "shortfall share", "escalation band"]


def test_cells_are_typed_and_formatted_by_their_unit(shipped):
    book, _, _, result, _ = shipped
    ws = book["customer"]
    header = [c.value for c in ws[1]]
    row = {h: c for h, c in zip(header, ws[2])}
    facts = result.frames_in["customer"].iloc[0]
    features = result.features("customer").iloc[0]
    assert row["revenue (CN¥)"].value == facts["revenue"] and row["revenue (CN¥)"].number_format == "#,##0.00"
    assert row["profit (CN¥)"].data_type == "n" and row["profit (CN¥)"].number_format == "#,##0.00"
    assert row["profit share"].value == features["profit_share"]
    assert row["profit share"].number_format == "0.0%"
    assert row["revenue growth"].number_format == "0.0%"
    assert row["orders 12m"].number_format == "#,##0" and row["orders 12m"].value == facts["orders_12m"]
    assert row["value score"].number_format == "#,##0.00"  # `units: value_score: {decimals: 2}`
    assert row["tenure years"].number_format == "General"
    assert row["strategic account"].data_type == "b" and row["strategic account"].value is bool(facts["strategic_account"])
    assert row["in pareto top"].value is bool(features["in_pareto_top"])
    assert row["customer id"].number_format == "@"
    assert row["tier: why"].alignment.wrap_text  # long reasons wrap
    # a missing value is an empty cell, not a zero or a text
    missing = result.features("customer")["chicken_rib"].isna().to_numpy().nonzero()[0]
    assert len(missing) and ws.cell(int(missing[0]) + 2, header.index("chicken rib") + 1).value is None
    widths = {c: ws.column_dimensions[c].width for c in ("A", "D", "E")}
    assert 8 <= widths["E"] < 15 and 40 <= widths["D"] <= 63  # sized to content, reasons bounded


def test_the_summary_states_the_run_its_measures_and_the_money_of_each_decision(shipped):
    book, csv, manifest, result, _ = shipped
    ws = book["summary"]
    about = {row[0].value: row[1].value for row in ws.iter_rows(min_row=3, max_row=8)}
    assert about["policy hash"] == manifest["policy_set"]["sha256"]
    assert about["kam version"] == manifest["kam_version"] and about["policies"] == "policies"
    assert about["policy files"] == ", ".join(manifest["policy_set"]["policies"])
    header, rows = _table(ws, "inputs")
    assert header == ["entity", "file", "rows"]
    assert [[c.value for c in row] for row in rows] == [[i["entity"], i["path"], i["rows"]] for i in manifest["inputs"]]
    header, rows = _table(ws, "measures")
    measures = {(row[0].value, row[1].value): row[2] for row in rows}
    expected = result.measures()["customer"]
    assert {m: measures[("customer", m.replace("_", " "))].value for m in expected} == expected
    assert measures[("customer", "key account profit share")].number_format == "0.0%"
    assert measures[("customer", "profit lost to loss makers")].number_format == "#,##0.00"
    assert measures[("customer", "customers")].number_format == "#,##0"

    header, rows = _table(ws, "customer_decisions_summary")
    assert header == ["decision", "value", "count", "share", "revenue (CN¥)", "gross margin (CN¥)",
                      "cost to serve (CN¥)", "profit (CN¥)"]
    table = {(row[0].value, row[1].value): row for row in rows}
    facts = pd.read_csv(ROOT / "examples" / "customers.csv", dtype={"customer_id": str})
    tiers = csv["customer"].set_index("customer_id")["tier"]
    facts["tier"] = facts["customer_id"].map(tiers)
    assert [v for d, v in table if d == "tier"] == ["A", "B", "C", "D"]  # in the order the policy declares
    for tier, group in facts.groupby("tier"):
        row = table[("tier", tier)]
        assert row[2].value == len(group) and row[3].value == len(group) / len(facts)
        assert row[3].number_format == "0.0%" and row[4].number_format == "#,##0.00"
        assert row[4].value == math.fsum(group["revenue"]) and row[7].value == math.fsum(group["profit"])
    assert table[("all", "every customer")][4].value == math.fsum(facts["revenue"])
    exit_ = csv["customer"]["retention"] == "exit"  # the revenue we would let go
    assert table[("retention", "exit")][4].value == math.fsum(facts.loc[exit_.to_numpy(), "revenue"])
    assert table[("protected by", "big-profitable, strategic-new")][2].value == 2
    counts = manifest["decision_counts"]["customer"]["protected_by"]
    assert {v: row[2].value for (d, v), row in table.items() if d == "protected by"} == counts


def test_every_sheet_prints_one_page_wide_with_its_header_on_every_page(shipped):
    book, manifest = shipped[0], shipped[2]
    for ws in book:
        setup = ws.page_setup
        assert ws.sheet_properties.pageSetUpPr.fitToPage and setup.fitToHeight == 0 and setup.fitToWidth in (None, 1)
        assert ws.print_title_rows == "$1:$1", ws.title
        assert setup.orientation == "landscape", ws.title  # every shipped sheet is wider than a portrait page
        assert ws.oddHeader.left.text == "&A" and ws.oddFooter.right.text == "Page &P of &N"
        assert ws.oddHeader.right.text == f"policies/ {manifest['policy_set']['sha256'][:12]}"
        assert ws.page_margins.left == 0.4


def test_the_same_run_writes_the_same_bytes_and_no_formula(shipped, tmp_path):
    path = shipped[4]
    assert kam_here("run", "--output-format", "xlsx", "--out", str(tmp_path / "y"), "-q").returncode == 0
    assert (tmp_path / "y" / "decisions.xlsx").read_bytes() == path.read_bytes()
    with zipfile.ZipFile(path) as z:
        assert not any(b"<f>" in z.read(n) for n in z.namelist() if n.startswith("xl/worksheets/"))


HOSTILE = ['=HYPERLINK("http://x","y")', "+1", "-2+3", "@SUM(A1)", "a\x01b\rc", "_x0041_ & <b>", "鸡肋客户 😀"]


def excel_text(text):
    """A cell's text as Excel reads it: `_xHHHH_` is the character HHHH (`_x005F_` a literal `_`), an
    escape that openpyxl leaves as it is."""
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), text) if isinstance(text, str) else text


def test_text_from_files_stays_text_whatever_it_starts_with(tmp_path):
    """Ids, fact texts and reasons that look like formulas, hold control characters, XML's own
    characters, Excel's escape for them or spaces at their ends read back exactly as the Parquet
    run writes them, as text cells."""
    write_policy(tmp_path / "p", "c.yaml", """
        policy: c
        entity: customer
        description: A test.
        currency: EUR
        facts:
          customer_id: {type: string, key: true}
          note: {type: string}
          profit: {type: number, unit: money, measure: true}
        decisions:
          tier:
            description: Account tier
            values: [A, B]
            rules:
              - {id: a, when: profit > 10, then: A, because: "  {note}"}
              - {id: b, then: B, because: "{note}  "}
        """)
    pd.DataFrame({"customer_id": HOSTILE, "note": HOSTILE, "profit": range(0, 35, 5)}).to_parquet(
        tmp_path / "c.parquet", index=False)
    run = ("run", "--policies", str(tmp_path / "p"), "--input", f"customer={tmp_path / 'c.parquet'}", "-q")
    assert kam_here(*run, "--out", str(tmp_path / "o"), "--output-format", "xlsx").returncode == 0
    assert kam_here(*run, "--out", str(tmp_path / "q"), "--output-format", "parquet").returncode == 0
    expected = pd.read_parquet(tmp_path / "q" / "customer_decisions.parquet")
    assert expected["tier_because"].tolist()[3:5] == ["  @SUM(A1)", "  a\x01b\rc"]
    ws = load_workbook(tmp_path / "o" / "decisions.xlsx")["customer"]
    header = [c.value for c in ws[1]]
    # a decision's description is its header where it is a short label; its rule and reason follow it
    assert header == ["customer id", "Account tier", "Account tier: rule", "Account tier: why", "note", "profit (€)"]
    for j, column in ((0, "customer_id"), (3, "tier_because"), (4, "note")):
        cells = [ws.cell(i + 2, j + 1) for i in range(len(HOSTILE))]
        want = expected[column].tolist() if column in expected else HOSTILE
        assert [excel_text(c.value) for c in cells] == want, header[j]
        assert {c.data_type for c in cells} == {"s"}
    assert [ws.cell(i + 2, 6).value for i in range(len(HOSTILE))] == list(range(0, 35, 5))
    assert ws["A1"].comment is not None and "fact `customer_id`" in ws["A1"].comment.text
    assert ws["B1"].comment.text == "Account tier\ndecision `tier` (c)"


def test_an_entity_without_rows_still_has_its_table(tmp_path):
    from engine.batch.write import write_workbook

    frame = pd.DataFrame({"id": pd.Series([], dtype=str), "tier": pd.Series([], dtype=str),
                          "tier_rule": pd.Series([], dtype=str), "tier_because": pd.Series([], dtype=str)})
    write_workbook({"customer": frame}, tmp_path / "d.xlsx")
    book = load_workbook(tmp_path / "d.xlsx")
    assert book["customer"].tables["customer_decisions"].ref == "A1:D2"
    assert [c.value for c in book["customer"][1]] == ["id", "tier", "tier: rule", "tier: why"]
    assert [c.value for c in book["customer"][2]] == [None] * 4
    header, rows = _table(book["summary"], "customer_decisions_summary")
    assert header == ["decision", "value", "count", "share"] and rows[0][2].value == 0


def test_rows_written_a_slice_at_a_time_are_all_there(tmp_path, monkeypatch):
    from engine.batch import workbook_out
    from engine.batch.write import write_workbook

    monkeypatch.setattr(workbook_out, "SLICE_CELLS", 10)  # slices of 1,000 rows
    n = 2_345
    frame = pd.DataFrame({"id": [f"{i:05d}" for i in range(n)], "x": [i / 7 if i % 3 else None for i in range(n)],
                          "ok": pd.array([bool(i % 2) if i % 5 else None for i in range(n)], dtype="boolean"),
                          "d": ["A" if i % 2 else "B" for i in range(n)], "d_rule": "r", "d_because": "why"})
    write_workbook({"e": frame}, tmp_path / "d.xlsx")
    ws = load_workbook(tmp_path / "d.xlsx")["e"]
    assert ws.tables["e_decisions"].ref == f"A1:F{n + 1}"
    got = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
    assert got == [[f"{i:05d}", i / 7 if i % 3 else None, bool(i % 2) if i % 5 else None,
                    "A" if i % 2 else "B", "r", "why"] for i in range(n)]


def test_a_recorded_period_is_named_on_the_summary_and_every_printed_page(shipped, tmp_path):
    from engine.batch.workbook_out import run_sheets, write_workbook

    result = shipped[3]
    write_workbook(result.outputs(), tmp_path / "d.xlsx", run_sheets(result, [], "2026-11"))
    book = load_workbook(tmp_path / "d.xlsx")
    assert book["summary"]["A3"].value == "period" and book["summary"]["B3"].value == "2026-11"
    assert book["quote"].oddHeader.right.text.startswith("period 2026-11 · policies/ ")
    assert "inputs" not in book["summary"].tables  # none given, none listed
