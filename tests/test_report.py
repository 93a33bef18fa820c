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

import numpy as np
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
            text = page.locator("body").inner_text()
            page.screenshot(path=str(screenshot), full_page=True, type="jpeg", quality=70)
        finally:
            browser.close()
    return {"errors": errors, "charts": charts, "sizes": sizes, "heads": heads, "tiers": tiers, "width": width,
            "text": text}


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
    # those whose cumulative share, theirs and that of everyone earning more, is at most 80% (cumshare)
    inside = sum(1 for i in range(n) if profit[: i + 1].sum() <= 0.8 * total)
    assert heads["customers_for_80"] == pytest.approx(inside / n)
    assert "The policies' Pareto line (in_pareto_top) counts the same customers" in found["text"]
    assert heads["loss_makers"] == (profit < 0).sum()
    assert heads["loss_profit"] == pytest.approx(profit[profit < 0].sum())
    # the tier counts are those of the decision file
    tiers = pd.read_csv(out / "customer_decisions.csv")["tier"].value_counts()
    for tier, count in tiers.items():
        assert f"{tier}\t{count:,}\t" in found["tiers"], found["tiers"]
    assert (tmp_path / "report.jpg").stat().st_size > 50_000
    # prospects per region against the quota, as the decision file and the facts count them
    text = (out / "report.html").read_text(encoding="utf-8")
    table = text[text.index("pursue per region, against the quota"):]
    rows = [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)
            for row in re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>"): table.index("</table>")])]
    decided = pd.read_csv(out / "prospect_decisions.csv").merge(pd.read_csv(ROOT / "examples" / "prospects.csv"),
                                                                on="prospect_id")
    pursued = decided[decided["pursue"] == "pursue"].groupby("region").size()
    assert {r[0]: int(r[2]) for r in rows if r} == pursued.to_dict()


def _cells(table: str) -> list[list[str]]:
    """The body cells of the first table in an HTML fragment, row by row (headings of rows included)."""
    body = table[table.index("<tbody>"): table.index("</table>")]
    return [[re.sub(r"<wbr>", "", c) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


@pytest.fixture(scope="module")
def three_periods(tmp_path_factory) -> Path:
    """A history of the three example periods."""
    folder = tmp_path_factory.mktemp("periods")
    history = folder / "h.duckdb"
    for period in ("2026-09", "2026-10", "2026-11"):
        r = kam_here("run", "--data", str(ROOT / "examples" / "periods" / period), "--out", str(folder / period),
                     "--history", str(history), "--period", period, "-q")
        assert r.returncode == 0, r.stderr
    return history


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
def test_kam_report_shows_who_moved_and_who_left_since_the_previous_period(tmp_path, three_periods):
    """The matrix has a (gone) column with the money `kam changes` gives for those who left (7 tier-A
    customers with 1,034,111.10 of profit were missing from the report)."""
    import json

    page = tmp_path / "report.html"
    r = kam("report", "--data", str(ROOT / "examples" / "periods" / "2026-11"), "--history", str(three_periods),
            "--period", "2026-11", "-o", str(page))
    assert r.returncode == 0, r.stderr
    text = page.read_text(encoding="utf-8")
    assert "Since the previous period (2026-10)" in text and "The biggest movers" in text
    since = text[text.index('id="since"'):]
    head = since[since.index("<thead>"): since.index("</thead>")]
    assert re.findall(r"<th[^>]*>([^<]*)</th>", head) == ["tier before", "A", "B", "C", "D", "(gone)"]
    cells = _cells(since)
    assert [c[0] for c in cells] == ["(new)", "A", "B", "C", "D"]
    changes = json.loads(kam_here("changes", "--history", str(three_periods), "--decision", "tier",
                                  "--format", "json").stdout)
    matrix = changes[0]["matrix"]
    for row in cells:
        assert [int(v.replace(",", "")) for v in row[1:]] == [matrix[row[0]].get(c, 0) for c in
                                                             ["A", "B", "C", "D", "(gone)"]], row
    moves = _cells(since[since.index("The moves, with the money"):])
    gone_a = next(m for m in moves if m[:2] == ["A", "(gone)"])
    expected = next(m for m in changes[0]["moves"] if m["from"] == "A" and m["to"] == "(gone)")
    assert gone_a[2] == str(expected["entities"]) == "7"
    assert gone_a[4] == f"{expected['profit']:,.2f}" == "1,034,111.10"
    # self-contained: one inline script and its data, nothing fetched or linked
    assert not re.search(r"<link|<img|src=|url\((?!#)", text)
    assert len(re.findall(r"<script", text)) == 2
    r = kam_here("report", "-o", str(tmp_path), "--data", str(ROOT / "examples" / "periods" / "2026-10"))
    assert r.returncode == 2 and "is a folder" in r.stderr


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
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


FIGURE = {"en_US": r"-?\d{1,3}(,\d{3})*(\.\d{1,2})?%?", "de_DE": r"-?\d{1,3}(\.\d{3})*(,\d{1,2})?(\xa0%)?"}


@pytest.mark.slow  # the default suite keeps to 2 minutes; CI runs it with the slow ones
def test_a_controller_finds_any_customer_and_reads_every_figure(tmp_path, three_periods):
    """Items a controller ties out: every figure in a table is formatted (no raw float), charts are
    images with a title and a summary, headings have a scope, the page fits a phone, and a customer
    that no top-10 list shows is found by its id, with its decisions and reasons."""
    from playwright.sync_api import sync_playwright

    page_path = tmp_path / "report.html"
    r = kam("report", "--data", str(ROOT / "examples" / "periods" / "2026-11"), "--history", str(three_periods),
            "--period", "2026-11", "-o", str(page_path))
    assert r.returncode == 0, r.stderr
    html_text = page_path.read_text(encoding="utf-8")
    decided = pd.read_csv(three_periods.parent / "2026-11" / "customer_decisions.csv", dtype={"customer_id": str})
    hidden = next(i for i in decided["customer_id"] if i not in html_text)  # in no table of the page
    row = decided.set_index("customer_id").loc[hidden]
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(page_path.as_uri())
            figures = page.locator("td.n").all_inner_texts()
            assert len(figures) > 200
            raw = [f for f in figures if f and not re.fullmatch(FIGURE["en_US"], f)]
            assert raw == [], raw[:10]
            assert page.locator("figure svg").count() == page.locator("figure svg[role=img]").count() == 6
            for svg in page.locator("figure svg").all():
                assert svg.locator("title").text_content() and svg.locator("desc").text_content()
            assert page.locator("thead th:not([scope=col])").count() == 0
            assert page.locator("nav a").count() >= 8  # a table of contents
            assert "(gone)" in page.locator("#since").inner_text()
            page.fill("#find", hidden)
            page.wait_for_selector("#found article")
            card = page.locator("#found article", has_text=f"customer {hidden}").inner_text()  # a quote id may match
            assert f"customer {hidden}" in card
            assert f"{row['tier']}: {row['tier_because']}" in card
            assert f"{row['retention']}: {row['retention_because']}" in card
            page.set_viewport_size({"width": 390, "height": 800})
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []


def test_the_readers_locale_writes_every_figure(tmp_path):
    from engine.language.figures import reader
    from engine.language.units import MONEY, Unit

    page = tmp_path / "de.html"
    r = kam_here("report", "--locale", "de_DE", "-o", str(page))
    assert r.returncode == 0, r.stderr
    text = page.read_text(encoding="utf-8")
    cells = [html_unescape(c) for c in re.findall(r'<td class=n[^>]*>([^<]*)</td>', text)]
    assert cells and all(re.fullmatch(FIGURE["de_DE"], c) for c in cells if c), [c for c in cells if c][:5]
    profit = pd.read_csv(ROOT / "examples" / "customers.csv")["profit"]
    loss = float(profit[profit < 0].sum())
    assert reader("de_DE").number(loss, Unit(MONEY, "CNY", 2)) in cells  # the losses table's total
    zh = tmp_path / "zh.html"
    assert kam_here("report", "--locale", "zh_CN", "-o", str(zh)).returncode == 0
    assert re.search(r'data-figure="loss_profit"[^>]*><div class="value">-¥[\d.]+万</div>', zh.read_text("utf-8"))
    r = kam_here("report", "--locale", "xx_QQ", "-o", str(tmp_path / "x.html"))
    assert r.returncode == 2 and "unknown locale" in r.stderr and not (tmp_path / "x.html").exists()


def html_unescape(s: str) -> str:
    import html

    return html.unescape(s)


def test_the_header_names_the_policies_and_their_revision(tmp_path):
    page = tmp_path / "report.html"
    assert kam_here("report", "-o", str(page)).returncode == 0
    text = page.read_text(encoding="utf-8")
    assert "Policies: pricing, prospects, retention, segmentation, treatment, value_groups" in text
    if (ROOT / ".git").exists():
        assert re.search(r"policies, git [0-9a-f]{12}", text)
    assert "@page{size:A4" in text and "counter(page)" in text


def test_chart_colours_are_readable_and_tiers_differ_by_shape():
    from engine.surfaces.report import COLORS, MARKERS

    def luminance(color: str) -> float:
        def channel(c: float) -> float:
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

    assert all(1.05 / (luminance(c) + 0.05) >= 3 for c in COLORS)
    assert len(set(MARKERS[:4])) == 4


def test_the_map_keeps_every_tier_and_every_chicken_rib_customer_at_any_size():
    from engine.surfaces.report import MAP_POINTS, _map_sample

    n = 100_000
    tiers = np.array(["A"] * 300 + ["B"] * 30_000 + ["C"] * 39_700 + ["D"] * 30_000)
    marked = np.zeros(n, bool)
    marked[np.arange(0, n, 97)] = True  # 1,031 chicken-rib customers
    ok = np.ones(n, bool)
    drawn = _map_sample(pd.DataFrame(index=range(n)), ok, tiers, marked)
    assert len(drawn) <= MAP_POINTS * 1.3
    assert set(np.flatnonzero(marked)) <= set(drawn)
    counts = pd.Series(tiers[drawn]).value_counts()
    assert counts["A"] >= 50 and counts["C"] > counts["B"] > counts["A"]
    assert np.array_equal(drawn, _map_sample(pd.DataFrame(index=range(n)), ok, tiers, marked))  # seeded
    small = _map_sample(pd.DataFrame(index=range(10)), np.ones(10, bool), np.array(["A"] * 10), np.zeros(10, bool))
    assert list(small) == list(range(10))


def test_above_the_search_limit_the_page_says_where_to_look(monkeypatch):
    from engine.run import service
    from engine.surfaces import report

    result, _ = service.decide_with_history(ROOT / "policies", ROOT / "examples", {})
    monkeypatch.setattr(report, "SEARCH_LIMIT", 1000)
    text = report.render(result)
    assert "2,000 customers are too many to search in this page" in text and "<code>kam explain ID</code>" in text
    assert "among 3,000 quotes, 500 prospects" not in text and "among 500 prospects" in text


@pytest.mark.parametrize("profits, revenue", [([-100.0] * 30, None), ([100.0, -100.0] * 5, None),
                                             ([50.0] * 50, 1e26)])
def test_a_portfolio_without_profit_to_share_or_with_huge_money_renders(tmp_path, profits, revenue):
    """A report of customers who together lose money (the Pareto line is then undefined) crashed with
    `cannot convert float NaN to integer`; a revenue of 1e26 crashed the money format."""
    customers = pd.read_csv(ROOT / "examples" / "customers.csv", dtype=str).head(len(profits))
    customers["profit"] = profits
    if revenue is not None:
        customers.loc[0, "revenue"] = repr(revenue)
    customers.to_csv(tmp_path / "customers.csv", index=False)
    inputs = ["--input", f"customer={tmp_path / 'customers.csv'}"]
    for entity in ("prospect", "quote"):
        header = (ROOT / "examples" / f"{entity}s.csv").read_text(encoding="utf-8").splitlines()[0]
        (tmp_path / f"{entity}s.csv").write_text(header + "\n", encoding="utf-8")
        inputs += ["--input", f"{entity}={tmp_path / f'{entity}s.csv'}"]
    r = kam_here("report", *inputs, "-o", str(tmp_path / "report.html"))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "Traceback" not in r.stderr and 'data-figure="loss_makers"' in text
    if revenue is not None:
        assert re.search(r">100(,\d{3}){8}\.\d\d<", text.replace("<wbr>", ""))  # the revenue in full
