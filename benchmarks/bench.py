"""End-to-end throughput of `kam run` against the same policies written by hand in numpy/pandas.

    python benchmarks/bench.py                    # 1,000,000 customers and quotes, 250,000 prospects
    python benchmarks/bench.py --customers 200000 --repeat 1

Generates Parquet facts with examples/generate.py (cached in benchmarks/data), then times, in
alternating order so machine noise hits both alike:
  * `kam run --output-format parquet` on the shipped policies (explanations are always on), and
  * benchmarks/handwritten.py, the same decisions coded directly,
each as its own process, measuring wall time and peak memory (max RSS). Both outputs must be
identical, column for column; the ratio is kam's median time over the hand-written median.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
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


def measure(cmd: list[str]) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, check=True, cwd=ROOT)
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
    out_kam, out_hand = args.data / "out-kam", args.data / "out-hand"
    kam_cmd = [str(KAM), "run", "--data", str(args.data), "--out", str(out_kam), "--output-format", "parquet", "-q"]
    hand_cmd = [sys.executable, str(HERE / "handwritten.py"), str(args.data), str(out_hand)]
    runs: dict[str, list[dict[str, float]]] = {"kam": [], "hand": []}
    for _ in range(args.repeat):
        runs["kam"].append(measure(kam_cmd))
        runs["hand"].append(measure(hand_cmd))
    diffs = same_outputs(out_kam, out_hand)
    kam_s = statistics.median(r["seconds"] for r in runs["kam"])
    hand_s = statistics.median(r["seconds"] for r in runs["hand"])
    kam_mem = max(r["max_rss_kb"] for r in runs["kam"]) / 1024
    hand_mem = max(r["max_rss_kb"] for r in runs["hand"]) / 1024
    print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    print(f"input: {args.customers:,} customers, {args.quotes:,} quotes, {args.prospects:,} prospects (Parquet)")
    print("| run | median seconds | customers/s | peak memory |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| kam run (explanations on) | {kam_s:.2f} | {args.customers / kam_s:,.0f} | {kam_mem:,.0f} MiB |")
    print(f"| hand-written numpy/pyarrow | {hand_s:.2f} | {args.customers / hand_s:,.0f} | {hand_mem:,.0f} MiB |")
    print(f"ratio kam / hand-written: {kam_s / hand_s:.2f}x; outputs identical: {'yes' if not diffs else 'NO'}")
    print("all runs (s):", {k: [round(r["seconds"], 2) for r in v] for k, v in runs.items()})
    if diffs:
        raise SystemExit(f"outputs differ: {diffs}")


if __name__ == "__main__":
    main()
