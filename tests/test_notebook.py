"""The Python API (engine.load_policies / run / explain / check): the README's example, the same
decisions as `kam run`, and the same checks of the frames as of the files."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import engine

from .conftest import ROOT, kam_here
from .helpers import compile_text


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("```python", text.index("## Python API")) + len("```python")
    return text[start: text.index("```", start)]


def test_the_readme_example_runs_as_written():
    r = subprocess.run([sys.executable, "-c", readme_example()], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert set(eval(lines[0])) == {"A", "B", "C", "D"}  # the mean value score per tier
    assert sum(eval(lines[1]).values()) == len(pd.read_csv(ROOT / "examples" / "quotes.csv"))
    assert "customer 000320" in r.stdout and "decision tier" in r.stdout
    assert lines[-1] == "[]"  # the shipped policies have no errors


@pytest.fixture(scope="module")
def examples() -> dict[str, pd.DataFrame]:
    ids = {"customer_id": str, "quote_id": str, "prospect_id": str}
    return {e: pd.read_csv(ROOT / "examples" / f"{e}s.csv", dtype=ids) for e in ("customer", "quote", "prospect")}


def test_the_decisions_are_those_kam_run_writes(examples, tmp_path):
    decided = engine.load_policies(ROOT / "policies").run(examples)
    assert kam_here("run", "--out", str(tmp_path / "out"), "-q").returncode == 0
    for entity in examples:
        written = pd.read_csv(tmp_path / "out" / f"{entity}_decisions.csv", dtype=str, keep_default_na=False)
        frame = decided[entity]
        assert list(frame.columns) == list(written.columns)
        for column in written.columns:
            got = frame[column]
            if pd.api.types.is_float_dtype(got):
                assert got.to_numpy().tolist() == written[column].astype(float).tolist(), column
            elif got.map(lambda v: isinstance(v, list)).any():  # collected lists: `a, b` in CSV
                assert got.map(", ".join).tolist() == written[column].tolist(), column
            else:
                assert got.fillna("").astype(str).tolist() == written[column].tolist(), column


def test_features_come_with_the_decisions_on_request(examples):
    policies = engine.load_policies(ROOT / "policies")
    plain = policies.run({"customer": examples["customer"]})
    with_features = policies.run({"customer": examples["customer"]}, features=True)
    extra = [c for c in with_features["customer"].columns if c not in plain["customer"].columns]
    assert {"profit_share", "value_score", "in_pareto_top"} <= set(extra)
    assert with_features["customer"]["value_score"].between(0, 1).all()
    assert set(plain) == {"customer"} and len(plain) == 1
    assert plain.counts()["customer"]["tier"]["A"] == (plain["customer"]["tier"] == "A").sum()
    assert str(plain.explain("000320")).startswith("customer 000320")
    assert plain.explain("000320").to_dict()["key"] == "000320"


def test_frames_get_the_checks_of_facts_files(examples):
    policies = engine.load_policies(ROOT / "policies")
    customers = examples["customer"].copy()
    customers["revenue"] = customers["revenue"].astype(object)
    customers.loc[3, "revenue"] = "lots"
    customers.loc[5, "credit_score"] = 500
    customers.index = customers.index + 100  # messages name the frame's own row labels
    with pytest.raises(engine.InputError) as exc:
        policies.run({"customer": customers})
    text = str(exc.value)
    assert "the customer frame" in text and "row 103 holds 'lots'" in text
    assert "above the maximum 100 at row 105: 500" in text
    # read without dtype=str, as pd.read_csv or pd.read_excel give them: ids as numbers, one mixed column
    quotes = pd.read_csv(ROOT / "examples" / "quotes.csv")
    with pytest.raises(engine.InputError) as exc:
        policies.run({"customer": examples["customer"], "quote": quotes})
    assert "ids must be text" in str(exc.value) and "dtype={'customer_id': str}" in str(exc.value)
    mixed = examples["customer"].astype({"customer_id": object})
    mixed.loc[0, "customer_id"] = 320
    with pytest.raises(engine.InputError) as exc:
        policies.run({"customer": mixed})
    assert "row 0 holds 320" in str(exc.value)
    with pytest.raises(engine.InputError) as exc:
        policies.run({"quote": examples["quote"]})
    assert "quote reads customer: pass its frame too" in str(exc.value)
    with pytest.raises(engine.InputError) as exc:
        policies.run({"custmer": examples["customer"]})
    assert "did you mean `customer`?" in str(exc.value)
    with pytest.raises(engine.InputError) as exc:
        policies.run({"customer": examples["customer"].drop(columns=["profit"])})
    assert "lacks the column `profit`" in str(exc.value)


INVARIANT = """
policy: t
entity: customer
facts:
  customer_id: {type: string, key: true}
  x: {type: number}
decisions:
  level:
    values: [high, low]
    rules:
      - {id: high, when: x > 10, then: high}
      - {id: low, then: low}
invariants:
  - {id: small-is-low, never: "level == 'high' and x < 100"}
"""


def test_broken_invariants_raise_unless_allowed_and_check_reports(tmp_path):
    compile_text(tmp_path, INVARIANT)
    folder = tmp_path / "p"
    policies = engine.load_policies(folder)
    frame = pd.DataFrame({"customer_id": ["a", "b"], "x": [50, 5]})
    with pytest.raises(engine.InvariantError) as exc:
        policies.run({"customer": frame})
    assert "small-is-low" in str(exc.value) and "a (level: high" in str(exc.value)
    decided = policies.run({"customer": frame}, allow_violations=True)
    assert decided["customer"]["level"].tolist() == ["high", "low"] and len(decided.violations) == 1
    found = engine.check(folder)
    assert any(p.code == "invariant-violated" and p.severity == "error" for p in found), [p.render() for p in found]
    assert engine.check(tmp_path / "nope")[0].code == "no-policy-dir"
    with pytest.raises(engine.PolicyError):
        engine.load_policies(tmp_path / "nope")


def test_a_frame_straight_from_read_excel_gets_messages_not_a_crash(tmp_path, examples):
    import xlsxwriter

    book = xlsxwriter.Workbook(str(tmp_path / "crm.xlsx"))
    sheet = book.add_worksheet("customers")
    frame = examples["customer"].head(3)
    sheet.write_row(0, 0, list(frame.columns))
    for r, row in enumerate(frame.itertuples(index=False), start=1):
        for c, v in enumerate(row):
            if not (isinstance(v, float) and v != v):
                sheet.write(r, c, v)
    sheet.write_number(2, 0, 123)  # one id typed as a number, beside ids typed as text
    book.close()
    excel = pd.read_excel(tmp_path / "crm.xlsx", engine="calamine")  # pandas makes numbers of all the ids
    with pytest.raises(engine.InputError) as exc:
        engine.load_policies(ROOT / "policies").run({"customer": excel})
    assert "column `customer_id` is stored as numbers" in str(exc.value) and "dtype={'customer_id': str}" in \
        str(exc.value)
    fixed = pd.read_excel(tmp_path / "crm.xlsx", engine="calamine", dtype={"customer_id": str})
    assert len(engine.load_policies(ROOT / "policies").run({"customer": fixed})["customer"]) == 3


NOTEBOOK = [
    "import engine, pandas as pd\npolicies = engine.load_policies('policies')\npolicies",
    "ids = {'customer_id': str, 'quote_id': str, 'prospect_id': str}\n"
    "frames = {e: pd.read_csv(f'examples/{e}s.csv', dtype=ids) for e in ('customer', 'quote', 'prospect')}\n"
    "decided = policies.run(frames)\ndecided",
    "decided.explain('000320')",
    "engine.check('policies')",
    "decided.summary().head(3)",
]


def test_a_notebook_shows_policies_results_and_explanations():
    """Executed headless in a real kernel: every cell's value displays as a readable table or trace,
    never as `<engine....object at 0x...>`."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in NOTEBOOK])
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    shown = []
    for cell in nb.cells:
        (out,) = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert " object at 0x" not in out.data["text/plain"], out.data["text/plain"]
        shown.append(out.data.get("text/html", ""))
    policies, decided, trace, problems, summary = shown
    assert "<caption>decisions</caption>" in policies and "key_share" in policies
    assert "<td>proved</td>" in policies and "value-customers-are-never-let-go" in policies
    assert "customer: decisions" in decided and "<td>tier</td>" in decided and "%</td>" in decided
    assert "customer: measures" in decided
    assert "<pre>customer 000320" in trace and "decision tier" in trace
    assert "<td class='where note'>note[invariant-proved]</td>" in problems
    assert "<th>share</th>" in summary  # pandas' own table of the summary frame


def test_what_a_notebook_shows_is_escaped(examples):
    """Ids, texts and messages come from files: shown as text, never as markup."""
    from engine.language.errors import Location
    from engine.surfaces import display

    hostile = "<script>alert(1)</script>"
    customers = examples["customer"].head(50).copy()
    customers.loc[0, "customer_id"] = hostile
    decided = engine.load_policies(ROOT / "policies").run({"customer": customers})
    page = decided.explain(hostile)._repr_html_()
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    problems = display.problems_html([engine.Problem("x", hostile, Location(hostile), hostile)])
    assert hostile not in problems and problems.count("&lt;script&gt;") == 3
    assert repr(decided) == "<Decisions customer: 50 rows>"
    assert repr(decided.explain(hostile)) == f"<Explanation customer {hostile}>"


def test_a_notebook_shows_figures_for_the_readers_locale(tmp_path):
    from .test_cli import _margins

    folder, facts = _margins(tmp_path)
    frame = pd.read_csv(facts, dtype={"customer_id": str})
    decided = engine.load_policies(folder, locale="de_DE").run({"customer": frame})
    shown = decided._repr_html_()
    assert '<td>margin_share</td><td class="n">59,6\xa0%</td>' in shown  # a percent measure as a percent
    assert '<td>total_profit (CN¥)</td><td class="n">1.234.567,89</td>' in shown
    assert "customer: 1.500 decided" in shown and '<td class="n">1.499</td>' in shown
    assert repr(decided) == "<Decisions customer: 1.500 rows>"
    # run(locale=) for one run; without any, the policies' locale (none here: en_US)
    zh = engine.load_policies(folder, locale="de_DE").run({"customer": frame}, locale="zh_CN")._repr_html_()
    assert '<td>total_profit (¥)</td><td class="n">1,234,567.89</td>' in zh
    plain = engine.load_policies(folder).run({"customer": frame})._repr_html_()
    assert '<td>margin_share</td><td class="n">59.6%</td>' in plain and '<td class="n">99.9%</td>' in plain
    # the frames keep exact numbers, to compute with
    assert decided.summary()["share"].tolist() == [1499 / 1500, 1 / 1500]
    assert decided.measures["customer"]["margin_share"] == 1234567.89 / 2071811.10
    # the policies' parameters by their units: a cutoff written 80% is a percent
    params = engine.load_policies(ROOT / "policies", locale="de_DE")._repr_html_()
    assert '<td>key_share</td><td class="n">80,0\xa0%</td>' in params
    with pytest.raises(engine.InputError) as caught:
        engine.load_policies(folder, locale="xx_YY")
    (problem,) = caught.value.problems
    assert problem.message == "unknown locale 'xx_YY'" and "locale= takes" in problem.hint
