"""What the decision history costs: appending a period to `kam run`, and asking 24 periods of it.

    python benchmarks/history_bench.py                  # 1,000,000 customers, 24 periods
    python benchmarks/history_bench.py --customers 200000 --periods 6 --repeat 1

1. Appending: the benchmark facts (1,000,000 customers, 1,000,000 quotes, 250,000 prospects; the
   same data as benchmarks/bench.py) are run as `kam run --output-format parquet`, alternately
   without and with `--history` (a copy of a history holding the period before, so previous() reads
   a real past and the new period is appended), each as its own process. The ratio of the medians is
   what recording adds to a run.
2. Asking: a history of `--periods` monthly periods of the customers, drifting from month to month
   (revenue and margins move, so tiers move and hysteresis holds some), is recorded through the
   engine itself; then one customer's path (`kam history`) and a period-to-period transition matrix
   with the moves and movers (`kam changes`) are timed, in-process (the query) and as commands.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench import KAM, ensure_data, measure  # noqa: E402

from engine.run import service as api  # noqa: E402
from engine.run import inputs as run_inputs  # noqa: E402
from engine.language.compile import compile_policies  # noqa: E402
from engine.history import store as hist  # noqa: E402
from engine.history import questions as timeline  # noqa: E402


def appending(data: Path, work: Path, repeat: int) -> dict[str, list[float]]:
    """Wall seconds of `kam run` without and with recording the period, alternately."""
    base = work / "base.duckdb"
    run = [str(KAM), "run", "--data", str(data), "--output-format", "parquet", "-q"]
    subprocess.run(run + ["--out", str(work / "out-base"), "--history", str(base), "--period", "2026-01"],
                   check=True, cwd=HERE.parent)
    times: dict[str, list[float]] = {"plain": [], "history": []}
    for _ in range(repeat):
        times["plain"].append(measure(run + ["--out", str(work / "out-plain")])["seconds"])
        copy = work / "history.duckdb"
        shutil.copy(base, copy)
        times["history"].append(measure(run + ["--out", str(work / "out-history"), "--history", str(copy),
                                               "--period", "2026-02"])["seconds"])
    return times


def drifted(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """The customers a month later: revenue and margins move, profit follows."""
    out = frame.copy()
    n = len(out)
    revenue = out["revenue"].to_numpy(dtype=float) * np.exp(rng.normal(0.0, 0.12, n))
    rate = (out["gross_margin"] / out["revenue"]).to_numpy(dtype=float) + rng.normal(0, 0.015, n)
    out["revenue"] = np.round(revenue, 2)
    out["gross_margin"] = np.round(revenue * np.clip(rate, -0.05, 0.6), 2)
    out["profit"] = np.round(out["gross_margin"] - out["cost_to_serve"], 2)
    return out


def record_periods(data: Path, path: Path, periods: int) -> list[str]:
    """`periods` months of the customers, each decided with previous() read from the history."""
    pl = compile_policies(HERE.parent / "policies").only(["customer"])
    frames = run_inputs.read_inputs(pl, run_inputs.find_inputs(pl, data, {}))
    rng = np.random.default_rng(7)
    labels = [f"{2025 + m // 12}-{m % 12 + 1:02d}" for m in range(periods)]
    with hist.History.open(path, write=True) as h:
        for label in labels:
            t0 = time.perf_counter()
            past = api.load_past(pl, frames, h, label)
            result = api.run(pl, frames, past=past.frames)
            h.record(result, label, [], {"benchmark": True})
            h.commit()
            print(f"  recorded {label} in {time.perf_counter() - t0:.1f}s", flush=True)
            frames = {"customer": drifted(frames["customer"], rng)}
    return labels


def timed(f, repeat: int = 5) -> float:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def command(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(KAM), *args], check=True, capture_output=True, cwd=HERE.parent)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--quotes", type=int, default=1_000_000)
    parser.add_argument("--prospects", type=int, default=250_000)
    parser.add_argument("--periods", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--data", type=Path, default=HERE / "data")
    args = parser.parse_args()
    ensure_data(args.data, args.customers, args.quotes, args.prospects)
    with tempfile.TemporaryDirectory(dir=HERE) as tmp:
        work = Path(tmp)
        times = appending(args.data, work, args.repeat)
        plain, recorded = statistics.median(times["plain"]), statistics.median(times["history"])
        print(f"machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
        print(f"appending a period of {args.customers:,} customers, {args.quotes:,} quotes and "
              f"{args.prospects:,} prospects:")
        print(f"  kam run {plain:.2f}s, with --history {recorded:.2f}s: +{(recorded / plain - 1) * 100:.0f}% "
              f"(all runs: {times})")

        path = work / "periods.duckdb"
        print(f"recording {args.periods} periods of {args.customers:,} customers:")
        labels = record_periods(args.data, path, args.periods)
        size = path.stat().st_size / 2**20
        with hist.History.open(path) as h:
            keys = h.con.execute("SELECT customer_id FROM customer_history WHERE kam_period = ? "
                                 "ORDER BY hash(customer_id) LIMIT 5", [labels[-1]]).fetchall()
            path_s = statistics.median(timed(lambda k=k: timeline.entity_path(h, k[0], "customer")) for k in keys)
            matrix_s = timed(lambda: timeline.changes(h, entity="customer", decision="tier"), 3)
            moved = timeline.changes(h, entity="customer", decision="tier")[0].moved
        key = keys[0][0]
        history_cmd = command("history", key, "--history", str(path))
        changes_cmd = command("changes", "--history", str(path), "--entity", "customer", "--decision", "tier")
        print(f"  {args.periods} periods, {args.periods * args.customers:,} customer rows, {size:,.0f} MiB")
        print(f"  one customer's path: {path_s * 1000:.0f} ms (query), `kam history` {history_cmd:.2f}s as a command")
        print(f"  transition matrix {labels[-2]} -> {labels[-1]} with moves and {moved:,} movers: "
              f"{matrix_s:.2f}s (query), `kam changes --decision tier` {changes_cmd:.2f}s as a command")


if __name__ == "__main__":
    main()
