"""Population statistics: the one place where `rank`, `pct_rank`, `cumshare`, `quantile`, `mean`,
`sum`, `count`, `zscore` and quotas are defined, for every backend.

Each statistic is a function of the population's values per group (a multiset), never of the
order of the rows or of how they are split into files or partitions, so the pandas backend (one
table), the calibration of the durable backend (a saved population, new rows) and the Dask backend
(partitions, ranges of sorted values) give the same bits:

- Sums are exact. `exact_sums` turns every double into an integer multiple of 2**-1127 (which every
  double is) and adds integers; the total is rounded once, correctly, when it becomes a float. Two
  partial sums merge by adding their integers, so any split of the rows gives the same total.
  `mean` is the exact sum divided by the count, rounded once; `zscore` uses the exact sum of the
  squared deviations from that mean.
- Orders are total. Rows are sorted by group, then by the ranking values (ascending; callers turn
  "largest first" into negated values), then by a tie-break (the entity key's text order). A
  `Scan` of such a sorted run gives every row its position in its group, the first position and
  size of its tie block, and the running total of the values before its tie block. A scan can
  continue from a `Carry` (the group left open at the end of the previous run), which is how the
  Dask backend scans ranges of sorted values one after the other and still gets what a single scan
  would: running totals are sequential sums, and a sequential sum continued from its carry is the
  same sequence of additions.
- Quantiles interpolate linearly between two order statistics, as numpy's default does.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..language.errors import InputError, Location, Problem

BASE = 1127  # every double is a whole multiple of 2**-1127 (the smallest is 2**-1074)
_BINS = 2099  # frexp exponents run from -1073 to 1024; bin = exponent + 1074
_SPLIT = 26  # mantissas (< 2**53) split in two halves whose float sums stay exact
_CHUNK = 1 << 25  # rows per pass: 2**27 * 2**25 < 2**53 keeps each bin's float sum exact


# -- exact sums -----------------------------------------------------------------------------------

def exact_sums(x: np.ndarray, codes: np.ndarray | None = None, ngroups: int = 1) -> list[int | float]:
    """Per group code (0..ngroups-1), the exact sum of the non-missing `x` as an integer N meaning
    N * 2**-1127; a group holding an infinity gets the float sum of its infinities instead."""
    x = np.asarray(x, dtype=float)
    codes = np.zeros(x.size, dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64)
    keep = ~np.isnan(x) & (codes >= 0)
    if not keep.all():
        x, codes = x[keep], codes[keep]
    totals: list[int | float] = [0] * ngroups
    infinite = np.isinf(x)
    if infinite.any():
        for g in np.unique(codes[infinite]).tolist():
            totals[g] = float(np.sum(x[infinite & (codes == g)]))
        x, codes = x[~infinite], codes[~infinite]
    for start in range(0, x.size, _CHUNK):
        xs, cs = x[start:start + _CHUNK], codes[start:start + _CHUNK]
        m, e = np.frexp(xs)
        mant = (m * 2.0 ** 53).astype(np.int64)  # exact: |m| < 1 has 53 significant bits
        hi = mant >> _SPLIT
        lo = mant - (hi << _SPLIT)
        cell = cs * _BINS + (e.astype(np.int64) + 1074)
        if ngroups * _BINS <= 1 << 22:
            cells = np.arange(ngroups * _BINS)
            s_hi = np.bincount(cell, weights=hi, minlength=cells.size)
            s_lo = np.bincount(cell, weights=lo, minlength=cells.size)
            used = np.flatnonzero((s_hi != 0) | (s_lo != 0))
            cells, s_hi, s_lo = cells[used], s_hi[used], s_lo[used]
        else:  # many groups: only the cells that occur
            cells, inverse = np.unique(cell, return_inverse=True)
            s_hi = np.bincount(inverse, weights=hi)
            s_lo = np.bincount(inverse, weights=lo)
        for c, a, b in zip(cells.tolist(), s_hi.tolist(), s_lo.tolist()):
            g, exp_bin = divmod(c, _BINS)
            if isinstance(totals[g], float):
                continue
            totals[g] += ((int(a) << _SPLIT) + int(b)) << exp_bin  # type: ignore[operator]
    return totals


def as_float(total: int | float, divisor: int = 1) -> float:
    """An exact sum (see `exact_sums`) divided by a whole number, rounded once (correctly)."""
    if isinstance(total, float):
        return total / divisor if divisor else math.nan
    if divisor == 0:
        return math.nan
    try:
        return total / (divisor << BASE)  # Python's int / int is correctly rounded
    except OverflowError:
        return math.inf if total > 0 else -math.inf


def merge_sums(parts: Iterable[int | float]) -> int | float:
    """Partial exact sums of one group added up (an infinity wins, as in a float sum)."""
    out: int | float = 0
    for p in parts:
        if isinstance(p, float) or isinstance(out, float):
            out = float(out if isinstance(out, float) else 0.0) + (p if isinstance(p, float) else 0.0)
        else:
            out += p
    return out


# -- ordered scans --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Carry:
    """The group still open at the end of a scanned run: its code, how many rows and the running
    total of their values so far."""

    code: int = -1
    count: int = 0
    fold: float = 0.0


@dataclass(frozen=True)
class Scan:
    """A sorted run of rows. Arrays are in sorted order; `order` maps them back to the input."""

    order: np.ndarray
    codes: np.ndarray
    position: np.ndarray  # 0-based position in the group (ties by the tie-break)
    block_start: np.ndarray  # position of the first row of the tie block (equal ranking values)
    block_size: np.ndarray
    fold_before: np.ndarray | None  # sum of the group's values before the tie block (sequential)
    group_codes: np.ndarray  # the groups of this run, in order
    group_count: np.ndarray  # rows of each group up to the end of this run (with the carry)
    group_fold: np.ndarray  # running total of each group at the end of this run
    carry: Carry


def sort_order(codes: np.ndarray, keys: list[np.ndarray], tiebreak: np.ndarray | None) -> np.ndarray:
    """The permutation that sorts rows by group, then each key ascending, then the tie-break."""
    one_group = codes.size == 0 or codes.min() == codes.max()
    cols = ([tiebreak] if tiebreak is not None else []) + list(reversed(keys)) + ([] if one_group else [codes])
    if not cols:
        return np.arange(codes.size)
    if len(cols) == 1:  # the common case (one population, one value): a plain sort is much faster
        return np.argsort(cols[0])
    return np.lexsort(cols)


def scan(codes: np.ndarray, keys: list[np.ndarray], tiebreak: np.ndarray | None = None,
         weights: np.ndarray | None = None, carry: Carry = Carry(), order: np.ndarray | None = None) -> Scan:
    """Sort rows (group codes >= 0, keys without NaN) and describe each row's place; `weights` are
    summed in sorted order for running totals; `carry` continues a group from an earlier run."""
    if order is None:
        order = sort_order(codes, keys, tiebreak)
    sc = codes[order]
    sk = [k[order] for k in keys]
    n = sc.size
    pos = np.arange(n)
    group_start = np.r_[True, sc[1:] != sc[:-1]] if n else np.zeros(0, dtype=bool)
    block_start_flag = group_start.copy()
    for k in sk:
        block_start_flag[1:] |= k[1:] != k[:-1]
    gfirst = np.maximum.accumulate(np.where(group_start, pos, 0)) if n else pos
    bfirst = np.maximum.accumulate(np.where(block_start_flag, pos, 0)) if n else pos
    starts = np.flatnonzero(group_start)
    gcodes = sc[starts]
    continues = n > 0 and carry.code >= 0 and gcodes[0] == carry.code
    offset = np.zeros(starts.size, dtype=np.int64)
    if continues:
        offset[0] = carry.count
    group_id = np.cumsum(group_start) - 1 if n else pos
    base = offset[group_id] if n else pos
    position = pos - gfirst + base
    block_start = bfirst - gfirst + base
    block_id = np.cumsum(block_start_flag) - 1 if n else pos
    block_size = np.bincount(block_id)[block_id] if n else pos
    ends = np.r_[starts[1:], n].astype(np.int64)
    group_count = ends - starts + offset
    fold_before = None
    group_fold = np.zeros(starts.size)
    if weights is not None:
        w = np.asarray(weights, dtype=float)[order]
        init = np.zeros(starts.size)
        if continues:
            init[0] = carry.fold
        incl = segmented_cumsum(w, starts, init)
        # the total before each row, taken at its tie block's first row
        before = np.where(group_start, init[group_id] if n else 0.0, np.r_[0.0, incl[:-1]]) if n else incl
        fold_before = before[bfirst] if n else before
        group_fold = incl[ends - 1] if n else group_fold
    last = Carry(int(gcodes[-1]), int(group_count[-1]), float(group_fold[-1])) if n else carry
    return Scan(order, sc, position, block_start, block_size, fold_before, gcodes, group_count, group_fold, last)


def segmented_cumsum(w: np.ndarray, starts: np.ndarray, init: np.ndarray) -> np.ndarray:
    """Running totals within each segment (starting at `starts`), each begun from `init`: the same
    sequential additions, ((init + w0) + w1) + ..., whichever way it is computed."""
    n = w.size
    out = np.empty(n)
    if n == 0:
        return out
    ends = np.r_[starts[1:], n]
    lengths = ends - starts
    longest = int(lengths.max())
    if starts.size <= longest:  # few long segments: one cumulative sum each
        for s, e, i0 in zip(starts.tolist(), ends.tolist(), init.tolist()):
            out[s:e] = np.cumsum(np.r_[i0, w[s:e]])[1:]
    else:  # many short segments: step through the k-th row of every segment at once
        cur = init.astype(float).copy()
        for k in range(longest):
            alive = np.flatnonzero(lengths > k)
            idx = starts[alive] + k
            cur[alive] = cur[alive] + w[idx]
            out[idx] = cur[alive]
    return out


def quantile_sorted(values: np.ndarray, q: float) -> float:
    """The q-quantile of ascending values, interpolated linearly (numpy's default method)."""
    n = values.size
    if n == 0:
        return math.nan
    h = (n - 1) * q
    lo = int(math.floor(h))
    hi = min(lo + 1, n - 1)
    return lerp(float(values[lo]), float(values[hi]), h - lo)


def quantile_positions(n: int, q: float) -> tuple[int, int, float]:
    """The two order statistics (0-based) a quantile of n values interpolates between, and how far."""
    h = (n - 1) * q
    lo = int(math.floor(h))
    return lo, min(lo + 1, n - 1), h - lo


def lerp(a: float, b: float, t: float) -> float:
    """numpy's linear interpolation, written out so every backend rounds alike."""
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


# -- the functions over one table -----------------------------------------------------------------

def by_group(codes: np.ndarray, ngroups: int, per_group: list[float]) -> np.ndarray:
    """Per-group values broadcast to the rows (NaN where the group is missing)."""
    per = np.asarray(per_group, dtype=float) if ngroups else np.zeros(0)
    return np.where(codes >= 0, per[np.maximum(codes, 0)] if ngroups else np.nan, np.nan)


def group_values(x: np.ndarray, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Non-missing values with a group, sorted by group then value: (rows, codes, values)."""
    rows = np.flatnonzero(~np.isnan(x) & (codes >= 0))
    rows = rows[sort_order(codes[rows], [x[rows]], None)]
    return rows, codes[rows], x[rows]


def scan_values(func: str, s: Scan, count: np.ndarray, fold: np.ndarray, ties: str = "key") -> list[np.ndarray]:
    """An ordered function's values for the rows of a scan (sorted order), given each row's group
    count and group total: the one formula per function, whether the scan is a whole table or a range."""
    if func == "rank":
        return [(s.position if ties == "key" else s.block_start) + 1.0]
    if func == "pct_rank":
        return [(s.block_start + s.block_size) / count]
    if func == "cumshare":
        return [cumshare_of(s.fold_before, fold)]  # type: ignore[arg-type]
    if func == "quota":
        return [(s.position if ties == "key" else s.block_start) + 1.0, count.astype(float), s.block_size - 1.0]
    raise ValueError(func)


def rank_values(x: np.ndarray, codes: np.ndarray, tiebreak: np.ndarray, ties: str = "key") -> np.ndarray:
    """1 for the largest value of each group; equal values ordered by the tie-break (`ties="key"`)
    or sharing the best rank of their tie block (`"together"`); missing stays missing."""
    rows = np.flatnonzero(~np.isnan(x) & (codes >= 0))
    out = np.full(x.size, np.nan)
    s = scan(codes[rows], [-x[rows]], tiebreak[rows])
    out[rows[s.order]] = scan_values("rank", s, s.position, s.position, ties)[0]
    return out


def pct_rank_values(x: np.ndarray, codes: np.ndarray, general: bool = False) -> np.ndarray:
    """Share of the group's non-missing values at or below each value, in (0, 1].

    One group (no `by=`, the common case) takes a shorter way to the same numbers: the rows at or
    below a value are where it would be inserted after its equals (`searchsorted`), the same integer
    the scan counts as `block_start + block_size`; `general` forces the scan (tests hold the two equal)."""
    rows = np.flatnonzero(~np.isnan(x) & (codes >= 0))
    out = np.full(x.size, np.nan)
    if not general and _one_group(codes[rows]):
        v = x[rows]
        order = np.argsort(v)
        s = v[order]
        out[rows[order]] = np.searchsorted(s, s, side="right") / s.size
        return out
    sc = scan(codes[rows], [x[rows]])
    out[rows[sc.order]] = scan_values("pct_rank", sc, totals_for(sc, sc.group_count), sc.position)[0]
    return out


def cumshare_values(x: np.ndarray, codes: np.ndarray, general: bool = False) -> np.ndarray:
    """Pareto position: the share of the group total held by values at or above each value.

    One group takes a shorter way to the same numbers: one running total of the sorted values (the
    same additions in the same order as the scan's), read at the first row of each tie block."""
    rows = np.flatnonzero(~np.isnan(x) & (codes >= 0))
    out = np.full(x.size, np.nan)
    if not general and _one_group(codes[rows]):
        v = x[rows]
        order = np.argsort(v)
        s = v[order]
        running = np.cumsum(s)
        first = np.r_[True, s[1:] != s[:-1]]
        block_first = np.maximum.accumulate(np.where(first, np.arange(s.size), 0))
        before = np.r_[0.0, running[:-1]][block_first]
        out[rows[order]] = cumshare_of(before, running[-1])
        return out
    sc = scan(codes[rows], [x[rows]], weights=x[rows])
    out[rows[sc.order]] = scan_values("cumshare", sc, sc.position, totals_for(sc, sc.group_fold))[0]
    return out


def _one_group(codes: np.ndarray) -> bool:
    """Whether rows (at least one) all belong to one group."""
    return codes.size > 0 and bool(codes.min() == codes.max())


def cumshare_of(fold_before: np.ndarray, total: np.ndarray) -> np.ndarray:
    """(total - what lies below) / total; missing where the total is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total != 0, (total - fold_before) / total, np.nan)


def totals_for(s: Scan, per_group: np.ndarray) -> np.ndarray:
    """A per-group figure of a scan (its last value per group) for each sorted row."""
    group_id = np.searchsorted(s.group_codes, s.codes)
    return per_group[group_id]


def group_stat(kind: str, x: np.ndarray, codes: np.ndarray, ngroups: int, q: float = 0.5) -> np.ndarray:
    """A group statistic broadcast to every row: count, sum, mean, quantile or zscore."""
    if ngroups == 0:
        return np.full(x.size, np.nan)
    present = ~np.isnan(x) & (codes >= 0)
    counts = np.bincount(codes[present], minlength=ngroups)
    if kind == "count":
        return by_group(codes, ngroups, counts.astype(float).tolist())
    if kind == "quantile" and ngroups == 1:  # two order statistics: a selection, not a sort
        values = x[~np.isnan(x) & (codes >= 0)]
        if not values.size:
            return by_group(codes, 1, [math.nan])
        lo, hi, t = quantile_positions(values.size, q)
        picked = np.partition(values, sorted({lo, hi}))
        return by_group(codes, 1, [lerp(float(picked[lo]), float(picked[hi]), t)])
    if kind == "quantile":
        rows, sc, sv = group_values(x, codes)
        starts = np.searchsorted(sc, np.arange(ngroups))
        per = [quantile_sorted(sv[starts[g]:starts[g] + counts[g]], q) for g in range(ngroups)]
        return by_group(codes, ngroups, per)
    sums = exact_sums(x, codes, ngroups)
    if kind == "sum":
        return by_group(codes, ngroups, [as_float(t) for t in sums])
    means = [as_float(t, int(c)) for t, c in zip(sums, counts)]
    mean_rows = by_group(codes, ngroups, means)
    if kind == "mean":
        return mean_rows
    if kind == "zscore":
        std = np.sqrt(by_group(codes, ngroups, [as_float(t, int(c)) for t, c in
                                                zip(exact_sums((x - mean_rows) ** 2, codes, ngroups), counts)]))
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(std > 0, (x - mean_rows) / std, np.nan)
    raise ValueError(kind)


def quota_ranks(codes: np.ndarray, keys: list[np.ndarray], tiebreak: np.ndarray, ties: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For eligible rows (their group codes, oriented ranking keys, tie-break): each row's rank in
    its group, the group's size and how many others share its ranking values, plus the scan order."""
    s = scan(codes, keys, tiebreak)
    rank, size, tied = scan_values("quota", s, totals_for(s, s.group_count), s.position, ties)
    return rank, size, tied, s.order


def quota_limit(size: np.ndarray, top_n: int | None, top_share: float | None) -> np.ndarray:
    """How many of a group of `size` a quota takes."""
    if top_n is not None:
        return np.minimum(size, top_n)
    return np.floor(size * (top_share or 0.0) + 1e-9)


# -- a saved population (calibration) against new rows --------------------------------------------

@dataclass
class GroupPopulation:
    """One group of a saved population: values ascending (and their keys, for rank ties)."""

    values: np.ndarray
    keys: np.ndarray | None = None
    _folds: np.ndarray | None = None
    _sum: int | float | None = None

    @property
    def n(self) -> int:
        return int(self.values.size)

    def total(self) -> float:
        return as_float(self._exact())

    def mean(self) -> float:
        return as_float(self._exact(), self.n)

    def _exact(self) -> int | float:
        if self._sum is None:
            self._sum = exact_sums(self.values)[0]
        return self._sum

    def std(self) -> float:
        if not self.n:
            return math.nan
        return math.sqrt(as_float(exact_sums((self.values - self.mean()) ** 2)[0], self.n))

    def quantile(self, q: float) -> float:
        return quantile_sorted(self.values, q)

    def folds(self) -> np.ndarray:
        """Running totals of the values in ascending order, starting with the empty sum."""
        if self._folds is None:
            self._folds = np.cumsum(np.r_[0.0, self.values])
        return self._folds


def evaluate_against(pop: GroupPopulation, func: str, xs: np.ndarray, keys: np.ndarray, q: float = 0.5,
                     ties: str = "key") -> np.ndarray:
    """A population function for rows placed among a saved group population; a row whose value is
    in the population gets exactly what it got when the population was the batch."""
    res = np.full(xs.size, np.nan)
    present = ~np.isnan(xs)
    xp = xs[present]
    if func in ("mean", "sum", "count", "quantile"):
        res[:] = {"mean": pop.mean, "sum": pop.total, "count": lambda: float(pop.n),
                  "quantile": lambda: pop.quantile(q)}[func]()
        return res
    if pop.n == 0:
        return res
    lo = np.searchsorted(pop.values, xp, side="left")
    hi = np.searchsorted(pop.values, xp, side="right")
    if func == "pct_rank":
        res[present] = hi / pop.n
    elif func == "cumshare":
        folds = pop.folds()
        total = folds[-1]
        if total != 0:
            res[present] = (total - folds[lo]) / total
    elif func == "rank":
        above = pop.n - hi
        tie_before = np.zeros(lo.size)
        if ties == "key" and pop.keys is not None:
            mine = keys[present]
            for i in np.flatnonzero(hi > lo).tolist():  # only rows whose value ties saved values
                tie_before[i] = int(np.sum(pop.keys[lo[i]:hi[i]] < mine[i]))
        res[present] = 1 + above + tie_before
    elif func == "zscore":
        std = pop.std()
        if std > 0:
            res[present] = (xp - pop.mean()) / std
    return res


def evaluate_calibrated(stats: dict[Any, GroupPopulation], func: str, x: np.ndarray, groups: np.ndarray,
                        keys: np.ndarray, q: float = 0.5, ties: str = "key") -> np.ndarray:
    """A population function over rows whose population is the calibration's (vectorized per group)."""
    out = np.full(x.size, np.nan)
    # distinct groups without sorting them: a missing group (None) does not order against text
    for g in dict.fromkeys(groups.tolist()):
        if g is None:
            continue
        rows = np.flatnonzero(groups == g)
        st = stats.get(g)
        if st is None:
            continue  # a group the calibration batch did not have: no population to compare with
        if st.n == 0 and func not in ("sum", "count"):
            continue
        out[rows] = evaluate_against(st, func, x[rows], keys[rows], q, ties)
    return out


@dataclass
class Calibration:
    """Population statistics per entity and call (its canonical text, e.g. `pct_rank(profit, by=region)`)."""

    policy_hash: str
    created: str
    stats: dict[str, dict[str, dict[Any, GroupPopulation]]] = field(default_factory=dict)
    # entity -> call text -> group value ("" when no by=) -> stats

    def check(self, policy_hash: str, where: str) -> None:
        if self.policy_hash != policy_hash:
            raise InputError(Problem(
                "calibration-mismatch",
                f"the calibration {where} was made for another version of the policies "
                f"({self.policy_hash[:12]}, these are {policy_hash[:12]})", Location(where),
                "make a new one with `kam run --save-calibration FILE` on these policies"))

    def group(self, entity: str, call: str, group: Any) -> GroupPopulation | None:
        return self.stats.get(entity, {}).get(call, {}).get(group)


def build(policy_hash: str, records: dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]
          ) -> Calibration:
    """From recorded arguments: entity -> call -> (values, group labels, keys)."""
    cal = Calibration(policy_hash, _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    for entity, calls in records.items():
        for call, (values, groups, keys) in calls.items():
            per: dict[Any, GroupPopulation] = {}
            for g in dict.fromkeys(groups.tolist()):
                if g is None:
                    continue
                rows = np.flatnonzero((groups == g) & ~np.isnan(values))
                order = np.lexsort((keys[rows].astype(str), values[rows]))
                per[g] = GroupPopulation(values[rows][order], keys[rows][order].astype(object))
            cal.stats.setdefault(entity, {})[call] = per
    return cal
