"""End-to-end throughput of `kam run` against the same policies written by hand (numpy/pyarrow and polars).

    python benchmarks/bench.py                    # 1,000,000 customers and quotes, 250,000 prospects
    python benchmarks/bench.py --customers 200000 --repeat 1

Generates Parquet facts with examples/generate.py (cached in benchmarks/data), then times, in
alternating order so machine noise hits both alike:
  * `kam run --output-format parquet` on the shipped policies (explanations are always on), and
  * benchmarks/handwritten.py, the same decisions coded directly in numpy/pyarrow, and
  * benchmarks/handwritten_polars.py, the same decisions coded in polars (lazy, multi-threaded),
each as its own process, measuring wall time and peak memory (max RSS); the references with the C
library's allocator set as `kam` sets it for itself (engine/surfaces/cli/allocator.py), so that
setting is not counted as kam's advantage. All three outputs must be
identical, column for column (the script stops if not); the ratio is kam's median time over the
median of the faster reference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from engine.surfaces.cli.allocator import SETTINGS

HERE = Path(__file__).resolve().parent
RUNS = {"kam": "kam run (explanations on)", "hand": "hand-written numpy/pyarrow", "polars": "hand-written polars"}
ROOT = HERE.parent
KAM = Path(sys.executable).parent / "kam"

# Runs one command and reports its wall time and the peak RSS of that command alone.
WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
seconds = time.perf_counter() - t
print(json.dumps({"rc": rc, "seconds": seconds, "max_rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True, cwd=ROOT,
                         env={**os.environ, **(env or {})})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}")
    return result


def ensure_data(folder: Path, customers: int, quotes: int, prospects: int) -> None:
    stamp = folder / "params.json"
    params = {"customers": customers, "quotes": quotes, "prospects": prospects}
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return
    shutil.rmtree(folder, ignore_errors=True)
    subprocess.run([sys.executable, str(ROOT / "examples" / "generate.py"), "--customers", str(customers),
                    "--quotes", str(quotes), "--prospects", str(prospects), "--format", "parquet",
                    "--out", str(folder)], check=True)
    stamp.write_text(json.dumps(params))


def same_outputs(a: Path, b: Path) -> list[str]:
    """The columns where two runs' outputs differ (none: identical)."""
    diffs = []
    for entity in ("customer", "quote", "prospect"):
        ta = pq.read_table(a / f"{entity}_decisions.parquet")
        tb = pq.read_table(b / f"{entity}_decisions.parquet")
        if ta.schema.names != tb.schema.names:
            diffs.append(f"{entity}: columns differ")
            continue
        diffs += [f"{entity}.{c}" for c in ta.schema.names if not ta[c].equals(tb[c])
                  and ta[c].to_pylist() != tb[c].to_pylist()]
    return diffs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--quotes", type=int, default=1_000_000)
    parser.add_argument("--prospects", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    args = parser.parse_args()
    ensure_data(args.data, args.customers, args.quotes, args.prospects)
    outs = {name: args.data / f"out-{name}" for name in RUNS}
    cmds = {
        "kam": [str(KAM), "run", "--data", str(args.data), "--out", str(outs["kam"]), "--output-format", "parquet",
                "-q"],
        "hand": [sys.executable, str(HERE / "handwritten.py"), str(args.data), str(outs["hand"])],
        "polars": [sys.executable, str(HERE / "handwritten_polars.py"), str(args.data), str(outs["polars"])],
    }
    # the references get the C library's allocator set as `kam` sets it for itself (it saved them 5-10%)
    tuned = {env: str(value) for env, _, value in SETTINGS}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in RUNS}
    for _ in range(args.repeat):
        for name in RUNS:
            runs[name].append(measure(cmds[name], None if name == "kam" else tuned))
    diffs = {ref: same_outputs(outs["kam"], outs[ref]) for ref in ("hand", "polars")}
    seconds = {name: statistics.median(r["seconds"] for r in runs[name]) for name in RUNS}
    memory = {name: max(r["max_rss_kb"] for r in runs[name]) / 1024 for name in RUNS}
    fastest = min(("hand", "polars"), key=lambda name: seconds[name])
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"input: {args.customers:,} customers, {args.quotes:,} quotes, {args.prospects:,} prospects (Parquet)")
    print("| run | median seconds | customers/s | peak memory | kam / this |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name in RUNS:
        print(f"| {RUNS[name]} | {seconds[name]:.2f} | {args.customers / seconds[name]:,.0f} | "
              f"{memory[name]:,.0f} MiB | {seconds['kam'] / seconds[name]:.2f}x |")
    identical = not any(diffs.values())
    print(f"ratio kam / fastest reference ({RUNS[fastest]}): {seconds['kam'] / seconds[fastest]:.2f}x; "
          f"outputs identical: {'yes' if identical else 'NO'}")
    print("all runs (s):", {k: [round(r["seconds"], 2) for r in v] for k, v in runs.items()})
    if not identical:
        raise SystemExit(f"outputs differ: {diffs}")


if __name__ == "__main__":
    main()
