"""Latency of real-time decisions: `kam stream` (durable_rules backend) on random events.

    python benchmarks/stream_bench.py                 # 5,000 events, about a minute
    python benchmarks/stream_bench.py --events 20000

Makes a calibration from a batch run of the example customers, starts the stream from those
customers, then feeds random partial updates (profit, revenue, orders, credit, tenure) for them.
Reports the time from an event to its decisions (median and 99th percentile, measured per event
around the engine call: merge, checks, features, durable_rules, hit policies, texts), the
throughput of the whole `kam stream` command on the same events (JSON in and out included), and
peak memory of that command.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.language.compile import compile_policies
from engine.engines import calibration as calibrate
from engine.engines import stream
from engine.batch.facts import read_facts

ROOT = Path(__file__).resolve().parent.parent
KAM = Path(sys.executable).parent / "kam"


def make_events(ids: list[str], n: int, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        event: dict = {"customer_id": ids[rng.integers(len(ids))], "event_time": f"t{i}"}
        kind = i % 5
        if kind == 0:
            event["profit"] = round(float(rng.normal(5000, 30000)), 2)
        elif kind == 1:
            event["revenue"] = round(float(rng.lognormal(11.6, 1.3)), 2)
        elif kind == 2:
            event["orders_12m"] = int(rng.integers(1, 200))
        elif kind == 3:
            event["credit_score"] = int(rng.integers(20, 100))
        else:
            event["tenure_years"] = round(float(rng.uniform(0, 15)), 1)
        events.append(event)
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kam-stream-bench-"))
    cal_path = work / "calibration.json"
    subprocess.run([str(KAM), "run", "--entity", "customer", "--save-calibration", str(cal_path), "--out",
                    str(work / "out"), "-q"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    policies = compile_policies(ROOT / "policies")
    facts_file = ROOT / "examples" / "customers.csv"
    runner = stream.StreamRunner(policies, "customer", calibrate.load(cal_path), "durable", stream.Store(None))
    runner.seed(read_facts(facts_file, policies.checked.policy_set.facts("customer")))
    events = make_events(sorted(runner.store.memory), args.events)

    latencies = []
    for event in events:
        t = time.perf_counter()
        key, facts, decisions, changes = runner.apply(event)
        runner.store.commit("bench", 0, key, facts, decisions, [], 0)
        latencies.append(time.perf_counter() - t)
    ms = np.array(latencies) * 1000

    events_file = work / "events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    t = time.perf_counter()
    done = subprocess.run([str(KAM), "stream", str(events_file), "--calibration", str(cal_path), "--initial",
                           str(facts_file)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=True)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    changes = done.stdout.count("\n")

    print(f"events: {len(events):,} partial updates of 2,000 example customers (durable_rules backend)")
    print("| measure | value |")
    print("| --- | ---: |")
    print(f"| median time from event to decisions | {statistics.median(ms):.2f} ms |")
    print(f"| 99th percentile | {np.percentile(ms, 99):.2f} ms |")
    print(f"| `kam stream` throughput (JSON in and out, {changes:,} changes printed) | "
          f"{len(events) / seconds:,.0f} events/s |")
    print(f"| `kam stream` peak memory | {peak:,.0f} MiB |")


if __name__ == "__main__":
    main()
