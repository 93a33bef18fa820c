"""How fast the studio page answers a moved cutoff: the time from the edit to the whole impact
(check, re-evaluation of what the edit reaches, the comparison with money per cell, the invariants
proved again, the page's JSON), for `key_share` moved to several values, on generated portfolios.

    python examples/generate.py --customers 100000 --quotes 100000 --prospects 25000 --format parquet --out /tmp/d100k
    python benchmarks/studio_bench.py /tmp/d100k

Also runs the same edits without reuse (every step evaluated again, as `kam diff` does) in the same
process, so the gain is a ratio measured on one machine at one time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from engine.run import workspace as ws_module
from engine.run.workspace import Workspace
from engine.surfaces.studio import views

VALUES = ["70%", "75%", "85%", "60%", "90%"]


def edit(value: str) -> list[dict]:
    return [{"op": "set", "file": "segmentation.yaml", "path": ["params", "key_share"], "value": value}]


def timed(ws: Workspace) -> list[float]:
    out = []
    for v in VALUES:
        t0 = time.perf_counter()
        ev = ws.evaluate(edit(v))
        views.impact_view(ws, ev)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--policies", type=Path, default=Path("policies"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    ws = Workspace(args.policies, args.data, {})
    ws.warm_up()
    print(f"loaded {ws.summary()} in {time.perf_counter() - t0:.2f} s")
    fast = timed(ws)
    print(f"impact of a moved cutoff: median {statistics.median(fast):.3f} s, max {max(fast):.3f} s "
          f"({', '.join(f'{x:.3f}' for x in fast)})")
    keep = ws_module._reusable
    def nothing_kept(base, new, old, changed):  # every step computed again
        changed[new.entity] = {name for s in new.steps for name in ws_module._step_names(s)}
        return {}

    ws_module._reusable = nothing_kept
    ws._last = None
    try:
        full = timed(ws)
    finally:
        ws_module._reusable = keep
    print(f"everything evaluated again: median {statistics.median(full):.3f} s; "
          f"reuse is {statistics.median(full) / statistics.median(fast):.2f}x faster")


if __name__ == "__main__":
    main()
