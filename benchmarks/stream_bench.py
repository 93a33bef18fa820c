"""Latency of real-time decisions: `kam stream` on random events, per backend.

    python benchmarks/stream_bench.py                 # 5,000 events, about a minute
    python benchmarks/stream_bench.py --events 20000 --backends row

Makes a calibration from a batch run of the example customers, starts the stream from those
customers, then feeds random partial updates (profit, revenue, orders, credit, tenure) for them.
Reports, per backend (`row`, the default, and `durable` for comparison), the time from an event to
its decisions (median and 99th percentile, measured per event around the engine call: merge,
checks, features, rules, hit policies, texts, change records); where the row backend's time goes,
part by part; the throughput of the whole `kam stream` command (default backend) on the same
events (JSON in and out included), and peak memory of that command.
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
    parser.add_argument("--backends", default="row,durable", help="comma-separated: row, pandas, durable")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kam-stream-bench-"))
    cal_path = work / "calibration.json"
    subprocess.run([str(KAM), "run", "--entity", "customer", "--save-calibration", str(cal_path), "--out",
                    str(work / "out"), "-q"], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    policies = compile_policies(ROOT / "policies")
    facts_file = ROOT / "examples" / "customers.csv"
    frame = read_facts(facts_file, policies.checked.policy_set.facts("customer"))
    cal = calibrate.load(cal_path)
    latencies: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    events: list[dict] = []
    runners = {}
    for backend in args.backends.split(","):
        runner = stream.StreamRunner(policies, "customer", cal, backend, stream.Store(None))
        runner.seed(frame)
        events = make_events(sorted(runner.store.memory), args.events)
        latencies[backend] = measure(runner, events)
        runners[backend] = runner
    split = time_split(stream.StreamRunner(policies, "customer", cal, "row", stream.Store(None)), frame, events) \
        if "row" in runners else None

    events_file = work / "events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    t = time.perf_counter()
    done = subprocess.run([str(KAM), "stream", str(events_file), "--calibration", str(cal_path), "--initial",
                           str(facts_file)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=True)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    changes = done.stdout.count("\n")

    print(f"events: {len(events):,} partial updates of 2,000 example customers")
    print("| measure | value |")
    print("| --- | ---: |")
    for backend, (ms, cpu) in latencies.items():
        print(f"| median time from event to decisions, `--backend {backend}` | {statistics.median(ms):.3f} ms |")
        print(f"| 99th percentile, `--backend {backend}` | {np.percentile(ms, 99):.3f} ms |")
        print(f"| the same in CPU time: median, 99th percentile, `--backend {backend}` | "
              f"{statistics.median(cpu):.3f} ms, {np.percentile(cpu, 99):.3f} ms |")
    print(f"| `kam stream` throughput (JSON in and out, {changes:,} changes printed) | "
          f"{len(events) / seconds:,.0f} events/s |")
    print(f"| `kam stream` peak memory | {peak:,.0f} MiB |")
    if split is not None:
        total = sum(split.values())
        print("\nwhere an event's time goes (`--backend row`, median per event, measured part by part):")
        print("| part | time | share |")
        print("| --- | ---: | ---: |")
        for part, seconds in split.items():
            print(f"| {part} | {seconds * 1e6:.0f} µs | {seconds / total:.0%} |")
        print(f"| sum of the parts | {total * 1e6:.0f} µs | |")


def measure(runner: stream.StreamRunner, events: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Milliseconds per event (merged, decided, its changes made and its state kept): by the clock on
    the wall, and in CPU time of this thread (on a busy machine the wall clock also counts the time
    the process waited for a core)."""
    wall, cpu = [], []
    for event in events:
        t, c = time.perf_counter(), time.thread_time()
        key, facts, decisions, changes = runner.apply(event)
        runner.store.commit("bench", 0, key, facts, decisions, [], 0)
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return np.array(wall) * 1000, np.array(cpu) * 1000


def time_split(runner: stream.StreamRunner, frame, events: list[dict]) -> dict[str, float]:
    """Median seconds per event in each part of `StreamRunner.apply` with the row backend, the parts
    timed one by one (the clock calls add a little to each; medians, since on a busy machine a mean
    is mostly the waits for a core)."""
    from engine.engines.row import RowDecision

    runner.seed(frame)
    row = runner.row
    assert row is not None
    parts = dict.fromkeys(["merge the event into the stored facts", "features", "rules, hit policies and values",
                           "values, rule ids and because texts as kept", "change records and the stored state"], 0.0)
    names = list(parts)
    clock = time.perf_counter
    per_event: dict[str, list[float]] = {name: [] for name in names}
    for event in events:
        parts = dict.fromkeys(names, 0.0)
        t0 = clock()
        key, facts, old = runner.merge(event)
        t1 = clock()
        env = row.environment(facts, runner.past_rows.get(key))
        decided = {}
        for name, step in row.steps:
            ts = clock()
            if isinstance(step, RowDecision):
                out = step.outcome(env)
                env.update(step.values(env, out))
                decided[name] = (step, out)
                parts[names[2]] += clock() - ts
            else:
                env[name] = step(env)
                parts[names[1]] += clock() - ts
        t2 = clock()
        decisions = row.describe(env, decided)
        t3 = clock()
        changes = runner.changes(key, old, decisions, event.get("event_time"))
        runner.store.commit("bench", 0, key, facts, decisions, [], 0)
        t4 = clock()
        parts[names[0]] += t1 - t0
        parts[names[3]] += t3 - t2
        parts[names[4]] += t4 - t3
        assert changes is not None
        for name, seconds in parts.items():
            per_event[name].append(seconds)
    return {name: statistics.median(seconds) for name, seconds in per_event.items()}


if __name__ == "__main__":
    main()
