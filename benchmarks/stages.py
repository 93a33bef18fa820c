"""Where `kam run` spends its time: every stage of the 1M benchmark run one after the other, per entity.

    python benchmarks/stages.py            # after benchmarks/bench.py made benchmarks/data

`kam run` overlaps some of these (an entity's texts are rendered while the next entity is
evaluated, a file is written as soon as its table is ready); here each runs alone, so the figures
add up and say what each costs. Median of three rounds.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    import pyarrow.parquet as pq

    from engine.batch.facts import identifier_facts
    from engine.language.compile import compile_policies
    from engine.batch.evaluate import evaluate_entity
    from engine.batch.explain import output_frame
    from engine.batch.facts import read_facts
    from engine.batch.write import write_frame

    data = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "data"
    rounds: list[dict[str, float]] = []
    out = Path(tempfile.mkdtemp(prefix="kam-stages-"))
    for _ in range(3):
        row: dict[str, float] = {}
        t = time.perf_counter()
        pl = compile_policies(ROOT / "policies")
        row["compile"] = time.perf_counter() - t
        ps = pl.checked.policy_set
        frames = {}
        for ep in pl.entities:
            path = data / f"{ep.entity}s.parquet"
            t = time.perf_counter()
            pq.read_table(path)
            row[f"read {ep.entity}: Parquet decode"] = time.perf_counter() - t
            t = time.perf_counter()
            frames[ep.entity] = read_facts(path, ps.facts(ep.entity), None, identifier_facts(pl, ep.entity),
                                           ep.entity)
            row[f"read {ep.entity}: decode and fact checks"] = time.perf_counter() - t
        results = {}
        for ep in pl.entities:
            types = {name: f.type for name, f in ps.facts(ep.entity).items()}
            t = time.perf_counter()
            results[ep.entity] = evaluate_entity(ep, frames[ep.entity], types, results)
            row[f"evaluate {ep.entity}"] = time.perf_counter() - t
        tables = {}
        for e, r in results.items():
            t = time.perf_counter()
            tables[e] = output_frame(r)
            row[f"explain {e} (one thread)"] = time.perf_counter() - t
        for e, frame in tables.items():
            t = time.perf_counter()
            write_frame(frame, out / f"{e}.parquet", "parquet")
            row[f"write {e}"] = time.perf_counter() - t
        rounds.append(row)
    print("| stage | seconds |")
    print("| --- | ---: |")
    for k in rounds[0]:
        print(f"| {k} | {statistics.median(r[k] for r in rounds):.2f} |")


if __name__ == "__main__":
    main()
