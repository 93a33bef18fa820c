"""`kam diff` against a git repository made in the test: two commits of the policies."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from babel.numbers import format_percent

from .conftest import ROOT, kam, kam_here
from .test_cli import GOLDEN


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose last commit moves the key-account cutoff from 80% to 70% of profit."""
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "policies", repo / "policies")
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "policies")
    seg = repo / "policies" / "segmentation.yaml"
    seg.write_text(seg.read_text(encoding="utf-8").replace("key_share: 80%", "key_share: 70%"), encoding="utf-8")
    git(repo, "commit", "-qam", "tighter key accounts")
    return repo


def independent_tiers(cutoff: float) -> pd.Series:
    """The shipped tier rules recomputed with plain pandas from the example facts."""
    c = pd.read_csv(ROOT / "examples" / "customers.csv", dtype={"customer_id": str})
    profit = c["profit"]
    order = profit.sort_values(ascending=False)
    share_sorted = order.cumsum() / profit.sum()
    # ties share the share of their whole block: take the largest cumulative sum per value
    share = profit.map(share_sorted.groupby(order.values).max())
    score = 0.5 * profit.rank(method="max", pct=True) + 0.3 * c["orders_12m"].rank(method="max", pct=True) \
        + 0.2 * c["credit_score"].fillna(50) / 100
    position = score.rank(method="max", pct=True)
    tier = np.select([(share <= cutoff) & (c["credit_score"] >= 60), position >= 0.5, position >= 0.2],
                     ["A", "B", "C"], "D")
    return pd.Series(tier, index=c["customer_id"])


def test_transition_matrix_matches_an_independent_count(repo: Path):
    r = kam("diff", "policies", "--base", "HEAD~1", "--data", str(ROOT / "examples"), "--format", "json", cwd=repo)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    tier = next(d for d in doc["decisions"] if d["decision"] == "tier")
    expected = pd.crosstab(independent_tiers(0.80), independent_tiers(0.70))
    want = {b: {n: int(v) for n, v in row.items() if v} for b, row in expected.iterrows()}
    assert tier["transitions"] == want
    moved = int((independent_tiers(0.80) != independent_tiers(0.70)).sum())
    assert tier["changed"] == moved > 0
    profit = pd.read_csv(ROOT / "examples" / "customers.csv", dtype={"customer_id": str}).set_index("customer_id")
    movers = independent_tiers(0.80) != independent_tiers(0.70)
    assert tier["money_at_stake"]["revenue"] == pytest.approx(profit.loc[movers[movers].index, "revenue"].sum(),
                                                              abs=0.01)
    assert {r["rule"]: r["delta"] for r in tier["rules"]}["key-account"] == -moved
    assert git(repo, "status", "--porcelain") == ""  # the work tree was not touched


def test_markdown_and_fail_on(repo: Path):
    r = kam_here("diff", "policies", "--base", "HEAD~1", "--format", "markdown", "--fail-on", "tier: changed > 5%",
            "--data", str(ROOT / "examples"), cwd=repo)
    assert r.returncode == 1
    assert r.stdout.startswith("## kam diff: impact of the policy change")
    assert "| base \\ new | A | B | C | D |" in r.stdout
    assert "fail: customer tier:" in r.stderr and "meets --fail-on 'tier: changed > 5%'" in r.stderr
    r = kam_here("diff", "policies", "--base", "HEAD~1", "--fail-on", "changed > 50%", "--data", str(ROOT / "examples"),
            cwd=repo)
    assert r.returncode == 0 and "customer tier:" in r.stdout


def test_base_folder_and_no_change(repo: Path):
    r = kam_here("diff", "policies", "--base", "policies", "--data", str(ROOT / "examples"), cwd=repo)
    assert r.returncode == 0
    assert "customer tier: no change (2,000 entities)" in r.stdout


def test_json_status_says_unchanged_when_nothing_changed(repo: Path):
    r = kam_here("diff", "policies", "--base", "HEAD~1", "--data", str(ROOT / "examples"), "--format", "json", cwd=repo)
    statuses = {d["decision"]: d["status"] for d in json.loads(r.stdout)["decisions"]}
    assert statuses["tier"] == "changed" and statuses["offer"] == "unchanged" and statuses["pursue"] == "unchanged"


def test_usage_errors(repo: Path):
    r = kam_here("diff", "policies", "--base", "no-such-revision", cwd=repo)
    assert r.returncode == 2 and "git" in r.stderr
    r = kam_here("diff", "policies", "--base", "HEAD~1", "--fail-on", "lots changed", cwd=repo)
    assert r.returncode == 2 and "--fail-on 'lots changed' is not understood" in r.stderr


# -- the figures for people, in the reader's locale; the JSON exact ------------------------------------

@pytest.fixture
def tighter(tmp_path: Path) -> Path:
    """The shipped policies with the key-account cutoff at 70% of profit: the base of these diffs."""
    base = tmp_path / "base"
    shutil.copytree(ROOT / "policies", base)
    seg = base / "segmentation.yaml"
    seg.write_text(seg.read_text(encoding="utf-8").replace("key_share: 80%", "key_share: 70%"), encoding="utf-8")
    return base


def _amounts(line: str, group: str, decimal: str) -> dict[str, float]:
    """`name 1.234.567,89, other 2.075.000,00` as numbers, each checked to be written in full: grouped by
    threes with this locale's marks, two decimals."""
    amount = rf"-?\d{{1,3}}(?:{re.escape(group)}\d{{3}})*{re.escape(decimal)}\d{{2}}"
    pairs = re.findall(rf"([a-z_]+) ({amount})(?:, |$)", line)
    assert ", ".join(f"{k} {v}" for k, v in pairs) == line, line
    return {k: float(v.replace(group, "").replace(decimal, ".")) for k, v in pairs}


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
def test_diff_writes_its_figures_for_the_readers_locale(tighter: Path):
    doc = json.loads(kam_here("diff", "policies", "--base", str(tighter), "--format", "json").stdout)
    changed = [d for d in doc["decisions"] if d["changed"]]
    assert changed and all(d["money_at_stake"] for d in changed)
    r = kam("diff", "policies", "--base", str(tighter), "--locale", "de_DE")
    assert r.returncode == 0, r.stderr
    for d in changed:
        # counts grouped, the share as de_DE writes a percent (Babel's own formatting, not kam's)
        counts = f"{d['changed']:,} of {d['entities']:,}".replace(",", ".")
        share = format_percent(d["changed"] / d["entities"], "#,##0.0\xa0%", locale="de_DE")  # CLDR: 5,1 %
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"{d['entity']} {d['decision']}: "))
        assert line.startswith(f"{d['entity']} {d['decision']}: {counts} changed ({share}); "), line
        # the money: the currency in the heading, each amount 1.234.567,89 as de_DE writes it
        money = line.split("; money at stake (CN¥): ")[1]
        assert _amounts(money, ".", ",") == pytest.approx(d["money_at_stake"], abs=0.006)
    assert "2.000 entities" in r.stdout and "invariant `key-accounts-are-creditworthy`: proved" in r.stdout
    # zh_CN: grouped by thousands too, the yuan written ¥; in markdown the table's heading names it once
    r = kam_here("diff", "policies", "--base", str(tighter), "--locale", "zh_CN", "--format", "markdown")
    assert r.returncode == 0, r.stderr
    assert "| entity | decision | changed | share | money at stake (¥, changed entities) |" in r.stdout
    tier = next(d for d in changed if d["decision"] == "tier")
    line = next(x for x in r.stdout.splitlines() if x.startswith("### customer tier: "))
    assert _amounts(line.split("; money at stake (¥): ")[1], ",", ".") == pytest.approx(tier["money_at_stake"],
                                                                                          abs=0.006)
    assert re.search(r"^- `key-account`: [\d,]+ -> [\d,]+ \(\+[\d,]+\)$", r.stdout, re.M)


def test_diff_json_is_the_same_bytes_as_before_in_every_locale(tighter: Path):
    """Captured from main before the figures had units (tests/golden/diff_key_share.json); the locale,
    given or named by the policies, never reaches the JSON."""
    want = (GOLDEN / "diff_key_share.json").read_text(encoding="utf-8")
    for extra in ((), ("--locale", "de_DE")):
        r = kam_here("diff", "policies", "--base", str(tighter), "--format", "json", *extra)
        assert r.returncode == 0, r.stderr
        assert r.stdout.replace(json.dumps(str(tighter)), '"<base>"') == want, extra
