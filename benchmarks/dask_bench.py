"""`kam run --engine dask` on many customers: customers/s, each stage's seconds and the peak memory
of every process, for one size or several (the time should grow linearly, the workers' peaks stay flat).

    python benchmarks/dask_bench.py --customers 2000000                    # a development measure: ~1 min
    python benchmarks/dask_bench.py --customers 20000000 40000000 60000000  # linear time, flat memory

Generates the partitions once per size (benchmarks/dask_data.py, cached under benchmarks/data-<N>,
or under --data-root), then runs the real `kam run --engine dask` on a local cluster of 2 worker
processes with a memory limit each, sampling the resident memory of the client and of every worker
process (psutil, every 0.2 s). The data takes about 65 bytes a customer on disk with its quotes and
prospects (1.3 GB for 20M), the output parts about 35 (removed after each size unless `--keep-out`),
and the states the workers spill between passes (Dask's local directory, /tmp by default) up to about
200 (4 GB for 20M, 20 GB for 100M).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import dask_data  # noqa: E402

KAM = Path(sys.executable).parent / "kam"


def data_for(customers: int, root: Path) -> Path:
    """The benchmark's partitions of `customers` customers (made the first time)."""
    data = root / f"data-{customers}"
    if not (data / "customers").is_dir():
        t = time.perf_counter()
        # 2,000,000 customers generated in 5 uneven partitions (one empty, one with a whole tie
        # group), then copied with other ids up to the size asked for
        copies = max(1, customers // 2_000_000)
        made = dask_data.make(data, customers // copies, 5)
        dask_data.replicate(data, made, copies)
        print(f"generated {customers:,} customers in {time.perf_counter() - t:.0f} s", flush=True)
    return data


def measure(customers: int, args: argparse.Namespace) -> dict:
    """One `kam run --engine dask` over the data of `customers` customers: its figures."""
    data = data_for(customers, args.data_root)
    out = args.out.with_name(f"{args.out.name}-{customers}")
    cmd = [str(KAM), "run", "--engine", "dask", "--data", str(data), "--out", str(out), "-q",
           "--workers", str(args.workers), "--worker-memory", args.worker_memory]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peaks: dict[int, tuple[str, int]] = {}
    cpu: dict[int, tuple[str, float]] = {}  # the last CPU seconds seen per process (others share the machine)
    stop = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                for p in [root] + root.children(recursive=True):
                    rss = p.memory_info().rss
                    cmdline = " ".join(p.cmdline())
                    name = "client" if p.pid == proc.pid else ("worker" if "multiprocessing-fork" in cmdline
                                                               else cmdline[-40:])
                    if rss > peaks.get(p.pid, ("", 0))[1]:
                        peaks[p.pid] = (name, rss)
                    times = p.cpu_times()
                    cpu[p.pid] = (name, times.user + times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    seconds = time.perf_counter() - t
    workers = sorted((round(r / 2**20) for n, r in peaks.values() if n == "worker"), reverse=True)
    client = max((round(r / 2**20) for n, r in peaks.values() if n == "client"), default=0)
    report = {"customers": customers, "rc": rc, "seconds": round(seconds, 1),
              "customers_per_second": round(customers / seconds), "worker_peak_mib": workers[: args.workers],
              "client_peak_mib": client,
              # CPU seconds of the run's processes: a measure that other work on the machine disturbs less
              "cpu_seconds": round(sum(c for _, c in cpu.values()), 1),
              "worker_cpu_seconds": sorted((round(c, 1) for n, c in cpu.values() if n == "worker"), reverse=True)}
    manifest = out / "manifest.json"
    if manifest.exists():
        report["stages_seconds"] = json.loads(manifest.read_text())["timings_seconds"]
        report["output_gb"] = round(sum(p.stat().st_size for p in out.rglob("*.parquet")) / 1e9, 2)
    report["input_gb"] = round(sum(p.stat().st_size for p in data.rglob("*.parquet")) / 1e9, 2)
    if not args.keep_out:
        shutil.rmtree(out, ignore_errors=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[20_000_000],
                        help="one size or several, each measured in turn")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="2GiB")
    parser.add_argument("--data-root", type=Path, default=HERE, help="where the data-<N> folders are made")
    parser.add_argument("--out", type=Path, default=Path("/tmp/kam-dask-bench-out"))
    parser.add_argument("--keep-out", action="store_true", help="keep each run's output folder")
    args = parser.parse_args()
    reports = []
    for n in args.customers:
        reports.append(measure(n, args))
        print(json.dumps(reports[-1], indent=2), flush=True)
    if len(reports) > 1:
        base = reports[0]
        print("customers      seconds  s per million  customers/s  worker peaks (MiB)")
        for r in reports:
            per_m = r["seconds"] / (r["customers"] / 1e6)
            print(f"{r['customers']:>11,}  {r['seconds']:>9.1f}  {per_m:>13.2f}  {r['customers_per_second']:>11,}  "
                  f"{r['worker_peak_mib']}")
        last = reports[-1]
        print(f"time ratio {last['seconds'] / base['seconds']:.2f} for a size ratio "
              f"{last['customers'] / base['customers']:.2f}")


if __name__ == "__main__":
    main()
