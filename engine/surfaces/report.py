"""`kam report`: the portfolio as business people read it, as one self-contained HTML file.

The charts are matplotlib figures written as inline SVG (text kept as text, no scripts, no fonts or
files from anywhere else), so the page opens offline, prints, and stays small: a million customers
become a 2-D histogram, not a million points. Every section is drawn from what the run decided and
read; a section whose decision or facts the policies do not have is left out, and the page says so.
Headline figures carry their exact value in a `data-value` attribute, for tests and scripts.
"""

from __future__ import annotations

import html
import io
import math
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..batch.extras import need
from ..language.version import __version__
from ..language.numbers import number_text

if TYPE_CHECKING:
    from ..batch.result import RunResult

TOP = 10  # ids listed per table; the rest are in the decision files
MAP_POINTS = 5000  # above this many customers the profitability map is a 2-D histogram
COLORS = ["#1b6ca8", "#5aa469", "#f0a500", "#c0392b", "#8e44ad", "#7f8c8d", "#16a085", "#d35400"]


_STYLE: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "kam", "font.size": 9,
          "axes.spines.top": False, "axes.spines.right": False}
LABEL_CHARS = 24  # a label in a chart
WORD_CHARS = 24  # a table cell may break a longer run of characters without a space
CELL_CHARS = 300  # a cell in a table (reason texts fit; a hostile 20,000-character value does not)


def _svg(fig: Any) -> str:
    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context(_STYLE):
        fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = out.getvalue()
    return text[text.index("<svg"):]


def _figure(width: float = 7.0, height: float = 3.6) -> tuple[Any, Any]:
    """A figure of its own (not in pyplot's registry; the host process's backend and style untouched)."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height))
        return fig, fig.subplots()


def _legend(ax: Any, **options: Any) -> None:
    """A legend, where the chart has something to put in it (an empty portfolio has not)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def _cut(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def _category_bars(ax: Any, labels: list[str]) -> None:
    """Category labels that do not fit under their bar are set at a slant."""
    if max((len(x) for x in labels), default=0) > 10:
        ax.tick_params(axis="x", labelrotation=30)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")


def _labels(values: Any) -> list[str]:
    """Category labels for a chart, cut short; two that would read alike after the cut stay apart."""
    out: list[str] = []
    for v in values:
        label = _cut(v, LABEL_CHARS)
        while label in out:
            label = f"{label} ({sum(x.startswith(label) for x in out) + 1})"
        out.append(label)
    return out


def _pct(x: float) -> str:
    return "missing" if x is None or not math.isfinite(x) else f"{x:.1%}"


def _money(x: float) -> str:
    return "missing" if x is None or not math.isfinite(x) else f"{x:,.0f}"


def _esc(v: Any) -> str:
    if isinstance(v, list):
        v = ", ".join(map(str, v))
    if isinstance(v, float):
        v = number_text(v) if math.isfinite(v) else ""
    text = _cut("" if v is None or v is pd.NA else v, CELL_CHARS)
    # a run of characters without a space may break every WORD_CHARS (ids and numbers are shorter)
    return "".join("<wbr>".join(html.escape(part[i:i + WORD_CHARS]) for i in range(0, len(part), WORD_CHARS))
                   if len(part) > WORD_CHARS else html.escape(part) for part in re.split(r"(\s+)", text))


def _table(frame: pd.DataFrame, caption: str = "") -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _headline(name: str, label: str, value: float, text: str) -> str:
    return (f'<div class="headline" data-figure="{name}" data-value="{value!r}"><div class="value">{text}</div>'
            f'<div class="label">{html.escape(label)}</div></div>')


def pareto_figures(profit: np.ndarray) -> dict[str, float]:
    """The Pareto headline figures of a profit column: what the top 20% hold, how many customers make
    80%, and the loss makers (whose losses the curve gives back, so it can pass 100%)."""
    p = np.sort(np.nan_to_num(np.asarray(profit, dtype=float)))[::-1]
    n, total = p.size, float(p.sum())
    top = int(math.ceil(0.2 * n))
    cum = np.cumsum(p)
    reach = int(np.argmax(cum >= 0.8 * total)) + 1 if n and total > 0 and (cum >= 0.8 * total).any() else n
    return {"customers": float(n), "top20_profit_share": float(cum[top - 1] / total) if n and total else float("nan"),
            "customers_for_80": reach / n if n else float("nan"),
            "loss_makers": float((p < 0).sum()), "loss_profit": float(p[p < 0].sum())}


def _frames(result: "RunResult") -> dict[str, pd.DataFrame]:
    """Per entity: its facts, then its decisions' columns, then the yes/no and number features."""
    from ..history.tables import quota_arrows

    outs = result.outputs()
    frames = {}
    for entity, r in result.results.items():
        facts = result.frames_in[entity].reset_index(drop=True)
        out = outs[entity].drop(columns=[c for c in outs[entity].columns if c in facts.columns])
        features = result.features(entity)
        feats = {c: features[c] for c in features.columns if c not in facts.columns and c not in out.columns}
        for name, res in r.decisions.items():  # the quota each entity was ranked against, where one applies
            if res.quota_vars:
                feats[f"{name}_quota_limit"] = quota_arrows(res)["quota_limit"].to_pandas()
        frames[entity] = pd.concat([facts, out.reset_index(drop=True), pd.DataFrame(feats)], axis=1)
    return frames


def _pareto_section(c: pd.DataFrame) -> str:
    figs = pareto_figures(c["profit"].to_numpy(dtype=float))
    fig, ax = _figure()
    n = len(c)
    x = np.arange(1, n + 1) / max(n, 1)
    for column, color in (("profit", COLORS[0]), ("revenue", COLORS[1])):
        if column in c:
            v = np.sort(np.nan_to_num(c[column].to_numpy(dtype=float)))[::-1]
            total = v.sum()
            if n and total:
                ax.plot(np.concatenate([[0], x]), np.concatenate([[0], np.cumsum(v) / total]), color=color,
                        label=f"cumulative share of {column}")
    ax.axvline(0.2, color="#999", linestyle=":", label="top 20% of customers")
    if "in_pareto_top" in c and n:
        line = float(c["in_pareto_top"].fillna(False).astype(bool).mean())
        ax.axvline(line, color=COLORS[3], linestyle="--", label=f"the run's Pareto line ({line:.1%} of customers)")
    ax.axhline(1.0, color="#ccc", linewidth=0.8)
    ax.set_xlabel("share of customers, largest profit first")
    ax.set_ylabel("cumulative share")
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    _legend(ax, loc="lower right", frameon=False)
    heads = "".join([
        _headline("top20_profit_share", "of profit comes from the top 20% of customers",
                  figs["top20_profit_share"], _pct(figs["top20_profit_share"])),
        _headline("customers_for_80", "of customers make 80% of profit", figs["customers_for_80"],
                  _pct(figs["customers_for_80"])),
        _headline("loss_makers", "customers lose money", figs["loss_makers"], f"{figs['loss_makers']:,.0f}"),
        _headline("loss_profit", "profit they take back (why the curve passes 100%)", figs["loss_profit"],
                  _money(figs["loss_profit"])),
    ])
    return (f'<section id="pareto"><h2>The Pareto curve</h2><div class="headlines">{heads}</div>'
            f'<figure id="chart-pareto">{_svg(fig)}<figcaption>Cumulative share of profit and revenue against '
            f'the share of customers, largest profit first. {n:,} customers.</figcaption></figure></section>')


def _tier_section(c: pd.DataFrame, target: dict[str, float], values: list[str]) -> str:
    n = len(c)
    order = values or sorted(c["tier"].dropna().astype(str).unique())
    shares = [(c["tier"] == v).mean() if n else 0.0 for v in order]
    fig, ax = _figure(6, 3)
    ax.bar(order, shares, color=COLORS[0], label="this run")
    if target:
        ax.scatter(order, [target.get(v, np.nan) for v in order], marker="_", s=900, color=COLORS[3], zorder=3,
                   label="target")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.set_ylabel("share of customers")
    _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    rows = []
    for v, share in zip(order, shares):
        part = c[c["tier"] == v]
        rows.append({"tier": v, "customers": len(part), "share": _pct(share),
                     "target": _pct(target[v]) if v in target else "",
                     "revenue": _money(part["revenue"].sum()) if "revenue" in c else "",
                     "profit": _money(part["profit"].sum()) if "profit" in c else ""})
    shape = " / ".join(f"{v} {target[v]:.0%}" for v in order if v in target)
    caption = f"Target shape: {shape}." if shape else "The policies declare no target shape for `tier`."
    return (f'<section id="tiers"><h2>Tiers against the target shape</h2><figure id="chart-tiers">{_svg(fig)}'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>{_table(pd.DataFrame(rows))}</section>')


def _map_section(c: pd.DataFrame) -> str:
    fig, ax = _figure(7, 4)
    rev = c["revenue"].to_numpy(dtype=float)
    prof = c["profit"].to_numpy(dtype=float)
    ok = np.isfinite(rev) & np.isfinite(prof)
    log = bool(ok.any() and (rev[ok] > 0).all())
    if log:  # revenue spans orders of magnitude: the big accounts would squeeze everyone else into a corner
        ax.set_xscale("log")
    if len(c) > MAP_POINTS:
        xbins = np.geomspace(rev[ok].min(), rev[ok].max(), 81) if log else 80
        from matplotlib.colors import LogNorm

        # counts on a log scale: the crowded middle would otherwise wash out every other bin
        h = ax.hist2d(rev[ok], prof[ok], bins=[xbins, np.linspace(prof[ok].min(), prof[ok].max(), 81)],
                      cmap="Blues", cmin=1, norm=LogNorm())
        fig.colorbar(h[3], ax=ax, label="customers")
        kind = f"a 2-D histogram of {int(ok.sum()):,} customers"
    else:
        tiers = c["tier"].astype(str).to_numpy() if "tier" in c else np.full(len(c), "all")
        for i, t in enumerate(sorted(set(tiers))):
            m = ok & (tiers == t)
            ax.scatter(rev[m], prof[m], s=6, alpha=0.6, color=COLORS[i % len(COLORS)], label=f"tier {t}")
        kind = f"{int(ok.sum()):,} customers, by tier"
    rib_text = ""
    if "chicken_rib" in c:
        rib = ok & c["chicken_rib"].fillna(False).astype(bool).to_numpy()
        if rib.sum() <= MAP_POINTS:
            ax.scatter(rev[rib], prof[rib], s=14, marker="x", color="#222", linewidths=0.7,
                       label=f"chicken rib ({int(rib.sum()):,})")
            rib_text = ("; chicken-rib customers (losing money, and last year too, costing more to serve than "
                        "they bring) marked x")
        else:
            rib_text = f"; {int(rib.sum()):,} chicken-rib customers, too many to mark one by one (listed below)"
    if ok.any():
        ax.axvline(float(np.median(rev[ok])), color="#999", linestyle=":", label="median revenue")
    ax.axhline(0, color="#999", linestyle=":")
    ax.set_xlabel("revenue" + (" (log scale)" if log else ""))
    ax.set_ylabel("profit")
    ax.xaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
    _legend(ax, loc="upper left", bbox_to_anchor=(1.25 if len(c) > MAP_POINTS else 1.02, 1), frameon=False,
              fontsize=7)
    corner = c[(c["profit"] < 0)].sort_values("profit").head(TOP)
    cols = [x for x in ("customer_id", "revenue", "profit", "tier", "retention", "retention_because") if x in c]
    return (f'<section id="map"><h2>The profitability map</h2><figure id="chart-map">{_svg(fig)}<figcaption>'
            f'Profit against revenue: {kind}; lines at the median revenue and at zero profit{rib_text}.'
            f'</figcaption></figure>{_table(corner[cols], f"The {len(corner)} biggest losses")}</section>')


def _counts_section(frame: pd.DataFrame, section: str, title: str, decision: str, money: list[str],
                    who: list[str], caption: str, sort_by: str | None = None, group: str | None = None) -> str:
    fig, ax = _figure(6, 3)
    if group and group in frame:
        table = pd.crosstab(frame[group].astype(str), frame[decision].astype(str))
        bottom = np.zeros(len(table))
        for i, value in enumerate(table.columns):
            ax.bar(_labels(table.index), table[value], bottom=bottom,
                   color=COLORS[i % len(COLORS)], label=_cut(value, LABEL_CHARS))
            bottom += table[value].to_numpy()
        _category_bars(ax, _labels(table.index))
        _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        ax.set_ylabel("entities")
    else:
        counts = frame[decision].astype(str).value_counts()
        ax.bar(_labels(counts.index), counts.to_numpy(), color=COLORS[0])
        _category_bars(ax, _labels(counts.index))
        ax.set_ylabel("entities")
    agg = frame.groupby(frame[decision].astype(str)).agg(
        entities=(decision, "size"), **{m: (m, "sum") for m in money if m in frame}).reset_index()
    for m in money:
        if m in agg:
            agg[m] = agg[m].map(_money)
    tables = _table(agg)
    quota = f"{decision}_quota_limit"
    if group and group in frame and quota in frame:  # per group: what was decided against the quota
        per = pd.crosstab(frame[group].astype(str), frame[decision].astype(str))
        per["quota"] = frame.groupby(frame[group].astype(str))[quota].max().map(
            lambda v: "" if pd.isna(v) else f"{v:,.0f}")
        tables += _table(per.reset_index(), f"{decision} per {group}, against the quota")
    for value in agg[decision]:
        part = frame[frame[decision].astype(str) == value]
        if sort_by and sort_by in part:
            part = part.sort_values(sort_by, ascending=False)
        cols = [c for c in who if c in part]
        if cols:
            caption = f"{decision} {value}: the first {min(TOP, len(part))} of {len(part):,}"
            tables += _table(part[cols].head(TOP), caption)
    return (f'<section id="{section}"><h2>{html.escape(title)}</h2><figure id="chart-{section}">{_svg(fig)}'
            f'<figcaption>{html.escape(caption)}</figcaption></figure>{tables}</section>')


def _since_section(result: "RunResult", c: pd.DataFrame) -> str:
    past = result.past.frames.get("customer")
    if past is None or "previous(tier, 1)" not in past or "tier" not in c:
        return ""
    was = pd.Series(past["previous(tier, 1)"]).astype(object).where(lambda s: s.notna(), "(new)").astype(str)
    now = c["tier"].astype(str).reset_index(drop=True)
    matrix = pd.crosstab(was.reset_index(drop=True).rename("before"), now.rename("now"))
    moved = c.assign(before=was.to_numpy())[was.to_numpy() != now.to_numpy()]
    money = [m for m in ("revenue", "profit") if m in c]
    moves = moved.groupby(["before", "tier"]).agg(customers=("tier", "size"), **{m: (m, "sum") for m in money}) \
        .reset_index().sort_values("customers", ascending=False)
    for m in money:
        moves[m] = moves[m].map(_money)
    cols = [x for x in ("customer_id", "before", "tier", "revenue", "profit", "tier_because") if x in moved]
    by_money = moved.sort_values("profit", ascending=False, key=abs) if "profit" in moved else moved
    top = by_money[cols].head(TOP)
    return (f'<section id="since"><h2>Since the previous period ({html.escape(result.past.periods[0])})</h2>'
            f'{_table(matrix.reset_index(), "tier before (rows) and now (columns)")}'
            f'{_table(moves, "the moves, with the money that moved")}{_table(top, "the biggest movers")}</section>')


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans CJK SC",sans-serif;margin:2em auto;
max-width:1000px;color:#222;padding:0 1em}h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:2em}.meta{color:#666}.headlines{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}.headline{border:1px
solid #ddd;border-radius:6px;padding:.6em 1em;min-width:180px}.headline .value{font-size:1.6em;font-weight:600}
.headline .label{color:#555;font-size:.9em}figure{margin:1em 0}figure svg{max-width:100%;height:auto}
figcaption{color:#555;font-size:.9em}table{border-collapse:collapse;margin:1em 0;font-size:.85em}caption{text-align:
left;font-weight:600;padding:.3em 0}th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:
top}th{background:#f5f5f5}.note{color:#666;font-style:italic}@media print{section{break-inside:avoid}}
"""


def render(result: "RunResult", title: str = "Key-account portfolio") -> str:
    """The report of one run, as one HTML page."""
    need("matplotlib")
    frames = _frames(result)
    ps = result.plan.checked.policy_set
    parts: list[str] = []
    missing: list[str] = []
    c = frames.get("customer")
    if c is not None and {"revenue", "profit"} <= set(c.columns):
        parts.append(_pareto_section(c))
        if "tier" in c:
            tier = next(d for d in ps.decisions("customer") if d.name == "tier")
            parts.append(_tier_section(c, dict(tier.target), [str(v) for v in tier.main.values or ()]))
        else:
            missing.append("tiers (no `tier` decision)")
        parts.append(_map_section(c))
        if "retention" in c:
            who = ["customer_id", "tier", "revenue", "profit", "retention_because"]
            parts.append(_counts_section(c, "retention", "Retention: who is kept, downgraded or let go", "retention",
                                         ["revenue", "profit"], who, "Customers per retention decision, with the "
                                         "revenue and profit at stake.", sort_by="revenue"))
            if "protected_by" in c:
                traits = c["protected_by"].explode().astype(str)
                parts.append(_table(traits.value_counts().rename_axis("trait").reset_index(name="customers"),
                                    "protected customers by trait (one customer can have several)"))
        else:
            missing.append("retention (no `retention` decision)")
        parts.append(_since_section(result, c))
    else:
        missing.append("the customer sections (no customer entity with revenue and profit)")
    p = frames.get("prospect")
    if p is not None and "pursue" in p:
        parts.append(_counts_section(p, "prospects", "Prospects: pursued per region against the quota", "pursue",
                                     ["expected_revenue"], ["prospect_id", "region", "expected_revenue",
                                                            "pursue_because"],
                                     "Prospects per region: pursued (within each region's quota) and declined.",
                                     sort_by="expected_revenue", group="region"))
    q = frames.get("quote")
    if q is not None and "approval" in q:
        if "shortfall" in q:
            q = q.assign(below_floor=np.clip(q["shortfall"].to_numpy(dtype=float), 0, None))
        parts.append(_counts_section(q, "pricing", "Pricing: quotes approved, escalated and rejected", "approval",
                                     ["quoted_price", "below_floor"],
                                     ["quote_id", "customer_id", "tier", "quoted_price", "below_floor",
                                      "approval_because"],
                                     "Quotes per approval decision; below_floor is how far under the tier's floor "
                                     "price they are (0 at or above it).", sort_by="below_floor"))
    measures = [{"entity": e, "measure": k, "value": "missing" if v is None else
                 ("true" if v else "false") if isinstance(v, bool) else number_text(float(v))}
                for e, values in result.measures().items() for k, v in values.items()]
    if measures:
        parts.insert(0, f'<section id="measures"><h2>Measures stated by the policies</h2>'
                        f'{_table(pd.DataFrame(measures))}</section>')
    counts = [{"entity": e, "decision": d, "value": v, "count": n}
              for e, ds in result.counts().items() for d, vs in ds.items() for v, n in vs.items()]
    parts.append(f'<section id="decisions"><h2>Every decision</h2>{_table(pd.DataFrame(counts))}</section>')
    note = f'<p class="note">Not shown: {html.escape("; ".join(missing))}.</p>' if missing else ""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = ", ".join(f"{len(f):,} {e}s" for e, f in result.frames_in.items())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>'
            f'<h1>{html.escape(title)}</h1><p class="meta">{rows}; policies {ps.hash[:12]} '
            f'({html.escape(ps.directory)}); kam {__version__}; {when}</p>{note}{"".join(parts)}</body></html>')
