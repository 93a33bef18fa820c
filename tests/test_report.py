"""`kam report` and `kam run --report`, opened in a real browser: headless Chromium (Debian's
`chromium`, driven by Playwright) must load the page without a console error, find every chart drawn,
and show headline figures equal to those computed here from the facts and the decision files.
In CI (CI=true) a browser that cannot start fails the test instead of skipping it."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from .conftest import ROOT, kam, kam_here

CHARTS = ["pareto", "tiers", "map", "retention", "prospects", "pricing"]


def chromium() -> str:
    for name in (os.environ.get("KAM_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name) if name else None
        if found:
            return found
    message = "no Chromium to open the report with (apt-get install chromium)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def open_page(path: Path, screenshot: Path) -> dict:
    """What a browser finds in the page: console errors, each chart's drawn elements, the headline values."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"fetched {r.url}") if not r.url.startswith("file:") else None)
            page.goto(path.as_uri())
            charts = {c: page.locator(f"#chart-{c} svg path, #chart-{c} svg use, #chart-{c} svg image").count()
                      for c in CHARTS}
            sizes = {c: page.locator(f"#chart-{c} svg").bounding_box() for c in CHARTS}
            heads = {h.get_attribute("data-figure"): float(h.get_attribute("data-value"))
                     for h in page.locator(".headline").all()}
            tiers = page.locator("#tiers table").inner_text() if page.locator("#tiers table").count() else ""
            width = page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=str(screenshot), full_page=True, type="jpeg", quality=70)
        finally:
            browser.close()
    return {"errors": errors, "charts": charts, "sizes": sizes, "heads": heads, "tiers": tiers, "width": width}


def test_the_report_opens_in_a_browser_with_every_chart_and_the_right_figures(tmp_path):
    out = tmp_path / "out"
    r = kam("run", "--out", str(out), "--report", str(out / "report.html"), "-q")
    assert r.returncode == 0, r.stderr
    assert "report.html" in (out / "manifest.json").read_text(encoding="utf-8")  # part of the output set
    found = open_page(out / "report.html", tmp_path / "report.jpg")
    assert found["errors"] == []
    for chart in CHARTS:
        assert found["charts"][chart] > 5, chart  # drawn, not an empty frame
        assert found["sizes"][chart]["width"] > 200 and found["sizes"][chart]["height"] > 100, chart
    # the headline figures, computed again from the facts: profit from the largest down
    profit = pd.read_csv(ROOT / "examples" / "customers.csv")["profit"].sort_values(ascending=False).to_numpy()
    total, n = profit.sum(), len(profit)
    heads = found["heads"]
    assert heads["top20_profit_share"] == pytest.approx(profit[: math.ceil(n / 5)].sum() / total)
    reach = next(i + 1 for i in range(n) if profit[: i + 1].sum() >= 0.8 * total)
    assert heads["customers_for_80"] == pytest.approx(reach / n)
    assert heads["loss_makers"] == (profit < 0).sum()
    assert heads["loss_profit"] == pytest.approx(profit[profit < 0].sum())
    # the tier counts are those of the decision file
    tiers = pd.read_csv(out / "customer_decisions.csv")["tier"].value_counts()
    for tier, count in tiers.items():
        assert f"{tier}\t{count}\t" in found["tiers"], found["tiers"]
    assert (tmp_path / "report.jpg").stat().st_size > 50_000
    # prospects per region against the quota, as the decision file and the facts count them
    text = (out / "report.html").read_text(encoding="utf-8")
    table = text[text.index("pursue per region, against the quota"):]
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", table[: table.index("</table>")])]
    decided = pd.read_csv(out / "prospect_decisions.csv").merge(pd.read_csv(ROOT / "examples" / "prospects.csv"),
                                                                on="prospect_id")
    pursued = decided[decided["pursue"] == "pursue"].groupby("region").size()
    assert {r[0]: int(r[2]) for r in rows if r} == pursued.to_dict()


def test_kam_report_shows_who_moved_since_the_previous_period(tmp_path):
    history = tmp_path / "h.duckdb"
    periods = ROOT / "examples" / "periods"
    for period in ("2026-09", "2026-10"):
        r = kam_here("run", "--data", str(periods / period), "--out", str(tmp_path / period), "--history", str(history),
                     "--period", period, "-q")
        assert r.returncode == 0, r.stderr
    page = tmp_path / "report.html"
    r = kam("report", "--data", str(periods / "2026-10"), "--history", str(history), "--period", "2026-10",
            "-o", str(page))
    assert r.returncode == 0, r.stderr
    text = page.read_text(encoding="utf-8")
    assert "Since the previous period (2026-09)" in text and "the biggest movers" in text
    since = text[text.index('id="since"'):]
    matrix = since[: since.index("</table>")]
    rows = re.findall(r"<tr>(.*?)</tr>", matrix[matrix.index("<tbody>"):])
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows]
    assert [c[0] for c in cells] == ["(new)", "A", "B", "C", "D"]
    assert sum(int(v) for c in cells for v in c[1:]) == len(pd.read_csv(periods / "2026-10" / "customers.csv"))
    # self-contained: nothing to run or fetch (the SVG namespaces are names, not addresses)
    assert not re.search(r"<script|<link|<img|src=|url\((?!#)", text)
    r = kam_here("report", "-o", str(tmp_path), "--data", str(periods / "2026-10"))
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_a_very_long_value_does_not_widen_the_page(tmp_path):
    """A 20,000-character region made the report 186,612 pixels wide: labels are cut in the charts and
    tables, and a long run of characters may break."""
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    path = policies / "prospects.yaml"
    text = path.read_text(encoding="utf-8")
    assert "{type: string, values: [north, south, east, west, central]}" in text
    path.write_text(text.replace("{type: string, values: [north, south, east, west, central]}", "{type: string}"),
                    encoding="utf-8")
    prospects = pd.read_csv(ROOT / "examples" / "prospects.csv", dtype=str)
    prospects.loc[:40, "region"] = "R" * 20_000
    prospects.to_csv(tmp_path / "prospects.csv", index=False)
    page = tmp_path / "report.html"
    r = kam_here("report", "--policies", str(policies), "--input", f"prospect={tmp_path / 'prospects.csv'}",
                 "-o", str(page))
    assert r.returncode == 0, r.stderr
    assert "R" * 400 not in page.read_text(encoding="utf-8")
    found = open_page(page, tmp_path / "report.jpg")
    assert found["errors"] == [] and found["charts"]["prospects"] > 5
    assert found["width"] <= 1100


def test_an_empty_portfolio_renders_quietly(tmp_path):
    """No customer, prospect or quote: the report says so, and matplotlib warns of no empty legend."""
    inputs = []
    for entity in ("customer", "prospect", "quote"):
        header = (ROOT / "examples" / f"{entity}s.csv").read_text(encoding="utf-8").splitlines()[0]
        (tmp_path / f"{entity}s.csv").write_text(header + "\n", encoding="utf-8")
        inputs += ["--input", f"{entity}={tmp_path / f'{entity}s.csv'}"]
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = kam_here("run", *inputs, "--out", str(tmp_path / "out"), "--report", str(tmp_path / "report.html"), "-q")
    assert r.returncode == 0, r.stderr
    assert [str(w.message) for w in caught] == []
    assert (tmp_path / "report.html").exists()
