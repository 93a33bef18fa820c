"""The shipped policy set written by hand in polars, as a competent engineer would for speed: the
second reference for the benchmark ratio (beside benchmarks/handwritten.py, numpy/pyarrow).

Reads the same Parquet facts and writes the same output values and Arrow types (decisions, rule
ids, because texts) as `kam run --output-format parquet`, so `bench.py` can check that all three
agree and compare speed. Written for speed, the polars way:

- lazy scans of only the columns used; features, population functions and decisions are one
  lazy query per entity, run by polars' multi-threaded engine (common subexpressions shared);
- population functions keep kam's exact definitions: `pct_rank` is the share of values at or
  below (`rank("max") / count`), `cumshare` the total minus the running total of the values below
  the tie block, summed one by one in ascending order (a sequential `cum_sum` of the sorted values,
  gathered at `rank("min")`), quantiles interpolate two order statistics as numpy does;
- every decision is a small integer code per row (which rule won); values and rule ids are taken
  from those codes; a because text is a `when/then` over the codes of `concat_str` pieces;
- population functions and divisions: polars divides a column by a scalar by multiplying with its
  reciprocal (1 ulp off on some rows), so a divisor that is one value is made a column first;
- numbers in texts are printed by kam's column-wise formatter (`format_numbers`, shared as in
  handwritten.py, on a pool of threads): it is exact and 5x faster than the same written in polars
  string expressions (tried: 0.9 s against 0.17 s a million numbers, conversions included);
- the prospects and the quotes are decided on threads beside the customers (polars releases the
  GIL), and Parquet is written by pyarrow from the Arrow columns polars hands over, cast to the
  types kam writes.

    python benchmarks/handwritten_polars.py DATA_DIR OUT_DIR
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor

# the C library's allocator for pyarrow's buffers, as `kam` and the numpy reference use
os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from engine.batch.number_columns import format_numbers

TRUE = ["true", "yes", "1", "y", "t"]
POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)


# -- reading --------------------------------------------------------------------------------------

def scan(path: Path, numbers: list[str], flags: list[str], texts: list[str]) -> pl.LazyFrame:
    """Only the named columns, as Float64 numbers, Boolean flags and String texts, whatever the file holds."""
    lf = pl.scan_parquet(path)
    schema = lf.collect_schema()
    cols = []
    for name in numbers:
        c = pl.col(name)
        if schema[name] == pl.String:
            c = c.replace("", None).cast(pl.Float64, strict=False)
        cols.append(c.cast(pl.Float64).fill_nan(None).alias(name))
    for name in flags:
        c = pl.col(name)
        if schema[name] != pl.Boolean:
            c = c.cast(pl.String).str.to_lowercase().is_in(TRUE)
        cols.append(c.fill_null(False).alias(name))
    cols += [pl.col(name).cast(pl.String) for name in texts]
    return lf.select(cols)


# -- population functions (as kam defines them) ---------------------------------------------------

def full(scalar: pl.Expr | float) -> pl.Expr:
    """A scalar as a whole column. polars divides a column by a scalar by multiplying with its
    reciprocal, which is not the correctly rounded quotient (1 ulp off on some rows); dividing by a
    column of the same value divides each row, as numpy and kam do."""
    return (pl.int_range(pl.len()) * 0 + scalar).cast(pl.Float64)


def pct_rank(x: pl.Expr) -> pl.Expr:
    """Share of the non-missing values at or below each value; missing stays missing."""
    return x.rank("max").cast(pl.Float64) / full(x.count())


def cumshare(x: pl.Expr) -> pl.Expr:
    """(total - sum of the values below the tie block) / total, summed one by one in ascending order."""
    running = x.drop_nulls().sort().cum_sum()
    total = running.last()
    below = running.shift(1, fill_value=0.0).gather(x.rank("min").cast(pl.Int64) - 1)
    return pl.when(total != 0).then((total - below) / full(total))


def quantile(x: pl.Expr, q: float) -> pl.Expr:
    """numpy's linear quantile of the non-missing values: its two order statistics (selected, not
    sorted) and its interpolation formula."""
    h = (x.count().cast(pl.Float64) - 1) * q
    t = h - h.floor()
    a, b = x.quantile(q, "lower"), x.quantile(q, "higher")
    diff = b - a
    return pl.when(t >= 0.5).then(b - diff * (1 - t)).otherwise(a + diff * t)


# -- numbers as text, as Python's format(x, spec) prints them ------------------------------------
#
# kam's column-wise formatter (exact, a byte matrix of digits built with numpy) is shared, as in
# handwritten.py: 0.15 s a million numbers, where the same in polars string expressions (scale,
# round, cast, zfill, slices for the thousands separators) took 0.9 s.

class Numbers:
    """The number columns a set of texts prints, formatted once each (on a pool of threads)."""

    def __init__(self) -> None:
        self.needed: dict[str, tuple[str, str]] = {}

    def __call__(self, name: str, spec: str) -> pl.Expr:
        key = f"{name}|{spec}"
        self.needed[key] = (name, spec)
        return pl.col(key)

    def add(self, d: pl.DataFrame) -> pl.DataFrame:
        def one(item: tuple[str, tuple[str, str]]) -> pl.Series:
            key, (name, spec) = item
            values = d[name].cast(pl.Float64).fill_null(float("nan")).to_numpy()
            return pl.Series(key, format_numbers(values, spec))
        return d.with_columns(list(POOL.map(one, self.needed.items())))


# -- decisions ------------------------------------------------------------------------------------

def first_hit(conditions: list[pl.Expr]) -> pl.Expr:
    """The index of the first true condition (a missing condition is not true), null for none."""
    out = pl.when(conditions[0]).then(pl.lit(0, pl.Int8))
    for i, c in enumerate(conditions[1:], 1):
        out = out.when(c).then(pl.lit(i, pl.Int8))
    return out


def pick(code: str | pl.Expr, values: list) -> pl.Expr:
    """values[code] per row (null for a null code)."""
    code = pl.col(code) if isinstance(code, str) else code
    return code.replace_strict(list(range(len(values))), values, default=None)


def texts(code: str, makers: list) -> pl.Expr:
    """The because text of the rule each row's code names: makers[i] is a literal or a list of pieces."""
    out = None
    for i, make in enumerate(makers):
        piece = pl.lit(make) if isinstance(make, str) else pl.concat_str(
            [pl.lit(p) if isinstance(p, str) else p for p in make])
        out = (pl.when(pl.col(code) == i) if out is None else out.when(pl.col(code) == i)).then(piece)
    return out


def dictionary(codes: pl.Series, values: list[str]) -> pa.Array:
    """Codes (null: none) as the Arrow dictionary array kam writes: int8 indices, string values."""
    return pa.DictionaryArray.from_arrays(codes.cast(pl.Int8).to_arrow(), pa.array(values, pa.string()))


def strings(s: pl.Series) -> pa.Array:
    return s.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(pa.large_string())


# -- the policies ---------------------------------------------------------------------------------

TIERS = ["A", "B", "C", "D"]
TRAITS = ["loyal", "big-profitable", "small-potential", "strategic-new"]
TRAIT_IDS = ["trait-loyal", "trait-big", "trait-potential", "trait-strategic"]
LEVELS = ["platinum", "gold", "silver", "standard", "self-service"]


def customers_decided(path: Path) -> pl.DataFrame:
    """Features, population functions and decision codes of every customer (one lazy query)."""
    lf = scan(path, ["revenue", "profit", "orders_12m", "credit_score", "gross_margin", "cost_to_serve",
                     "profit_prev_year", "tenure_years", "revenue_growth"], ["strategic_account"],
              ["customer_id", "value_type"])
    c = pl.col
    lf = lf.with_columns(
        profit_share=cumshare(c.profit),
        value_score=0.5 * pct_rank(c.profit) + 0.3 * pct_rank(c.orders_12m)
        + 0.2 * c.credit_score.fill_null(50.0) / full(100.0),
        revenue_position=pct_rank(c.revenue),
        value_profit=quantile(c.profit, 0.75),
        median_revenue=quantile(c.revenue, 0.5),
    ).with_columns(
        value_position=pct_rank(c.value_score),
        loyal=(c.tenure_years >= 5) & (c.profit_prev_year > 0),
        big=(c.revenue_position >= 0.9) & (c.profit > 0),
        potential=(c.revenue_position < 0.5) & (c.revenue_growth >= 0.25),
        strategic_new=(c.tenure_years < 2) & c.strategic_account,
        chicken=(c.profit < 0) & (c.profit_prev_year < 0) & (c.cost_to_serve > c.gross_margin),
    ).with_columns(
        tier=first_hit([(c.profit_share <= 0.8) & (c.credit_score >= 60), c.value_position >= 0.5,
                        c.value_position >= 0.2, pl.lit(True)]),
        bits=(c.loyal.fill_null(False).cast(pl.Int8) + 2 * c.big.fill_null(False).cast(pl.Int8)
              + 4 * c.potential.fill_null(False).cast(pl.Int8) + 8 * c.strategic_new.fill_null(False).cast(pl.Int8)),
    ).with_columns(
        retention=first_hit([c.bits > 0, c.chicken & (c.tier == 3), c.chicken, pl.lit(True)]),
    ).with_columns(
        service=first_hit([c.retention == 1, c.retention == 2, c.tier == 0, c.tier == 1, c.tier == 2,
                           pl.lit(True)]),
        group=first_hit([(c.profit > 0) & (c.profit >= c.value_profit) & (c.revenue >= c.median_revenue),
                         (c.revenue >= c.median_revenue) & (c.cost_to_serve >= 0.25 * c.gross_margin),
                         (c.revenue < c.median_revenue) & (c.revenue_growth >= 0.2), pl.lit(True)]),
        offer=first_hit([c.value_type == v for v in ("price", "function", "image")]),
    ).with_columns(
        level=pick("service", [4, 3, 0, 1, 2, 3]),
    ).with_columns(
        review=first_hit([(c.group == 1) & (c.level <= 1), pl.lit(True)]),
    )
    return lf.collect()


def customers_explained(d: pl.DataFrame) -> dict[str, pl.Series]:
    """The because texts of the customers' decisions."""
    c = pl.col
    F = Numbers()
    money = {name: F(name, ",.0f") for name in
             ("profit", "profit_prev_year", "cost_to_serve", "gross_margin", "revenue")}
    vs, vp = F("value_score", ".2f"), F("value_position", ".0%")
    tenure = F("tenure_years", ".1f")
    growth = F("revenue_growth", ".0%")
    combos = [", ".join([t for k, t in enumerate(TRAITS) if b >> k & 1]) for b in range(16)]
    tier_text = pick("tier", TIERS)
    level_text = pick("level", LEVELS)
    vprofit = d["value_profit"][0] if len(d) else None
    mrev = d["median_revenue"][0] if len(d) else None

    def const(value: float | None, spec: str) -> str:
        return format_numbers(np.array([np.nan if value is None else value]), spec)[0].as_py()

    trait_texts = [pl.when(c.loyal).then(pl.concat_str([pl.lit("loyal for "), tenure, pl.lit(" years")])),
                   pl.when(c.big).then(pl.lit("top 10% by revenue and profitable")),
                   pl.when(c.potential).then(pl.concat_str([pl.lit("small but growing "), growth,
                                                            pl.lit(" a year")])),
                   pl.when(c.strategic_new).then(pl.concat_str([pl.lit("new ("), tenure,
                                                                pl.lit(" years) and strategically important")]))]
    exprs = dict(
        tier_because=texts("tier", [
            ["among the customers who together bring 80% of profit (cumulative share ",
             F("profit_share", ".1%"), "), credit ", F("credit_score", ".0f")],
            ["value score ", vs, " is at ", vp, " of all customers, in the top 50%"],
            ["value score ", vs, " is at ", vp, " of all customers, above the bottom 20%"],
            ["value score ", vs, " is at ", vp, " of all customers, in the bottom 20%"]]),
        protected_by_because=pl.when(c.bits > 0).then(pl.concat_str(trait_texts, separator="; ", ignore_nulls=True))
        .otherwise(pl.lit("none of the four protective traits")),
        retention_because=texts("retention", [
            ["protected (", pick("bits", combos),
             "): a customer with one of the four protective traits is never downgraded or let go"],
            ["鸡肋客户 (chicken-rib): profit ", money["profit"], " this year and ", money["profit_prev_year"],
             " last year; serving it costs ", money["cost_to_serve"], " against a margin of ",
             money["gross_margin"]],
            ["persistent losses (", money["profit"], " this year, ", money["profit_prev_year"],
             " last year) in tier ", tier_text, ": move to a lower-cost service model"],
            "no reason to change the relationship"]),
        service_because=texts("service", [
            "being let go: self-service only until the relationship ends",
            "service downgraded because the account loses money",
            "key account: priority, quality and preferential service with a dedicated manager",
            "important account: next-business-day visits and a shared account manager",
            "general account: served by the account pool",
            ["maintenance account (tier ", tier_text, "): standard service"]]),
        value_group_because=texts("group", [
            ["profit ", money["profit"], " in the top quarter of our customers (from " + const(vprofit, ",.0f")
             + "), revenue ", money["revenue"], " above the median (" + const(mrev, ",.0f") + ")"],
            ["a large customer (revenue ", money["revenue"], ") whose service costs ", money["cost_to_serve"],
             ", 25% or more of its margin of ", money["gross_margin"]],
            ["small today (revenue ", money["revenue"], ") but growing ", growth, " a year"],
            "neither a value customer nor growing fast: served at a sensible cost"]),
        service_review_because=texts("review", [
            ["over-served on ", level_text, " service: serving it costs ", money["cost_to_serve"],
             " of a margin of ", money["gross_margin"]],
            "no reason to review the service"]),
        offer_because=texts("offer", [
            "price-driven: volume discounts and bundle pricing",
            "function-driven: product demonstrations and user references",
            "image-driven: brand events and a named service contact"]).fill_null("no rule matched"),
    )
    out = F.add(d).lazy().select(**exprs).collect()
    return {name: out[name] for name in out.columns}


def customers_table(d: pl.DataFrame, because: dict[str, pl.Series]) -> pa.Table:
    combos = [[t for k, t in enumerate(TRAITS) if b >> k & 1] or ["none"] for b in range(16)]
    combo_ids = [[t for k, t in enumerate(TRAIT_IDS) if b >> k & 1] or ["no-trait"] for b in range(16)]
    bits = pa.array(d["bits"].to_numpy())
    service = d["service"]
    codes = d.select(
        retention_value=pick("retention", [0, 2, 1, 0]),
        manager=pick("service", [3, 2, 0, 1, 2, 2]),
        hours=pick("service", [72, 48, 4, 8, 24, 48]).cast(pl.Int64),
    )
    return pa.table({
        "customer_id": strings(d["customer_id"]),
        "protected_by": pa.array(combos, pa.list_(pa.string())).take(bits),
        "protected_by_rule": pa.array(combo_ids, pa.list_(pa.string())).take(bits),
        "protected_by_because": strings(because["protected_by_because"]),
        "tier": dictionary(d["tier"], TIERS),
        "tier_rule": dictionary(d["tier"].replace_strict([0, 1, 2, 3], [0, 2, 3, 4]),
                                ["key-account", "key-account-held", "important", "general", "maintenance"]),
        "tier_because": strings(because["tier_because"]),
        "retention": dictionary(codes["retention_value"], ["keep", "downgrade-service", "exit"]),
        "retention_rule": dictionary(d["retention"], ["protected", "chicken-rib-exit", "chicken-rib-downgrade",
                                                      "keep"]),
        "retention_because": strings(because["retention_because"]),
        "service_level": dictionary(d["level"], LEVELS),
        "response_hours": codes["hours"].to_arrow(),
        "account_manager": dictionary(codes["manager"], ["dedicated", "shared", "pool", "none"]),
        "service_rule": dictionary(service, ["exit-self-service", "downgraded", "key-account-service",
                                             "important-service", "general-service", "maintenance-service"]),
        "service_because": strings(because["service_because"]),
        "value_group": dictionary(d["group"], ["value", "over-served", "potential", "maintain"]),
        "value_group_rule": dictionary(d["group"], ["value-customer", "over-served", "potential", "maintain"]),
        "value_group_because": strings(because["value_group_because"]),
        "service_review": dictionary(d["review"], ["review", "none"]),
        "service_review_rule": dictionary(d["review"], ["over-served-review", "no-review"]),
        "service_review_because": strings(because["service_review_because"]),
        "offer": dictionary(d["offer"], ["volume-pricing", "feature-demo", "brand-program"]),
        "offer_rule": dictionary(d["offer"], ["price-driven", "function-driven", "image-driven"]),
        "offer_because": strings(because["offer_because"]),
    })


def quotes(path: Path, tiers: pl.DataFrame) -> pa.Table:
    c = pl.col
    lf = scan(path, ["list_price", "quoted_price"], [], ["quote_id", "customer_id"])
    lf = lf.join(tiers.lazy(), on="customer_id", how="left", maintain_order="left").with_columns(
        floor_ratio=pick("tier", [0.80, 0.85, 0.90, 0.95]),
        escalation=pick("tier", [0.05, 0.05, 0.03, 0.0]),
    ).with_columns(floor=c.list_price * c.floor_ratio).with_columns(
        gap=c.quoted_price - c.floor, shortfall=c.floor - c.quoted_price,
    ).with_columns(share=pl.when(c.floor != 0).then(c.shortfall / c.floor)).with_columns(
        which=first_hit([c.tier.is_null(), c.gap >= 0, c.share <= c.escalation, pl.lit(True)]))
    d = lf.collect()
    F = Numbers()
    tier_text = pick("tier", TIERS)
    below = [F("shortfall", ",.0f"), " (", F("share", ".1%"),
             ") below the tier ", tier_text, " floor of ", F("floor", ",.0f")]
    exprs = dict(
        approval=pick("which", [1, 0, 1, 2]),
        because=texts("which", [
            ["customer ", c.customer_id,
             " is not in the customer facts, so no floor applies: check the customer number"],
            [F("gap", ",.0f"), " above the tier ", tier_text, " floor of ",
             F("floor", ",.0f"), " (", F("floor_ratio", ".0%"), " of list)"],
            [*below, ", within the ", F("escalation", ".0%"), " the sales manager may approve"],
            [*below, ": not allowed"]]),
    )
    out = F.add(d).lazy().select(**exprs).collect()
    return pa.table({
        "quote_id": strings(d["quote_id"]),
        "approval": dictionary(out["approval"], ["approve", "escalate", "reject"]),
        "approval_rule": dictionary(d["which"], ["unknown-customer", "at-or-above-floor", "within-escalation-band",
                                                 "below-floor"]),
        "approval_because": strings(out["because"]),
    })


def prospects(path: Path) -> pa.Table:
    c = pl.col
    lf = scan(path, ["industry_influence", "referral_potential", "quality_fit", "culture_fit", "expected_revenue"],
              ["co_branding", "opens_new_field"], ["prospect_id", "region"]).with_row_index("row")
    lf = lf.with_columns(
        sv=0.35 * c.industry_influence + 0.35 * c.referral_potential
        + pl.when(c.co_branding).then(1.5).otherwise(0.0) + pl.when(c.opens_new_field).then(1.5).otherwise(0.0),
        fit=pl.when(c.quality_fit.is_null() | c.culture_fit.is_null()).then(None)
        .otherwise(pl.min_horizontal(c.quality_fit, c.culture_fit)),
    ).with_columns(no_value=c.sv < 3).with_columns(poor_fit=~c.no_value & (c.fit < 4))
    lf = lf.with_columns(eligible=~c.no_value & ~c.poor_fit)
    # the quota: rank in the region by the ranking values (largest first), ties by the smaller prospect_id
    ranked = lf.filter(c.eligible).sort(["region", "sv", "fit", "expected_revenue", "prospect_id"],
                                         descending=[False, True, True, True, False]).select(
        "row",
        rank=(pl.int_range(pl.len()).over("region") + 1).cast(pl.Float64),
        qsize=pl.len().over("region").cast(pl.Float64),
        tied=pl.len().over(["region", "sv", "fit", "expected_revenue"]).cast(pl.Int64) - 1,
    ).with_columns(limit=(c.qsize * 0.35 + 1e-9).floor())
    d = lf.join(ranked, on="row", how="left", maintain_order="left").with_columns(
        which=first_hit([c.no_value, c.poor_fit, c.rank <= c.limit, c.eligible]),
    ).collect()
    ties = pl.when(c.tied > 0).then(pl.concat_str([
        pl.lit(" (tied with "), c.tied.cast(pl.String),
        pl.when(c.tied > 1).then(pl.lit(" others")).otherwise(pl.lit(" other")),
        pl.lit(" on the ranking; ties go to the smaller prospect_id)")])).otherwise(pl.lit(""))
    F = Numbers()
    sv = F("sv", ".1f")
    rank, qsize, limit = (F(n, ".0f") for n in ("rank", "qsize", "limit"))
    exprs = dict(
        pursue=pick("which", [1, 1, 0, 1]),
        because=texts("which", [
            ["no clear strategic value (", sv, " of 10)"],
            ["does not fit our quality standards or way of working (fit ", F("fit", ".0f"),
             " of 10)"],
            ["ranked ", rank, " of ", qsize, " qualified prospects in ", c.region, ties, " (strategic value ", sv,
             ")"],
            ["qualified, but ranked ", rank, " of ", qsize, " in ", c.region, ties, "; only the top ", limit,
             " are pursued"]]),
    )
    out = F.add(d).lazy().select(**exprs).collect()
    return pa.table({
        "prospect_id": strings(d["prospect_id"]),
        "pursue": dictionary(out["pursue"], ["pursue", "decline"]),
        "pursue_rule": dictionary(d["which"], ["no-strategic-value", "poor-fit", "top-two-of-ten", "outside-quota"]),
        "pursue_because": strings(out["because"]),
    })


def main(data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)

    def write(table: pa.Table, entity: str) -> None:
        pq.write_table(table, out / f"{entity}_decisions.parquet", compression="zstd")

    later = POOL.submit(lambda: write(prospects(data / "prospects.parquet"), "prospect"))
    decided = customers_decided(data / "customers.parquet")
    tiers = decided.select("customer_id", "tier")
    quoted = POOL.submit(lambda: write(quotes(data / "quotes.parquet", tiers), "quote"))
    write(customers_table(decided, customers_explained(decided)), "customer")
    quoted.result()
    later.result()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
