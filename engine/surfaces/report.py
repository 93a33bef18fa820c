"""`kam report`: the portfolio as business people read it, as one self-contained HTML file.

The charts are matplotlib figures written as inline SVG (text kept as text, no fonts or files from
anywhere else), so the page opens offline, prints, and stays small: a million customers become a
sample drawn evenly from each tier, not a million points. Every figure is formatted by its unit
(`engine.language.units`) in the reader's locale (`engine.language.figures`), and every figure shown
twice is computed once. A section whose decision or facts the policies do not have is left out, and
the page says so. Headline figures carry their exact value in a `data-value` attribute, for tests
and scripts. One small inline script finds any entity by its id (the data it searches is in the
page: nothing is fetched).
"""

from __future__ import annotations

import base64
import gzip
import html
import io
import json
import math
import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from ..batch.extras import need
from ..history.questions import GONE, NEW
from ..language.figures import DEFAULT_LOCALE, Reader, reader
from ..language.units import COUNT, MONEY, PERCENT, PLAIN, Unit, units_of
from ..language.version import __version__
from .revision import folder_revision

if TYPE_CHECKING:
    from ..batch.result import RunResult

TOP = 10  # ids listed per table; the rest are in the decision files and the search
MAP_POINTS = 5000  # above this many customers the profitability map draws a sample from each tier
SEARCH_LIMIT = 100_000  # entities of one kind findable in the page; above, the page says where to look
# Okabe and Ito's colour-blind-safe palette, darkened where needed: each at least 3:1 against white
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#332288", "#882255", "#8C510A", "#666666"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]  # tiers told apart by shape too, not by colour alone
HATCHES = ["", "//", "..", "xx", "\\\\", "++", "oo", "--"]

_STYLE: dict[str, Any] = {"svg.fonttype": "none", "svg.hashsalt": "kam", "font.size": 10,
                          "axes.spines.top": False, "axes.spines.right": False}
LABEL_CHARS = 24  # a label in a chart
WORD_CHARS = 24  # a table cell may break a longer run of characters without a space
CELL_CHARS = 300  # a cell in a table (reason texts fit; a hostile 20,000-character value does not)
NAME_COLUMNS = ("name", "customer_name", "company", "company_name", "account_name")


def _cut(text: Any, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit - 1]}…"


def _wrap(text: str) -> str:
    """Escaped text in which a run of characters without a space may break every WORD_CHARS."""
    return "".join("<wbr>".join(html.escape(part[i:i + WORD_CHARS]) for i in range(0, len(part), WORD_CHARS))
                   if len(part) > WORD_CHARS else html.escape(part) for part in re.split(r"(\s+)", text))


class Page:
    """What every section formats with: the reader's locale and each entity's units."""

    def __init__(self, result: "RunResult", locale: str | None):
        self.ps = result.plan.checked.policy_set
        self.locale = locale or self.ps.locale or DEFAULT_LOCALE  # as the reader named it (zh_CN, not zh_Hans_CN)
        self.r: Reader = reader(self.locale)
        self.units = {e: units_of(self.ps, e) for e in result.frames_in}
        customer = self.units.get("customer", {})
        self.money = customer.get("profit", customer.get("revenue", Unit(MONEY)))  # the headline cards' unit

    def unit(self, entity: str, column: str) -> Unit:
        return self.units.get(entity, {}).get(column, PLAIN)

    def label(self, entity: str, column: str) -> str:
        """A column heading in the policies' words: `retention: why`, `profit (CN¥)`."""
        for suffix, word in (("_because", "why"), ("_rule", "rule"), ("_quota_limit", "quota")):
            if column.endswith(suffix):
                return f"{column[: -len(suffix)].replace('_', ' ')}: {word}"
        return self.r.label(column.replace("_", " "), self.units.get(entity, {}).get(column))

    def cell(self, value: Any, unit: Unit | None) -> tuple[str, bool]:
        """A cell's text, and whether it is a figure (right-aligned)."""
        if isinstance(value, (list, tuple, np.ndarray)):
            return ", ".join(map(str, value)), False
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return "", unit is not None
        if isinstance(value, (bool, np.bool_)):
            return ("yes" if value else "no"), False
        if isinstance(value, (int, float, np.integer, np.floating)):
            return self.r.number(float(value), unit or PLAIN), True
        return str(value), False

    def table(self, frame: pd.DataFrame, caption: str = "", entity: str = "",
              units: dict[str, Unit] | None = None, labels: dict[str, str] | None = None,
              row_head: bool = False) -> str:
        """A table of figures formatted by their unit: headings with `scope`, figures right-aligned in
        tabular digits, inside a box that scrolls on its own on a narrow screen."""
        units = units or {}
        heads = []
        for c in frame.columns:
            text = (labels or {}).get(c) or (self.label(entity, c) if entity else self.r.label(str(c), units.get(c)))
            unit = units.get(c) or (self.unit(entity, c) if entity else None)
            numeric = pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
            heads.append((text, unit if numeric else None, numeric))
        why = [str(c).endswith("_because") for c in frame.columns]  # a reason keeps a readable width on a phone
        head = "".join(f'<th scope="col"{" class=n" if n else " class=why" if w else ""}>{_wrap(_cut(t, CELL_CHARS))}'
                       '</th>' for (t, _, n), w in zip(heads, why))
        rows = []
        for row in frame.itertuples(index=False):
            cells = []
            for i, (v, (_, unit, numeric)) in enumerate(zip(row, heads)):
                text, figure = self.cell(v, unit if numeric else None)
                tag = "th scope=\"row\"" if row_head and i == 0 else "td"
                cells.append(f'<{tag}{" class=n" if figure else ""}>{_wrap(_cut(text, CELL_CHARS))}</{tag.split()[0]}>')
            rows.append("<tr>" + "".join(cells) + "</tr>")
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        small = " small" if len(frame) <= 12 else ""  # printed on one page with its caption
        return (f'<div class="scroll{small}"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
                '</table></div>')

    def pct(self, x: float, decimals: int = 1) -> str:
        return self.r.number(x, Unit(PERCENT, decimals=decimals))

    def count(self, x: float) -> str:
        return self.r.number(x, Unit(COUNT))


# -- charts ---------------------------------------------------------------------------------------------

def _svg(fig: Any, title: str, summary: str) -> str:
    """The figure as inline SVG that a screen reader announces as one image, with its title and a
    text summary of what it shows."""
    import warnings

    import matplotlib

    out = io.StringIO()
    with matplotlib.rc_context(_STYLE), warnings.catch_warnings():
        # text stays text in the SVG, drawn by the reader's own fonts (万 included): matplotlib's
        # fonts only measure it
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = out.getvalue()
    text = text[text.index("<svg"):]
    ident = "t" + re.sub(r"\W", "", title)[:30].lower()
    opening = text[: text.index(">") + 1]
    return (opening.replace("<svg", f'<svg role="img" aria-labelledby="{ident} {ident}d"', 1) +
            f'<title id="{ident}">{html.escape(title)}</title><desc id="{ident}d">{html.escape(summary)}</desc>' +
            text[len(opening):])


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


def _ticks(fmt: Callable[[float], str]) -> Callable[[float, Any], str]:
    return lambda v, _: fmt(v)


def _words(text: str) -> str:
    """A sentence as HTML: escaped, with the names and commands written `so` set as code."""
    return re.sub(r"`([^`<>]*)`", r"<code>\1</code>", html.escape(text))


def _figure_html(section: str, svg: str, caption: str) -> str:
    return f'<figure id="chart-{section}">{svg}<figcaption>{_words(caption)}</figcaption></figure>'


def _headline(name: str, label: str, value: float, text: str) -> str:
    return (f'<div class="headline" data-figure="{name}" data-value="{value!r}"><div class="value">'
            f'{html.escape(text)}</div><div class="label">{html.escape(label)}</div></div>')


# -- the figures ----------------------------------------------------------------------------------------

def pareto_figures(profit: np.ndarray, line: float = 0.8) -> dict[str, float]:
    """The Pareto headline figures of a profit column: what the top 20% hold; the share of customers
    inside the `line` (those whose cumulative share of profit, theirs and that of everyone earning
    more, is at most 80%: the definition of `cumshare` the policies use); and the loss makers (whose
    losses the curve gives back, so it can pass 100%)."""
    p = np.sort(np.nan_to_num(np.asarray(profit, dtype=float)))[::-1]
    n, total = p.size, float(p.sum())
    top = int(math.ceil(0.2 * n))
    cum = np.cumsum(p)
    inside = float((cum / total <= line + 1e-12).sum()) / n if n and total > 0 else float("nan")
    return {"customers": float(n), "top20_profit_share": float(cum[top - 1] / total) if n and total else float("nan"),
            "customers_for_80": inside, "loss_makers": float((p < 0).sum()), "loss_profit": float(p[p < 0].sum())}


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


def _pareto_section(pg: Page, c: pd.DataFrame) -> str:
    figs = pareto_figures(c["profit"].to_numpy(dtype=float))
    n = len(c)
    line = float(c["in_pareto_top"].fillna(False).astype(bool).mean()) if "in_pareto_top" in c and n else None
    key_share = next((float(p.value) for pol in pg.ps.of_entity("customer") for p in pol.params
                      if p.name == "key_share" and isinstance(p.value, (int, float))), None)
    fig, ax = _figure()
    x = np.arange(1, n + 1) / max(n, 1)
    for column, color, style in (("profit", COLORS[0], "-"), ("revenue", COLORS[1], "--")):
        if column in c:
            v = np.sort(np.nan_to_num(c[column].to_numpy(dtype=float)))[::-1]
            total = v.sum()
            if n and total:
                ax.plot(np.concatenate([[0], x]), np.concatenate([[0], np.cumsum(v) / total]), color=color,
                        linestyle=style, label=f"cumulative share of {column}")
    ax.axvline(0.2, color="#666", linestyle=":", label="top 20% of customers")
    if line is not None:
        said = f" at {pg.pct(key_share, 0)} of profit" if key_share is not None else ""
        ax.axvline(line, color=COLORS[2], linestyle="-.",
                   label=f"the policies' Pareto line{said}: {pg.pct(line)} of customers")
    ax.axhline(1.0, color="#ccc", linewidth=0.8)
    ax.set_xlabel("share of customers, largest profit first")
    ax.set_ylabel("cumulative share")
    ax.xaxis.set_major_formatter(_ticks(lambda v: pg.pct(v, 0)))
    ax.yaxis.set_major_formatter(_ticks(lambda v: pg.pct(v, 0)))
    _legend(ax, loc="lower right", frameon=False, fontsize=8)
    money = pg.money
    heads = "".join([
        _headline("top20_profit_share", "of profit comes from the top 20% of customers",
                  figs["top20_profit_share"], pg.pct(figs["top20_profit_share"])),
        _headline("customers_for_80", "of customers bring 80% of profit", figs["customers_for_80"],
                  pg.pct(figs["customers_for_80"])),
        _headline("loss_makers", "customers lose money (profit below zero)", figs["loss_makers"],
                  pg.count(figs["loss_makers"])),
        _headline("loss_profit", "the profit they take back (why the curve passes 100%)", figs["loss_profit"],
                  pg.r.compact(figs["loss_profit"], money)),
    ])
    agree = ""
    if line is not None and math.isfinite(figs["customers_for_80"]):  # the line and the card agree, or say why
        same = round(line * n) == round(figs["customers_for_80"] * n)
        at = pg.pct(key_share, 0) if key_share is not None else "its own share"
        agree = (" The policies' Pareto line (<code>in_pareto_top</code>) counts the same customers." if same else
                 f" The policies' Pareto line (<code>in_pareto_top</code>) is drawn at {html.escape(at)} of profit: "
                 f"{html.escape(pg.pct(line))} of customers.")
    summary = (f"{pg.pct(figs['top20_profit_share'])} of profit comes from the top 20% of {pg.count(n)} customers; "
               f"{pg.pct(figs['customers_for_80'])} of customers bring 80% of profit.")
    caption = (f"Cumulative share of profit and revenue against the share of customers, largest profit first; "
               f"{pg.count(n)} customers.")
    definition = (f'<p class="def">How these are counted: a customer is among those who bring 80% of profit '
                  f'when the customers earning more than it, and it, bring at most 80% of the total profit '
                  f'(the policies\' <code>cumshare(profit)</code>).{agree} The top 20% are the '
                  f'{pg.count(math.ceil(0.2 * n))} customers with the most profit.</p>')
    return (f'<section id="pareto"><h2>The Pareto curve</h2><div class="headlines">{heads}</div>{definition}'
            f'{_figure_html("pareto", _svg(fig, "The Pareto curve", summary), caption)}</section>')


def _tier_section(pg: Page, c: pd.DataFrame, target: dict[str, float], values: list[str]) -> str:
    n = len(c)
    order = values or sorted(c["tier"].dropna().astype(str).unique())
    shares = [float((c["tier"] == v).mean()) if n else 0.0 for v in order]
    fig, ax = _figure(6, 3)
    ax.bar(order, shares, color=COLORS[0], label="this run")
    if target:
        ax.scatter(order, [target.get(v, np.nan) for v in order], marker="_", s=900, color=COLORS[1], zorder=3,
                   linewidths=2.5, label="target")
    ax.yaxis.set_major_formatter(_ticks(lambda v: pg.pct(v, 0)))
    ax.set_ylabel("share of customers")
    _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    rows = []
    for v, share in zip(order, shares):
        part = c[c["tier"] == v]
        rows.append({"tier": v, "customers": len(part), "share": share,
                     "target": target.get(v, np.nan) if target else np.nan,
                     **{m: float(part[m].sum()) for m in ("revenue", "profit") if m in c}})
    frame = pd.DataFrame(rows)
    if not target:
        frame = frame.drop(columns="target")
    units = {"customers": Unit(COUNT), "share": Unit(PERCENT), "target": Unit(PERCENT, decimals=0),
             "revenue": pg.unit("customer", "revenue"), "profit": pg.unit("customer", "profit")}
    labels = {m: pg.label("customer", m) for m in ("revenue", "profit")}
    shape = " / ".join(f"{v} {pg.pct(target[v], 0)}" for v in order if v in target)
    caption = f"Target shape: {shape}." if shape else "The policies declare no target shape for `tier`."
    summary = "; ".join(f"tier {v}: {pg.pct(s)} of customers" for v, s in zip(order, shares))
    return (f'<section id="tiers"><h2>Tiers against the target shape</h2>'
            f'{_figure_html("tiers", _svg(fig, "Tiers against the target shape", summary), caption)}'
            f'{pg.table(frame, "Customers, revenue and profit per tier", units=units, labels=labels, row_head=True)}'
            '</section>')


def _map_sample(c: pd.DataFrame, ok: np.ndarray, tiers: np.ndarray, marked: np.ndarray) -> np.ndarray:
    """Which customers the map draws: all up to MAP_POINTS; above, the same share of each tier (at
    least 50 of each, so a small tier stays visible), every marked customer included. Seeded: the same
    facts draw the same sample."""
    idx = np.flatnonzero(ok)
    if idx.size <= MAP_POINTS:
        return idx
    rng = np.random.default_rng(0)
    keep = [idx[marked[idx]][:MAP_POINTS // 4]]
    for t in np.unique(tiers[idx]):
        members = idx[(tiers[idx] == t) & ~marked[idx]]
        want = max(50, int(round(MAP_POINTS * members.size / idx.size)))
        keep.append(np.sort(rng.choice(members, size=min(want, members.size), replace=False)))
    return np.unique(np.concatenate(keep))


def _map_section(pg: Page, c: pd.DataFrame) -> str:
    fig, ax = _figure(7, 4.2)
    rev = c["revenue"].to_numpy(dtype=float)
    prof = c["profit"].to_numpy(dtype=float)
    ok = np.isfinite(rev) & np.isfinite(prof)
    log = bool(ok.any() and (rev[ok] > 0).all())
    if log:  # revenue spans orders of magnitude: the big accounts would squeeze everyone else into a corner
        ax.set_xscale("log")
    tiers = c["tier"].astype(str).to_numpy() if "tier" in c else np.full(len(c), "all")
    rib = c["chicken_rib"].fillna(False).astype(bool).to_numpy() if "chicken_rib" in c else np.zeros(len(c), bool)
    drawn = _map_sample(c, ok, tiers, rib)
    for i, t in enumerate(sorted(set(tiers[ok]))):
        m = drawn[tiers[drawn] == t]
        ax.scatter(rev[m], prof[m], s=9, alpha=0.7, color=COLORS[i % len(COLORS)], marker=MARKERS[i % len(MARKERS)],
                   linewidths=0, label=f"tier {t}" if "tier" in c else "customers")
    rib_drawn = drawn[rib[drawn]]
    if rib_drawn.size:
        ax.scatter(rev[rib_drawn], prof[rib_drawn], s=22, marker="x", color="#000", linewidths=0.8,
                   label=f"chicken rib ({pg.count(int(rib.sum()))})")
    if ok.any():
        ax.axvline(float(np.median(rev[ok])), color="#666", linestyle=":", label="median revenue")
        # a linear axis flattens every loss onto the zero line next to the big accounts: symmetric log
        # keeps the loss corner as wide as the profitable side
        scale = float(np.percentile(np.abs(prof[ok]), 10)) or 1.0
        ax.set_yscale("symlog", linthresh=max(scale, 1.0))
    ax.axhline(0, color="#666", linestyle="-", linewidth=0.8)
    ax.set_xlabel(pg.r.label("revenue", pg.unit("customer", "revenue")) + (", log scale" if log else ""))
    ax.set_ylabel(pg.r.label("profit", pg.unit("customer", "profit")) + ", symmetric log scale")
    ax.xaxis.set_major_formatter(_ticks(lambda v: pg.r.compact(v)))
    ax.yaxis.set_major_formatter(_ticks(lambda v: pg.r.compact(v)))
    _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False, fontsize=8)
    total = int(ok.sum())
    ribs = int((rib & ok).sum())
    kind = (f"all {pg.count(total)} customers" if drawn.size == total else
            f"a sample of {pg.count(drawn.size)} of {pg.count(total)} customers, the same share of each tier"
            + ("" if not ribs else ", every chicken-rib customer among them" if rib_drawn.size == ribs else
               f", {pg.count(rib_drawn.size)} of the {pg.count(ribs)} chicken-rib customers among them"))
    rib_text = ("; chicken-rib customers (losing money, and last year too, costing more to serve than they bring) "
                "marked ×" if "chicken_rib" in c else "")
    caption = (f"Profit against revenue: {kind}, by tier (colour and shape); lines at the median revenue and at "
               f"zero profit{rib_text}. Profit is on a symmetric log scale, so the losses below the line are as "
               "readable as the profits above it.")
    summary = (f"{pg.count(int((prof[ok] < 0).sum()))} of {pg.count(total)} customers lose money"
               + (f"; {pg.count(int(rib.sum()))} of them are chicken-rib customers" if "chicken_rib" in c else ""))
    losses = _losses_table(pg, c)
    corner = c[c["profit"] < 0].sort_values("profit", kind="stable").head(TOP)
    cols = [x for x in ("customer_id", "revenue", "profit", "tier", "chicken_rib", "retention", "retention_because")
            if x in c]
    listed = pg.table(corner[cols], f"The {len(corner)} customers with the biggest losses (most negative profit), "
                      "whatever was decided for them", entity="customer")
    return (f'<section id="map"><h2>The profitability map</h2>'
            f'{_figure_html("map", _svg(fig, "The profitability map", summary), caption)}{losses}{listed}</section>')


def _losses_table(pg: Page, c: pd.DataFrame) -> str:
    """The loss makers reconciled: how many lose money, how many of them are chicken-rib customers,
    and what retention decided for each group, with their profit, so the counts shown in different
    places add up."""
    if "retention" not in c:
        return ""
    loss = c["profit"] < 0
    rib = c["chicken_rib"].fillna(False).astype(bool) if "chicken_rib" in c else pd.Series(False, index=c.index)
    rows = []
    for value, part in c[loss].groupby(c.loc[loss, "retention"].astype(str), sort=False):
        r = rib[part.index]
        rows.append({"retention": value, "customers": len(part), "chicken rib": int(r.sum()),
                     "other loss makers": int((~r).sum()), "profit": float(part["profit"].sum())})
    rows.append({"retention": "all loss makers", "customers": int(loss.sum()), "chicken rib": int((rib & loss).sum()),
                 "other loss makers": int((loss & ~rib).sum()), "profit": float(c.loc[loss, "profit"].sum())})
    frame = pd.DataFrame(rows)
    units = {"customers": Unit(COUNT), "chicken rib": Unit(COUNT), "other loss makers": Unit(COUNT),
             "profit": pg.unit("customer", "profit")}
    labels = {"profit": pg.label("customer", "profit")}
    extra = int((rib & ~loss).sum())
    note = (f" {pg.count(extra)} chicken-rib customers do not lose money this period and are not counted here."
            if extra else "")
    return pg.table(frame, "Where the losses go: every customer with negative profit, by retention decision; a "
                    "chicken-rib customer lost money this year and last, and costs more to serve than it brings."
                    + note, units=units, labels=labels, row_head=True)


def _value_caption(pg: Page, entity: str, value: str, shown: int, total: int, sort_by: str | None) -> str:
    order = f"with the largest {sort_by.replace('_', ' ')}" if sort_by else "first by id"
    return f"{entity}s decided “{value}”: the {shown} {order}, of {pg.count(total)}"


def _counts_section(pg: Page, entity: str, frame: pd.DataFrame, section: str, title: str, decision: str,
                    money: list[str], who: list[str], caption: str, sort_by: str | None = None,
                    group: str | None = None) -> str:
    fig, ax = _figure(6, 3)
    if group and group in frame:
        table = pd.crosstab(frame[group].astype(str), frame[decision].astype(str))
        bottom = np.zeros(len(table))
        for i, value in enumerate(table.columns):
            ax.bar(_labels(table.index), table[value], bottom=bottom, color=COLORS[i % len(COLORS)],
                   hatch=HATCHES[i % len(HATCHES)], edgecolor="white", label=_cut(value, LABEL_CHARS))
            bottom += table[value].to_numpy()
        _category_bars(ax, _labels(table.index))
        _legend(ax, loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
        summary = "; ".join(f"{_cut(g, LABEL_CHARS)}: " + ", ".join(f"{pg.count(n)} {_cut(v, LABEL_CHARS)}"
                                                                  for v, n in row.items())
                            for g, row in table.iterrows())
    else:
        counts = frame[decision].astype(str).value_counts()
        ax.bar(_labels(counts.index), counts.to_numpy(), color=COLORS[0])
        _category_bars(ax, _labels(counts.index))
        summary = "; ".join(f"{_cut(v, LABEL_CHARS)}: {pg.count(n)}" for v, n in counts.items())
    ax.set_ylabel(f"{entity}s")
    ax.yaxis.set_major_formatter(_ticks(pg.count))
    agg = frame.groupby(frame[decision].astype(str)).agg(
        **{f"{entity}s": (decision, "size")}, **{m: (m, "sum") for m in money if m in frame}).reset_index()
    units = {f"{entity}s": Unit(COUNT), **{m: pg.unit(entity, m) for m in money}}
    tables = pg.table(agg, f"{entity}s per {decision.replace('_', ' ')} decision", entity=entity, units=units,
                      row_head=True)
    quota = f"{decision}_quota_limit"
    if group and group in frame and quota in frame:  # per group: what was decided against the quota
        per = pd.crosstab(frame[group].astype(str), frame[decision].astype(str))
        per["quota"] = frame.groupby(frame[group].astype(str))[quota].max()
        per_units = {c: Unit(COUNT) for c in per.columns}
        tables += pg.table(per.reset_index(), f"{decision} per {group}, against the quota", units=per_units,
                           row_head=True)
    for value in agg[decision]:
        part = frame[frame[decision].astype(str) == value]
        ordered = sort_by if sort_by and sort_by in part and part[sort_by].nunique(dropna=False) > 1 else None
        if ordered:
            part = part.sort_values(ordered, ascending=False, kind="stable")
        cols = [c for c in who if c in part]
        if cols:
            tables += pg.table(part[cols].head(TOP), _value_caption(pg, entity, value, min(TOP, len(part)),
                                                                    len(part), ordered), entity=entity)
    return (f'<section id="{section}"><h2>{html.escape(title)}</h2>'
            f'{_figure_html(section, _svg(fig, title, summary), caption)}{tables}</section>')


def _since_section(pg: Page, result: "RunResult", c: pd.DataFrame) -> str:
    past = result.past.frames.get("customer")
    if past is None or "previous(tier, 1)" not in past or "tier" not in c:
        return ""
    was = pd.Series(past["previous(tier, 1)"]).astype(object).where(lambda s: s.notna(), NEW).astype(str)
    money = [m for m in ("revenue", "profit") if m in c]
    key = "customer_id" if "customer_id" in c else c.columns[0]
    now = c.assign(before=was.to_numpy(), after=c["tier"].astype(str).to_numpy())
    gone = result.past.gone.get("customer", pd.DataFrame())
    if len(gone) and "tier" in gone:
        left = pd.DataFrame({key: gone[key].astype(str) if key in gone else "",
                             "before": gone["tier"].astype(object).where(gone["tier"].notna(), "missing").astype(str),
                             "after": GONE, **{m: gone[m].astype(float) if m in gone else np.nan for m in money},
                             "tier_because": f"not in this period's facts (recorded in {result.past.periods[0]})"})
        now = pd.concat([now, left], ignore_index=True)
    declared = [str(v) for d in pg.ps.decisions("customer") if d.name == "tier" for v in (d.main.values or ())]
    rows = [NEW] + declared + sorted(set(now["before"]) - set(declared) - {NEW})
    cols = declared + sorted(set(now["after"]) - set(declared) - {GONE}) + [GONE]
    matrix = pd.crosstab(now["before"], now["after"]).reindex(index=[r for r in rows if r in set(now["before"])],
                                                              columns=[c for c in cols if c in set(now["after"])],
                                                              fill_value=0)
    matrix.index.name, matrix.columns.name = "tier before", None
    moved = now[now["before"] != now["after"]]
    moves = moved.groupby(["before", "after"]).agg(customers=("after", "size"), **{m: (m, "sum") for m in money}) \
        .reset_index().sort_values(["customers", "before", "after"], ascending=[False, True, True], kind="stable")
    units = {"customers": Unit(COUNT), **{m: pg.unit("customer", m) for m in money}}
    labels = {"before": "tier before", "after": "tier now", **{m: pg.label("customer", m) for m in money}}
    # as `kam changes` lists them: by the size of the first money fact that moved, then by id
    first = next((f.name for f in pg.ps.facts("customer").values() if f.measure and f.name in moved), None)
    by_money = (moved.assign(kam_size=moved[first].abs()).sort_values(["kam_size", key], ascending=[False, True],
                                                                     kind="stable") if first else moved)
    show = [x for x in (key, "before", "after", "revenue", "profit", "tier_because") if x in moved]
    leavers = now[now["after"] == GONE]
    gone_money = ", ".join(f"{pg.label('customer', m)} "
                           f"{pg.r.number(float(leavers[m].sum()), pg.unit('customer', m))}" for m in money)
    note = (f'<p class="def">{pg.count(len(leavers))} customers recorded in {html.escape(result.past.periods[0])} '
            f'are not in this period\'s facts: they are counted as {GONE}, with the money of the period they were '
            f'last in ({html.escape(gone_money)}), as <code>kam changes</code> counts them.</p>'
            if len(leavers) else "")
    tables = (pg.table(matrix.reset_index(), "Customers per tier before (rows) and now (columns)",
                       units={c: Unit(COUNT) for c in matrix.columns}, row_head=True)
              + pg.table(moves, "The moves, with the money that moved", units=units, labels=labels)
              + pg.table(by_money[show].head(TOP), "The biggest movers, by the size of their "
                         f"{(first or 'change').replace('_', ' ')} (as kam changes lists them)",
                         entity="customer", labels=labels))
    return (f'<section id="since"><h2>Since the previous period ({html.escape(result.past.periods[0])})</h2>{note}'
            f'{tables}</section>')


def _measures_section(pg: Page, result: "RunResult") -> str:
    rows = []
    for entity, values in result.measures().items():
        for name, v in values.items():
            text = ("yes" if v else "no") if isinstance(v, bool) else pg.r.number(v, pg.unit(entity, name))
            rows.append(f'<tr><td>{html.escape(entity)}</td><th scope="row">{html.escape(pg.label(entity, name))}'
                        f'</th><td class="n" data-value="{v!r}">{html.escape(text)}</td></tr>')
    if not rows:
        return ""
    return ('<section id="measures"><h2>Measures stated by the policies</h2><div class="scroll"><table><thead><tr>'
            '<th scope="col">entity</th><th scope="col">measure</th><th scope="col" class="n">value</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div></section>')


def _decisions_section(pg: Page, result: "RunResult") -> str:
    rows = []
    for e, ds in result.counts().items():
        n = len(result.frames_in[e])
        for d, vs in ds.items():
            for v, k in vs.items():
                rows.append({"entity": e, "decision": d.replace("_", " "), "value": v, "count": k,
                             "share": k / n if n else np.nan})
    frame = pd.DataFrame(rows, columns=["entity", "decision", "value", "count", "share"])
    return (f'<section id="decisions"><h2>Every decision</h2>'
            f'{pg.table(frame, units={"count": Unit(COUNT), "share": Unit(PERCENT)})}</section>')


# -- finding an entity ----------------------------------------------------------------------------------

def _search_data(pg: Page, result: "RunResult", frames: dict[str, pd.DataFrame]) -> tuple[str, list[str]]:
    """Every entity's id (and name, where the facts have one), its decisions with their reasons and
    its money, gzip-compressed in the page; and a note per entity kind too large to search here."""
    outs = result.outputs()
    data: dict[str, Any] = {}
    notes = []
    for entity, frame in frames.items():
        key = pg.ps.key(entity)
        if key is None or key.name not in frame:
            continue
        n = len(frame)
        if n > SEARCH_LIMIT:
            notes.append(f"{pg.count(n)} {entity}s are too many to search in this page (up to "
                         f"{pg.count(SEARCH_LIMIT)} are): find one with `kam explain ID`, in the decision files, "
                         "or in `kam studio`.")
            continue
        out = outs[entity]
        # in the order the policies decide them (a decision before those that read it)
        order = [getattr(s, "name", "") for s in result.plan.entity(entity).steps]
        decisions = sorted((d for d in pg.ps.decisions(entity) if d.main.name in out),
                           key=lambda d: order.index(d.name) if d.name in order else len(order))
        name = next((c for c in NAME_COLUMNS if c in frame), None)
        money = sorted((f.name for f in pg.ps.facts(entity).values() if f.name in frame
                        and pg.unit(entity, f.name).kind == MONEY),
                       key=lambda m: (m not in ("revenue", "profit"), m != "revenue"))[:4]
        cols: dict[str, list[Any]] = {"id": frame[key.name].astype(str).tolist()}
        if name:
            cols["name"] = frame[name].astype(object).where(frame[name].notna(), "").astype(str).tolist()
        for d in decisions:
            values = out[d.main.name]
            cols[d.name] = [", ".join(map(str, v)) if isinstance(v, (list, np.ndarray)) else
                            "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]
            because = f"{d.name}_because"
            if because in out:
                cols[because] = out[because].astype(object).where(out[because].notna(), "").astype(str).tolist()
        for m in money:
            cols[m] = pg.r.numbers(frame[m].to_numpy(dtype=float), pg.unit(entity, m))
        gone = result.past.gone.get(entity, pd.DataFrame())
        if len(gone) and key.name in gone:  # those who left are found too, as the page lists them
            cols["id"] += gone[key.name].astype(str).tolist()
            if name:
                cols["name"] += [""] * len(gone)
            for d in decisions:
                cols[d.name] += [GONE] * len(gone)
                if f"{d.name}_because" in cols:
                    cols[f"{d.name}_because"] += [f"not in this period's facts; recorded in {result.past.periods[0]}"] \
                        * len(gone)
            for m in money:
                cols[m] += pg.r.numbers(gone[m].to_numpy(dtype=float) if m in gone else np.full(len(gone), np.nan),
                                        pg.unit(entity, m))
            n += len(gone)
        data[entity] = {"n": n, "decisions": [d.name for d in decisions],
                        "labels": {**{d.name: d.name.replace("_", " ") for d in decisions},
                                   **{m: pg.label(entity, m) for m in money}},
                        "money": money, "columns": cols}
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, 6, mtime=0)).decode("ascii"), notes


SEARCH_SCRIPT = """
(function(){
  var box=document.getElementById('find'),out=document.getElementById('found');
  var say=document.getElementById('find-status');
  var data=null,loading=null;
  function load(){
    if(data)return Promise.resolve(data);
    if(loading)return loading;
    var text=document.getElementById('kam-data').textContent.trim();
    var bytes=Uint8Array.from(atob(text),function(c){return c.charCodeAt(0);});
    var stream=new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
    loading=new Response(stream).text().then(function(t){data=JSON.parse(t);return data;});
    return loading;
  }
  function el(tag,cls,text){
    var e=document.createElement(tag);if(cls)e.className=cls;if(text!=null)e.textContent=text;return e;
  }
  function show(q){
    load().then(function(d){
      out.replaceChildren();
      q=q.trim().toLowerCase();
      if(!q){say.textContent='';return;}
      var found=0,shown=0,LIMIT=20;
      Object.keys(d).forEach(function(entity){
        var e=d[entity],ids=e.columns.id,names=e.columns.name;
        for(var i=0;i<e.n;i++){
          var hit=ids[i].toLowerCase().indexOf(q)>=0||(names&&names[i].toLowerCase().indexOf(q)>=0);
          if(!hit)continue;
          found++;
          if(shown>=LIMIT)continue;
          shown++;
          var card=el('article','entity');
          card.appendChild(el('h3',null,entity+' '+ids[i]+(names&&names[i]?' \u2014 '+names[i]:'')));
          var dl=el('dl');
          e.money.forEach(function(m){dl.appendChild(el('dt',null,e.labels[m]));dl.appendChild(el('dd','n',e.columns[m][i]));});
          e.decisions.forEach(function(dn){
            dl.appendChild(el('dt',null,e.labels[dn]));
            var dd=el('dd');dd.appendChild(el('strong',null,e.columns[dn][i]));
            var why=e.columns[dn+'_because'];
            if(why&&why[i]){dd.appendChild(document.createTextNode(': '+why[i]));}
            dl.appendChild(dd);
          });
          card.appendChild(dl);out.appendChild(card);
        }
      });
      say.textContent=found===0?'No id contains \u201c'+q+'\u201d.':
        found>shown?found+' found; the first '+shown+' are shown: type more of the id.':found+' found.';
    });
  }
  var timer=null;
  box.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(function(){show(box.value);},150);});
  document.getElementById('find-form').addEventListener('submit',function(ev){ev.preventDefault();show(box.value);});
})();
"""


def _search_section(pg: Page, result: "RunResult", frames: dict[str, pd.DataFrame]) -> str:
    payload, notes = _search_data(pg, result, frames)
    kinds = ", ".join(f"{pg.count(len(f))} {e}s" for e, f in frames.items() if len(f) <= SEARCH_LIMIT)
    named = any(c in f for f in frames.values() for c in NAME_COLUMNS)
    note = "".join(f'<p class="def">{_words(n)}</p>' for n in notes)
    return (f'<section id="find-one"><h2>Find a customer, prospect or quote</h2>'
            f'<form id="find-form" role="search"><label for="find">Id{" or name" if named else ""}'
            f' (any part of it), among {html.escape(kinds or "none")}</label> '
            f'<input id="find" type="search" autocomplete="off" spellcheck="false"></form>'
            f'<p id="find-status" role="status" aria-live="polite"></p><div id="found"></div>{note}'
            f'<script type="application/octet-stream" id="kam-data">{payload}</script>'
            f'<script>{SEARCH_SCRIPT}</script></section>')


STYLE = """
:root{color-scheme:light}
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans CJK SC",sans-serif;margin:2em auto;
max-width:1000px;color:#222;padding:0 1em;line-height:1.4}h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;
padding-bottom:.2em;margin-top:2em}.meta{color:#555;margin:.2em 0}.headlines{display:flex;flex-wrap:wrap;gap:1em;
margin:1em 0}.headline{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;flex:1 1 160px}
.headline .value{font-size:1.6em;font-weight:600;font-variant-numeric:tabular-nums}.headline .label{color:#555;
font-size:.9em}figure{margin:1em 0;overflow-x:auto}
figure svg{width:100%;max-width:760px;min-width:520px;height:auto;display:block}
figcaption,.def{color:#555;font-size:.9em}.scroll{overflow-x:auto;margin:1em 0;max-width:100%}
table{border-collapse:collapse;font-size:.85em}caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}thead th{background:#f3f3f3}
tbody th{font-weight:500}th.why{min-width:14em}.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.note{color:#555;font-style:italic}nav ol{columns:2 14em;padding-left:1.2em}code{font-size:.95em}
#find{font-size:1em;padding:.3em .5em;width:min(24em,100%);box-sizing:border-box}
.entity{border:1px solid #ddd;border-radius:6px;padding:.4em .9em;margin:.6em 0}.entity h3{margin:.2em 0}
.entity dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:.4em 0}.entity dd{margin:0}
.entity dd.n{text-align:left}
@media (max-width:600px){body{margin:1em auto;padding:0 .6em}.headline .value{font-size:1.3em}
.entity dl{grid-template-columns:1fr}.entity dt{font-weight:600}}
@media print{body{max-width:none;margin:0;padding:0}nav,#find-one{display:none}figure,tr,.headline{break-inside:avoid}
h2,caption{break-after:avoid}.scroll.small{break-inside:avoid}figure svg{min-width:0}.scroll{overflow:visible}
a{color:inherit;text-decoration:none}}
"""


def _page_rule(title: str) -> str:
    """Print: margins, the run's title on every page, page numbers (CSS paged media)."""
    text = title.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")
    text = re.sub(r"[<>]", "", text)  # inside <style>: nothing that could close it
    return (f'@page{{size:A4;margin:16mm 14mm 18mm;@top-left{{content:"{text}";font-size:8pt;color:#555}}'
            '@bottom-right{content:"page " counter(page) " of " counter(pages);font-size:8pt;color:#555}}')


def _header(pg: Page, result: "RunResult", title: str, period: str | None) -> str:
    ps = pg.ps
    names = ", ".join(p.name for p in ps.policies)
    revision = folder_revision(ps.directory)
    where = f"{ps.directory}" + (f", {revision}" if revision else "")
    rows = ", ".join(f"{pg.count(len(f))} {e}s" for e, f in result.frames_in.items())
    when_of = f"Period {period}" if period else "This period"
    if result.past.periods:
        when_of += f", compared with {result.past.periods[0]} (from the history {result.past.history})"
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<h1>{html.escape(title)}</h1><p class="meta">{html.escape(when_of)}: {html.escape(rows)}</p>'
            f'<p class="meta">Policies: {html.escape(names)} ({html.escape(where)}; fingerprint {ps.hash[:12]})</p>'
            f'<p class="meta">Figures in {html.escape(pg.locale)}; made by kam {__version__} on {when}</p>')


def render(result: "RunResult", title: str = "Key-account portfolio", locale: str | None = None,
           period: str | None = None) -> str:
    """The report of one run (of `period`, where it has a name), as one HTML page, its figures
    written for `locale` (default: the policies' `locale:`, then en_US)."""
    need("matplotlib")
    pg = Page(result, locale)
    frames = _frames(result)
    ps = pg.ps
    parts: list[tuple[str, str, str]] = []  # (id, heading, html)
    missing: list[str] = []
    measures = _measures_section(pg, result)
    if measures:
        parts.append(("measures", "Measures stated by the policies", measures))
    c = frames.get("customer")
    if c is not None and {"revenue", "profit"} <= set(c.columns):
        parts.append(("pareto", "The Pareto curve", _pareto_section(pg, c)))
        if "tier" in c:
            tier = next(d for d in ps.decisions("customer") if d.name == "tier")
            parts.append(("tiers", "Tiers against the target shape",
                          _tier_section(pg, c, dict(tier.target), [str(v) for v in tier.main.values or ()])))
        else:
            missing.append("tiers (no `tier` decision)")
        parts.append(("map", "The profitability map", _map_section(pg, c)))
        if "retention" in c:
            who = ["customer_id", "tier", "revenue", "profit", "retention_because"]
            section = _counts_section(pg, "customer", c, "retention", "Retention: who is kept, downgraded or let go",
                                      "retention", ["revenue", "profit"], who, "Customers per retention decision, "
                                      "with the revenue and profit at stake.", sort_by="revenue")
            if "protected_by" in c:
                traits = c["protected_by"].explode().dropna().astype(str)
                section = section.replace("</section>", pg.table(
                    traits.value_counts().rename_axis("trait").reset_index(name="customers"),
                    "Protected customers by trait (one customer can have several)",
                    units={"customers": Unit(COUNT)}, row_head=True) + "</section>")
            parts.append(("retention", "Retention", section))
        else:
            missing.append("retention (no `retention` decision)")
        since = _since_section(pg, result, c)
        if since:
            parts.append(("since", f"Since the previous period ({result.past.periods[0]})", since))
    else:
        missing.append("the customer sections (no customer entity with revenue and profit)")
    p = frames.get("prospect")
    if p is not None and "pursue" in p:
        parts.append(("prospects", "Prospects", _counts_section(
            pg, "prospect", p, "prospects", "Prospects: pursued per region against the quota", "pursue",
            ["expected_revenue"], ["prospect_id", "region", "expected_revenue", "pursue_because"],
            "Prospects per region: pursued (within each region's quota) and declined.", sort_by="expected_revenue",
            group="region")))
    q = frames.get("quote")
    if q is not None and "approval" in q:
        if "shortfall" in q:
            q = q.assign(below_floor=np.clip(q["shortfall"].to_numpy(dtype=float), 0, None))
            pg.units["quote"]["below_floor"] = pg.unit("quote", "shortfall")
        parts.append(("pricing", "Pricing", _counts_section(
            pg, "quote", q, "pricing", "Pricing: quotes approved, escalated and rejected", "approval",
            ["quoted_price", "below_floor"], ["quote_id", "customer_id", "tier", "quoted_price", "below_floor",
                                              "approval_because"],
            "Quotes per approval decision; below floor is how far under the tier's floor price they are (0 at or "
            "above it).", sort_by="below_floor")))
    parts.append(("decisions", "Every decision", _decisions_section(pg, result)))
    parts.append(("find-one", "Find a customer, prospect or quote", _search_section(pg, result, frames)))
    note = f'<p class="note">Not shown: {_words("; ".join(missing))}.</p>' if missing else ""
    toc = "".join(f'<li><a href="#{ident}">{html.escape(heading)}</a></li>' for ident, heading, _ in parts)
    heading = title + (f" — {period}" if period else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<style>{STYLE}{_page_rule(heading)}</style></head><body>{_header(pg, result, title, period)}'
            f'<nav aria-label="Contents"><h2>Contents</h2><ol>{toc}</ol></nav>{note}'
            f'{"".join(html_ for _, _, html_ in parts)}</body></html>')
