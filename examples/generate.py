"""Generate the example facts: customers, prospects and quotes (seeded, so the files are reproducible).

The shape follows the seed documents: revenue is heavy-tailed (a few customers carry most of the
profit), a sizeable minority of customers lose money once the cost to serve is counted, customer
ids are six-digit texts with leading zeros, and quotes name customers by id (a few name unknown ones).

    python examples/generate.py --periods 3           # the committed example files
    python examples/generate.py --customers 1000000 --quotes 1000000 --prospects 250000 \\
        --format parquet --out benchmarks/data       # benchmark scale

With `--periods N` it also writes N monthly periods under `periods/<YYYY-MM>/` (from --first-period):
the first holds the same customers and prospects as the main files, and each later one lets them
drift as a real portfolio does: revenue and margins move, orders follow revenue, credit scores are
reviewed, about 1.5% of customers leave and 2% arrive, and each month brings its own quotes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

REGIONS = np.array(["north", "south", "east", "west", "central"])
INDUSTRIES = np.array(["manufacturing", "retail", "telecom", "energy", "healthcare", "logistics", "software"])
VALUE_TYPES = np.array(["price", "function", "image"])
PRODUCTS = np.array(["sensor-kit", "control-unit", "service-contract", "field-install", "analytics-suite"])
LIST_PRICES = np.array([15_000.0, 150_000.0, 40_000.0, 25_000.0, 90_000.0])


def customers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    ids = np.char.zfill(rng.permutation(np.arange(1, n * 3 + 1))[:n].astype(str), 6)
    revenue = np.round(rng.lognormal(mean=11.6, sigma=1.35, size=n), 2)
    margin_rate = np.clip(rng.normal(0.24, 0.08, size=n), -0.05, 0.6)
    gross_margin = np.round(revenue * margin_rate, 2)
    orders = np.maximum(1, rng.poisson(np.clip(revenue / 9_000, 2, 400))).astype(int)
    # serving small accounts costs nearly as much as big ones: a fixed part plus a part per order
    cost_to_serve = np.round(6_500 + orders * rng.uniform(60, 260, size=n) + rng.normal(0, 1_500, size=n).clip(0), 2)
    profit = np.round(gross_margin - cost_to_serve, 2)
    profit_prev = np.round(profit * rng.normal(0.9, 0.35, size=n) + rng.normal(0, 4_000, size=n), 2)
    tenure = np.round(rng.gamma(2.0, 2.6, size=n), 1)
    growth = np.round(rng.normal(0.06, 0.22, size=n), 3)
    credit = np.clip(np.round(rng.normal(68, 15, size=n)), 0, 100)
    strategic = rng.random(n) < 0.06
    frame = pd.DataFrame({
        "customer_id": ids,
        "region": rng.choice(REGIONS, size=n, p=[0.25, 0.2, 0.25, 0.15, 0.15]),
        "industry": rng.choice(INDUSTRIES, size=n),
        "value_type": rng.choice(VALUE_TYPES, size=n, p=[0.5, 0.3, 0.2]),
        "revenue": revenue,
        "gross_margin": gross_margin,
        "cost_to_serve": cost_to_serve,
        "profit": profit,
        "profit_prev_year": profit_prev,
        "orders_12m": orders,
        "credit_score": credit,
        "tenure_years": tenure,
        "revenue_growth": growth,
        "strategic_account": np.where(strategic, "true", "false"),
    })
    # real exports have gaps: a few credit scores and last-year profits are unknown
    frame.loc[rng.random(n) < 0.01, "credit_score"] = np.nan
    frame.loc[rng.random(n) < 0.01, "profit_prev_year"] = np.nan
    return frame


def prospects(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "prospect_id": np.char.add("P", np.char.zfill(np.arange(1, n + 1).astype(str), 5)),
        "region": rng.choice(REGIONS, size=n),
        "industry": rng.choice(INDUSTRIES, size=n),
        "industry_influence": rng.binomial(10, 0.45, size=n),
        "referral_potential": rng.binomial(10, 0.4, size=n),
        "co_branding": np.where(rng.random(n) < 0.15, "yes", "no"),
        "opens_new_field": np.where(rng.random(n) < 0.12, "yes", "no"),
        "quality_fit": rng.binomial(10, 0.6, size=n),
        "culture_fit": rng.binomial(10, 0.6, size=n),
        "expected_revenue": np.round(rng.lognormal(11.0, 1.2, size=n), 0),
    })


def quotes(n: int, customer_ids: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    product = rng.integers(0, len(PRODUCTS), size=n)
    list_price = LIST_PRICES[product]
    discount = np.clip(rng.gamma(2.0, 0.06, size=n), 0, 0.45)
    cust = rng.choice(customer_ids, size=n)
    unknown = rng.random(n) < 0.004  # typos and customers created after the export
    cust = np.where(unknown, np.char.zfill(rng.integers(900_000, 999_999, size=n).astype(str), 6), cust)
    return pd.DataFrame({
        "quote_id": np.char.add("Q", np.char.zfill(np.arange(1, n + 1).astype(str), 6)),
        "customer_id": cust,
        "product": PRODUCTS[product],
        "list_price": list_price,
        "quoted_price": np.round(list_price * (1 - discount), -1),
        "quantity": rng.integers(1, 20, size=n),
    })


def updates(cust: pd.DataFrame, n: int, rng: np.random.Generator) -> list[dict]:
    """Events for `kam stream`: partial updates of existing customers, as a CRM would send them."""
    events = []
    for i in range(n):
        c = cust.iloc[int(rng.integers(len(cust)))]
        event: dict = {"customer_id": c["customer_id"], "event_time": f"2026-12-01T09:{i // 60:02d}:{i % 60:02d}Z"}
        kind = i % 4
        if kind == 0:  # the year closes with a loss
            event.update(profit=round(-float(rng.uniform(500, 15000)), 2),
                         profit_prev_year=round(-float(rng.uniform(100, 5000)), 2))
        elif kind == 1:  # a large new contract
            event.update(revenue=round(float(c["revenue"]) * 4, 2), orders_12m=int(c["orders_12m"]) + 60)
        elif kind == 2:  # the credit review
            event.update(credit_score=int(rng.integers(20, 100)))
        else:  # management flags the account as strategic
            event.update(strategic_account=True)
        events.append(event)
    return events


def drift(cust: pd.DataFrame, next_ids: list[str], rng: np.random.Generator) -> pd.DataFrame:
    """The customers one month later."""
    n = len(cust)
    out = cust.copy()
    revenue = cust["revenue"].to_numpy(dtype=float) * np.exp(rng.normal(0.005, 0.12, size=n))
    rate = (cust["gross_margin"] / cust["revenue"]).to_numpy(dtype=float) + rng.normal(0, 0.015, size=n)
    orders_before = cust["orders_12m"].to_numpy(dtype=float)
    orders = np.maximum(1, np.round(orders_before * np.exp(rng.normal(0, 0.08, size=n)))).astype(int)
    cost = cust["cost_to_serve"].to_numpy(dtype=float) * np.sqrt(orders / orders_before) \
        * np.exp(rng.normal(0, 0.05, size=n))
    out["revenue"] = np.round(revenue, 2)
    out["gross_margin"] = np.round(revenue * np.clip(rate, -0.05, 0.6), 2)
    out["orders_12m"] = orders
    out["cost_to_serve"] = np.round(cost, 2)
    out["profit"] = np.round(out["gross_margin"] - out["cost_to_serve"], 2)
    credit = cust["credit_score"].to_numpy(dtype=float) + np.round(rng.normal(0, 3, size=n))
    out["credit_score"] = np.clip(credit, 0, 100)  # an unknown score stays unknown
    out["tenure_years"] = np.round(cust["tenure_years"] + 1 / 12, 1)
    out["revenue_growth"] = np.round(cust["revenue_growth"] + rng.normal(0, 0.03, size=n), 3)
    flip = rng.random(n) < 0.005
    out.loc[flip, "strategic_account"] = np.where(out.loc[flip, "strategic_account"] == "true", "false", "true")
    out = out[rng.random(n) >= 0.015]  # customers who leave
    arrivals = customers(max(1, int(n * 0.02)), rng)
    arrivals["customer_id"] = next_ids[: len(arrivals)]
    arrivals["tenure_years"] = 0.1
    del next_ids[: len(arrivals)]
    return pd.concat([out, arrivals], ignore_index=True)


def periods(cust: pd.DataFrame, pros: pd.DataFrame, n_quotes: int, count: int, first: str, seed: int,
            out: Path, fmt: str) -> None:
    """`count` monthly periods starting with the given customers and prospects."""
    rng = np.random.default_rng(seed + 1)  # its own stream: the main files stay as they were
    year, month = (int(x) for x in first.split("-"))
    used = set(cust["customer_id"])
    next_ids = [i for i in np.char.zfill(rng.permutation(np.arange(1, len(cust) * 3 + 1)).astype(str), 6)
                if i not in used]
    ext = "csv" if fmt == "csv" else "parquet"
    for k in range(count):
        label = f"{year + (month - 1 + k) // 12}-{(month - 1 + k) % 12 + 1:02d}"
        if k:
            cust = drift(cust, next_ids, rng)
            pros = pros.copy()
            pros["expected_revenue"] = np.round(pros["expected_revenue"] * np.exp(rng.normal(0, 0.1, len(pros))), 0)
            # a tenth of the prospects are met again and scored anew
            met = rng.random(len(pros)) < 0.1
            for column in ("industry_influence", "referral_potential", "quality_fit", "culture_fit"):
                pros.loc[met, column] = np.clip(pros.loc[met, column] + rng.integers(-2, 3, int(met.sum())), 0, 10)
        folder = out / "periods" / label
        folder.mkdir(parents=True, exist_ok=True)
        q = quotes(n_quotes, cust["customer_id"].to_numpy(), rng)
        q["quote_id"] = np.char.add("Q", np.char.zfill(np.arange(k * n_quotes + 1, (k + 1) * n_quotes + 1)
                                                       .astype(str), 6))
        write(cust, folder / f"customers.{ext}", fmt)
        write(pros, folder / f"prospects.{ext}", fmt)
        write(q, folder / f"quotes.{ext}", fmt)


def write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(path, index=False, lineterminator="\n")
    else:
        frame.to_parquet(path, index=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--prospects", type=int, default=500)
    parser.add_argument("--quotes", type=int, default=3000)
    parser.add_argument("--updates", type=int, default=200, help="events for `kam stream` (0: none)")
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--periods", type=int, default=0, help="also write this many monthly periods")
    parser.add_argument("--first-period", default="2026-09", help="the label of the first period (YYYY-MM)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    ext = "csv" if args.format == "csv" else "parquet"
    cust = customers(args.customers, rng)
    write(cust, args.out / f"customers.{ext}", args.format)
    pros = prospects(args.prospects, rng)
    write(pros, args.out / f"prospects.{ext}", args.format)
    write(quotes(args.quotes, cust["customer_id"].to_numpy(), rng), args.out / f"quotes.{ext}", args.format)
    if args.updates:
        lines = [json.dumps(e) + "\n" for e in updates(cust, args.updates, rng)]
        (args.out / "customer_updates.jsonl").write_text("".join(lines), encoding="utf-8")
    if args.periods:
        periods(cust, pros, args.quotes, args.periods, args.first_period, args.seed, args.out, args.format)


if __name__ == "__main__":
    main()
