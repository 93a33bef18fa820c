"""Stage 6 on Dask: the pandas backend run partition by partition, with the population exact.

Every partition (one Parquet file) is read and checked once, and evaluated by the pandas backend on
a worker. What one partition cannot know alone, it asks for through `PartitionHook`
(engine.engines.dask_partition):

- a population function (`pct_rank(profit)`, `sum(x, by=region)`, ...) or a quota,
- the columns a join takes from another entity.

Evaluation therefore runs in passes. In a pass, each population call whose arguments can already be
computed (every population call they depend on is known; `population_calls` works this out from the
plan) records its arguments and gives missing values for now; the driver then computes the call
over the whole population and hands each partition its values for the next pass. The shipped
customer policies take four passes: the first-level calls (`cumshare(profit)`, `pct_rank(profit)`,
the quantiles, ...), `pct_rank(value_score)` which reads two of them, the measures that read the tiers,
and the final pass that writes the decisions.

How a call is computed over the population, without any task holding all of it:

- Sums, counts and means: each partition sends its exact sums and counts per group (engine.batch.population:
  integers, so any split gives the same total); `zscore` takes a second round for the squared
  deviations from the mean.
- Orders (rank, pct_rank, cumshare, quantile, quotas): each partition sends a small sample of its
  sorted values; the driver picks range boundaries from it (a tie block never straddles two); each
  partition cuts its rows into those ranges; the ranges are sorted side by side, then only the group
  still open at each range's end (its rows and running total, `carry_after`) is handed on from range
  to range, so running totals are the single sequential sum the pandas backend computes; the ranges
  are then scanned side by side, each from the carry of the one before, and each gives every row its
  value, sent back to the row's partition. A range holds about `range_rows` rows, whatever the size
  of the data.
- Joins and repeated keys: keys are spread over buckets by a fixed 64-bit hash of the id; a bucket
  holds every partition's keys of that hash range, so lookups and the uniqueness check see at most
  about `range_rows` keys at a time (one lookup table per bucket for all the partitions' references).

Each partition is read, hashed and fact-checked once per run, by the worker that keeps its state
(engine.engines.dask_partition): the key check, the references of the joins and every pass take that
state, and a pass evaluates only the steps that waited for one of its new answers.

The outputs are a folder of Parquet parts per entity, written by the workers into the run's staging
folder and swapped in as one set with the manifest (engine.batch.write).
"""

from __future__ import annotations

import math
import operator
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..batch import population as popu
from ..batch.evaluate import ListVec, Text, Tri, Vec, _joined, missing_vector, take
from ..language.errors import InputError, Location, Problem
from ..language.plan import EntityPlan, Plan
from .dask_partition import (PartitionState, PassOut, TooLarge, Ordered, Sums, advance, key_buckets, label_sort,
                             open_partition, partition_reads, population_calls, read_partition, step_calls)

__all__ = ["DaskRun", "PartitionState", "PassOut", "merge", "partition_files", "partition_reads",
           "population_calls", "read_partition", "run", "step_calls"]

RANGE_ROWS = 1_000_000  # rows per range of sorted values and per bucket of keys


# -- ordered calls over ranges --------------------------------------------------------------------

@dataclass
class Block:
    """The rows of one partition that fall in one range."""

    part: int
    rows: np.ndarray
    codes: np.ndarray
    keys: list[np.ndarray]
    tiebreak: np.ndarray | None
    weights: np.ndarray | None


def split_ranges(o: Ordered, part: int, code_of: dict[Any, int], splitters: list[tuple]) -> list[Block]:
    """Cut a partition's rows into the ranges (by group code, then keys); equal rows share a range."""
    # the partition's few distinct labels looked up, spread by the rows' codes (a group no row of the
    # call has is not in `code_of`)
    table = np.array([code_of.get(v, -1) for v in o.groups] + [-1], dtype=np.int64)
    codes = table[o.codes]
    cols = [codes.astype(float)] + list(o.keys)
    r = np.zeros(codes.size, dtype=np.int64)
    for s in splitters:  # a row lies after the boundary s when (code, keys) > s lexicographically
        greater = np.zeros(codes.size, dtype=bool)
        equal = np.ones(codes.size, dtype=bool)
        for col, v in zip(cols, s):
            greater |= equal & (col > v)
            equal &= col == v
        r += greater
    out = []
    for i in range(len(splitters) + 1):
        m = np.flatnonzero(r == i)
        out.append(Block(part, o.rows[m], codes[m], [k[m] for k in o.keys],
                         o.tiebreak[m] if o.tiebreak is not None else None,
                         o.weights[m] if o.weights is not None else None))
    return out


@dataclass
class RangeSorted:
    """One range of an ordered call put together from every partition's block and sorted: all that does
    not depend on the ranges before it, so the ranges are sorted side by side."""

    codes: np.ndarray
    keys: list[np.ndarray]
    weights: np.ndarray | None
    order: np.ndarray  # the permutation that sorts the rows (group, keys, ties by id)
    part: np.ndarray  # per sorted row: its partition
    rows: np.ndarray  # and its row there


@dataclass
class RangeState:
    scan: popu.Scan
    part: np.ndarray  # per sorted row: its partition
    rows: np.ndarray  # and its row there
    groups: tuple[np.ndarray, np.ndarray, np.ndarray]  # codes, counts and running totals at the end
    carry: popu.Carry
    first_key: np.ndarray  # the first sort key in sorted order (the values, for quantiles)


def sort_range(*blocks: Block) -> RangeSorted:
    """Put one range together from the partitions' blocks and sort it."""
    blocks = tuple(b for b in blocks if b.rows.size)  # a partition may have no row of this call
    codes = np.concatenate([b.codes for b in blocks]) if blocks else np.zeros(0, np.int64)
    nkeys = len(blocks[0].keys) if blocks else 0
    keys = [np.concatenate([b.keys[k] for b in blocks]) for k in range(nkeys)]
    tiebreak = None
    if blocks and blocks[0].tiebreak is not None:
        ids = pa.array(np.concatenate([b.tiebreak for b in blocks]), type=pa.string(), from_pandas=True)
        by_id = pc.sort_indices(ids).to_numpy()
        tiebreak = np.empty(by_id.size, dtype=np.int64)
        tiebreak[by_id] = np.arange(by_id.size)  # the ids' text order, as the pandas backend breaks ties
    weights = np.concatenate([b.weights for b in blocks]) if blocks and blocks[0].weights is not None else None
    order = popu.sort_order(codes, keys, tiebreak)
    part = np.concatenate([np.full(b.rows.size, b.part) for b in blocks])[order] if blocks else codes
    rows = np.concatenate([b.rows for b in blocks])[order] if blocks else codes
    return RangeSorted(codes, keys, weights, order, part, rows)


def carry_after(r: RangeSorted, carry: popu.Carry) -> popu.Carry:
    """The group still open at the end of a sorted range, continued from `carry`: what `popu.scan`
    ends with, from the last group alone (the running total added in the same order)."""
    n = r.order.size
    if n == 0:
        return carry
    sc = r.codes[r.order]
    last = int(sc[-1])
    starts = np.flatnonzero(sc != last)
    start = int(starts[-1]) + 1 if starts.size else 0
    continues = start == 0 and carry.code == last
    count = n - start + (carry.count if continues else 0)
    fold = 0.0
    if r.weights is not None:
        w = np.asarray(r.weights, dtype=float)[r.order[start:]]
        with np.errstate(over="ignore"):
            fold = float(np.cumsum(np.r_[carry.fold if continues else 0.0, w])[-1])
    return popu.Carry(last, count, fold)


def scan_range(r: RangeSorted, carry: popu.Carry) -> RangeState:
    """Scan one sorted range, continuing from the ranges before it (their `carry`)."""
    with np.errstate(over="ignore"):  # a running total too large to hold is refused by the driver (TooLarge)
        s = popu.scan(r.codes, r.keys, None, r.weights, carry, order=r.order)
    first = r.keys[0][r.order] if r.keys else np.zeros(0)
    return RangeState(s, r.part, r.rows, (s.group_codes, s.group_count, s.group_fold), s.carry, first)


def finalize_range(st: RangeState, count: np.ndarray, fold: np.ndarray, func: str, ties: str
                   ) -> dict[int, tuple[np.ndarray, list[np.ndarray]]]:
    """Each row's value once the group totals are known, split by the partition it came from."""
    s = st.scan
    values = popu.scan_values(func, s, count[s.codes], fold[s.codes], ties)
    # the range's rows grouped by partition with one sort (a mask per partition over the whole range
    # made the answers grow with partitions x ranges)
    by_part = np.argsort(st.part, kind="stable")
    parts, starts = np.unique(st.part[by_part], return_index=True)
    ends = np.append(starts[1:], by_part.size)
    out = {}
    for p, a, b in zip(parts.tolist(), starts.tolist(), ends.tolist()):
        m = by_part[a:b]
        out[p] = (st.rows[m], [v[m] for v in values])
    return out


def assemble(n: int, width: int, *pieces: tuple[np.ndarray, list[np.ndarray]] | None) -> list[np.ndarray]:
    """A partition's values of an ordered call, from the pieces each range sent it."""
    out = [np.full(n, np.nan) for _ in range(width)]
    for piece in pieces:
        if piece is None:
            continue
        rows, values = piece
        for o, v in zip(out, values):
            o[rows] = v
    return out


# -- keys: uniqueness and joins -------------------------------------------------------------------

def duplicates(entity: str, key: str, paths: list[str], *pieces: Any) -> list[str]:
    """Ids found more than once in one bucket (across every partition): the messages."""
    if not pieces:
        return []
    ids = pa.concat_arrays([p[2] for p in pieces])
    parts = np.concatenate([np.full(len(p[2]), p[0]) for p in pieces])
    rows = np.concatenate([p[1] for p in pieces])
    counts = pc.value_counts(ids)
    many = counts.filter(pc.greater(counts.field("counts"), 1)).field("values")
    out = []
    for dup in many.to_pylist()[:5]:
        where = np.flatnonzero(pc.equal(ids, dup).to_numpy(zero_copy_only=False))
        places = ", ".join(f"{Path(paths[parts[w]]).name} row {rows[w] + 1}" for w in where[:3])
        out.append(f"{key} {dup!r} appears {where.size} times ({places})")
    return out


def join_values(names_: tuple[str, ...], result_piece: Any, *refs: Any) -> Any:
    """Look one bucket's references up in that bucket's keys of the other entity."""
    keys, cols = result_piece
    if not refs:
        return {}
    # one lookup table of the bucket's keys for every partition's references: building it once per
    # partition made the join grow with partitions x buckets, i.e. with the square of the population
    ids = pa.concat_arrays([ref for _, _, ref in refs])
    pos = pc.index_in(ids, value_set=keys).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    joined = {n: _joined(cols[n], pos) for n in names_}
    out = {}
    start = 0
    for part, rows, ref in refs:
        at = slice(start, start + len(ref))
        out[part] = (rows, pos[at], {n: take(v, np.arange(at.start, at.stop)) for n, v in joined.items()})
        start = at.stop
    return out


# -- the driver -----------------------------------------------------------------------------------

@dataclass
class DaskRun:
    """A finished run: per entity the written parts and what the manifest says."""

    entities: dict[str, dict[str, Any]]
    timings: dict[str, float]


def _paths(files: Iterable[Path]) -> list[str]:
    return [str(p) for p in files]


def run(pl: Plan, inputs: dict[str, list[Path]], client: Any, staging: Path, options: Any = None,
        range_rows: int = RANGE_ROWS, on_step: Callable[[str], None] | None = None,
        on_part: Callable[[str, int, int], None] | None = None) -> DaskRun:
    """Evaluate every entity over its partitions on a Dask cluster and write the parts into `staging`.
    `on_part(what, done, total)` hears of each partition done in each pass (for a progress bar).
    Per entity the result holds each input's rows (Parquet footer) and sha256 (of the bytes the
    worker read), so the client never reads the data; the timings hold each stage's seconds."""
    plan_f = client.scatter(pl, broadcast=True)
    done: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    join_tables: dict[str, list[Any]] = {}  # entity -> per bucket: future of (keys, taken columns)
    for ep in pl.entities:
        t0 = time.perf_counter()
        paths = _paths(inputs[ep.entity])
        driver = _EntityDriver(client, plan_f, pl, ep, paths, options, range_rows, on_part, timings)
        driver.read()
        driver.check_keys()
        joins = driver.joins(join_tables)
        taken = tuple(sorted({n for other in pl.entities for j in other.joins if j.entity == ep.entity
                              for n in j.take}))
        done[ep.entity] = driver.passes(joins, str(staging), taken)
        if taken:
            join_tables[ep.entity] = driver.join_table(taken)
        del driver, joins  # the partitions' states: released once the entity is done
        timings[f"evaluate_{ep.entity}"] = round(time.perf_counter() - t0, 4)
        if on_step:
            on_step(ep.entity)
    return DaskRun(done, timings)


class _EntityDriver:
    def __init__(self, client: Any, plan_f: Any, pl: Plan, ep: EntityPlan, paths: list[str], options: Any,
                 range_rows: int, on_part: Callable[[str, int, int], None] | None = None,
                 timings: dict[str, float] | None = None):
        self.client, self.plan_f, self.pl, self.ep, self.paths = client, plan_f, pl, ep, paths
        self.options, self.range_rows = options, range_rows
        self.on_part = on_part
        self.timings = timings if timings is not None else {}
        self.rows: list[int] = []
        self.sha256: list[str] = []
        self.buckets = 1
        self.states: list[Any] = []  # per partition: the future of its PartitionState, on its worker
        self.asked: list[Any] = []  # per partition: the future of what its last pass asked
        # per partition, the answers the next pass gets (futures of per-row values, or per-group figures);
        # handed over once, then held by the partition's state rather than by the client
        self.fresh: list[dict[str, Any]] = [dict() for _ in paths]
        self.figures: dict[str, Any] = {}  # the per-group answers (small): zscore's second round reads its means
        self._t = time.perf_counter()

    def _lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[f"{self.ep.entity}_{stage}"] = round(now - self._t, 4)
        self._t = now

    def submit(self, fn: Callable, *args: Any, **kw: Any) -> Any:
        return self.client.submit(fn, *args, pure=False, **kw)

    def gather(self, futures: list[Any], what: str) -> list[Any]:
        """The results of one future per partition, in order; each partition done is reported."""
        if self.on_part is not None:
            from dask.distributed import as_completed

            self.on_part(what, 0, len(futures))
            for done, _ in enumerate(as_completed(futures), start=1):
                self.on_part(what, done, len(futures))
        return self.client.gather(futures)

    def read(self) -> None:
        """Every partition read once, hashed and checked, its state kept on the worker that read it."""
        self.states = [self.submit(open_partition, self.plan_f, self.ep.entity, p, self.options, i)
                       for i, p in enumerate(self.paths)]
        heads = self.gather([self.submit(_head_of, s) for s in self.states], f"{self.ep.entity}: reading")
        problems = [p for h in heads if h["error"] is not None for p in h["error"].problems]
        if problems:
            raise InputError(problems)
        self.rows = [h["rows"] for h in heads]
        self.sha256 = [h["sha256"] for h in heads]
        self.buckets = max(1, math.ceil(sum(self.rows) / self.range_rows))
        self._lap("read")

    def check_keys(self) -> None:
        """Each key once over all partitions (from the partitions' states: nothing is read again)."""
        if not self.ep.key:
            return
        split = [self.submit(key_buckets, self.plan_f, self.ep.entity, s, self.buckets) for s in self.states]
        checks = [self.submit(duplicates, self.ep.entity, self.ep.key, self.paths,
                              *[self.submit(operator.getitem, s, b) for s in split]) for b in range(self.buckets)]
        found = [m for ms in self.client.gather(checks) for m in ms]
        self._lap("keys")
        if found:
            raise InputError([Problem("duplicate-key", f"{self.ep.entity} facts: {m}", Location(self.paths[0]),
                                      "each id may appear once over all partitions") for m in found[:5]])

    def joins(self, tables: dict[str, list[Any]]) -> list[Any]:
        """Per partition, a future of {join name: (taken columns, rows without partner)}."""
        per_part: list[dict[str, Any]] = [dict() for _ in self.paths]
        for j in self.ep.joins:
            table = tables[j.entity]
            nb = len(table)
            refs = [self.submit(key_buckets, self.plan_f, self.ep.entity, s, nb, j.on) for s in self.states]
            looked = [self.submit(join_values, tuple(j.take), table[b],
                                  *[self.submit(operator.getitem, r, b) for r in refs]) for b in range(nb)]
            for i in range(len(self.paths)):
                # only this partition's share of each bucket travels to it, not every bucket whole
                mine = [self.submit(dict.get, b, i) for b in looked]
                per_part[i][j.name] = self.submit(_assemble_join, self.rows[i], tuple(j.take), *mine)
        return [self.submit(_join_dict, list(d.keys()), *d.values()) if d else {} for d in per_part]

    def join_table(self, taken: tuple[str, ...]) -> list[Any]:
        """This entity's keys and taken columns, spread over hash buckets, for the entities that join it
        (the final pass kept them on the workers)."""
        split = [self.submit(_pieces_of, s) for s in self.states]
        return [self.submit(_merge_join_pieces, taken, *[self.submit(operator.getitem, s, b) for s in split])
                for b in range(self.buckets)]

    def passes(self, joins: list[Any], staging: str, taken: tuple[str, ...]) -> dict[str, Any]:
        """Evaluate in passes until nothing is asked; the last pass writes the parts. Each pass takes
        the partition's state and only the answers that are new to it."""
        deps = population_calls(self.ep)
        for round_ in range(2 * len(deps) + 3):
            fresh, self.fresh = self.fresh, [dict() for _ in self.paths]
            # the previous states are dropped as the new ones replace them: Dask frees them after the pass
            passed = [self.submit(advance, self.plan_f, self.ep.entity, s, fresh[i], joins[i], staging,
                                  taken, self.buckets) for i, s in enumerate(self.states)]
            del fresh
            # what the pass asked is kept apart from the state: cutting it into ranges then does not
            # bring a state that Dask spilled back from disk, once per call
            self.asked = [self.submit(_asked_of, p) for p in passed]
            self.states = [self.submit(_without_asked, p) for p in passed]
            small = self.gather([self.submit(_small_of, p) for p in passed], f"{self.ep.entity}: pass {round_ + 1}")
            del passed
            error = next((s["error"] for s in small if s["error"] is not None), None)
            if error is not None:
                raise error
            asked = sorted({c for s in small for c in s["asked"]})
            self._lap(f"pass_{round_ + 1}")  # the partitions' evaluation (and, on the last pass, writing)
            if not asked:
                finals = [s["final"] for s in small]
                if any(f is None for f in finals):
                    raise RuntimeError("a partition could not finish its evaluation")
                return {"paths": self.paths, "rows": self.rows, "sha256": self.sha256, "parts": finals}
            for call in asked:
                self.resolve(call, self.asked, [s["small"].get(call) for s in small])
            # the population's answers to what the pass asked (totals; ranges scanned for the ordered
            # calls, whose values are only sent on to the partitions by the next pass)
            self._lap(f"answers_{round_ + 1}")
        raise RuntimeError("population calls did not resolve")

    def resolve(self, call: str, outs: list[Any], small: list[Any]) -> None:
        first = next(s for s in small if s is not None)
        if isinstance(first, Sums):
            self._resolve_sums(call, [s for s in small if s is not None])
            return
        self._resolve_ordered(call, outs, [s for s in small if s is not None])

    def _resolve_sums(self, call: str, parts: list[Sums]) -> None:
        labels = list(dict.fromkeys(lab for p in parts for lab in p.sums))
        sums = {lab: popu.merge_sums(p.sums[lab] for p in parts if lab in p.sums) for lab in labels}
        counts = {lab: sum(p.counts.get(lab, 0) for p in parts) for lab in labels}
        if call.endswith(" #mean"):
            value: Any = {lab: popu.as_float(sums[lab], counts[lab]) for lab in labels}
        elif call.startswith("zscore("):
            means = self.figures[call + " #mean"]
            value = (means, {lab: math.sqrt(popu.as_float(sums[lab], counts[lab])) if counts[lab] else math.nan
                             for lab in labels})
        elif call.startswith("sum("):
            value = {lab: popu.as_float(sums[lab]) for lab in labels}
        elif call.startswith("count("):
            value = {lab: float(counts[lab]) for lab in labels}
        else:  # mean
            value = {lab: popu.as_float(sums[lab], counts[lab]) for lab in labels}
        self.figures[call] = value
        for k in self.fresh:
            k[call] = value

    def _resolve_ordered(self, call: str, outs: list[Any], small: list[dict[str, Any]]) -> None:
        func, q, ties = small[0]["func"], small[0]["q"], small[0]["ties"]
        labels = sorted({lab for s in small for lab in s["labels"]}, key=label_sort)
        code_of = {lab: i for i, lab in enumerate(labels)}
        total = sum(s["rows"] for s in small)
        nranges = max(1, math.ceil(total / self.range_rows))
        sample = sorted((code_of[t[0]], *t[1:]) for s in small for t in s["sample"])
        splitters: list[tuple] = []
        for k in range(1, nranges):
            s = sample[min(len(sample) - 1, k * len(sample) // nranges)] if sample else None
            if s is not None and (not splitters or s > splitters[-1]):
                splitters.append(tuple(float(v) for v in s))
        cut = [self.submit(_split_asked, o, call, i, code_of, splitters) for i, o in enumerate(outs)]
        # the ranges are sorted side by side; only the group still open at each range's end is handed
        # on from range to range (a small step), then the ranges are scanned side by side again
        sorted_ = [self.submit(sort_range, *[self.submit(operator.getitem, c, r) for c in cut])
                   for r in range(len(splitters) + 1)]
        carries: list[Any] = [popu.Carry()]
        for s in sorted_[:-1]:
            carries.append(self.submit(carry_after, s, carries[-1]))
        states = [self.submit(scan_range, s, c) for s, c in zip(sorted_, carries)]
        del sorted_
        groups = self.client.gather([self.submit(operator.attrgetter("groups"), st) for st in states])
        count = np.zeros(len(labels), dtype=np.int64)
        fold = np.zeros(len(labels))
        for codes, cnt, fld in groups:  # later ranges hold the later running totals
            count[codes] = cnt
            fold[codes] = fld
        if func == "cumshare" and not np.isfinite(fold).all():  # a running total beyond the largest float
            for k in self.fresh:
                k[call] = TooLarge()
            return
        if func == "quantile":
            wanted: dict[int, list[int]] = {}
            for code in range(len(labels)):
                lo, hi, _ = popu.quantile_positions(int(count[code]), q) if count[code] else (0, 0, 0.0)
                wanted[code] = sorted({lo, hi})
            found: dict[tuple[int, int], float] = {}
            for part in self.client.gather([self.submit(_order_stats, st, wanted) for st in states]):
                found.update(part)
            per = {}
            for code, lab in enumerate(labels):
                n = int(count[code])
                if n:
                    lo, hi, t = popu.quantile_positions(n, q)
                    per[lab] = popu.lerp(found[(code, lo)], found[(code, hi)], t)
                else:
                    per[lab] = math.nan
            for k in self.fresh:
                k[call] = per
            return
        fins = [self.submit(finalize_range, st, count, fold, func, ties) for st in states]
        width = 3 if func == "quota" else 1
        for i in range(len(self.paths)):
            pieces = [self.submit(dict.get, f, i) for f in fins]
            got = self.submit(assemble, self.rows[i], width, *pieces)
            self.fresh[i][call] = got if func == "quota" else self.submit(operator.getitem, got, 0)


def _head_of(s: PartitionState) -> dict[str, Any]:
    """What the client hears of a partition read: its rows, its sha256, or why it cannot be read."""
    return {"rows": s.rows, "sha256": s.sha256, "error": s.error}


def _small_of(s: PartitionState) -> dict[str, Any]:
    o = s.out
    assert o is not None
    return {"asked": list(o.asked), "small": o.small, "final": o.final, "error": o.error}


def _pieces_of(s: PartitionState) -> list[Any] | None:
    return s.out.pieces if s.out is not None else None


def _asked_of(s: PartitionState) -> dict[str, Any]:
    return s.out.asked if s.out is not None else {}


def _without_asked(s: PartitionState) -> PartitionState:
    """The state for the next pass, without the records of what this pass asked (held apart)."""
    return replace(s, out=replace(s.out, asked={})) if s.out is not None else s


def _split_asked(asked: dict[str, Any], call: str, part: int, code_of: dict[Any, int], splitters: list[tuple]
                 ) -> list[Block]:
    a = asked.get(call)
    if a is None:
        return [Block(part, np.zeros(0, np.int64), np.zeros(0, np.int64), [], None, None)
                for _ in range(len(splitters) + 1)]
    return split_ranges(a, part, code_of, splitters)


def _order_stats(st: RangeState, wanted: dict[int, list[int]]) -> dict[tuple[int, int], float]:
    s = st.scan
    out = {}
    for code, positions in wanted.items():
        m = np.flatnonzero(s.codes == code)
        if m.size == 0:
            continue
        for p in positions:
            hit = m[s.position[m] == p]
            if hit.size:
                out[(code, p)] = float(st.first_key[hit[0]])
    return out


def _assemble_join(n: int, take_names: tuple[str, ...], *looked: Any) -> tuple[dict[str, Vec], np.ndarray]:
    """A partition's joined columns from what each bucket found for it (None: nothing)."""
    found = np.zeros(n, dtype=bool)
    pieces = []
    for got in looked:
        if got is None:
            continue
        rows, pos, cols = got
        found[rows[pos >= 0]] = True
        pieces.append((rows, cols))
    out = {}
    for name in take_names:
        out[name] = _scatter([(rows, cols[name]) for rows, cols in pieces], n)
    return out, found


def _scatter(pieces: list[tuple[np.ndarray, Vec]], n: int) -> Vec:
    """Vectors for some rows each, put together into one vector of n rows (missing elsewhere)."""
    kinds = [v for _, v in pieces if len(v)]
    if not kinds:
        if pieces and isinstance(pieces[0][1], Text):
            return missing_vector("string", n)
        if pieces and isinstance(pieces[0][1], Tri):
            return missing_vector("boolean", n)
        return missing_vector("number", n)
    first = kinds[0]
    if isinstance(first, Text):
        objs = np.full(n, None, dtype=object)
        for rows, v in pieces:
            objs[rows] = v.objects()
        return Text.of_objects(objs)
    if isinstance(first, Tri):
        value, known = np.zeros(n, bool), np.zeros(n, bool)
        for rows, v in pieces:
            value[rows], known[rows] = v.value, v.known
        return Tri(value, known)
    if isinstance(first, ListVec):
        objs = np.full(n, None, dtype=object)
        for rows, v in pieces:
            objs[rows] = v.objects()
        lists = list(dict.fromkeys(tuple(x) for x in objs if x is not None))
        index = {x: i for i, x in enumerate(lists)}
        return ListVec(np.array([index[tuple(x)] if x is not None else -1 for x in objs], dtype=np.int64), lists)
    out = np.full(n, np.nan)
    for rows, v in pieces:
        out[rows] = v
    return out


def _join_dict(names_: list[str], *values: Any) -> dict[str, Any]:
    out = {}
    for name, (taken, found) in zip(names_, values):
        out[name] = (taken, found)
    return out


def _merge_join_pieces(taken: tuple[str, ...], *pieces: Any) -> tuple[pa.Array, dict[str, Vec]]:
    keys = pa.concat_arrays([p[0] for p in pieces]) if pieces else pa.array([], pa.string())
    cols = {}
    for n in taken:
        parts = [p[1][n] for p in pieces]
        sizes = np.cumsum([0] + [len(p[0]) for p in pieces])
        cols[n] = _scatter([(np.arange(sizes[i], sizes[i + 1]), v) for i, v in enumerate(parts)], int(sizes[-1]))
    return keys, cols


# -- the run as the CLI sees it -------------------------------------------------------------------

def partition_files(pl: Plan, data: Path | None, given: dict[str, str]) -> dict[str, list[Path]]:
    """Per entity its Parquet partitions: `--input ENTITY=GLOB`, or in the data folder a folder
    named after the entity (`customers/`, every `*.parquet` in it, in name order) or one file."""
    import glob

    out: dict[str, list[Path]] = {}
    problems = []
    for ep in pl.entities:
        e = ep.entity
        found: list[Path] = []
        if e in given:
            found = sorted(Path(p) for p in glob.glob(given[e]))
            if not found and Path(given[e]).is_dir():
                found = sorted(Path(given[e]).glob("*.parquet"))
            where = given[e]
        elif data is not None:
            where = str(data)
            for name in (f"{e}s", e):
                if (data / name).is_dir():
                    found = sorted((data / name).glob("*.parquet"))
                    break
                if (data / f"{name}.parquet").is_file():
                    found = [data / f"{name}.parquet"]
                    break
        else:
            where = "(no --data)"
        if not found:
            problems.append(Problem("input-missing", f"no Parquet partitions of {e} in {where}", Location(where),
                                    f"--engine dask reads a folder {e}s/ of Parquet files, {e}s.parquet, or "
                                    f"--input {e}='path/*.parquet'"))
        out[e] = found
    if problems:
        raise InputError(problems)
    return out


def merge(pl: Plan, run_: DaskRun) -> dict[str, Any]:
    """The partitions' figures as one run's: counts, measures, invariants, warnings, outputs."""
    from ..batch.result import InvariantReport, JoinReport, conflict_warning

    counts: dict[str, Any] = {}
    measures: dict[str, Any] = {}
    invariants: list[Any] = []
    warnings: list[str] = []
    outputs = []
    rows: dict[str, int] = {}
    for ep in pl.entities:
        done = run_.entities[ep.entity]
        parts = done["parts"]
        rows[ep.entity] = sum(done["rows"])
        per: dict[str, dict[str, int]] = {}
        for p in parts:
            for d, values in p["counts"].items():
                slot = per.setdefault(d, {})
                for v, k in values.items():
                    slot[v] = slot.get(v, 0) + k
        counts[ep.entity] = {d: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for d, v in per.items()}
        filled = [p["measures"] for p in parts if p["measures"] is not None]
        if ep.measures:
            measures[ep.entity] = filled[0] if filled else {m.name: None for m in ep.measures}
        for inv in ep.invariants:
            found = [x for p in parts for x in p["invariants"] if x[0] == inv.id]
            examples = [e for x in found for e in x[2]][:InvariantReport.SHOW]
            invariants.append(InvariantReport(inv, ep.entity, sum(x[1] for x in found), examples))
        for j in ep.joins:
            unknown = [p["unknown"][j.name] for p in parts if j.name in p["unknown"]]
            if unknown:
                frame = pd.concat([u[1] for u in unknown], ignore_index=True)
                total = sum(p["ref_totals"][j.name] for p in parts)
                warnings.append(JoinReport(ep.entity, j.entity, j.on, total, frame, [],
                                           count=sum(u[0] for u in unknown)).text())
        for d in ep.decisions:
            found_c = [p["conflicts"][d.name] for p in parts if d.name in p["conflicts"]]
            if found_c:
                warnings.append(conflict_warning(ep.entity, d.name, sum(c[0] for c in found_c),
                                                 [k for c in found_c for k in c[1]], found_c[0][2]))
        outputs.append({"entity": ep.entity, "path": f"{ep.entity}_decisions/", "rows": rows[ep.entity],
                        "parts": [{"path": p["path"], "rows": p["rows"], "sha256": p["sha256"]} for p in parts]})
    return {"counts": counts, "measures": measures, "invariants": invariants, "warnings": warnings,
            "outputs": outputs, "rows": rows}
