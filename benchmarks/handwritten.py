"""The shipped policy set written by hand, as a competent engineer would for speed: the reference
for the benchmark ratio.

Reads the same Parquet facts and writes the same output values (decisions, rule ids, because
texts) as `kam run --output-format parquet`, so `bench.py` can check that both agree and compare
speed. Written for speed, not for kam's generality:

- only the columns used are read, straight into numpy (no pandas frames, no object arrays);
- every decision is a small integer code per row (which rule won), outputs are Arrow dictionary
  arrays built from those codes, lists are taken from a handful of distinct lists;
- a because text is built only for the rows its rule decided, with Arrow string kernels, and a
  text without inserted values is one string taken for all its rows;
- prospects are decided beside the customers, and the texts of each entity are rendered on a pool
  of threads (the Arrow kernels release the GIL), as kam does;
- Parquet is written straight from Arrow arrays.

Only the number formatter is shared with kam (`engine.batch.number_columns.format_numbers`, column-wise and
exact), so that both print numbers identically.

    python benchmarks/handwritten.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import os
import sys

# the C library's allocator for Arrow's buffers, as `kam` uses (2.9 s instead of 3.4-4.1 s here)
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine.batch.number_columns import format_numbers

POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
TRUE = ["true", "yes", "1", "y", "t"]


# -- reading --------------------------------------------------------------------------------------

def numbers(table: pa.Table, name: str) -> np.ndarray:
    col = table[name]
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
    return pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()


def flags(table: pa.Table, name: str) -> np.ndarray:
    col = table[name]
    if pa.types.is_boolean(col.type):
        return pc.fill_null(col, False).to_numpy()
    return pc.is_in(pc.utf8_lower(col.cast(pa.string())), value_set=pa.array(TRUE)).to_numpy()


def texts(table: pa.Table, name: str) -> pa.Array:
    return table[name].cast(pa.string()).combine_chunks()


# -- population functions (as kam defines them) ---------------------------------------------------

def pct_rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x)
    m = int((~np.isnan(x)).sum())
    out = np.full(x.size, np.nan)
    s = x[order[:m]]
    out[order[:m]] = np.searchsorted(s, s, side="right") / m
    return out


def cumshare(x: np.ndarray) -> np.ndarray:
    """(total - sum of the values below) / total, sums added in ascending order."""
    order = np.argsort(x)
    s = x[order]
    before = np.r_[0.0, np.cumsum(s)]  # before[i]: sum of the i smallest
    first_of_block = np.r_[True, s[1:] != s[:-1]]
    start = np.maximum.accumulate(np.where(first_of_block, np.arange(s.size), 0))
    total = before[-1]
    out = np.empty(x.size)
    out[order] = (total - before[start]) / total
    return out


# -- decisions as codes, texts for the decided rows only ------------------------------------------

Text = Callable[[np.ndarray], pa.Array]


def first_hit(masks: list[np.ndarray]) -> np.ndarray:
    """Per row the index of the first true mask (-1 for none)."""
    which = np.full(masks[0].size, -1, dtype=np.int8)
    for i in range(len(masks) - 1, -1, -1):
        which[masks[i]] = i
    return which


def render(which: np.ndarray, makers: list[Text]) -> pa.Array:
    """Texts for rows decided by rule i come from makers[i](rows)."""
    pieces, positions, offset = [], np.zeros(which.size, dtype=np.int64), 0
    order = np.argsort(which, kind="stable")
    counts = np.bincount(which + 1, minlength=len(makers) + 1)[1:]
    starts = np.r_[0, np.cumsum(counts)][:-1] + (which < 0).sum()
    for i, make in enumerate(makers):
        if not counts[i]:
            continue
        rows = order[starts[i]:starts[i] + counts[i]]
        t = make(rows)
        positions[rows] = offset if len(t) == 1 else offset + np.arange(rows.size)
        offset += len(t)
        pieces.append(t)
    if not pieces:
        return pa.array([], pa.string())
    return pa.concat_arrays(pieces).take(pa.array(positions, mask=which < 0))  # no rule: missing


def join(*parts: object) -> Text:
    """A text from literal pieces and column pieces (functions of the rows)."""
    def make(rows: np.ndarray) -> pa.Array:
        arrays = [p(rows) if callable(p) else p for p in parts]
        return pc.binary_join_element_wise(*arrays, "")
    return make


def const(s: str) -> Text:
    return lambda rows: pa.array([s])


def fmt(x: np.ndarray, spec: str) -> Text:
    return lambda rows: format_numbers(x[rows], spec)


def strs(values: pa.Array | np.ndarray) -> Text:
    if isinstance(values, np.ndarray):
        return lambda rows: pa.array(values[rows], pa.string())
    return lambda rows: values.take(pa.array(rows))


def dictionary(codes: np.ndarray, values: list[str]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8), mask=codes < 0), pa.array(values))


# -- the policies ---------------------------------------------------------------------------------

def customers(t: pa.Table) -> tuple[pa.Table, np.ndarray]:
    n = t.num_rows
    f = {c: numbers(t, c) for c in ("revenue", "profit", "orders_12m", "credit_score", "gross_margin", "cost_to_serve",
                                    "profit_prev_year", "tenure_years", "revenue_growth")}
    strategic = flags(t, "strategic_account")
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
        tier = first_hit([(profit_share <= 0.8) & (f["credit_score"] >= 60), value_position >= 0.5,
                          value_position >= 0.2, np.ones(n, bool)])
    tiers = np.array(["A", "B", "C", "D"])
    vs, vp = fmt(value_score, ".2f"), fmt(value_position, ".0%")
    jobs: dict[str, Callable[[], pa.Array]] = {}
    jobs["tier_because"] = lambda: render(tier, [
        join("among the customers who together bring 80% of profit (cumulative share ", fmt(profit_share, ".1%"),
             "), credit ", fmt(f["credit_score"], ".0f")),
        join("value score ", vs, " is at ", vp, " of all customers, in the top 50%"),
        join("value score ", vs, " is at ", vp, " of all customers, above the bottom 20%"),
        join("value score ", vs, " is at ", vp, " of all customers, in the bottom 20%")])

    # protected_by: every matching trait, "none" when there is none
    traits = [loyal, big, potential, strategic_new]
    trait_makers = [join("loyal for ", fmt(f["tenure_years"], ".1f"), " years"),
                    const("top 10% by revenue and profitable"),
                    join("small but growing ", fmt(f["revenue_growth"], ".0%"), " a year"),
                    join("new (", fmt(f["tenure_years"], ".1f"), " years) and strategically important")]
    is_protected = loyal | big | potential | strategic_new
    bits = (loyal * 1 + big * 2 + potential * 4 + strategic_new * 8).astype(np.int64)
    names = ["loyal", "big-profitable", "small-potential", "strategic-new"]
    ids = ["trait-loyal", "trait-big", "trait-potential", "trait-strategic"]
    combos = [[nm for k, nm in enumerate(names) if b >> k & 1] or ["none"] for b in range(16)]
    combo_ids = [[x for k, x in enumerate(ids) if b >> k & 1] or ["no-trait"] for b in range(16)]
    combo_text = pa.array([", ".join(c) for c in combos])

    def protected_because() -> pa.Array:
        cols = []
        for mask, make in zip(traits + [~is_protected], trait_makers + [const("none of the four protective traits")]):
            rows = np.flatnonzero(mask)
            piece = make(rows) if rows.size else pa.array([], pa.string())
            pos = np.zeros(n, dtype=np.int64)
            pos[rows] = np.arange(1, rows.size + 1) if len(piece) != 1 or rows.size == 1 else 1
            cols.append(pa.concat_arrays([pa.array([""]), pc.binary_join_element_wise("; ", piece, "")])
                        .take(pa.array(pos)))
        return pc.utf8_slice_codeunits(pc.binary_join_element_wise(*cols, ""), start=2)

    jobs["protected_by_because"] = protected_because
    tier_text = lambda rows: pa.array(tiers).take(pa.array(tier[rows]))  # noqa: E731
    with np.errstate(invalid="ignore"):
        retention = first_hit([is_protected, chicken & (tier == 3), chicken, np.ones(n, bool)])
    jobs["retention_because"] = lambda: render(retention, [
        join("protected (", lambda rows: combo_text.take(pa.array(bits[rows])),
             "): a customer with one of the four protective traits is never downgraded or let go"),
        join("鸡肋客户 (chicken-rib): profit ", fmt(f["profit"], ",.0f"), " this year and ",
             fmt(f["profit_prev_year"], ",.0f"), " last year; serving it costs ", fmt(f["cost_to_serve"], ",.0f"),
             " against a margin of ", fmt(f["gross_margin"], ",.0f")),
        join("persistent losses (", fmt(f["profit"], ",.0f"), " this year, ", fmt(f["profit_prev_year"], ",.0f"),
             " last year) in tier ", tier_text, ": move to a lower-cost service model"),
        const("no reason to change the relationship")])
    retention_value = np.array([0, 2, 1, 0])[retention]  # keep, downgrade-service, exit -> codes below
    service = first_hit([retention == 1, retention == 2, tier == 0, tier == 1, tier == 2, np.ones(n, bool)])
    jobs["service_because"] = lambda: render(service, [
        const("being let go: self-service only until the relationship ends"),
        const("service downgraded because the account loses money"),
        const("key account: priority, quality and preferential service with a dedicated manager"),
        const("important account: next-business-day visits and a shared account manager"),
        const("general account: served by the account pool"),
        join("maintenance account (tier ", tier_text, "): standard service")])

    # value groups: the profitability map against this run's top-quarter profit and median revenue
    profit, revenue = f["profit"], f["revenue"]
    value_profit = np.full(n, np.nanquantile(profit, 0.75) if n else np.nan)
    median_revenue = np.full(n, np.nanquantile(revenue, 0.5) if n else np.nan)
    with np.errstate(invalid="ignore"):
        group = first_hit([(profit > 0) & (profit >= value_profit) & (revenue >= median_revenue),
                           (revenue >= median_revenue) & (f["cost_to_serve"] >= 0.25 * f["gross_margin"]),
                           (revenue < median_revenue) & (f["revenue_growth"] >= 0.2), np.ones(n, bool)])
    jobs["value_group_because"] = lambda: render(group, [
        join("profit ", fmt(profit, ",.0f"), " in the top quarter of our customers (from ",
             fmt(value_profit, ",.0f"), "), revenue ", fmt(revenue, ",.0f"), " above the median (",
             fmt(median_revenue, ",.0f"), ")"),
        join("a large customer (revenue ", fmt(revenue, ",.0f"), ") whose service costs ",
             fmt(f["cost_to_serve"], ",.0f"), ", 25% or more of its margin of ", fmt(f["gross_margin"], ",.0f")),
        join("small today (revenue ", fmt(revenue, ",.0f"), ") but growing ", fmt(f["revenue_growth"], ".0%"),
             " a year"),
        const("neither a value customer nor growing fast: served at a sensible cost")])
    levels = ["platinum", "gold", "silver", "standard", "self-service"]
    level = np.array([4, 3, 0, 1, 2, 3])[service]
    review = first_hit([(group == 1) & (level <= 1), np.ones(n, bool)])
    level_text = lambda rows: pa.array(levels).take(pa.array(level[rows]))  # noqa: E731
    jobs["service_review_because"] = lambda: render(review, [
        join("over-served on ", level_text, " service: serving it costs ", fmt(f["cost_to_serve"], ",.0f"),
             " of a margin of ", fmt(f["gross_margin"], ",.0f")),
        const("no reason to review the service")])
    value_type = texts(t, "value_type")
    offer = first_hit([pc.fill_null(pc.equal(value_type, v), False).to_numpy(zero_copy_only=False)
                       for v in ("price", "function", "image")])
    jobs["offer_because"] = lambda: pc.fill_null(render(offer, [
        const("price-driven: volume discounts and bundle pricing"),
        const("function-driven: product demonstrations and user references"),
        const("image-driven: brand events and a named service contact")]), "no rule matched")

    rendered = dict(zip(jobs, POOL.map(lambda job: job(), jobs.values())))
    combos_arr = pa.array(combos, pa.list_(pa.string()))
    combo_ids_arr = pa.array(combo_ids, pa.list_(pa.string()))
    out = {
        "customer_id": texts(t, "customer_id"),
        "protected_by": combos_arr.take(pa.array(bits)),
        "protected_by_rule": combo_ids_arr.take(pa.array(bits)),
        "protected_by_because": rendered["protected_by_because"],
        "tier": dictionary(tier, ["A", "B", "C", "D"]),
        "tier_rule": dictionary(tier, ["key-account", "important", "general", "maintenance"]),
        "tier_because": rendered["tier_because"],
        "retention": dictionary(retention_value, ["keep", "downgrade-service", "exit"]),
        "retention_rule": dictionary(retention, ["protected", "chicken-rib-exit", "chicken-rib-downgrade", "keep"]),
        "retention_because": rendered["retention_because"],
        "service_level": dictionary(level, levels),
        "response_hours": pa.array(np.array([72, 48, 4, 8, 24, 48])[service]),
        "account_manager": dictionary(np.array([3, 2, 0, 1, 2, 2])[service], ["dedicated", "shared", "pool", "none"]),
        "service_rule": dictionary(service, ["exit-self-service", "downgraded", "key-account-service",
                                             "important-service", "general-service", "maintenance-service"]),
        "service_because": rendered["service_because"],
        "value_group": dictionary(group, ["value", "over-served", "potential", "maintain"]),
        "value_group_rule": dictionary(group, ["value-customer", "over-served", "potential", "maintain"]),
        "value_group_because": rendered["value_group_because"],
        "service_review": dictionary(review, ["review", "none"]),
        "service_review_rule": dictionary(review, ["over-served-review", "no-review"]),
        "service_review_because": rendered["service_review_because"],
        "offer": dictionary(offer, ["volume-pricing", "feature-demo", "brand-program"]),
        "offer_rule": dictionary(offer, ["price-driven", "function-driven", "image-driven"]),
        "offer_because": rendered["offer_because"],
    }
    return pa.table(out), tier


def quotes(t: pa.Table, customer_ids: pa.Array, tier: np.ndarray) -> pa.Table:
    n = t.num_rows
    refs = texts(t, "customer_id")
    pos = pc.index_in(refs, value_set=customer_ids).fill_null(-1).to_numpy(zero_copy_only=False)
    tcode = np.where(pos >= 0, tier[np.maximum(pos, 0)], 4)  # 4: not a known customer
    floor_ratio = np.array([0.80, 0.85, 0.90, 0.95, np.nan])[tcode]
    escalation = np.array([0.05, 0.05, 0.03, 0.0, np.nan])[tcode]
    lp, qp = numbers(t, "list_price"), numbers(t, "quoted_price")
    floor = lp * floor_ratio
    gap = qp - floor
    shortfall = floor - qp
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(floor != 0, shortfall / np.where(floor != 0, floor, 1), np.nan)
        which = first_hit([np.isnan(floor_ratio), gap >= 0, share <= escalation, np.ones(n, bool)])
    tier_text = lambda rows: pa.array(["A", "B", "C", "D", None]).take(pa.array(tcode[rows]))  # noqa: E731
    below = [fmt(shortfall, ",.0f"), " (", fmt(share, ".1%"), ") below the tier ", tier_text, " floor of ",
             fmt(floor, ",.0f")]
    because = render(which, [
        join("customer ", strs(refs), " is not in the customer facts, so no floor applies: check the customer number"),
        join(fmt(gap, ",.0f"), " above the tier ", tier_text, " floor of ", fmt(floor, ",.0f"), " (",
             fmt(floor_ratio, ".0%"), " of list)"),
        join(*below, ", within the ", fmt(escalation, ".0%"), " the sales manager may approve"),
        join(*below, ": not allowed")])
    return pa.table({
        "quote_id": texts(t, "quote_id"),
        "approval": dictionary(np.array([1, 0, 1, 2])[which], ["approve", "escalate", "reject"]),
        "approval_rule": dictionary(which, ["unknown-customer", "at-or-above-floor", "within-escalation-band",
                                            "below-floor"]),
        "approval_because": because,
    })


def prospects(t: pa.Table) -> pa.Table:
    n = t.num_rows
    g = {c: numbers(t, c) for c in ("industry_influence", "referral_potential", "quality_fit", "culture_fit",
                                    "expected_revenue")}
    sv = 0.35 * g["industry_influence"] + 0.35 * g["referral_potential"] + \
        np.where(flags(t, "co_branding"), 1.5, 0) + np.where(flags(t, "opens_new_field"), 1.5, 0)
    fit = np.minimum(g["quality_fit"], g["culture_fit"])
    region = pc.dictionary_encode(texts(t, "region"))
    region_codes = region.indices.to_numpy(zero_copy_only=False)
    keys = texts(t, "prospect_id")
    no_value = sv < 3
    poor_fit = ~no_value & (fit < 4)
    eligible = ~no_value & ~poor_fit
    idx = np.flatnonzero(eligible)
    key_rank = np.empty(n, dtype=np.int64)
    key_rank[pc.sort_indices(keys).to_numpy()] = np.arange(n)
    order = np.lexsort((key_rank[idx], -g["expected_revenue"][idx], -fit[idx], -sv[idx], region_codes[idx]))
    rows = idx[order]
    rc = region_codes[rows]
    starts = np.r_[True, rc[1:] != rc[:-1]]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(rows.size), 0))
    size = np.bincount(region_codes[idx], minlength=len(region.dictionary))
    rank, qsize, limit = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    rank[rows] = np.arange(rows.size) - start_pos + 1
    qsize[rows] = size[rc]
    limit[rows] = np.floor(size[rc] * 0.35 + 1e-9)
    # prospects with the same ranking values in the same region: the texts say how the tie was settled
    sorted_vals = [rc, sv[rows], fit[rows], g["expected_revenue"][rows]]
    new_block = np.r_[True, np.any([v[1:] != v[:-1] for v in sorted_vals], axis=0)] if rows.size else rows
    block = np.cumsum(new_block) - 1
    tied = np.zeros(n, dtype=np.int64)
    tied[rows] = np.bincount(block)[block] - 1 if rows.size else 0
    tie_text = pa.array([""] + [f" (tied with {k} other{'s' if k > 1 else ''} on the ranking; ties go to the "
                                "smaller prospect_id)" for k in range(1, int(tied.max(initial=0)) + 1)])
    pursue = eligible & (rank <= limit)
    which = first_hit([no_value, poor_fit, pursue, eligible & ~pursue])
    reg = lambda rows: region.dictionary.take(pa.array(region_codes[rows]))  # noqa: E731
    ties = lambda rows: tie_text.take(pa.array(tied[rows]))  # noqa: E731
    because = render(which, [
        join("no clear strategic value (", fmt(sv, ".1f"), " of 10)"),
        join("does not fit our quality standards or way of working (fit ", fmt(fit, ".0f"), " of 10)"),
        join("ranked ", fmt(rank, ".0f"), " of ", fmt(qsize, ".0f"), " qualified prospects in ", reg, ties,
             " (strategic value ", fmt(sv, ".1f"), ")"),
        join("qualified, but ranked ", fmt(rank, ".0f"), " of ", fmt(qsize, ".0f"), " in ", reg, ties,
             "; only the top ", fmt(limit, ".0f"), " are pursued")])
    return pa.table({
        "prospect_id": keys,
        "pursue": dictionary(np.array([1, 1, 0, 1])[which], ["pursue", "decline"]),
        "pursue_rule": dictionary(which, ["no-strategic-value", "poor-fit", "top-two-of-ten", "outside-quota"]),
        "pursue_because": because,
    })


def main(data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)

    def write(table: pa.Table, entity: str) -> None:
        pq.write_table(table, out / f"{entity}_decisions.parquet", compression="zstd")

    reading = {e: POOL.submit(pq.read_table, data / f"{e}s.parquet") for e in ("customer", "quote", "prospect")}
    with ThreadPoolExecutor(max_workers=2) as side:
        later = side.submit(lambda: write(prospects(reading["prospect"].result()), "prospect"))
        cust = reading["customer"].result()
        cust_out, tier = customers(cust)
        written = side.submit(write, cust_out, "customer")
        write(quotes(reading["quote"].result(), texts(cust, "customer_id"), tier), "quote")
        written.result()
        later.result()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
