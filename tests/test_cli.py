"""End to end: the real `kam` command on real files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from .conftest import ROOT, kam, kam_here

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("KAM_UPDATE_GOLDEN") == "1"


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"differs from {path}; KAM_UPDATE_GOLDEN=1 to accept"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A private copy of the example facts, to spoil."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("customers.csv", "prospects.csv", "quotes.csv"):
        shutil.copy(ROOT / "examples" / name, folder / name)
    return folder


def run_kam(data: Path, out: Path, *extra: str, here: bool = False):
    return (kam_here if here else kam)("run", "--policies", str(ROOT / "policies"), "--data", str(data), "--out",
                                       str(out), *extra)


# -- kam check -----------------------------------------------------------------------------------

def test_check_shipped_policies_is_clean():
    r = kam("check", "policies/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok: 6 policies")


def test_check_reports_every_mistake_golden():
    r = kam_here("check", "tests/data/bad_policies")
    assert r.returncode == 1
    golden("check_bad_policies.txt", r.stderr)


def test_check_rejects_python_internals_golden():
    r = kam_here("check", "tests/data/unsafe_policies")
    assert r.returncode == 1
    golden("check_unsafe_policies.txt", r.stderr)
    assert not Path("/tmp/kam-pwned").exists()


def test_check_json_format():
    r = kam_here("check", "tests/data/bad_policies", "--format", "json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False
    assert {p["code"] for p in doc["problems"]} == {"unknown-function", "unknown-name", "type", "unknown-value",
                                                     "unknown-output"}
    assert all(p["line"] > 0 and p["col"] > 0 for p in doc["problems"])


def test_check_duplicate_key_and_missing_folder(tmp_path: Path):
    (tmp_path / "p.yaml").write_text("policy: a\nentity: customer\npolicy: b\n", encoding="utf-8")
    r = kam_here("check", str(tmp_path))
    assert r.returncode == 1 and "p.yaml:3:1: error[duplicate-key]" in r.stderr
    r = kam_here("check", str(tmp_path / "nope"))
    assert r.returncode == 2 and "does not exist" in r.stderr


# -- kam run -------------------------------------------------------------------------------------

def test_run_decides_everything(tmp_path: Path, data: Path):
    out = tmp_path / "out"
    r = run_kam(data, out)
    assert r.returncode == 0, r.stderr
    assert "tier" in r.stdout and "approval" in r.stdout and "pursue" in r.stdout
    assert "quote(s) name a customer that is not in the customer facts" in r.stderr
    customers = pd.read_csv(out / "customer_decisions.csv", dtype=str)
    assert len(customers) == 2000
    for d in ("tier", "retention", "protected_by", "service", "offer"):
        assert customers[f"{d}_rule"].notna().all() and customers[f"{d}_because"].notna().all()
    assert customers["customer_id"].str.len().eq(6).all()  # leading zeros kept
    assert customers["customer_id"].str.startswith("0").any()
    shape = customers["tier"].value_counts(normalize=True)
    assert 0.12 < shape["A"] < 0.25 and 0.15 < shape["D"] < 0.25
    quotes = pd.read_csv(out / "quote_decisions.csv", dtype=str)
    assert len(quotes) == 3000 and set(quotes["approval"]) == {"approve", "escalate", "reject"}
    assert quotes.loc[quotes["approval_rule"] == "unknown-customer", "approval"].eq("escalate").all()
    prospects = pd.read_csv(out / "prospect_decisions.csv", dtype=str)
    assert 0.15 < (prospects["pursue"] == "pursue").mean() < 0.25
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["kam_version"] and len(manifest["policy_set"]["sha256"]) == 64
    assert {i["entity"]: i["rows"] for i in manifest["inputs"]} == {"customer": 2000, "quote": 3000, "prospect": 500}
    assert manifest["decision_counts"]["customer"]["tier"]["A"] == int((customers["tier"] == "A").sum())
    assert {"compile", "read", "evaluate", "write"} <= set(manifest["timings_seconds"])
    assert all(len(o["sha256"]) == 64 for o in manifest["outputs"])


def test_never_a_protected_customer_let_go(tmp_path: Path, data: Path):
    out = tmp_path / "out"
    assert run_kam(data, out).returncode == 0
    c = pd.read_csv(out / "customer_decisions.csv", dtype=str)
    protected = c["protected_by"] != "none"
    assert protected.sum() > 100
    assert c.loc[protected, "retention"].eq("keep").all()
    assert (c["retention"] == "exit").sum() > 0


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_outputs_are_byte_identical_and_keep_chinese(tmp_path: Path, data: Path, fmt: str):
    first, second = tmp_path / "a", tmp_path / "b"
    assert run_kam(data, first, "--output-format", fmt, "-q").returncode == 0
    assert run_kam(data, second, "--output-format", fmt, "-q").returncode == 0
    for entity in ("customer", "prospect", "quote"):
        name = f"{entity}_decisions.{fmt}"
        assert (first / name).read_bytes() == (second / name).read_bytes()
    path = first / f"customer_decisions.{fmt}"
    if fmt == "csv":
        texts = pd.read_csv(path, dtype=str)["retention_because"]
    elif fmt == "parquet":
        texts = pq.read_table(path).to_pandas()["retention_because"]
    else:
        texts = pd.read_json(path, lines=True, dtype=False)["retention_because"]
    assert texts.str.startswith("鸡肋客户 (chicken-rib)").any()


def test_parquet_and_jsonl_facts(tmp_path: Path, data: Path):
    for name in ("customers", "prospects", "quotes"):
        frame = pd.read_csv(data / f"{name}.csv", dtype=str)
        (data / f"{name}.csv").unlink()
        if name == "quotes":
            frame.to_json(data / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
        else:
            frame.to_parquet(data / f"{name}.parquet", index=False)
    out = tmp_path / "out"
    r = run_kam(data, out, "-q")
    assert r.returncode == 0, r.stderr
    ref = tmp_path / "ref"
    assert kam("run", "--out", str(ref), "-q").returncode == 0
    for entity in ("customer", "prospect", "quote"):
        assert (out / f"{entity}_decisions.csv").read_bytes() == (ref / f"{entity}_decisions.csv").read_bytes()


def _spoil(data: Path, column: str, rows: dict[int, str]) -> None:
    frame = pd.read_csv(data / "customers.csv", dtype=str, keep_default_na=False)
    for row, value in rows.items():
        frame.loc[row, column] = value
    frame.to_csv(data / "customers.csv", index=False)


@pytest.mark.parametrize(
    "spoil, words",
    [
        (lambda d: pd.read_csv(d / "customers.csv", dtype=str).drop(columns=["profit"])
         .to_csv(d / "customers.csv", index=False),
         ["customers.csv lacks the column `profit`"]),
        (lambda d: _spoil(d, "revenue", {3: "12k", 10: "n/a"}),
         ["column `revenue` must hold numbers", "lines 5, 12", "'12k'"]),
        (lambda d: _spoil(d, "credit_score", {7: "140"}),
         ["column `credit_score` has a value above the maximum 100 at line 9: 140"]),
        (lambda d: _spoil(d, "customer_id", {4: "005193"}),
         ["key column `customer_id` repeats a value", "'005193'"]),
        (lambda d: _spoil(d, "orders_12m", {0: "2.5"}), ["must hold whole numbers", "line 2"]),
        (lambda d: _spoil(d, "value_type", {1: "atlantis"}), ["outside its declared set", "'atlantis'"]),
        (lambda d: (d / "customers.csv").write_bytes(b""), ["customers.csv is empty (zero bytes)"]),
    ],
    ids=["missing-column", "not-a-number", "out-of-range", "duplicate-key", "not-integer", "unknown-value",
         "zero-bytes"],
)
def test_bad_facts_exit_2_and_write_nothing(tmp_path: Path, data: Path, spoil, words):
    out = tmp_path / "out"
    out.mkdir()
    (out / "customer_decisions.csv").write_text("previous run\n", encoding="utf-8")
    spoil(data)
    r = run_kam(data, out, here=True)
    assert r.returncode == 2
    for w in words:
        assert w in r.stderr, r.stderr
    assert "customers.csv" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["customer_decisions.csv"]
    assert (out / "customer_decisions.csv").read_text(encoding="utf-8") == "previous run\n"


def test_header_only_file_gives_empty_outputs(tmp_path: Path, data: Path):
    for name in ("customers", "prospects", "quotes"):
        header = (data / f"{name}.csv").read_text(encoding="utf-8").splitlines()[0]
        (data / f"{name}.csv").write_text(header + "\n", encoding="utf-8")
    out = tmp_path / "out"
    r = run_kam(data, out, "--output-format", "parquet")
    assert r.returncode == 0, r.stderr
    for entity in ("customer", "prospect", "quote"):
        assert pq.read_table(out / f"{entity}_decisions.parquet").num_rows == 0


def test_run_usage_errors(tmp_path: Path):
    r = kam_here("run", cwd=tmp_path)
    assert r.returncode == 2 and "policy folder policies does not exist" in r.stderr
    r = kam_here("run", "--input", "custmer=x.csv", "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "did you mean `customer`?" in r.stderr
    r = kam_here("run", "--bogus")
    assert r.returncode == 2


def test_unique_conflict_exits_1_with_both_rules(tmp_path: Path):
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "a.yaml").write_text(
        "policy: a\nentity: customer\nfacts:\n  customer_id: {type: string, key: true}\n"
        "  x: {type: number}\ndecisions:\n  d:\n    hit: unique\n    values: [p, q]\n    rules:\n"
        "      - {id: small, when: x > 0, then: p}\n      - {id: big, when: x > 5, then: q}\n",
        encoding="utf-8")
    (tmp_path / "customers.csv").write_text("customer_id,x\n01,1\n02,9\n", encoding="utf-8")
    r = kam("run", "--policies", str(policies), "--data", str(tmp_path), "--out", str(tmp_path / "o"), "-q")
    assert r.returncode == 1
    assert "decision `d`: 1 customer(s) match more than one rule (e.g. `small` and `big`): 02" in r.stderr


# -- kam explain ----------------------------------------------------------------------------------

def test_explain_customer_golden():
    r = kam("explain", "005945")
    assert r.returncode == 0, r.stderr
    golden("explain_customer_005945.txt", r.stdout)


def test_explain_quote_and_prospect_golden():
    r = kam_here("explain", "Q000012", "--entity", "quote")
    assert r.returncode == 0, r.stderr
    golden("explain_quote_Q000012.txt", r.stdout)
    r = kam_here("explain", "P00003")
    assert r.returncode == 0, r.stderr
    assert "outside quota" in r.stdout and "ranked" in r.stdout


def test_explain_json_and_unknown_id():
    r = kam_here("explain", "005945", "--format", "json")
    doc = json.loads(r.stdout)
    tier = next(d for d in doc["decisions"] if d["decision"] == "tier")
    assert tier["value"] == "D" and tier["rule"] == "maintenance"
    # no history: whether it was a key account last period is unknown, so the held rule cannot match
    assert [x["result"] for x in tier["rules"]] == ["no match", "unknown", "no match", "no match", "default"]
    r = kam_here("explain", "05945")
    assert r.returncode == 2 and "no customer or quote or prospect has the id `05945`" in r.stderr


# -- kam schema and help -------------------------------------------------------------------------

def test_schema_prints_the_policy_schema(tmp_path: Path):
    r = kam("schema")
    assert r.returncode == 0
    assert json.loads(r.stdout) == json.loads((ROOT / "schemas" / "policy.schema.json").read_text())
    target = tmp_path / "s.json"
    assert kam("schema", "-o", str(target)).returncode == 0 and json.loads(target.read_text())


@pytest.mark.parametrize("command", ["check", "run", "explain", "schema"])
def test_every_command_has_help_with_an_example(command: str):
    r = kam_here(command, "--help")
    assert r.returncode == 0 and "Example" in r.stdout


# -- diagnostics, options and messages ------------------------------------------------------------

def test_diagnostics_go_to_stderr_unwrapped_and_quiet_silences_them(tmp_path: Path, data: Path):
    long_out = tmp_path / ("a-rather-long-folder-name-" * 3) / "out"
    r = run_kam(data, long_out)
    assert r.returncode == 0, r.stderr
    assert "warning:" not in r.stdout and "wrote" not in r.stdout  # stdout holds the summary only
    wrote = next(line for line in r.stderr.splitlines() if line.startswith("wrote "))
    assert str(long_out / "manifest.json") in wrote  # one line, not wrapped at 80 columns
    warning = next(line for line in r.stderr.splitlines() if line.startswith("warning:"))
    assert warning.endswith("and 8 more")
    r = run_kam(data, long_out, "-q")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_the_manifest_times_every_stage(tmp_path: Path, data: Path):
    assert run_kam(data, tmp_path / "out", "-q").returncode == 0
    timings = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))["timings_seconds"]
    assert {"compile", "read", "evaluate", "explain", "write"} <= set(timings)


def test_facts_format_has_one_name_and_the_old_one_still_works(tmp_path: Path, data: Path):
    (data / "customers.csv").rename(data / "customers.txt")
    r = kam("run", "--input", f"customer={data / 'customers.txt'}", "--entity", "customer", "--facts-format", "csv",
            "--out", str(tmp_path / "a"), "-q")
    assert r.returncode == 0, r.stderr
    r = kam("run", "--input", f"customer={data / 'customers.txt'}", "--entity", "customer", "--format", "csv",
            "--out", str(tmp_path / "b"), "-q")
    assert r.returncode == 0 and "is now `--facts-format`" in r.stderr
    for command in ("run", "explain", "diff"):
        assert "--facts-format" in kam_here(command, "--help").stdout


def test_explain_shows_values_that_make_the_comparison_visibly_true_or_false(tmp_path: Path):
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "a.yaml").write_text(
        "policy: a\nentity: customer\nfacts:\n  customer_id: {type: string, key: true}\n  x: {type: number}\n"
        "decisions:\n  d:\n    values: [hi, lo]\n    rules:\n      - {id: hi, when: x >= 60, then: hi}\n"
        "      - {id: lo, then: lo}\n", encoding="utf-8")
    (tmp_path / "customers.csv").write_text("customer_id,x\n001,59.9999999\n", encoding="utf-8")
    r = kam_here("explain", "001", "--policies", str(policies), "--data", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "x >= 60: false   (x = 59.9999999)" in r.stdout


def test_explain_suggests_the_id_with_its_leading_zeros():
    r = kam_here("explain", "123")  # not the prospect P00123, which merely looks alike
    assert r.returncode == 2 and "did you mean `000123`?" in r.stderr


def test_a_yaml_bomb_is_refused_quickly(tmp_path: Path):
    lines = ["policy: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"k{i}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(9)]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    r = kam("check", str(tmp_path))
    assert r.returncode == 1 and "error[yaml-too-large]" in r.stderr


def test_input_for_one_entity_reads_the_others_from_the_examples(tmp_path):
    """`--input customer=FILE` without --data: the other entities come from examples/, as the README says."""
    customers = tmp_path / "crm.csv"
    shutil.copy(ROOT / "examples" / "customers.csv", customers)
    r = kam_here("run", "--input", f"customer={customers}", "--out", str(tmp_path / "o"), "-q")
    assert r.returncode == 0, r.stderr
    inputs = {i["entity"]: i["path"] for i in json.loads((tmp_path / "o" / "manifest.json").read_text())["inputs"]}
    assert inputs == {"customer": str(customers), "quote": "examples/quotes.csv", "prospect": "examples/prospects.csv"}


def test_the_summary_counts_a_computed_output_by_its_fixed_values(tmp_path):
    """The summary (and the report, from the same counts) showed `floor=list_price * 0.8` as a value."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "q.yaml").write_text(
        "policy: q\nentity: quote\nfacts:\n  quote_id: {type: string, key: true}\n  list_price: {type: number}\n"
        "decisions:\n  price:\n    outputs:\n      approval: {values: [approve, escalate]}\n      floor: {type: number}\n"
        "    rules:\n      - {id: big, when: list_price > 100, then: {approval: escalate, floor: list_price * 0.8}}\n"
        "      - {id: small, then: {approval: approve, floor: list_price * 0.9}}\n"
        "  floor_only:\n    type: number\n    rules:\n      - {id: ninety, then: list_price * 0.9}\n",
        encoding="utf-8")
    (tmp_path / "q.csv").write_text("quote_id,list_price\nQ1,50\nQ2,500\nQ3,70\n", encoding="utf-8")
    r = kam_here("run", "--policies", str(folder), "--input", f"quote={tmp_path / 'q.csv'}", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "list_price *" not in r.stdout
    assert "approval=approve" in r.stdout and "approval=escalate" in r.stdout
    assert "(computed by rule ninety)" in r.stdout
    counts = json.loads((tmp_path / "o" / "manifest.json").read_text())["decision_counts"]["quote"]
    assert counts == {"price": {"approval=approve": 2, "approval=escalate": 1},
                      "floor_only": {"(computed by rule ninety)": 3}}


def test_a_join_against_an_empty_entity_says_it_is_empty(tmp_path):
    """A header-only customers file: the warning ended "customer ids look like ."."""
    customers = tmp_path / "customers.csv"
    customers.write_text((ROOT / "examples" / "customers.csv").read_text(encoding="utf-8").splitlines()[0] + "\n",
                         encoding="utf-8")
    r = kam_here("run", "--input", f"customer={customers}", "--out", str(tmp_path / "o"), "-q")
    assert r.returncode == 0, r.stderr
    assert "name a customer that is not in the customer facts" in r.stderr
    assert "the customer facts hold no customer at all." in r.stderr and "look like ." not in r.stderr


def test_measures_of_an_empty_population(tmp_path):
    """count() over no customers is 0, not missing (the manifest and the report said "customers: missing");
    a sum is 0 and a share of a sum of nothing is missing."""
    customers = tmp_path / "customers.csv"
    customers.write_text((ROOT / "examples" / "customers.csv").read_text(encoding="utf-8").splitlines()[0] + "\n",
                         encoding="utf-8")
    r = kam_here("run", "--input", f"customer={customers}", "--entity", "customer", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    measures = json.loads((tmp_path / "o" / "manifest.json").read_text())["measures"]["customer"]
    assert measures["customers"] == 0 and measures["key_accounts"] == 0 and measures["loss_makers"] == 0
    assert measures["profit_lost_to_loss_makers"] == 0 and measures["key_account_profit_share"] is None


def test_a_computed_output_that_overflows_is_an_error_naming_the_rule(tmp_path):
    """An output computed past the largest number was `inf` in CSV, Parquet and the reason but `null` in
    JSON Lines: now no format gets it, and the run says which rule and which entity."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "q.yaml").write_text(
        "policy: q\nentity: quote\nfacts:\n  quote_id: {type: string, key: true}\n  list_price: {type: number}\n"
        "decisions:\n  floor:\n    type: number\n    rules:\n      - {id: fixed, when: list_price < 0, then: 0}\n"
        "      - {id: scaled, then: list_price * 1e300, because: \"{floor}\"}\n", encoding="utf-8")
    (tmp_path / "q.csv").write_text("quote_id,list_price\nQ1,5\nQ2,1e10\nQ3,1e12\n", encoding="utf-8")
    for fmt in ("csv", "jsonl", "parquet"):
        for backend in ("pandas", "durable"):
            out = tmp_path / f"o-{fmt}-{backend}"
            r = kam_here("run", "--policies", str(folder), "--input", f"quote={tmp_path / 'q.csv'}", "--out", str(out),
                         "--output-format", fmt, "--backend", backend)
            assert r.returncode == 2, r.stderr
            assert "error[overflow]: rule `scaled` of decision `floor`: `list_price * 1e+300` is too large to hold " \
                   "(beyond about 1.8e308) for Q2 (and 1 more)" in r.stderr
            assert "q.yaml:" in r.stderr and not out.exists()
    r = kam_here("stream", "--policies", str(folder), "--entity", "quote", "--backend", "pandas",
                 stdin='{"quote_id": "Q9", "list_price": 1e12}\n{"quote_id": "Q8", "list_price": 3}\n')
    assert r.returncode == 0, r.stderr
    assert "stdin:1: error: rule `scaled` of decision `floor`: `list_price * 1e+300` is too large to hold " \
           "(beyond about 1.8e308) for Q9" in r.stderr
    assert '"id": "Q8"' in r.stdout and "Q9" not in r.stdout


# -- figures for people, in the reader's locale ------------------------------------------------------

MARGINS = """\
policy: margins
entity: customer
currency: CNY
facts:
  customer_id: {type: string, key: true}
  revenue: {type: number, unit: money, min: 0, decimals: 2}
  profit: {type: number, unit: money, decimals: 2}
measures:
  customers: count()
  margin_share: sum(profit) / sum(revenue)
  total_profit: sum(profit)
decisions:
  level:
    values: [hi, lo]
    rules:
      - {id: hi, when: profit > 0, then: hi}
      - {id: lo, then: lo}
"""


def _margins(tmp_path: Path, locale: str = "") -> tuple[Path, Path]:
    """1,500 customers whose profit adds up to 1,234,567.89 of 2,071,811.10 of revenue (59.588...%)."""
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "margins.yaml").write_text(MARGINS + (f"locale: {locale}\n" if locale else ""), encoding="utf-8")
    rows = ["customer_id,revenue,profit", "C0000,2071811.10,1234567.89"] + [f"C{i:04d},0,0" for i in range(1, 1500)]
    facts = tmp_path / "customers.csv"
    facts.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder, facts


def _row(stdout: str, name: str) -> str:
    """The summary table's row of a measure (its label and value, the table's rules taken out)."""
    line = next(x for x in stdout.splitlines() if f" {name}" in x)
    return " ".join(line.replace("│", " ").split())


def test_run_summary_writes_each_measure_by_its_unit(tmp_path: Path):
    folder, facts = _margins(tmp_path)
    r = kam("run", "--policies", str(folder), "--input", f"customer={facts}", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    # a share of money in money is a percent, the sum of money is money (the currency in its label)
    assert _row(r.stdout, "margin_share") == "margin_share 59.6%"
    assert _row(r.stdout, "total_profit") == "total_profit (CN¥) 1,234,567.89"
    assert _row(r.stdout, "customers") == "customers 1,500"
    assert "customer: 1,500 decided" in r.stdout and "0.5958" not in r.stdout
    # the manifest keeps the exact figures
    measures = json.loads((tmp_path / "o" / "manifest.json").read_text(encoding="utf-8"))["measures"]["customer"]
    assert measures["margin_share"] == 1234567.89 / 2071811.10 and measures["total_profit"] == 1234567.89


def test_run_summary_in_the_policies_locale_or_the_one_asked_for(tmp_path: Path):
    folder, facts = _margins(tmp_path, locale="de_DE")
    run = ("run", "--policies", str(folder), "--input", f"customer={facts}")
    r = kam_here(*run, "--out", str(tmp_path / "o1"))
    assert r.returncode == 0, r.stderr
    assert _row(r.stdout, "margin_share") == "margin_share 59,6 %"  # de_DE: a space (no-break) before %
    assert _row(r.stdout, "total_profit") == "total_profit (CN¥) 1.234.567,89"
    assert "customer: 1.500 decided" in r.stdout
    r = kam_here(*run, "--out", str(tmp_path / "o2"), "--locale", "zh_CN")
    assert r.returncode == 0, r.stderr
    assert _row(r.stdout, "margin_share") == "margin_share 59.6%"
    assert _row(r.stdout, "total_profit") == "total_profit (¥) 1,234,567.89"  # zh_CN writes the yuan as ¥
    # the decision files are the same bytes whatever the locale
    assert (tmp_path / "o1" / "customer_decisions.csv").read_bytes() == \
        (tmp_path / "o2" / "customer_decisions.csv").read_bytes()


@pytest.mark.parametrize("command", [
    ("run", "--out", "{tmp}/out"),
    ("diff", "policies", "--base", "policies"),
    ("changes", "--history", "{tmp}/history.duckdb"),
    ("history", "000320", "--history", "{tmp}/history.duckdb"),
    ("studio", "policies", "--no-browser"),
])
def test_an_unknown_locale_is_a_usage_error_before_any_work(tmp_path: Path, command: tuple[str, ...]):
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    r = kam_here(*args, "--locale", "xx_YY")
    assert r.returncode == 2
    assert "error[usage]: unknown locale 'xx_YY'" in r.stderr and "hint:" in r.stderr and "zh_CN" in r.stderr
    assert not (tmp_path / "out").exists()  # refused before the run
    r = kam_here(*args, "--locale", "de_DF")
    assert r.returncode == 2 and "did you mean `de_DE`?" in r.stderr
