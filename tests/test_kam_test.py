"""`kam test`: policy test cases, failures with expected vs actual, coverage, CI formats."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import yaml

from .conftest import ROOT, kam, kam_here

POLICY = """
policy: tiers
entity: customer
facts:
  customer_id: {type: string, key: true}
  profit: {type: number}
decisions:
  tier:
    values: [A, B, C]
    rules:
      - {id: big, when: profit > 1000, then: A, because: "profit {profit:,.0f}"}
      - {id: small, when: profit > 0, then: B}
      - {id: loss, then: C}
"""


def suite(tmp: Path, cases: str) -> Path:
    folder = tmp / "policies"
    (folder / "tests").mkdir(parents=True)
    (folder / "tiers.yaml").write_text(textwrap.dedent(POLICY), encoding="utf-8")
    (folder / "tests" / "tiers.yaml").write_text(textwrap.dedent(cases), encoding="utf-8")
    return folder


PASSING = """
cases:
  - name: big and small
    customer:
      - {customer_id: "01", profit: 5000}
      - {customer_id: "02", profit: 10}
    expect:
      customer:
        "01": {tier: {value: A, rule: big, because: "5,000"}}
        "02": {tier: B}
"""


def test_shipped_suite_passes_with_full_coverage():
    r = kam("test", "policies/", "--min-coverage", "100")
    assert r.returncode == 0, r.stdout + r.stderr
    # counted from the files, so that a case or a rule added cannot be left out unnoticed
    cases = sum(len(yaml.safe_load(f.read_text(encoding="utf-8"))["cases"])
                for f in (ROOT / "policies" / "tests").glob("*.yaml"))
    rules = [r for f in (ROOT / "policies").glob("*.yaml")
             for d in (yaml.safe_load(f.read_text(encoding="utf-8")).get("decisions") or {}).values() for r in d["rules"]]
    rules_and_quota_else = len(rules) + sum(1 for r in rules if "quota" in r)
    assert r.stdout.rstrip().endswith(f"{cases} passed, 0 failed")
    assert f"total: {rules_and_quota_else}/{rules_and_quota_else} rules (100.0%)" in r.stdout


def test_passing_suite_and_coverage_lists_never_fired_rules(tmp_path):
    folder = suite(tmp_path, PASSING)
    r = kam_here("test", str(folder), "--coverage")
    assert r.returncode == 0
    assert "PASS" in r.stdout and "1 passed, 0 failed" in r.stdout
    assert "tiers.yaml: 2/3 rules (67%), never fired: tier/loss" in r.stdout
    r = kam_here("test", str(folder), "--min-coverage", "90")
    assert r.returncode == 1 and "coverage 66.7% is below the required 90%" in r.stderr


def test_failing_suite_shows_expected_and_actual(tmp_path):
    folder = suite(tmp_path, """
    cases:
      - name: wrong expectations
        customer:
          - {customer_id: "01", profit: 5000}
        expect:
          customer:
            "01": {tier: {value: B, rule: small, because: "no such text"}}
            "02": {tier: A}
    """)
    r = kam_here("test", str(folder))
    assert r.returncode == 1
    assert "FAIL" in r.stdout and r.stdout.rstrip().endswith("0 passed, 1 failed")
    assert "customer 01 tier: expected 'B', got 'A' (rule `big`: profit 5,000)" in r.stdout
    assert "expected rule `small`, got `big`" in r.stdout
    assert "expected the explanation to contain 'no such text'" in r.stdout
    assert "customer 02: not in the case's population" in r.stdout


def test_bad_facts_and_unknown_names_in_a_case(tmp_path):
    folder = suite(tmp_path, """
    cases:
      - name: text in a number column
        customer:
          - {customer_id: "01", profit: lots}
        expect: {customer: {"01": {tier: A}}}
      - name: a typo
        customer:
          - {customer_id: "01", profit: 1}
        expect: {customer: {"01": {teir: A}}}
    """)
    r = kam_here("test", str(folder))
    assert r.returncode == 1
    assert "column `profit` must hold numbers" in r.stdout
    assert "no decision or output `teir` (did you mean `tier`?)" in r.stdout


def test_ci_formats(tmp_path):
    folder = suite(tmp_path, PASSING.replace("{tier: B}", "{tier: C}"))
    r = kam_here("test", str(folder), "--format", "junit")
    assert r.returncode == 1
    assert '<testsuite name="kam test" tests="1" failures="1"' in r.stdout
    assert "<failure message=" in r.stdout
    r = kam_here("test", str(folder), "--format", "github")
    assert r.stdout.startswith("::error file=") and ",line=3," in r.stdout
    r = kam_here("test", str(folder), "--format", "json")
    doc = json.loads(r.stdout)
    assert doc["failed"] == 1 and doc["coverage"]["never_fired"][str(folder / "tiers.yaml")] == ["tier/loss"]


def _junit_cases(xml: str, suite_name: str) -> list:
    """The report parsed and held to what JUnit readers require (Jenkins' schema: name, tests, failures and
    errors on the suite, a name on each case, a decimal time; the counts add up), with the attributes
    GitLab and the GitHub reporters read besides (timestamp, time, file and line, a failure's type)."""
    import re
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    (suite_el,) = root.findall("testsuite")
    assert suite_el.get("name") == suite_name
    cases = suite_el.findall("testcase")
    failed = [c for c in cases if c.find("failure") is not None]
    assert int(suite_el.get("tests")) == len(cases) and int(suite_el.get("failures")) == len(failed)
    assert suite_el.get("errors") == "0" and re.fullmatch(r"\d+\.\d{3}", suite_el.get("time"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite_el.get("timestamp"))
    for c in cases:
        assert c.get("name") and c.get("classname") and re.fullmatch(r"\d+\.\d{3}", c.get("time"))
        assert c.get("file")
    for c in failed:
        assert c.find("failure").get("message") and c.find("failure").get("type")
    return cases


def test_junit_has_times_places_and_failure_types(tmp_path):
    folder = suite(tmp_path, PASSING.replace("{tier: B}", "{tier: C}"))
    r = kam_here("test", str(folder), "--format", "junit")
    (case,) = _junit_cases(r.stdout, "kam test")
    assert case.get("file") == str(folder / "tests" / "tiers.yaml") and case.get("line") == "3"
    assert case.find("failure").get("type") == "expectation"
    r = kam_here("test", "policies", "--format", "junit")
    shipped = sum(len(yaml.safe_load(p.read_text(encoding="utf-8"))["cases"])
                  for p in (ROOT / "policies" / "tests").glob("*.yaml"))
    assert r.returncode == 0 and len(_junit_cases(r.stdout, "kam test")) == shipped
    broken = tmp_path / "broken"
    shutil.copytree(ROOT / "policies", broken)
    text = (broken / "pricing.yaml").read_text(encoding="utf-8")
    (broken / "pricing.yaml").write_text(text.replace("quoted_price < floor_price", "quoted_prise < floor_price", 1),
                                         encoding="utf-8")
    r = kam_here("check", str(broken), "--format", "junit")
    cases = _junit_cases(r.stdout, "kam check")
    (bad,) = [c for c in cases if c.find("failure") is not None]
    assert bad.get("name").endswith("pricing.yaml") and bad.find("failure").get("type") == "unknown-name"
    assert int(bad.get("line")) > 1


def test_shell_completion_as_the_readme_says():
    for shell in ("bash", "zsh", "fish"):
        r = kam("--version", env={"_KAM_COMPLETE": f"{shell}_source"})
        assert r.returncode == 0 and "_KAM_COMPLETE" in r.stdout, (shell, r.stdout[:200])
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'eval "$(_KAM_COMPLETE=bash_source kam)"' in readme and "_KAM_COMPLETE=fish_source kam | source" in readme


def test_no_test_files_is_a_usage_error(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "tiers.yaml").write_text(textwrap.dedent(POLICY), encoding="utf-8")
    r = kam_here("test", str(folder))
    assert r.returncode == 2 and "no test files" in r.stderr


def test_extreme_numbers_in_a_case_fail_that_case_only(tmp_path):
    """A `previous:` number of 400 digits was a traceback, and a case whose facts overflow stopped the
    whole suite with exit 2: now the first is a located problem of the case, the second its failure."""
    folder = suite(tmp_path, f"""
        cases:
          - name: a previous profit too large to hold
            customer:
              - {{customer_id: "01", profit: 5000}}
            previous:
              customer:
                "01": {{tier: A, profit: {"9" * 400}}}
            expect:
              customer:
                "01": {{tier: A}}
          - name: an ordinary case
            customer:
              - {{customer_id: "02", profit: 10}}
            expect:
              customer:
                "02": {{tier: B}}
          - name: a profit whose product overflows
            customer:
              - {{customer_id: "03", profit: 1.0e+10}}
            previous:
              customer:
                "03": {{profit: 1}}
            expect:
              customer:
                "03": {{tier: A}}
        """)
    policy = folder / "tiers.yaml"
    policy.write_text(policy.read_text(encoding="utf-8").replace("when: profit > 1000", "when: previous(profit) > 0 "
                                                                 "and profit * 1e305 > 1000"), encoding="utf-8")
    r = kam_here("test", str(folder))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "a previous profit too large to hold" in r.stdout and "number beyond the largest kam holds" in r.stdout
    assert "deciding the case: rule `big` of decision `tier`: `profit * 1e+305` is too large to hold" in r.stdout
    assert r.stdout.rstrip().endswith("1 passed, 2 failed"), r.stdout
    assert "Traceback" not in r.stdout + r.stderr
