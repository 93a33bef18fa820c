"""Whether typing in a decision table of 200 rules lags: the studio page in headless Chromium, a
policy with a 200-rule decision added to the shipped ones, 40 characters typed into the condition
of rule 150. Measures the time per keystroke as the page handles it (an input event changes no
table: the grid is drawn again only when rules are added, removed or moved) and the time from the
last keystroke to the checked impact.

    python benchmarks/studio_typing.py
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.run.workspace import Workspace  # noqa: E402
from tests.test_studio import Server  # noqa: E402

RULES = 200


def policy() -> str:
    lines = ["policy: bands", "entity: customer", "description: Revenue bands, two hundred of them.", "",
             "facts:", "  customer_id: {type: string, key: true}",
             "  revenue: {type: number, min: 0, measure: true, decimals: 2}", "",
             "decisions:", "  band:", "    description: The revenue band.", "    values: [low, mid, high]",
             "    rules:"]
    for i in range(RULES - 1):
        lines += [f"      - id: band-{i}", f"        when: revenue < {(i + 1) * 50_000}",
                  f"        then: {['low', 'mid', 'high'][i * 3 // RULES]}",
                  f"        because: \"revenue {{revenue:,.0f}} is under {(i + 1) * 50_000:,}\""]
    lines += ["      - id: above", "        then: high", "        because: \"revenue {revenue:,.0f}\""]
    return "\n".join(lines) + "\n"


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "policies"
        shutil.copytree(ROOT / "policies", folder)
        (folder / "bands.yaml").write_text(policy(), encoding="utf-8")
        server = Server(Workspace(folder, ROOT / "examples", {}))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=shutil.which("chromium") or "chromium",
                                            args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1440, "height": 1000}, bypass_csp=True)
                page.goto(f"{server.url}/?token={server.token}#bands.yaml")
                page.wait_for_selector("#decisions-impact")
                rows = page.locator("#decision-band tr[data-rule]").count()
                page.evaluate("""() => { window.__keys = []; const t = document.querySelector(
                    "#decision-band tr[data-rule='band-150'] td.when textarea");
                    t.addEventListener('keydown', () => { window.__t0 = performance.now(); }, true);
                    t.addEventListener('input', () => { const t0 = window.__t0;
                      requestAnimationFrame(() => window.__keys.push(performance.now() - t0)); }); }""")
                cell = page.locator("#decision-band tr[data-rule='band-150'] td.when textarea")
                cell.click()
                page.keyboard.press("End")
                text = " and revenue > 1000 and revenue > 2000"[:40]
                page.keyboard.type(text, delay=30)
                t0 = time.perf_counter()
                page.wait_for_function("document.getElementById('status').textContent.startsWith('checked')")
                settled = time.perf_counter() - t0
                keys = page.evaluate("window.__keys")
                browser.close()
        finally:
            server.stop()
    print(f"{rows} rules in the grid; {len(keys)} keystrokes: median {statistics.median(keys):.1f} ms, "
          f"max {max(keys):.1f} ms from the key to the next frame; the impact checked "
          f"{settled:.2f} s after the last key")


if __name__ == "__main__":
    main()
