"""What one partition of a Dask run answers: its facts read, hashed and checked once, its steps
evaluated as far as the population's answers allow, and the state it keeps on its worker in between.

A partition is read once per run (`open_partition`: the file's bytes are read once, hashed as read,
and parsed from memory; the row count comes from the Parquet footer). What it keeps between passes
(`PartitionState`) is sized by the partition, never by the population: its checked facts as compact
vectors (numbers as float64, texts as codes into their distinct values, ids as Arrow strings), the
answers it got so far, and the result of every step whose population calls are all answered
(`step_calls`). A later pass (`advance`) takes that state plus the driver's new answers and evaluates
only the steps that still wait for one; the rest are taken as they are (`evaluate_entity(reuse=)`).
Between passes the state is packed (engine.engines.dask_packing: yes/no arrays as bits, codes in the
fewest bytes), and an answer's values per row are let go (`Spent`) once no step still to be
evaluated, measure or invariant reads them.
The state is a Dask future on the worker that read the partition; Dask spills it to disk when the
worker passes its memory target (its size is told to Dask by `sizeof`, registered below).

How the population calls themselves are answered is the driver's part (engine.engines.dask).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from ..batch import population as popu
from ..batch.evaluate import CONFLICT, Overflow, Vec, column_to_vec, \
    evaluate_entity, is_missing, take
from ..language.errors import InputError
from ..language.functions import POPULATION_FUNCTIONS
from ..language.model import Join
from ..language.nodes import Call, Node, names, to_text, walk
from ..language.plan import DeriveStep, EntityPlan, Plan, decision_reads, step_nodes
from .dask_packing import narrow, pack, unpack

SAMPLE = 64  # sample rows per partition and range boundary
ORDERED = ("rank", "pct_rank", "cumshare", "quantile")

# -- which population calls depend on which -------------------------------------------------------

def _calls_in(node: Node) -> list[Call]:
    return [n for n in walk(node) if isinstance(n, Call) and n.func in POPULATION_FUNCTIONS]


def population_calls(ep: EntityPlan) -> dict[str, set[str]]:
    """Every population call (by its text) and quota (`quota of rule ID`) of an entity, with the
    population calls and quotas its arguments depend on, directly or through features and decisions."""
    return _dependencies(ep)[0]


def step_calls(ep: EntityPlan) -> dict[str, set[str]]:
    """Per step (feature or decision) of an entity, the population calls and quotas it reads, directly
    or through other steps: once all of them are answered, the step's result is final."""
    return _dependencies(ep)[1]


def _dependencies(ep: EntityPlan) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    provides: dict[str, set[str]] = {}
    deps: dict[str, set[str]] = {}
    steps: dict[str, set[str]] = {}

    def depends(node: Node) -> set[str]:
        out: set[str] = set()
        for n in names(node):
            out |= provides.get(n, set())
        for c in _calls_in(node):
            text = to_text(c)
            inner: set[str] = set()
            for a in list(c.args) + [v for _, v in getattr(c, "kwargs", ())]:
                if isinstance(a, Node):  # type: ignore[arg-type]  # Node is a union of node classes
                    inner |= depends(a) if a is not c else set()
            deps.setdefault(text, set()).update(inner)
            out |= inner | {text}
        return out

    for step in ep.steps:
        if isinstance(step, DeriveStep):
            provides[step.name] = steps[step.name] = depends(step.derive.expr.node)  # type: ignore[arg-type]
            continue
        d = step.decision
        got: set[str] = set()
        for n in step_nodes(step):
            got |= depends(n)
        for read in decision_reads(d):
            got |= provides.get(read, set())
        for r in d.rules:
            if r.quota is not None:
                deps[f"quota of rule {r.id}"] = set(got)
        got |= {f"quota of rule {r.id}" for r in d.rules if r.quota is not None}
        steps[step.name] = got
        for name in [d.name] + [o.name for o in d.outputs]:
            provides[name] = got
    for m in ep.measures:
        depends(m.expr.node)  # type: ignore[arg-type]
    for inv in ep.invariants:
        depends(inv.expr.node)  # type: ignore[arg-type]
    return deps, steps


# -- what a partition sends and gets --------------------------------------------------------------

@dataclass
class Ordered:
    """One partition's rows of an ordered call: the rows it concerns, their groups (codes into the
    partition's distinct group labels: an object per row would be pickled one by one whenever Dask
    moves or spills it), the sort keys (ascending), the tie-break (ids) and the values summed in
    sorted order."""

    func: str
    rows: np.ndarray
    codes: np.ndarray
    groups: list[Any]
    keys: list[np.ndarray]
    tiebreak: np.ndarray | None
    weights: np.ndarray | None
    q: float = 0.5
    ties: str = "key"

    def labels(self) -> list[Any]:
        """The group labels its rows have, each once."""
        return [self.groups[c] for c in np.unique(self.codes).tolist()]


class TooLarge:
    """The answer to a population call whose total is too large to hold: the partitions' evaluation
    raises the Overflow that the pandas engine raises, at the step that asked."""


@dataclass
class Sums:
    """One partition's exact sums and counts per group label (see engine.batch.population)."""

    sums: dict[Any, int | float]
    counts: dict[Any, int]


# The group labels of the last few groupings a partition's evaluation asked about, coded once: a pass
# asks many population calls over the same grouping (Context.group_labels gives the same array), and
# coding half a million Python objects each time took a third of a pass. Held by id with the array
# itself (so an id is never reused while it is here); a handful, emptied after each pass.
_CODED: dict[int, tuple[np.ndarray, np.ndarray, list[Any], np.ndarray]] = {}
_CODED_LOCK = threading.Lock()  # a worker may run several partitions' passes at once


def _coded(labels: np.ndarray) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """Where a label is given, the distinct labels, and each row's code into them (-1: missing)."""
    got = _CODED.get(id(labels))
    if got is not None and got[0] is labels:
        return got[1], got[2], got[3]
    present = pd.notna(labels).astype(bool) if labels.size else np.zeros(0, bool)
    codes = np.full(labels.size, -1, dtype=np.int64)
    uniques: list[Any] = []
    if present.any():
        c, u = pd.factorize(pd.Series(labels[present], dtype=object), sort=False)
        codes[present] = c
        uniques = list(u)
    with _CODED_LOCK:
        if len(_CODED) >= 8:
            _CODED.pop(next(iter(_CODED)))
        _CODED[id(labels)] = (labels, present, uniques, codes)
    return present, uniques, codes


def _present(labels: np.ndarray) -> np.ndarray:
    """Where a group label is given (`Context.group_labels` has None for a missing one)."""
    return _coded(labels)[0]


def _labels_codes(labels: np.ndarray) -> tuple[list[Any], np.ndarray]:
    return _coded(labels)[1], _coded(labels)[2]


def _rows_groups(labels: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """The rows of an ordered call and their group codes, each in the narrowest integers that hold
    them, and the partition's distinct group labels."""
    _, uniques, codes = _coded(labels)
    return narrow(valid), narrow(codes[valid]), uniques


def _local_sums(x: np.ndarray, labels: np.ndarray) -> Sums:
    uniques, codes = _labels_codes(labels)
    sums = popu.exact_sums(x, codes, len(uniques))
    counts = np.bincount(codes[(codes >= 0) & ~np.isnan(x)], minlength=len(uniques))
    return Sums(dict(zip(uniques, sums)), dict(zip(uniques, counts.tolist())))


class PartitionHook:
    """What a partition's evaluation asks of the population: answered from `known`, or recorded in
    `asked` (when everything the call depends on is known) and answered with missing values."""

    def __init__(self, known: dict[str, Any], deps: dict[str, set[str]], joins: dict[str, Any]):
        self.known = known
        self.deps = deps
        self.joins = joins
        self.asked: dict[str, Any] = {}
        self.pending = False  # some answer was missing: this pass's results are not final

    def _ask(self, call: str, make: Callable[[], Any], deps_of: str | None = None) -> None:
        self.pending = True
        if call not in self.asked and all(d in self.known for d in self.deps.get(deps_of or call, ())):
            self.asked[call] = make()

    def value(self, call: str, func: str, x: np.ndarray, labels: np.ndarray, keys: np.ndarray | None,
              q: float, ties: str) -> np.ndarray:
        """A population function's values for this partition's rows."""
        got = self.known.get(call)
        if isinstance(got, TooLarge):
            raise Overflow(None, np.zeros(0, np.int64))
        assert not isinstance(got, Spent), f"{call}: its values were let go as no longer read"
        if func in ORDERED and func != "quantile":
            if got is not None:
                return got
            valid = np.flatnonzero(~np.isnan(x) & _present(labels))
            xv = x[valid]
            self._ask(call, lambda: Ordered(func, *_rows_groups(labels, valid), [-xv if func == "rank" else xv],
                                            keys[valid] if keys is not None else None,
                                            xv if func == "cumshare" else None, q, ties))
            return np.full(x.size, np.nan)
        if func == "quantile":
            if got is not None:
                return _per_label(labels, got)
            valid = np.flatnonzero(~np.isnan(x) & _present(labels))
            self._ask(call, lambda: Ordered(func, *_rows_groups(labels, valid), [x[valid]], None, None, q, ties))
            return np.full(x.size, np.nan)
        if func == "zscore":
            if got is not None:
                mean, std = _per_label(labels, got[0]), _per_label(labels, got[1])
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.where(std > 0, (x - mean) / std, np.nan)
            means = self.known.get(call + " #mean")
            if means is None:  # the first round (the mean), once the argument can be computed
                self._ask(call + " #mean", lambda: _local_sums(x, labels), deps_of=call)
            else:
                self.deps.setdefault(call, set()).add(call + " #mean")
                self._ask(call, lambda: _local_sums((x - _per_label(labels, means)) ** 2, labels))
            return np.full(x.size, np.nan)
        if got is not None:  # sum, mean, count
            return _per_label(labels, got)
        self._ask(call, lambda: _local_sums(x, labels))
        return np.full(x.size, np.nan)

    def quota(self, call: str, labels: np.ndarray, keys: list[np.ndarray], ids: np.ndarray, ties: str
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """A quota's rank, group size and tie size for the eligible rows (in their order)."""
        n = labels.size
        got = self.known.get(call)
        assert not isinstance(got, Spent), f"{call}: its values were let go as no longer read"
        if got is not None:  # kept per eligible row, in the eligible rows' order
            return got[0][:n], got[1][:n], got[2][:n], np.arange(n)
        valid = np.flatnonzero(_present(labels))
        self._ask(call, lambda: Ordered("quota", *_rows_groups(labels, valid), [k[valid] for k in keys], ids[valid],
                                        None, 0.5, ties))
        nan = np.full(n, np.nan)
        return nan, nan, np.zeros(n), np.arange(n)

    def join(self, j: Join, ref: Vec) -> tuple[dict[str, Vec], np.ndarray]:
        """The columns a join takes, for this partition's references, and the rows that found none."""
        taken, found = self.joins[j.name]
        return taken, np.flatnonzero(~found & ~is_missing(ref))


def _per_label(labels: np.ndarray, per: dict[Any, float]) -> np.ndarray:
    """Each row's figure of its group (missing where the group is missing or has none): the few
    distinct labels are looked up, then spread by their codes (a lookup per row took most of a pass)."""
    present, uniques, codes = _coded(labels)
    table = np.array([per.get(u, np.nan) for u in uniques] + [np.nan], dtype=float)
    return table[codes]  # -1, a missing label, takes the trailing nan



# -- one partition's state ------------------------------------------------------------------------

# Per worker process: how many times each partition file's bytes were read (a run reads each once;
# tests/test_dask.py asks every worker for it with `client.run(partition_reads)`).
READS: Counter[str] = Counter()


def partition_reads() -> dict[str, int]:
    """How many times this process read each partition file (see READS)."""
    return dict(READS)


@dataclass
class PassOut:
    """What a pass over one partition gives: small figures for the driver, and the recorded
    arguments that stay on the worker."""

    rows: int
    asked: dict[str, Any]
    small: dict[str, Any] = field(default_factory=dict)  # per call: sums, or labels + sample
    final: dict[str, Any] | None = None  # the final pass: what the manifest needs
    pieces: list[Any] | None = None  # the final pass: keys and joined columns per hash bucket
    # the partition's data cannot be decided (a number too large to hold): given back, not raised, so
    # that the worker does not log it as its own failure with a traceback
    error: InputError | None = None


@dataclass
class PartitionState:
    """What one partition keeps on its worker from its read to its last pass, sized by the partition."""

    index: int
    path: str
    rows: int  # from the Parquet footer
    sha256: str  # of the file's bytes as read
    columns: dict[str, Any]  # the checked facts: vectors, and ids as Arrow-backed text Series
    known: dict[str, Any] = field(default_factory=dict)  # the population's answers so far
    kept: dict[str, Any] = field(default_factory=dict)  # per final step: its vector or DecisionResult
    out: PassOut | None = None  # what the last pass gave
    error: InputError | None = None  # the partition failed its fact checks (then nothing else is set)


def _nbytes(obj: Any, depth: int = 0) -> int:
    """The memory an evaluated value holds (arrays, vectors, results), for Dask's spill decisions."""
    if isinstance(obj, (np.ndarray, pd.Series)):  # Dask's own estimate (object arrays by a sample)
        return int(_array_sizeof(obj))
    if isinstance(obj, (pa.Array, pa.ChunkedArray)):
        return int(obj.nbytes)
    if depth > 6:
        return 64
    if hasattr(obj, "__dataclass_fields__"):  # Text, Tri, ListVec, DecisionResult, the states
        return 64 + sum(_nbytes(getattr(obj, f), depth + 1) for f in getattr(obj, "__dataclass_fields__", ())
                        if f not in ("decision", "rules"))
    if isinstance(obj, dict):
        return 64 + sum(_nbytes(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return 64 + sum(_nbytes(v, depth + 1) for v in obj)
    return 64


try:  # Dask measures what a worker holds with `sizeof`; without this a state would count as ~100 bytes
    from dask.sizeof import sizeof as _dask_sizeof

    _array_sizeof: Callable[[Any], int] = _dask_sizeof

    _dask_sizeof.register(PartitionState)(_nbytes)
    _dask_sizeof.register(PassOut)(_nbytes)
except ImportError:  # the engine's functions are also used without dask (tests, the pandas comparison)
    def _array_sizeof(obj: Any) -> int:
        return int(obj.nbytes) if isinstance(obj, np.ndarray) else int(obj.memory_usage(deep=True))


def read_partition(pl: Plan, entity: str, path: str, options: Any, content: bytes | None = None) -> pd.DataFrame:
    """One partition's facts, checked as a facts file is (from `content`, its bytes, when given)."""
    from ..batch.facts import identifier_facts
    from ..batch.facts import read_facts

    return read_facts(Path(path), pl.checked.policy_set.facts(entity), options, identifier_facts(pl, entity), entity,
                      content=content)


def open_partition(pl: Plan, entity: str, path: str, options: Any, index: int) -> PartitionState:
    """Read one partition once: its bytes hashed as read, its row count from the Parquet footer, its
    facts checked and kept as compact vectors for every pass of the run."""
    import pyarrow.parquet as pq

    from ..batch.facts import identifier_facts

    READS[path] += 1
    try:
        content = Path(path).read_bytes()  # one read: hashed here, parsed from memory below
    except OSError:
        content = None  # read_facts names the problem (a missing file, say)
    sha = hashlib.sha256(content).hexdigest() if content is not None else ""
    try:
        frame = read_partition(pl, entity, path, options, content)
    except InputError as exc:
        return PartitionState(index, path, 0, sha, {}, error=exc)
    assert content is not None
    rows = pq.ParquetFile(pa.BufferReader(content)).metadata.num_rows  # the footer, not the rows
    del content
    facts = pl.checked.policy_set.facts(entity)
    ids = identifier_facts(pl, entity)
    columns: dict[str, Any] = {}
    for name, f in facts.items():
        col = frame[name]
        if name in ids:  # ids stay text (Arrow strings: a few bytes each, not a Python object)
            columns[name] = pd.Series(pd.arrays.ArrowStringArray(pa.array(col, type=pa.string(), from_pandas=True)))
        else:  # what FactEnv would make from the column in every pass, made once (and packed)
            columns[name] = pack(column_to_vec(col, f.type))
    return PartitionState(index, path, rows, sha, columns)


def _sample(o: Ordered) -> list[tuple]:
    """Evenly spaced rows of the partition's sorted (label, keys): for the range boundaries."""
    if o.rows.size == 0:
        return []
    order = np.argsort(o.keys[0])  # for balance only: the ranges are right whatever the sample
    picks = order[np.linspace(0, order.size - 1, min(SAMPLE, order.size)).astype(np.int64)]
    return [(o.groups[o.codes[i]], *[float(k[i]) for k in o.keys]) for i in picks.tolist()]


def label_sort(v: Any) -> tuple:
    """A sort key for group labels of any type (texts, numbers, yes/no)."""
    return (type(v).__name__, v)


def advance(pl: Plan, entity: str, state: PartitionState, answers: dict[str, Any], joins: dict[str, Any],
            final_dir: str | None, taken: tuple[str, ...] = (), buckets: int = 1) -> PartitionState:
    """One pass over a partition (see `_advance`); the group labels it coded are let go after it."""
    try:
        return _advance(pl, entity, state, answers, joins, final_dir, taken, buckets)
    finally:
        with _CODED_LOCK:
            _CODED.clear()


def _advance(pl: Plan, entity: str, state: PartitionState, answers: dict[str, Any], joins: dict[str, Any],
             final_dir: str | None, taken: tuple[str, ...] = (), buckets: int = 1) -> PartitionState:
    """One pass over a partition: its state plus the driver's new answers. Only the steps that waited
    for an answer are evaluated; on the final pass its decisions are written (and the columns other
    entities join, `taken`, kept spread over hash buckets). Gives the state for the next pass."""
    from ..batch.explain import decision_counts, output_chunks
    from ..batch.facts import file_sha256
    from ..batch.write import write_chunks

    if state.out is not None and state.out.final is not None:
        # finished in an earlier pass (it asked nothing: a partition without a row a quota ranks, say);
        # the answers others still wait for cannot change what it wrote
        return state
    ep = pl.entity(entity)
    known = {**unpack(state.known), **answers}
    types = {name: f.type for name, f in pl.checked.policy_set.facts(entity).items()}
    hook = PartitionHook(dict(known), {k: set(v) for k, v in population_calls(ep).items()}, joins)
    n = state.rows
    try:
        res = evaluate_entity(ep, unpack(state.columns), types, {}, population=hook, n=n, reuse=unpack(state.kept))
    except InputError as exc:
        return replace(state, out=PassOut(n, {}, error=exc))
    out = PassOut(n, hook.asked)
    for call, a in hook.asked.items():
        if isinstance(a, Sums):
            out.small[call] = a
        else:
            out.small[call] = {"labels": sorted(a.labels(), key=label_sort), "sample": _sample(a),
                               "rows": int(a.rows.size), "func": a.func, "q": a.q, "ties": a.ties}
    if hook.pending or final_dir is None:
        # the steps whose calls are all answered are final: the next pass takes them as they are
        answered = set(known)
        kept = {s: (res.ctx.env[s] if s not in res.decisions else res.decisions[s])
                for s, calls in step_calls(ep).items() if calls <= answered}
        still = calls_still_read(ep, set(kept))
        # a call's values per row are let go once every step that reads them is final (its key stays:
        # the calls that depend on it go on counting it as answered)
        known = {c: (Spent() if c not in still and _per_row(v) else v) for c, v in known.items()}
        return replace(state, known=pack(known), kept=pack(kept), out=out)
    from ..batch.result import RunResult

    folder = Path(final_dir) / f"{entity}_decisions"
    folder.mkdir(exist_ok=True)
    name = f"part-{state.index:05d}.parquet"
    rows = write_chunks(output_chunks(res), folder / name, "parquet").rows  # a slice of texts at a time
    if taken:
        out.pieces = _bucket_pieces(res, taken, buckets)
    rr = RunResult(pl, {entity: res}, {}, {})
    out.final = {
        "path": f"{entity}_decisions/{name}", "rows": rows,
        "sha256": file_sha256(folder / name),  # a megabyte at a time, not the part whole
        "counts": decision_counts(res), "measures": dict(res.measures) if n else None,
        "invariants": [(i.invariant.id, i.count, i.examples) for i in rr.invariants()],
        "conflicts": _conflicts(res),
        "unknown": {j: (len(f), f.head(50)) for j, f in res.unknown_refs.items()},
        "ref_totals": {j.name: int((~is_missing(res.ctx.env[j.on])).sum()) for j in ep.joins},
    }
    # the partition is done: nothing of it waits any more but what the manifest and the joins need
    return PartitionState(state.index, state.path, n, state.sha256, {}, out=out)


class Spent:
    """In place of a call's values per row that no step still to be evaluated reads."""


def _per_row(v: Any) -> bool:
    """Whether an answer is values per row (ordered calls, quotas), not figures per group."""
    return isinstance(v, np.ndarray) or (isinstance(v, (tuple, list)) and any(isinstance(x, np.ndarray) for x in v))


def calls_still_read(ep: EntityPlan, final: set[str]) -> set[str]:
    """The population calls and quotas that a later pass may still evaluate: those of the steps not
    yet final, and those the invariants and measures read (they are evaluated in every pass)."""
    out: set[str] = set()
    for s, calls in step_calls(ep).items():
        if s not in final:
            out |= calls
    for item in list(ep.measures) + list(ep.invariants):
        out |= {to_text(c) for c in _calls_in(item.expr.node)}  # type: ignore[arg-type]
    return out


def _conflicts(res: Any) -> dict[str, tuple[int, list[str], tuple[str, str]]]:
    out = {}
    for name, d in res.decisions.items():
        rows = np.flatnonzero(d.rule_index == CONFLICT)
        if rows.size:
            a, b = d.conflict_with[rows[0]]
            out[name] = (int(rows.size), [str(res.ctx.key[i]) for i in rows[:5]], (d.rules[a].id, d.rules[b].id))
    return out


# -- keys by hash bucket --------------------------------------------------------------------------

def id_array(col: Any) -> pa.Array:
    """Ids (a Series, an array) as one Arrow string array."""
    arr = pa.array(col, type=pa.string(), from_pandas=True)
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def key_buckets(pl: Plan, entity: str, state: PartitionState, buckets: int, column: str | None = None
                ) -> list[Any]:
    """A partition's ids (or references, `column`) spread over buckets by their hash, from its state
    (the partition is not read again)."""
    from ..history.ids import key_hashes

    col = column or pl.entity(entity).key
    ids = id_array(state.columns[col])
    b = (key_hashes(ids) % np.uint64(buckets)).astype(np.int64) if len(ids) else np.zeros(0, np.int64)
    out = []
    for i in range(buckets):
        rows = np.flatnonzero(b == i)
        out.append((state.index, rows, ids.take(pa.array(rows))))
    return out


def _bucket_pieces(res: Any, taken: tuple[str, ...], buckets: int) -> list[Any]:
    """A finished partition's keys and taken columns per hash bucket."""
    from ..history.ids import key_hashes

    ids = id_array(res.ctx.key)
    b = (key_hashes(ids) % np.uint64(buckets)).astype(np.int64) if len(ids) else np.zeros(0, np.int64)
    out = []
    for i in range(buckets):
        rows = np.flatnonzero(b == i)
        out.append((ids.take(pa.array(rows)), {n: take(res.ctx.env[n], rows) for n in taken}))
    return out
