"""The shipped policy set written by hand in numpy/pandas: the reference for the benchmark ratio.

Reads the same Parquet facts and writes the same output columns (values, rule ids, because texts)
as `kam run --output-format parquet`, so `bench.py` can check that both agree and compare speed.
Only the number formatter is shared with kam (`engine.numbers.format_numbers`), so that both
print numbers identically; everything else is plain array code, one policy after another.

    python benchmarks/handwritten.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.numbers import format_numbers


def pct_rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    m = int((~np.isnan(x)).sum())
    out = np.full(x.size, np.nan)
    s = x[order[:m]]
    out[order[:m]] = np.searchsorted(s, s, side="right") / m
    return out


def cumshare(x: np.ndarray) -> np.ndarray:
    order = np.argsort(-x, kind="stable")
    s = x[order]
    csum = np.cumsum(s)
    # ties share the cumulative sum of their whole block
    last_of_block = np.r_[s[1:] != s[:-1], True]
    block_end = np.minimum.accumulate(np.where(last_of_block, np.arange(s.size), s.size)[::-1])[::-1]
    out = np.empty(x.size)
    out[order] = csum[block_end] / csum[-1]
    return out


def num(x: np.ndarray, spec: str) -> pa.Array:
    return format_numbers(x, spec)


def text(*parts: object) -> pa.Array:
    arrays = [p for p in parts if isinstance(p, pa.Array)]
    if not arrays:
        return pa.array(["".join(map(str, parts))])
    return pc.binary_join_element_wise(*[p if isinstance(p, pa.Array) else str(p) for p in parts], "")


def choose(n: int, rules: list[tuple[np.ndarray, str, object, object]]) -> tuple:
    """First-hit: per row the first rule whose mask is true. Each rule: (mask, id, value, text_fn)."""
    which = np.full(n, -1)
    for i, (mask, _, _, _) in enumerate(rules):
        which[(which < 0) & mask] = i
    values = np.empty(len(rules) + 1, dtype=object)
    values[:-1] = [r[2] for r in rules]
    values = values[which]
    ids = np.array([r[1] for r in rules] + [None], dtype=object)[which]
    return values, ids, place(which, [r[3] for r in rules]), which


def place(which: np.ndarray, makers: list) -> pa.Array:
    """Texts for rows decided by rule i come from makers[i](rows)."""
    pieces, positions, offset = [], np.zeros(which.size, dtype=np.int64), 0
    for i, make in enumerate(makers):
        rows = np.flatnonzero(which == i)
        if rows.size == 0:
            continue
        t = make(rows)
        if len(t) == 1 and rows.size > 1:
            positions[rows] = offset
            offset += 1
        else:
            positions[rows] = offset + np.arange(rows.size)
            offset += rows.size
        pieces.append(t)
    if not pieces:
        return pa.array([], pa.string())
    return pa.concat_arrays(pieces).take(pa.array(positions))


def const(s: str):
    return lambda rows: pa.array([s])


def customers(df: pd.DataFrame) -> pd.DataFrame:
    n = len(df)
    f = {c: df[c].to_numpy(dtype=float, na_value=np.nan) for c in
         ("revenue", "profit", "orders_12m", "credit_score", "gross_margin", "cost_to_serve", "profit_prev_year",
          "tenure_years", "revenue_growth")}
    strategic = df["strategic_account"].astype(str).str.lower().isin(["true", "yes", "1", "y", "t"]).to_numpy()
    with np.errstate(invalid="ignore"):
        profit_share = cumshare(f["profit"])
        value_score = 0.5 * pct_rank(f["profit"]) + 0.3 * pct_rank(f["orders_12m"]) + \
            0.2 * np.where(np.isnan(f["credit_score"]), 50, f["credit_score"]) / 100
        value_position = pct_rank(value_score)
        revenue_position = pct_rank(f["revenue"])
        loyal = (f["tenure_years"] >= 5) & (f["profit_prev_year"] > 0)
        big = (revenue_position >= 0.9) & (f["profit"] > 0)
        potential = (revenue_position < 0.5) & (f["revenue_growth"] >= 0.25)
        strategic_new = (f["tenure_years"] < 2) & strategic
        chicken = (f["profit"] < 0) & (f["profit_prev_year"] < 0) & (f["cost_to_serve"] > f["gross_margin"])

    def at(name: str, spec: str):
        return lambda rows: num((f[name] if name in f else locals_[name])[rows], spec)

    locals_ = {"profit_share": profit_share, "value_score": value_score, "value_position": value_position}
    tier, tier_rule, tier_because, _ = choose(n, [
        ((profit_share <= 0.8) & (f["credit_score"] >= 60), "key-account", "A",
         lambda r: text("among the customers who together bring 80% of profit (cumulative share ",
                        at("profit_share", ".1%")(r), "), credit ", at("credit_score", ".0f")(r))),
        (value_position >= 0.5, "important", "B",
         lambda r: text("value score ", at("value_score", ".2f")(r), " is at ", at("value_position", ".0%")(r),
                        " of all customers, in the top 50%")),
        (value_position >= 0.2, "general", "C",
         lambda r: text("value score ", at("value_score", ".2f")(r), " is at ", at("value_position", ".0%")(r),
                        " of all customers, above the bottom 20%")),
        (np.ones(n, bool), "maintenance", "D",
         lambda r: text("value score ", at("value_score", ".2f")(r), " is at ", at("value_position", ".0%")(r),
                        " of all customers, in the bottom 20%")),
    ])

    # protected_by: every matching trait, "none" when there is none
    traits = [(loyal, "trait-loyal", "loyal", lambda r: text("loyal for ", at("tenure_years", ".1f")(r), " years")),
              (big, "trait-big", "big-profitable", const("top 10% by revenue and profitable")),
              (potential, "trait-potential", "small-potential",
               lambda r: text("small but growing ", at("revenue_growth", ".0%")(r), " a year")),
              (strategic_new, "trait-strategic", "strategic-new",
               lambda r: text("new (", at("tenure_years", ".1f")(r), " years) and strategically important"))]
    none = ~(loyal | big | potential | strategic_new)
    masks = np.column_stack([t[0] for t in traits] + [none])
    packed = masks.astype(np.int64) @ (1 << np.arange(5))
    codes, uniq = pd.factorize(packed)
    labels = [(k >> np.arange(5)) & 1 for k in uniq]
    names = [t[2] for t in traits] + ["none"]
    ids = [t[1] for t in traits] + ["no-trait"]
    lists = np.empty(len(uniq), dtype=object)
    for i, bits in enumerate(labels):
        lists[i] = [nm for nm, b in zip(names, bits) if b]
    protected_list = lists[codes]
    rule_lists = np.empty(len(uniq), dtype=object)
    for i, bits in enumerate(labels):
        rule_lists[i] = [x for x, b in zip(ids, bits) if b]
    protected_rule = rule_lists[codes]
    trait_text = np.array([", ".join(nm for nm, b in zip(names, bits) if b) for bits in labels], dtype=object)[codes]
    makers = [t[3] for t in traits] + [const("none of the four protective traits")]
    cols = []
    for i, make in enumerate(makers):
        rows = np.flatnonzero(masks[:, i])
        t = make(rows) if rows.size else pa.array([], pa.string())
        if len(t) == 1 and rows.size != 1:
            t = pa.array([t[0].as_py()] * rows.size, pa.string())
        pos = np.zeros(n, dtype=np.int64)
        pos[rows] = np.arange(1, rows.size + 1)
        cols.append(pa.concat_arrays([pa.array([""]), pc.binary_join_element_wise("; ", t, "")]).take(pa.array(pos)))
    protected_because = pc.utf8_slice_codeunits(pc.binary_join_element_wise(*cols, ""), start=2)

    is_protected = loyal | big | potential | strategic_new
    retention, retention_rule, retention_because, _ = choose(n, [
        (is_protected, "protected", "keep",
         lambda r: text("protected (", pa.array(trait_text[r], pa.string()),
                        "): a customer with one of the four protective traits is never downgraded or let go")),
        (chicken & (tier == "D"), "chicken-rib-exit", "exit",
         lambda r: text("鸡肋客户 (chicken-rib): profit ", at("profit", ",.0f")(r), " this year and ",
                        at("profit_prev_year", ",.0f")(r), " last year; serving it costs ",
                        at("cost_to_serve", ",.0f")(r), " against a margin of ", at("gross_margin", ",.0f")(r))),
        (chicken, "chicken-rib-downgrade", "downgrade-service",
         lambda r: text("persistent losses (", at("profit", ",.0f")(r), " this year, ",
                        at("profit_prev_year", ",.0f")(r), " last year) in tier ",
                        pa.array(tier[r], pa.string()), ": move to a lower-cost service model")),
        (np.ones(n, bool), "keep", "keep", const("no reason to change the relationship")),
    ])

    _, service_rule, service_because, which = choose(n, [
        (retention == "exit", "exit-self-service", ("self-service", 72, "none"),
         const("being let go: self-service only until the relationship ends")),
        (retention == "downgrade-service", "downgraded", ("standard", 48, "pool"),
         const("service downgraded because the account loses money")),
        (tier == "A", "key-account-service", ("platinum", 4, "dedicated"),
         const("key account: priority, quality and preferential service with a dedicated manager")),
        (tier == "B", "important-service", ("gold", 8, "shared"),
         const("important account: next-business-day visits and a shared account manager")),
        (tier == "C", "general-service", ("silver", 24, "pool"), const("general account: served by the account pool")),
        (np.ones(n, bool), "maintenance-service", ("standard", 48, "pool"),
         lambda r: text("maintenance account (tier ", pa.array(tier[r], pa.string()), "): standard service")),
    ])
    # value groups: the profitability map against this run's top-quarter profit and median revenue
    profit, revenue = f["profit"], f["revenue"]
    value_profit = np.nanquantile(profit, 0.75) if n else np.nan
    median_revenue = np.nanquantile(revenue, 0.5) if n else np.nan
    serving_limit = 0.25 * f["gross_margin"]
    locals_.update(value_profit=np.full(n, value_profit), median_revenue=np.full(n, median_revenue))
    value_group, value_group_rule, value_group_because, _ = choose(n, [
        ((profit > 0) & (profit >= value_profit) & (revenue >= median_revenue), "value-customer", "value",
         lambda r: text("profit ", at("profit", ",.0f")(r), " in the top quarter of our customers (from ",
                        at("value_profit", ",.0f")(r), "), revenue ", at("revenue", ",.0f")(r),
                        " above the median (", at("median_revenue", ",.0f")(r), ")")),
        ((revenue >= median_revenue) & (f["cost_to_serve"] >= serving_limit), "over-served", "over-served",
         lambda r: text("a large customer (revenue ", at("revenue", ",.0f")(r), ") whose service costs ",
                        at("cost_to_serve", ",.0f")(r), ", 25% or more of its margin of ",
                        at("gross_margin", ",.0f")(r))),
        ((revenue < median_revenue) & (f["revenue_growth"] >= 0.2), "potential", "potential",
         lambda r: text("small today (revenue ", at("revenue", ",.0f")(r), ") but growing ",
                        at("revenue_growth", ".0%")(r), " a year")),
        (np.ones(n, bool), "maintain", "maintain",
         const("neither a value customer nor growing fast: served at a sensible cost")),
    ])
    level = np.array(["self-service", "standard", "platinum", "gold", "silver", "standard"])[which]
    review, review_rule, review_because, _ = choose(n, [
        ((value_group == "over-served") & np.isin(level, ["platinum", "gold"]), "over-served-review", "review",
         lambda r: text("over-served on ", pa.array(level[r], pa.string()), " service: serving it costs ",
                        at("cost_to_serve", ",.0f")(r), " of a margin of ", at("gross_margin", ",.0f")(r))),
        (np.ones(n, bool), "no-review", "none", const("no reason to review the service")),
    ])
    value_type = df["value_type"].to_numpy(dtype=object, na_value=None)
    offer, offer_rule, offer_because, _ = choose(n, [
        (value_type == "price", "price-driven", "volume-pricing", const("price-driven: volume discounts and bundle pricing")),
        (value_type == "function", "function-driven", "feature-demo",
         const("function-driven: product demonstrations and user references")),
        (value_type == "image", "image-driven", "brand-program", const("image-driven: brand events and a named service contact")),
    ])
    offer_because = pc.fill_null(offer_because, "no rule matched") if len(offer_because) else offer_because

    def cat(values, cats):
        return pd.Categorical(values, categories=cats)

    return pd.DataFrame({
        "customer_id": df["customer_id"].astype("string").to_numpy(),
        "protected_by": protected_list,
        "protected_by_rule": protected_rule,
        "protected_by_because": protected_because,
        "tier": cat(tier, ["A", "B", "C", "D"]),
        "tier_rule": cat(tier_rule, ["key-account", "important", "general", "maintenance"]),
        "tier_because": tier_because,
        "retention": cat(retention, ["keep", "downgrade-service", "exit"]),
        "retention_rule": cat(retention_rule, ["protected", "chicken-rib-exit", "chicken-rib-downgrade", "keep"]),
        "retention_because": retention_because,
        "service_level": cat(np.array(["self-service", "standard", "platinum", "gold", "silver", "standard"])[which],
                             ["platinum", "gold", "silver", "standard", "self-service"]),
        "response_hours": pd.array(np.array([72, 48, 4, 8, 24, 48])[which], dtype="Int64"),
        "account_manager": cat(np.array(["none", "pool", "dedicated", "shared", "pool", "pool"])[which],
                               ["dedicated", "shared", "pool", "none"]),
        "service_rule": service_rule,
        "service_because": service_because,
        "value_group": cat(value_group, ["value", "over-served", "potential", "maintain"]),
        "value_group_rule": cat(value_group_rule, ["value-customer", "over-served", "potential", "maintain"]),
        "value_group_because": value_group_because,
        "service_review": cat(review, ["review", "none"]),
        "service_review_rule": cat(review_rule, ["over-served-review", "no-review"]),
        "service_review_because": review_because,
        "offer": cat(offer, ["volume-pricing", "feature-demo", "brand-program"]),
        "offer_rule": offer_rule,
        "offer_because": offer_because,
    }), tier


def quotes(df: pd.DataFrame, customer_ids: pd.Series, tier: np.ndarray) -> pd.DataFrame:
    n = len(df)
    pos = pc.index_in(pa.array(df["customer_id"].astype("string")), value_set=pa.array(customer_ids.astype("string")))
    pos = pos.fill_null(-1).to_numpy(zero_copy_only=False)
    qtier = np.where(pos >= 0, tier[np.maximum(pos, 0)], None)
    ratio = {"A": 0.80, "B": 0.85, "C": 0.90, "D": 0.95}
    band = {"A": 0.05, "B": 0.05, "C": 0.03, "D": 0.0}
    floor_ratio = np.array([ratio.get(t, np.nan) if t else np.nan for t in ("A", "B", "C", "D", None)])
    tcode = pd.Series(qtier).map({"A": 0, "B": 1, "C": 2, "D": 3}).fillna(4).astype(int).to_numpy()
    floor_ratio = floor_ratio[tcode]
    escalation = np.array([band[t] for t in ("A", "B", "C", "D")] + [np.nan])[tcode]
    lp = df["list_price"].to_numpy(dtype=float)
    qp = df["quoted_price"].to_numpy(dtype=float)
    floor = lp * floor_ratio
    gap = qp - floor
    shortfall = floor - qp
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(floor != 0, shortfall / np.where(floor != 0, floor, 1), np.nan)
    cust = df["customer_id"].to_numpy(dtype=object)
    tier_text = lambda r: pa.array(qtier[r], pa.string())  # noqa: E731
    with np.errstate(invalid="ignore"):
        approval, rule, because, _ = choose(n, [
            (np.isnan(floor_ratio), "unknown-customer", "escalate",
             lambda r: text("customer ", pa.array(cust[r], pa.string()),
                            " is not in the customer facts, so no floor applies: check the customer number")),
            (gap >= 0, "at-or-above-floor", "approve",
             lambda r: text(num(gap[r], ",.0f"), " above the tier ", tier_text(r), " floor of ",
                            num(floor[r], ",.0f"), " (", num(floor_ratio[r], ".0%"), " of list)")),
            (share <= escalation, "within-escalation-band", "escalate",
             lambda r: text(num(shortfall[r], ",.0f"), " (", num(share[r], ".1%"), ") below the tier ", tier_text(r),
                            " floor of ", num(floor[r], ",.0f"), ", within the ", num(escalation[r], ".0%"),
                            " the sales manager may approve")),
            (np.ones(n, bool), "below-floor", "reject",
             lambda r: text(num(shortfall[r], ",.0f"), " (", num(share[r], ".1%"), ") below the tier ", tier_text(r),
                            " floor of ", num(floor[r], ",.0f"), ": not allowed")),
        ])
    return pd.DataFrame({
        "quote_id": df["quote_id"].astype("string").to_numpy(),
        "approval": pd.Categorical(approval, categories=["approve", "escalate", "reject"]),
        "approval_rule": pd.Categorical(rule, categories=["unknown-customer", "at-or-above-floor",
                                                          "within-escalation-band", "below-floor"]),
        "approval_because": because,
    })


def prospects(df: pd.DataFrame) -> pd.DataFrame:
    n = len(df)
    g = {c: df[c].to_numpy(dtype=float) for c in
         ("industry_influence", "referral_potential", "quality_fit", "culture_fit", "expected_revenue")}
    yes = {c: df[c].astype(str).str.lower().isin(["true", "yes", "1", "y", "t"]).to_numpy()
           for c in ("co_branding", "opens_new_field")}
    sv = 0.35 * g["industry_influence"] + 0.35 * g["referral_potential"] + np.where(yes["co_branding"], 1.5, 0) + \
        np.where(yes["opens_new_field"], 1.5, 0)
    fit = np.minimum(g["quality_fit"], g["culture_fit"])
    region = df["region"].to_numpy(dtype=object)
    keys = df["prospect_id"].to_numpy(dtype=object)
    no_value = sv < 3
    poor_fit = ~no_value & (fit < 4)
    eligible = ~no_value & ~poor_fit
    idx = np.flatnonzero(eligible)
    region_codes, _ = pd.factorize(region, sort=True)
    key_rank = np.empty(n, dtype=np.int64)
    key_rank[np.argsort(keys, kind="stable")] = np.arange(n)
    order = np.lexsort((key_rank[idx], -g["expected_revenue"][idx], -fit[idx], -sv[idx], region_codes[idx]))
    rows = idx[order]
    rc = region_codes[rows]
    starts = np.r_[True, rc[1:] != rc[:-1]]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(rows.size), 0))
    size = np.bincount(region_codes[idx], minlength=region_codes.max() + 1)
    rank = np.full(n, np.nan)
    qsize = np.full(n, np.nan)
    limit = np.full(n, np.nan)
    rank[rows] = np.arange(rows.size) - start_pos + 1
    qsize[rows] = size[rc]
    limit[rows] = np.floor(size[rc] * 0.35 + 1e-9)
    # entities with the same ranking values in the same region: the texts say how the tie was settled
    sorted_vals = [rc, sv[rows], fit[rows], g["expected_revenue"][rows]]
    new_block = np.r_[True, np.any([v[1:] != v[:-1] for v in sorted_vals], axis=0)]
    block = np.cumsum(new_block) - 1
    tied = np.zeros(n, dtype=np.int64)
    tied[rows] = np.bincount(block)[block] - 1
    tie_text = np.array([""] + [f" (tied with {k} other{'s' if k > 1 else ''} on the ranking; ties go to the "
                                "smaller prospect_id)" for k in range(1, int(tied.max(initial=0)) + 1)], dtype=object)
    pursue = eligible & (rank <= limit)
    outside = eligible & ~pursue
    reg = lambda r: pa.array(region[r], pa.string())  # noqa: E731
    value, rule, because, _ = choose(n, [
        (no_value, "no-strategic-value", "decline",
         lambda r: text("no clear strategic value (", num(sv[r], ".1f"), " of 10)")),
        (poor_fit, "poor-fit", "decline",
         lambda r: text("does not fit our quality standards or way of working (fit ", num(fit[r], ".0f"), " of 10)")),
        (pursue, "top-two-of-ten", "pursue",
         lambda r: text("ranked ", num(rank[r], ".0f"), " of ", num(qsize[r], ".0f"), " qualified prospects in ",
                        reg(r), pa.array(tie_text[tied[r]], pa.string()), " (strategic value ",
                        num(sv[r], ".1f"), ")")),
        (outside, "outside-quota", "decline",
         lambda r: text("qualified, but ranked ", num(rank[r], ".0f"), " of ", num(qsize[r], ".0f"), " in ", reg(r),
                        pa.array(tie_text[tied[r]], pa.string()), "; only the top ", num(limit[r], ".0f"),
                        " are pursued")),
    ])
    return pd.DataFrame({
        "prospect_id": df["prospect_id"].astype("string").to_numpy(),
        "pursue": pd.Categorical(value, categories=["pursue", "decline"]),
        "pursue_rule": pd.Categorical(rule, categories=["no-strategic-value", "poor-fit", "top-two-of-ten",
                                                        "outside-quota"]),
        "pursue_because": because,
    })


def write(frame: pd.DataFrame, path: Path) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)
    pq.write_table(table, path, compression="zstd")


def main(data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cust = pq.read_table(data / "customers.parquet").to_pandas()
    cust_out, tier = customers(cust)
    write(cust_out, out / "customer_decisions.parquet")
    write(quotes(pq.read_table(data / "quotes.parquet").to_pandas(), cust["customer_id"], tier),
          out / "quote_decisions.parquet")
    write(prospects(pq.read_table(data / "prospects.parquet").to_pandas()), out / "prospect_decisions.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
