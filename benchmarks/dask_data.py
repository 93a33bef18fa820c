"""Partitioned Parquet facts for `kam run --engine dask`: customers, quotes and prospects in uneven
partitions, one of them empty, one holding a whole tie group (customers with identical figures,
prospects with identical ranking values), generated chunk by chunk so that memory stays small.

    python benchmarks/dask_data.py --customers 20000000 --out benchmarks/data-20m
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import generate  # noqa: E402


def sizes(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """Uneven partition sizes adding up to `total`, the second one empty."""
    weights = rng.uniform(0.2, 1.8, size=parts)
    weights[1] = 0.0
    out = np.floor(weights / weights.sum() * total).astype(int)
    out[0] += total - out.sum()
    return out.tolist()


def _write(frame, path: Path) -> None:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def make(out: Path, customers: int, parts: int, seed: int = 7, quotes_per_customer: float = 1.0,
         prospects_per_customer: float = 0.25, tie_rows: int = 500) -> dict[str, list[Path]]:
    """Write the partitions under `out/customers`, `out/quotes`, `out/prospects`; return them."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {"customer": [], "quote": [], "prospect": []}
    for folder in ("customers", "quotes", "prospects"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(sizes(customers, parts, rng)):
        cust = generate.customers(max(n, 1), rng).iloc[:n]
        cust["customer_id"] = (f"{i:03d}-" + cust["customer_id"].astype(str)).astype("string")
        pros = generate.prospects(max(1, int(n * prospects_per_customer)), rng).iloc[:int(n * prospects_per_customer)]
        pros["prospect_id"] = (f"{i:03d}-" + pros["prospect_id"].astype(str)).astype("string")
        if i == 2 and n > tie_rows:  # a whole tie group in one partition
            for col in ("revenue", "gross_margin", "cost_to_serve", "profit", "orders_12m", "credit_score"):
                cust.loc[cust.index[:tie_rows], col] = cust[col].iloc[0]
            for col in ("industry_influence", "referral_potential", "co_branding", "opens_new_field",
                        "quality_fit", "culture_fit", "expected_revenue", "region", "industry"):
                pros.loc[pros.index[: tie_rows // 4], col] = pros[col].iloc[0]
        ids = cust["customer_id"].to_numpy() if n else np.array(["000-000001"])
        quo = generate.quotes(max(1, int(n * quotes_per_customer)), ids, rng).iloc[:int(n * quotes_per_customer)]
        quo["quote_id"] = (f"{i:03d}-" + quo["quote_id"].astype(str)).astype("string")
        for entity, frame, folder in (("customer", cust, "customers"), ("quote", quo, "quotes"),
                                      ("prospect", pros, "prospects")):
            path = out / folder / f"part-{i:05d}.parquet"
            _write(frame, path)
            written[entity].append(path)
    return written


def replicate(out: Path, written: dict[str, list[Path]], copies: int) -> dict[str, list[Path]]:
    """More partitions made from the generated ones with other ids (fast: Arrow only), for sizes
    where generating every row would take longer than the run being measured."""
    import pyarrow.compute as pc

    for entity, folder, key_cols in (("customer", "customers", ["customer_id"]),
                                     ("quote", "quotes", ["quote_id", "customer_id"]),
                                     ("prospect", "prospects", ["prospect_id"])):
        base = list(written[entity])
        for c in range(1, copies):
            for j, path in enumerate(base):
                t = pq.read_table(path)
                for col in key_cols:
                    i = t.schema.get_field_index(col)
                    t = t.set_column(i, col, pc.binary_join_element_wise(f"r{c:03d}", t[col].cast(pa.string()), "-"))
                target = out / folder / f"part-{c * len(base) + j:05d}.parquet"
                pq.write_table(t, target)
                written[entity].append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2_000_000)
    parser.add_argument("--parts", type=int, default=0, help="partitions (default: one per 500,000 customers, "
                        "at least 5)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/data-dask"))
    args = parser.parse_args()
    make(args.out, args.customers, args.parts or max(5, args.customers // 500_000))


if __name__ == "__main__":
    main()
