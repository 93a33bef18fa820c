"""`kam run --engine dask` on many customers: wall time and the peak memory of every process.

    python benchmarks/dask_bench.py --customers 20000000          # 20M customers, 20M quotes, 5M prospects

Generates the partitions once (benchmarks/dask_data.py, cached under benchmarks/data-<N>), then runs
the real `kam run --engine dask` on a local cluster of 2 worker processes with a memory limit each,
sampling the resident memory of the client and of every worker process (psutil, every 0.2 s).
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory", default="2GiB")
    parser.add_argument("--out", type=Path, default=Path("/tmp/kam-dask-bench-out"))
    args = parser.parse_args()
    data = HERE / f"data-{args.customers}"
    if not (data / "customers").is_dir():
        t = time.perf_counter()
        # 2,000,000 customers generated in 5 uneven partitions (one empty, one with a whole tie
        # group), then copied with other ids up to the size asked for
        copies = max(1, args.customers // 2_000_000)
        made = dask_data.make(data, args.customers // copies, 5)
        dask_data.replicate(data, made, copies)
        print(f"generated {args.customers:,} customers in {time.perf_counter() - t:.0f} s", flush=True)
    cmd = [str(KAM), "run", "--engine", "dask", "--data", str(data), "--out", str(args.out), "-q",
           "--workers", str(args.workers), "--worker-memory", args.worker_memory]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd)
    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not stop.is_set():
            try:
                for p in [root] + root.children(recursive=True):
                    rss = p.memory_info().rss
                    name = "client" if p.pid == proc.pid else " ".join(p.cmdline()[-2:])[-40:]
                    if rss > peaks.get(p.pid, ("", 0))[1]:
                        peaks[p.pid] = (name, rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    rc = proc.wait()
    stop.set()
    seconds = time.perf_counter() - t
    top = sorted(peaks.values(), key=lambda v: -v[1])[: args.workers + 3]
    report = {"customers": args.customers, "rc": rc, "seconds": round(seconds, 1),
              "peak_rss_mib": [(n, round(r / 2**20)) for n, r in top]}
    manifest = args.out / "manifest.json"
    if manifest.exists():
        report["timings"] = json.loads(manifest.read_text())["timings_seconds"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
