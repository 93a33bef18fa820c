"""Stage 9, record: the decision history across runs, kept in one DuckDB file.

`kam run --history FILE --period LABEL` appends the run: one row in `kam_runs` (period, time,
policy-set hash and the policy files themselves, inputs, options, what each entity table holds)
and, per entity, one row per entity in `<entity>_history`: its facts, joined values, features,
decided values and rule ids (plus the quota ranks its texts quote), under the names of the output
files plus `kam_period`. A later question ("why was she A in March") is answered from the history
alone: the because texts are rendered again from the stored values with the policies of that
period, so they read exactly as that run's output files did, and the past values that `previous()`
reads come from it.

The whole period is one transaction, committed just before the output folder is swapped in: a
killed run leaves the history without that period, never half of it. Periods are ordered as text,
so labels must sort in time order (2026-09, 2026-10, 2026-11; 2026-Q1).

The file is a plain DuckDB database: `duckdb history.duckdb "select * from customer_history"`.
"""

from __future__ import annotations

import json
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..language.version import __version__
from ..language.errors import InputError, Location, Problem, did_you_mean
from ..batch.evaluate import CONFLICT, NO_RULE, DecisionResult, EntityResult, FactEnv, ListVec, Vec, \
    collected, column_to_vec, vector_arrow
from ..language.model import Decision
from ..batch.result import Past
from ..language.plan import DeriveStep, EntityPlan, Plan, past_note, past_readers  # noqa: F401  (re-exported)
from ..batch.facts import file_sha256
from ..language.types import Type

if TYPE_CHECKING:
    import duckdb

    from ..batch.result import RunResult

FORMAT = "2"  # 2: `<entity>_keys` holds a hash of each id (1: the ids themselves)
RUNS = "kam_runs"
META = "kam_meta"
PERIOD = "kam_period"
ROW = "kam_row"  # the row's place in its period, as the facts listed it
HASH = "kam_hash"  # `key_hashes` of an id: what `<entity>_keys` is sorted by
PENDING = "pending"  # kam_meta: a period recorded whose output set is not yet known to be in place
CONFLICTS = "kam_conflicts"  # per row, the two rules of each decision that conflicted (JSON), else null
QUOTA_COLUMNS = ("quota_rank", "quota_size", "quota_limit", "quota_tie")
PERIOD_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")
_SQL_TYPES = {"number": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN"}


def table_name(entity: str) -> str:
    """An entity's history: its facts and what was decided, one row per entity and period."""
    return f"{entity}_history"


def keys_name(entity: str) -> str:
    """Where each id of an entity is, per period: (kam_period, kam_hash, kam_row), sorted by the hash."""
    return f"{entity}_keys"



def quote(name: str) -> str:
    """A SQL identifier (policy names are lowercase words, but quoting costs nothing)."""
    return '"' + name.replace('"', '""') + '"'


_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)
_MASKS = np.array([0] + [(1 << (8 * k)) - 1 for k in range(1, 8)] + [2**64 - 1], dtype=np.uint64)


def _mix(h: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer (in place, wrapping modulo 2**64)."""
    h ^= h >> np.uint64(30)
    h *= _M1
    h ^= h >> np.uint64(27)
    h *= _M2
    h ^= h >> np.uint64(31)
    return h


def key_hashes(keys: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """A 64-bit hash of each id, defined here rather than by a library (a history outlives versions):
    the id's UTF-8 bytes in little-endian 8-byte words, each folded in with the splitmix64 finalizer,
    seeded with the length. Vectorized over the Arrow buffers (a million ids: 50-120 ms). Equal hashes
    are only candidates: lookups compare the ids as well."""
    arr = pa.chunked_array([keys] if not isinstance(keys, pa.ChunkedArray) else keys.chunks,
                           type=None if isinstance(keys, (pa.Array, pa.ChunkedArray)) else pa.string())
    arr = arr.cast(pa.large_string()).combine_chunks().fill_null("")
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    starts = offsets[:-1] - offsets[0]
    lengths = np.diff(offsets)
    padded = np.concatenate([data, np.zeros(8, dtype=np.uint8)])
    # the 8 bytes from every position at once (an unaligned view): an id's j-th word is one gather
    words = np.ndarray((padded.size - 7,), dtype="<u8", buffer=padded, offset=0, strides=(1,))
    h = lengths.astype(np.uint64) * _GOLD
    with np.errstate(over="ignore"):
        for j in range(0, int(lengths.max()), 8):
            rest = lengths - j
            if rest.min() >= 8:
                h = _mix(h ^ words[starts + j])
            else:  # bytes past an id's end belong to the next id: masked off
                live = np.flatnonzero(rest > 0)
                h[live] = _mix(h[live] ^ (words[starts[live] + j] & _MASKS[np.minimum(rest[live], 8)]))
        return _mix(h)


def _problem(message: str, hint: str = "", where: str = "command line", code: str = "history") -> InputError:
    return InputError(Problem(code, message, Location(where), hint))


def check_period(label: str) -> str:
    """A period label: letters, digits, `-`, `_` and `.`, up to 64; ordered as text."""
    if not PERIOD_PATTERN.fullmatch(label):  # `$` alone lets a final newline through
        # as Python writes it (quoted, control characters escaped): a newline in it would break the message
        shown_ = repr(label) if len(label) <= 64 else f"{repr(label[:60])[:-1]}… ({len(label):,} characters)"
        raise _problem(f"{shown_} is not a period label kam can keep",
                       "write the period so that labels sort in time order, e.g. 2026-11 or 2026-Q4 "
                       "(letters, digits, - _ and ., at most 64)")
    return label


# -- what a period holds ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    name: str
    sql: str  # DOUBLE | VARCHAR | BOOLEAN | VARCHAR[] | DOUBLE[] | BOOLEAN[]
    role: str  # key | fact | joined | feature | output | rule | quota | conflicts


def _has_quota(d: Decision) -> bool:
    return any(r.quota is not None for r in d.rules)


def _sql_type(t: Type) -> str:
    return f"{_SQL_TYPES.get(t.item, 'VARCHAR')}[]" if t.kind == "list" else _SQL_TYPES.get(t.kind, "VARCHAR")


def entity_columns(pl: Plan, ep: EntityPlan) -> list[Column]:
    """The columns of an entity's history table, in order: key, facts, joined values, features, then
    per decision its outputs, rule id(s) and quota ranks (for its texts); last the conflicts."""
    ps = pl.checked.policy_set
    ns = pl.checked.namespaces[ep.entity]
    cols = [Column(ep.key, "VARCHAR", "key"), Column(ROW, "INTEGER", "row")]
    cols += [Column(f.name, _sql_type(ns.symbols[f.name].type), "fact")
             for f in ps.facts(ep.entity).values() if f.name != ep.key]
    cols += [Column(n, _sql_type(ns.symbols[n].type), "joined") for j in ep.joins for n in j.take]
    cols += [Column(s.name, _sql_type(ns.symbols[s.name].type), "feature")
             for s in ep.steps if isinstance(s, DeriveStep)]
    for d in ep.decisions:
        cols += [Column(o.name, _sql_type(ns.symbols[o.name].type), "output") for o in d.outputs]
        cols.append(Column(f"{d.name}_rule", "VARCHAR[]" if d.hit == "collect" or d.gives_list else "VARCHAR", "rule"))
        if _has_quota(d):
            cols += [Column(f"{d.name}_{q}", "VARCHAR" if q == "quota_tie" else "DOUBLE", "quota")
                     for q in QUOTA_COLUMNS]
    cols.append(Column(CONFLICTS, "VARCHAR", "conflicts"))
    names = [c.name for c in cols]
    clash = sorted({n for n in names if names.count(n) > 1} | ({PERIOD} & set(names)))
    if clash:
        raise _problem(f"the {ep.entity} history cannot hold two columns named {', '.join(clash)}",
                       f"rename the fact, feature or decision (`{PERIOD}`, `{ROW}`, `{CONFLICTS}`, "
                       "`<decision>_rule` and `<decision>_quota_...` are taken by the history)")
    return cols


def entity_schema(pl: Plan, ep: EntityPlan, rows: int) -> dict[str, Any]:
    """What kam_runs says of one entity in one period: which columns are what, for later questions."""
    facts = pl.checked.policy_set.facts(ep.entity)
    return {
        "table": table_name(ep.entity),
        "key": ep.key,
        "rows": rows,
        "measures": [f.name for f in facts.values() if f.measure],
        "decimals": {f.name: f.decimals for f in facts.values() if f.measure and f.decimals is not None},
        "decisions": {d.name: {"outputs": [o.name for o in d.outputs], "list": d.gives_list or d.hit == "collect",
                               "values": list(d.main.values or ()), "policy": d.policy}
                      for d in ep.decisions},
        "columns": {c.name: c.role for c in entity_columns(pl, ep)},
    }


def _column_arrow(col: Any) -> pa.Array:
    arr = pa.Array.from_pandas(pd.Series(col).reset_index(drop=True))
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _rule_arrow(res: DecisionResult) -> pa.Array:
    """The deciding rule's id per row (the ids of every matching rule, for `collect`)."""
    if res.collected is not None:
        return vector_arrow(collected(res, "", values=False))
    codes = res.rule_index
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32), mask=codes < 0),
                                          pa.array([r.id for r in res.rules], type=pa.string()))


def quota_arrows(res: DecisionResult) -> dict[str, pa.Array]:
    """Per row, the quota rank, size, limit and tie text of the quota rule that decided it."""
    n = res.rule_index.size
    out: dict[str, Vec] = {"quota_rank": np.full(n, np.nan), "quota_size": np.full(n, np.nan),
                           "quota_limit": np.full(n, np.nan)}
    tie = np.full(n, None, dtype=object)
    for i, qvars in res.quota_vars.items():
        rows = res.rule_index == i
        for name in ("quota_rank", "quota_size", "quota_limit"):
            out[name][rows] = np.asarray(qvars[name])[rows]  # type: ignore[index]
        tie[rows] = qvars["quota_tie"].objects()[rows]  # type: ignore[union-attr]
    arrays = {name: vector_arrow(v) for name, v in out.items()}
    arrays["quota_tie"] = pa.array(tie, type=pa.string())
    return arrays


def _conflicts_arrow(r: EntityResult) -> pa.Array:
    found: dict[int, dict[str, list[str]]] = {}
    for name, res in r.decisions.items():
        if res.conflict_with is None:
            continue
        for row in np.flatnonzero(res.rule_index == CONFLICT):
            a, b = res.conflict_with[row]
            found.setdefault(int(row), {})[name] = [res.rules[a].id, res.rules[b].id]
    if not found:
        return pa.nulls(r.ctx.n, pa.string())
    values = np.full(r.ctx.n, None, dtype=object)
    for row, pairs in found.items():
        values[row] = json.dumps(pairs, ensure_ascii=False)
    return pa.array(values, type=pa.string())


def values_table(pl: Plan, r: EntityResult) -> pa.Table:
    """One entity's rows of one period, as written to the history."""
    arrays: dict[str, pa.Array] = {}
    frame = r.ctx.env.frame if isinstance(r.ctx.env, FactEnv) else {}
    quota: dict[str, dict[str, pa.Array]] = {}
    for c in entity_columns(pl, r.plan):
        if c.role == "key":
            arrays[c.name] = pa.array(r.ctx.key, type=pa.string(), from_pandas=True)
        elif c.role == "row":
            arrays[c.name] = pa.array(np.arange(r.ctx.n, dtype=np.int32))
        elif c.role == "fact" and c.name in frame:
            arrays[c.name] = _column_arrow(frame[c.name])  # as read: no need to build the vector
        elif c.role == "rule":
            arrays[c.name] = _rule_arrow(r.decisions[c.name[: -len("_rule")]])
        elif c.role == "quota":
            decision, _, var = c.name.partition("_quota_")
            if decision not in quota:
                quota[decision] = quota_arrows(r.decisions[decision])
            arrays[c.name] = quota[decision][f"quota_{var}"]
        elif c.role == "conflicts":
            arrays[c.name] = _conflicts_arrow(r)
        else:
            arrays[c.name] = vector_arrow(r.ctx.env[c.name])
    return pa.table(arrays)


# -- the reasons, rendered again -----------------------------------------------------------------------

def stored_vector(col: pd.Series, t: Type) -> Vec:
    """A history column as an evaluation vector of its declared type."""
    if t.kind == "list":
        codes, distinct = _list_codes(col)
        return ListVec(codes, tuple(tuple(x) for x in distinct))
    return column_to_vec(col, t.kind)


def _list_codes(col: pd.Series) -> tuple[np.ndarray, list[list[Any]]]:
    """Codes into the distinct lists of a list column (-1 for missing); few distinct lists, many rows."""
    arr = pa.array(col, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_list(arr.type) and not pa.types.is_large_list(arr.type):
        arr = arr.cast(pa.list_(pa.string()))  # an all-missing column comes without its item type
    # one text per list (items are short values or rule ids: the unit separator never occurs in them)
    joined = pc.binary_join(arr.cast(pa.list_(pa.string())), "\x1f")
    lengths = pc.list_value_length(arr).cast(pa.string())
    codes, _ = pd.factorize(pd.Series(pc.binary_join_element_wise(lengths, joined, ":")), use_na_sentinel=True)
    codes = codes.astype(np.int64)
    present = np.flatnonzero(codes >= 0)
    _, first = np.unique(codes[present], return_index=True)
    return codes, arr.take(pa.array(present[first])).to_pylist()


def render_reasons(pl: Plan, entity: str, rows: pd.DataFrame) -> dict[str, pa.Array]:
    """The because text of every decision for rows read from the history (one period, one policy set):
    the deciding rules' texts filled with the stored values, exactly as that run wrote them."""
    from ..batch.explain import because_column

    ep = pl.entity(entity)
    ns = pl.checked.namespaces[entity]
    n = len(rows)
    env = FactEnv({}, {}, n, {p.name: p.value for p in ep.params})
    for name, sym in ns.symbols.items():
        if name in rows.columns and sym.kind != "param":
            env[name] = stored_vector(rows[name].reset_index(drop=True), sym.type)
    conflicts = {i: json.loads(x) for i, x in enumerate(rows[CONFLICTS]) if isinstance(x, str)} \
        if CONFLICTS in rows else {}
    out: dict[str, pa.Array] = {}
    for d in ep.decisions:
        rule_col = f"{d.name}_rule"
        if rule_col not in rows:
            continue
        res = _stored_result(d, rows, conflicts)
        out[d.name] = because_column(res, env)
    return out


def _stored_result(d: Decision, rows: pd.DataFrame, conflicts: dict[int, dict[str, list[str]]]) -> DecisionResult:
    """What `because_column` needs of a decision, rebuilt from its stored rule ids and quota ranks."""
    rules = d.all_rules
    ids = {r.id: i for i, r in enumerate(rules)}
    n = len(rows)
    given = rows[f"{d.name}_rule"].reset_index(drop=True)
    res = DecisionResult(d, rules, np.full(n, NO_RULE, dtype=np.int64), [])
    if d.hit == "collect" or d.gives_list:
        codes, lists = _list_codes(given)
        patterns = np.zeros((len(lists) + 1, len(rules)), dtype=bool)  # the last: no list stored
        for code, matched in enumerate(lists):
            patterns[code, [ids[i] for i in matched if i in ids]] = True
        res.collected = patterns[np.where(codes >= 0, codes, len(lists))]
        return res
    res.rule_index = pd.Index([r.id for r in rules]).get_indexer(given.astype(object)).astype(np.int64)
    res.rule_index[res.rule_index < 0] = NO_RULE
    pairs = np.full((n, 2), NO_RULE, dtype=np.int64)
    for row, found in conflicts.items():
        if d.name in found:
            a, b = found[d.name]
            res.rule_index[row] = CONFLICT
            pairs[row] = (ids.get(a, NO_RULE), ids.get(b, NO_RULE))
    if (res.rule_index == CONFLICT).any():
        res.conflict_with = pairs
    if _has_quota(d) and f"{d.name}_quota_rank" in rows:
        qvars: dict[str, Vec] = {
            name: rows[f"{d.name}_{name}"].to_numpy(dtype=float, na_value=np.nan)
            for name in ("quota_rank", "quota_size", "quota_limit")}
        ties = rows[f"{d.name}_quota_tie"].reset_index(drop=True)
        qvars["quota_tie"] = column_to_vec(ties.where(ties.notna(), ""), "string")
        else_pos = len(d.rules)
        for i, r in enumerate(d.rules):
            if r.quota is not None:
                res.quota_vars[i] = qvars
                res.quota_vars[else_pos] = qvars
                else_pos += 1
    return res


# -- runs -------------------------------------------------------------------------------------------

@dataclass
class RunInfo:
    """One recorded period."""

    period: str
    recorded_at: str
    policy_hash: str
    kam_version: str
    inputs: list[dict[str, Any]]
    options: dict[str, Any]
    entities: dict[str, dict[str, Any]]
    policies: list[list[str]] = field(default_factory=list)  # [file, text] of every policy file

    def to_dict(self) -> dict[str, Any]:
        return {"period": self.period, "recorded_at": self.recorded_at, "policy_hash": self.policy_hash,
                "kam_version": self.kam_version, "inputs": self.inputs, "options": self.options,
                "entities": {e: {"rows": s["rows"]} for e, s in self.entities.items()},
                "policies": [f for f, _ in self.policies]}


def needs_past(pl: Plan) -> bool:
    return any(ep.past for ep in pl.entities)


class History:
    """One history file, open for reading (queries) or for one run to record a period."""

    def __init__(self, con: "duckdb.DuckDBPyConnection", path: Path, writable: bool):
        self.con = con
        self.path = path
        self.writable = writable
        self._recording = False
        self._plans: dict[str, Plan] = {}
        self._hashes: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
        self._hashing = threading.Lock()  # reading the past (main thread) and recording (its own) both ask
        self._writer: "duckdb.DuckDBPyConnection | None" = None
        self._runs: list[RunInfo] | None = None
        self.notes: list[str] = []  # what opening it settled (a period of a run that was stopped)

    @property
    def w(self) -> "duckdb.DuckDBPyConnection":
        """The connection a run records with, in a thread of its own: its transaction stays apart from
        the reads (of earlier periods) on the main connection."""
        if self._writer is None:
            self._writer = self.con.cursor()
            self._writer.execute("SET preserve_insertion_order = false")
        return self._writer

    @classmethod
    def open(cls, path: Path, write: bool = False) -> "History":
        """Open (and, for writing, create) a history. Only one process may write at a time. A period
        left half-done by a run that was stopped is settled first (see `_settle`)."""
        import duckdb

        path = Path(path)
        if not write and not path.exists():
            raise _problem(f"there is no history at {path}",
                           "record one with `kam run --history FILE --period LABEL`")
        if path.is_dir():
            raise _problem(f"{path} is a folder, not a history file", "pass the path of a .duckdb file")
        if write:
            _check_writable(path)
        _check_not_other_database(path)
        threads_before = _threads()
        try:
            # never fetch or load an extension: a file that is not a DuckDB database is refused, not
            # handed to a reader downloaded from the internet
            con = duckdb.connect(str(path), read_only=not write,
                                 config={"autoload_known_extensions": False, "autoinstall_known_extensions": False})
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise _problem(f"the history {path} is in use by another kam process",
                               "wait for the other run to finish: a history is written by one run at a time") from None
            raise _problem(f"cannot open the history {path}: {str(exc).splitlines()[0]}") from None
        except duckdb.Error as exc:
            raise _problem(f"{path} is not a kam history (DuckDB cannot read it: {str(exc).splitlines()[0]})",
                           "pass the file written by `kam run --history`") from None
        if write:
            # rows of a period need no order: DuckDB then writes them straight into the file, compressed,
            # in parallel, instead of through its write-ahead log (measured: the close after a
            # million-row period drops from 2.4 s to 0.06 s, and the file to half its size)
            con.execute("SET preserve_insertion_order = false")
            # a period fills whole row groups but its last: merging those small last ones into
            # neighbours at every close cost 0.27 s per run and saves a few kilobytes (a replaced
            # period's deleted rows are still reclaimed: `begin` turns the merging back on then)
            con.execute("SET max_vacuum_tasks = 0")
            # DuckDB's worker threads: those that appeared meanwhile, but for Python's own (a thread pool
            # of the run started by then keeps its priority)
            _yield_to_run(_threads() - threads_before - {t.native_id for t in threading.enumerate()})
        h = cls(con, path, write)
        try:
            h._check_format()
            if write:
                h._settle()
            elif META in h._tables() and h._pending() is not None:
                con.close()
                return cls._settled_then_read(path)
        except BaseException:
            con.close()
            raise
        return h

    @classmethod
    def _settled_then_read(cls, path: Path) -> "History":
        """A history opened for reading that holds a period half-done by a stopped run: settled with a
        writable connection first, then opened for reading."""
        try:
            with cls.open(path, write=True) as w:
                notes = w.notes
        except InputError as exc:
            raise _problem(f"the history {path} holds a period that a stopped run left half-done, and kam cannot "
                           f"write to it to settle it ({exc.problems[0].message})",
                           "make the file and its folder writable and run the command again") from None
        h = cls.open(path)
        h.notes = notes
        return h

    def close(self) -> None:
        if self._recording:
            self.rollback()
        if self._writer is not None:
            self._writer.close()
        self.con.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _tables(self, con: "duckdb.DuckDBPyConnection | None" = None) -> set[str]:
        return {r[0] for r in (con or self.con).execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}

    def _check_format(self) -> None:
        tables = self._tables()
        if META not in tables:
            if tables:
                raise _problem(f"{self.path} is a DuckDB file, but not a kam history",
                               "pass another file, or a new name to start a history")
            if self.writable:
                self.con.execute(f"CREATE TABLE {META} (key VARCHAR PRIMARY KEY, value VARCHAR)")
                self.con.execute(f"INSERT INTO {META} VALUES ('format', ?), ('created_by', ?)",
                                 [FORMAT, f"kam {__version__}"])
                self.con.execute(f"""CREATE TABLE {RUNS} (
                    period VARCHAR PRIMARY KEY, recorded_at VARCHAR, policy_hash VARCHAR, kam_version VARCHAR,
                    inputs VARCHAR, options VARCHAR, entities VARCHAR, policies VARCHAR)""")
            return
        # fetchall: DuckDB 2 keeps a result open after a fetchone and refuses the next query
        rows = self.con.execute(f"SELECT value FROM {META} WHERE key = 'format'").fetchall()
        found = rows[0] if rows else None
        if found is None or found[0] != FORMAT:
            raise _problem(f"the history {self.path} was written in format {found[0] if found else '?'}; "
                           f"this kam reads format {FORMAT}", "use the kam version that wrote it")

    # -- reading ------------------------------------------------------------------------------------
    def runs(self) -> list[RunInfo]:
        """Every recorded period, in period order (read once; a commit reads them again)."""
        if self._runs is None:
            rows = self.con.execute(f"SELECT period, recorded_at, policy_hash, kam_version, inputs, options, "
                                    f"entities, policies FROM {RUNS} ORDER BY period").fetchall() \
                if RUNS in self._tables() else []
            self._runs = [RunInfo(p, t, h, v, json.loads(i), json.loads(o), json.loads(e), json.loads(pol))
                          for p, t, h, v, i, o, e, pol in rows]
        return self._runs

    def run(self, period: str) -> RunInfo | None:
        return next((r for r in self.runs() if r.period == period), None)

    def periods(self) -> list[str]:
        return [r.period for r in self.runs()]

    def need_period(self, period: str) -> RunInfo:
        """The run of a period, or an error naming the periods there are."""
        found = self.run(period)
        if found is None:
            known = self.periods()
            raise _problem(f"the history {self.path} has no period `{period}`",
                           did_you_mean(period, known) or (f"recorded periods: {', '.join(known)}" if known
                                                          else "nothing is recorded yet"))
        return found

    def before(self, period: str | None, back: int) -> list[str]:
        """Up to `back` recorded periods before `period` (as text; None: after the last), most recent first."""
        return [p for p in reversed(self.periods()) if period is None or p < period][:back]

    def _arrow(self, sql: str, params: list[Any]) -> pa.Table:
        """A query's result as an Arrow table (the method's name differs between DuckDB versions)."""
        rel = self.con.sql(sql, params=params)
        method = getattr(rel, "to_arrow_table", None)
        out = method() if method is not None else rel.arrow()
        return out.read_all() if isinstance(out, pa.RecordBatchReader) else out

    def _columns_of_w(self, table: str) -> dict[str, str]:
        return self._columns_of(table, self.w)

    def _columns_of(self, table: str, con: "duckdb.DuckDBPyConnection | None" = None) -> dict[str, str]:
        rows = (con or self.con).execute("SELECT column_name, data_type FROM information_schema.columns "
                                "WHERE table_schema = 'main' AND table_name = ? ORDER BY ordinal_position",
                                [table]).fetchall()
        return {name: kind for name, kind in rows}

    def columns(self, entity: str) -> dict[str, str]:
        """The columns of an entity's history table and their SQL types (none if there is no table)."""
        return self._columns_of(table_name(entity))

    def entities(self) -> list[str]:
        found: dict[str, None] = {}
        for r in self.runs():
            found.update(dict.fromkeys(r.entities))
        return list(found)

    def plan_of(self, run: RunInfo) -> Plan:
        """The policies of a recorded period, compiled again from the files kept with it."""
        if run.policy_hash not in self._plans:
            from ..language.compile import compile_docs
            from ..language.load import load_text

            docs = [load_text(text, file) for file, text in run.policies]
            self._plans[run.policy_hash] = compile_docs(docs, f"{self.path} ({run.period})")
        return self._plans[run.policy_hash]

    def select(self, entity: str, where: str, params: list[Any], columns: list[str] | None = None) -> pd.DataFrame:
        """Rows of an entity's history (the columns that exist), in period order."""
        have = self.columns(entity)
        if not have:
            return pd.DataFrame()
        cols = [c for c in (columns or list(have)) if c in have]
        if PERIOD not in cols:
            cols.insert(0, PERIOD)
        table = self._arrow(f"SELECT {', '.join(map(quote, cols))} FROM {quote(table_name(entity))} "
                            f"WHERE {where} ORDER BY {PERIOD}", params)
        return table.to_pandas(types_mapper=_pandas_type)

    def find(self, entity: str, key: str) -> list[tuple[str, int]]:
        """(period, row) of every recorded row of one entity, in period order: the rows whose id hashes
        alike (from the sorted `<entity>_keys`, one block per period), then only those whose id is it."""
        if keys_name(entity) not in self._tables():
            return []
        candidates = self.con.execute(f"SELECT {PERIOD}, {ROW} FROM {quote(keys_name(entity))} WHERE {HASH} = ?",
                                      [int(key_hashes([key])[0])]).fetchall()
        if not candidates:
            return []
        where = " OR ".join([f"({PERIOD} = ? AND {ROW} = ?)"] * len(candidates))
        # the id's column as each period named it (policies may rename it)
        id_columns = ", ".join(dict.fromkeys(quote(r.entities[entity]["key"]) for r in self.runs()
                                             if entity in r.entities))
        if not id_columns:
            return []
        return [(p, int(r)) for p, r in self.con.execute(
            f"SELECT {PERIOD}, {ROW} FROM {quote(table_name(entity))} WHERE ({where}) AND ? IN ({id_columns}) "
            f"ORDER BY {PERIOD}", [x for pair in candidates for x in pair] + [key]).fetchall()]

    def entity_path(self, entity: str, key: str, found: list[tuple[str, int]] | None = None) -> pd.DataFrame:
        """Every recorded row of one entity, in period order: found by id in the sorted `<entity>_keys`
        (or given, as `find` returned them), then read by position, so one block of rows per period is
        read instead of every id."""
        found = self.find(entity, key) if found is None else found
        if not found:
            return self.select(entity, "false", [])
        where = " OR ".join([f"({PERIOD} = ? AND {ROW} = ?)"] * len(found))
        return self.select(entity, where, [x for pair in found for x in pair])

    def reasons(self, entity: str, rows: pd.DataFrame) -> pd.DataFrame:
        """The because texts of rows read from this history, per decision (`<decision>_because`),
        rendered with the policies of each row's period."""
        pieces = []
        # periods recorded with the same policies are rendered together
        hashes = {r.period: r.policy_hash for r in self.runs()}
        for period in rows[PERIOD].unique():
            if str(period) not in hashes:
                self.need_period(str(period))  # says which periods there are
        for policy_hash, part in rows.groupby(rows[PERIOD].map(hashes), sort=False):
            run = next(r for r in self.runs() if r.policy_hash == policy_hash)
            pl = self.plan_of(run)
            if entity not in [ep.entity for ep in pl.entities]:
                continue
            texts = render_reasons(pl, entity, part.reset_index(drop=True))
            pieces.append(pd.DataFrame({f"{name}_because": pd.arrays.ArrowStringArray(t) if len(t) else
                                        pd.array([], dtype="string") for name, t in texts.items()},
                                       index=part.index))
        return pd.concat(pieces).reindex(rows.index) if pieces else pd.DataFrame(index=rows.index)

    def load_past(self, pl: Plan, period: str | None, keys: dict[str, Any]) -> Past:
        """The values `previous()` reads for a run of `period`: per entity and `previous(x, k)`, the value
        of x in the k-th recorded period before it, row by row (missing where the entity was not there)."""
        deepest = max((r.back for ep in pl.entities for r in ep.past), default=0)
        past = Past(periods=self.before(period, deepest), history=str(self.path))
        if not deepest:
            return past
        if not past.periods:
            past.notes.append(f"no period before {period or 'this run'} in the history: previous() is missing for "
                              "everyone")
        for ep in pl.entities:
            if ep.past:
                past.frames[ep.entity] = self._past_columns(ep, past, keys[ep.entity])
        return past

    def past_by_key(self, pl: Plan, entity: str, period: str | None = None) -> tuple[Past, pd.DataFrame]:
        """For `kam stream`: the earlier values of every entity the history knows, indexed by key (an
        entity it does not know is new: its previous values are missing)."""
        ep = pl.entity(entity)
        deepest = max((r.back for r in ep.past), default=0)
        past = Past(periods=self.before(period, deepest), history=str(self.path))
        if not ep.past or not past.periods or ep.key not in self.columns(entity):
            if ep.past and not past.periods:
                past.notes.append("no earlier period in the history: previous() is missing for everyone")
            return past, pd.DataFrame(index=pd.Index([], dtype=object))
        keys = self._arrow(f"SELECT DISTINCT {quote(ep.key)} AS k FROM {quote(table_name(entity))} "
                           f"WHERE {PERIOD} IN (SELECT unnest(?))", [past.periods]).column("k")
        key_list = keys.to_pylist()
        columns = self._past_columns(ep, past, pd.Series(key_list, dtype=object))
        frame = pd.DataFrame({k: v.to_numpy() if hasattr(v, "to_numpy") else v for k, v in columns.items()},
                             index=pd.Index(key_list, dtype=object))
        return past, frame

    def _past_columns(self, ep: EntityPlan, past: Past, keys: Any) -> dict[str, pd.Series]:
        out: dict[str, pd.Series] = {}
        have = self.columns(ep.entity)
        current = pa.array(keys, type=pa.string(), from_pandas=True)
        current = current.combine_chunks() if isinstance(current, pa.ChunkedArray) else current
        by_back: dict[int, list] = {}
        for r in ep.past:
            by_back.setdefault(r.back, []).append(r)
        for back, reads in sorted(by_back.items()):
            if back > len(past.periods):
                if past.periods:
                    past.notes.append(f"{', '.join(f'previous({r.name}, {back})' for r in reads)} looks {back} "
                                      f"periods back, but the history has only {len(past.periods)} before "
                                      "this one: missing for everyone")
                continue
            period = past.periods[back - 1]
            kept = [r for r in reads if r.name in have]
            for r in reads:
                if r.name not in have:
                    past.notes.append(f"`{r.name}` is not in the {ep.entity} history of {period} (the policies "
                                      f"then had no such name): previous({r.name}) is missing for everyone")
            if not kept or ep.key not in have:
                continue
            select = ", ".join(f"TRY_CAST({quote(r.name)} AS {_SQL_TYPES[r.kind]}) AS {quote(r.key)}" for r in kept)
            table = self._arrow(f"SELECT {ROW}, {quote(ep.key)} AS kam_id, {select} FROM "
                                f"{quote(table_name(ep.entity))} WHERE {PERIOD} = ?", [period])
            pos = self._match(ep.entity, period, current, table)
            if back == 1:
                if not table.num_rows:
                    past.notes.append(f"no {ep.entity} is recorded in {period}: previous() is missing for every "
                                      f"{ep.entity}")
                elif pos.null_count > current.null_count:
                    new = pos.null_count - current.null_count
                    past.notes.append(f"{new:,} of {len(current):,} {ep.entity}s were not there in {period}: "
                                      "their previous values are missing (they count as new)")
            for r in kept:
                col = table.column(r.key).combine_chunks().take(pos)
                out[r.key] = _series(col, r.kind)
        return out

    def _match(self, entity: str, period: str, current: pa.Array, table: pa.Table) -> pa.Array:
        """For each current id, its row in `table` (one period's rows, in any order), null where it was
        not there. Through the sorted id hashes of `<entity>_keys`: a merge of two sorted arrays of
        numbers, where a hash table of a million ids cost 0.34 s (the ids are compared afterwards)."""
        ids = table.column("kam_id").combine_chunks()
        keys = self._arrow(f"SELECT {HASH}, {ROW} FROM {quote(keys_name(entity))} WHERE {PERIOD} = ? ORDER BY {HASH}",
                           [period]) if keys_name(entity) in self._tables() else None
        if keys is None or keys.num_rows != table.num_rows or not len(current):
            return pc.index_in(current, value_set=ids)
        before = keys.column(HASH).to_numpy()
        if before.size > 1 and not np.all(before[1:] != before[:-1]):
            return pc.index_in(current, value_set=ids)  # two ids share a hash: a hash cannot tell them apart
        hashes, order = self.hashed(entity, current)
        at = np.minimum(np.searchsorted(before, hashes[order]), max(before.size - 1, 0))
        found = np.full(len(current), -1, dtype=np.int64)
        if before.size:
            hit = before[at] == hashes[order]
            found[order] = np.where(hit, keys.column(ROW).to_numpy()[at], -1)
        # the rows of `table` come in storage order: from a row number to its place in `table`
        place = np.empty(table.num_rows, dtype=np.int64)
        place[table.column(ROW).to_numpy()] = np.arange(table.num_rows)
        pos = pa.array(np.where(found >= 0, place[np.maximum(found, 0)], 0), mask=found < 0)
        same = pc.equal(ids.take(pos), current).fill_null(False)
        return pc.if_else(same, pos, pa.scalar(None, pa.int64()))

    def hashed(self, entity: str, ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """The `key_hashes` of an entity's ids and the order that sorts them, worked out once per run
        (reading the past and recording the period both need them)."""
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        with self._hashing:
            found = self._hashes.get(entity)
            if found is None or len(found[0]) != len(ids) or not found[0].equals(ids):
                hashes = key_hashes(ids)
                found = self._hashes[entity] = (ids, hashes, np.argsort(hashes))
        return found[1], found[2]

    # -- recording ----------------------------------------------------------------------------------
    def check_new(self, period: str, replace: bool) -> None:
        """Before a run reads any fact: refuse a period that is recorded already, unless replaced."""
        if self.run(period) is not None and not replace:
            raise _problem(f"period {period} is already in the history {self.path}",
                           "pass --replace to record it again (its old decisions are dropped), or another --period")

    def label_for(self, period: str) -> str:
        """What a run's rows of `period` are recorded under until its output set is in place: the period
        itself, or, where the run replaces a recorded period, a label no period can have (`~2026-11`),
        so that the old rows stay until the new set is swapped in."""
        return f"~{period}" if self.run(period) is not None else period

    def begin(self, period: str, label: str | None = None, replace: bool = False) -> None:
        """Start the transaction of one period, recorded under `label` (see `label_for`)."""
        assert self.writable, "open the history with write=True"
        self.w.execute("BEGIN TRANSACTION")
        self._recording = True
        try:
            recorded = self.w.execute(f"SELECT count(*) FROM {RUNS} WHERE period = ?", [period]).fetchall()[0][0]
            if recorded and not replace:
                raise _problem(f"period {period} is already in the history {self.path}",
                               "pass --replace to record it again (its old decisions are dropped)")
            if (label or period) == period and recorded:
                self._drop(period)
        except BaseException:
            self.rollback()
            raise

    def _drop(self, label: str) -> None:
        """Delete every row recorded under a label (inside a transaction)."""
        self.w.execute(f"DELETE FROM {RUNS} WHERE period = ?", [label])
        self.w.execute("RESET max_vacuum_tasks")  # the deleted rows' space is reclaimed
        for t in self._tables(self.w):
            if t.endswith(("_history", "_keys")):
                self.w.execute(f"DELETE FROM {quote(t)} WHERE {PERIOD} = ?", [label])

    def drop_period(self, period: str) -> None:
        """Take a recorded period out of the history."""
        self.begin(period, replace=True)
        self.commit()

    def insert_entity(self, pl: Plan, r: EntityResult, period: str) -> None:
        """One entity's rows of the period (inside the transaction `begin` opened), and the hashes of its
        ids, sorted, into `<entity>_keys`: a lookup by id then reads one block per period instead of
        every id (24 periods: 200 ms unsorted, a few ms sorted), and previous() aligns the periods by
        merging sorted numbers. (Sorting the whole rows cost a million-row period 1 s of CPU, sorting
        the ids 0.35 s, sorting their hashes 0.1 s.) `period` is the label the rows are recorded under."""
        self._insert(table_name(r.entity), entity_columns(pl, r.plan), values_table(pl, r), period,
                     keys=r.plan.key)

    def insert_run(self, pl: Plan, results: dict[str, EntityResult], period: str, inputs: list[dict[str, Any]],
                   options: dict[str, Any]) -> None:
        """The run's own row; written last, so a period is listed only once all its rows are in."""
        from ..batch.write import fault_point

        ps = pl.checked.policy_set
        schema = {e: entity_schema(pl, r.plan, r.ctx.n) for e, r in results.items()}
        policies = [[Path(file).name, text] for file, text in ps.sources]
        self.w.execute(f"INSERT INTO {RUNS} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            period, datetime.now(timezone.utc).isoformat(timespec="seconds"), ps.hash, __version__,
            json.dumps(inputs, ensure_ascii=False), json.dumps(options, ensure_ascii=False, default=str),
            json.dumps(schema, ensure_ascii=False), json.dumps(policies, ensure_ascii=False)])
        fault_point("history-recorded")

    def record(self, result: "RunResult", period: str, inputs: list[dict[str, Any]], options: dict[str, Any],
               replace: bool = False) -> None:
        """Write one period in a transaction that `commit` ends (and `rollback` or a crash undoes)."""
        self.begin(period, replace=replace)
        try:
            for r in result.results.values():
                self.insert_entity(result.plan, r, period)
            self.insert_run(result.plan, result.results, period, inputs, options)
        except BaseException:
            self.rollback()
            raise

    def _insert(self, name: str, columns: list[Column], table: pa.Table, period: str, keys: str = "") -> None:
        have = self._columns_of_w(name)
        if not have:
            defs = ", ".join([f"{PERIOD} VARCHAR NOT NULL"] + [f"{quote(c.name)} {c.sql}" for c in columns])
            self.w.execute(f"CREATE TABLE {quote(name)} ({defs})")
        else:
            for c in columns:
                if c.name not in have:
                    # a name the policies did not have before: earlier periods hold nothing in it
                    self.w.execute(f"ALTER TABLE {quote(name)} ADD COLUMN {quote(c.name)} {c.sql}")
                elif have[c.name] not in (c.sql, "VARCHAR"):
                    # its type changed with the policies: earlier values are kept as text
                    self.w.execute(f"ALTER TABLE {quote(name)} ALTER {quote(c.name)} TYPE VARCHAR")
        have = self._columns_of_w(name)
        self.w.register("kam_incoming", table)
        try:
            cols = ", ".join(quote(c.name) for c in columns)
            values = ", ".join(quote(c.name) if have[c.name] == c.sql else f"CAST({quote(c.name)} AS VARCHAR)"
                               for c in columns)
            self.w.execute(f"INSERT INTO {quote(name)} ({PERIOD}, {cols}) SELECT ?, {values} FROM kam_incoming",
                           [period])
        finally:
            self.w.unregister("kam_incoming")
        if keys:
            hashes, order = self.hashed(name[: -len("_history")], table[keys])
            self.w.register("kam_incoming", pa.table({HASH: hashes[order], ROW: order.astype(np.int32)}))
            try:
                index = quote(name[: -len("_history")] + "_keys")
                self.w.execute(f"CREATE TABLE IF NOT EXISTS {index} ({PERIOD} VARCHAR NOT NULL, {HASH} UBIGINT, "
                               f"{ROW} INTEGER)")
                self.w.execute(f"INSERT INTO {index} SELECT ?, {HASH}, {ROW} FROM kam_incoming", [period])
            finally:
                self.w.unregister("kam_incoming")

    def commit(self) -> None:
        if self._recording:
            self.w.execute("COMMIT")
            self._recording = False
            self._runs = None

    def rollback(self) -> None:
        if self._recording:
            self._recording = False
            try:
                self.w.execute("ROLLBACK")
            except Exception:  # the transaction may already be gone with the error that brought us here
                pass

    # -- a period and its output set, as one commit ---------------------------------------------------
    # A run's period and its output folder are two stores; a reader must never find one without the
    # other. The period is committed first, with a note of the output set it belongs to (the folder,
    # and the hash of the manifest that lists the set's files); then the folder is swapped in; then the
    # note is removed. A run killed in between leaves the note, and whoever opens the history next
    # settles it: the folder holds that manifest -> the swap happened, the period stays; it does not ->
    # the period is taken out again, and a replaced period gets its old rows back.

    def commit_pending(self, period: str, label: str, out: Path, manifest_sha256: str) -> None:
        """End the period's transaction with the note of the output set it belongs to."""
        note = {"period": period, "label": label, "out": str(out), "manifest_sha256": manifest_sha256}
        self.w.execute(f"INSERT INTO {META} VALUES ('{PENDING}', ?)", [json.dumps(note, ensure_ascii=False)])
        self.commit()

    def _pending(self, con: "duckdb.DuckDBPyConnection | None" = None) -> dict[str, str] | None:
        rows = (con or self.con).execute(f"SELECT value FROM {META} WHERE key = '{PENDING}'").fetchall()
        return json.loads(rows[0][0]) if rows else None

    def finish_pending(self) -> None:
        """The output set is in place: the period recorded under a temporary label takes its name
        (dropping the rows it replaces) and the note goes."""
        note = self._pending(self.w)
        if note is None:
            return
        self.w.execute("BEGIN TRANSACTION")
        self._recording = True
        period, label = note["period"], note["label"]
        if label != period:
            self._drop(period)
            for t in self._tables(self.w):
                if t.endswith(("_history", "_keys")):
                    self.w.execute(f"UPDATE {quote(t)} SET {PERIOD} = ? WHERE {PERIOD} = ?", [period, label])
            self.w.execute(f"UPDATE {RUNS} SET period = ? WHERE period = ?", [period, label])
        self.w.execute(f"DELETE FROM {META} WHERE key = '{PENDING}'")
        self.commit()

    def undo_pending(self) -> None:
        """The output set never came into place: the period's rows go (a replaced period keeps its own)."""
        note = self._pending(self.w)
        if note is None:
            return
        self.w.execute("BEGIN TRANSACTION")
        self._recording = True
        self._drop(note["label"])
        self.w.execute(f"DELETE FROM {META} WHERE key = '{PENDING}'")
        self.commit()

    def _settle(self) -> None:
        """Settle the period of a run killed between recording it and swapping its output set in."""
        note = self._pending()
        if note is None:
            return
        manifest = Path(note["out"]) / "manifest.json"
        try:
            swapped = file_sha256(manifest) == note["manifest_sha256"]
        except OSError:
            swapped = False
        if swapped:
            self.finish_pending()
            self.notes.append(f"the run that recorded period {note['period']} was stopped after swapping in its "
                              f"output set ({note['out']}): the period is kept")
        else:
            self.undo_pending()
            self.notes.append(f"the run that recorded period {note['period']} was stopped before its output set "
                              f"was swapped in ({note['out']} holds the set before it): the period is taken out "
                              "of the history again" + (" and the period it was to replace is kept"
                                                         if note["label"] != note["period"] else ""))


def _pandas_type(t: pa.DataType) -> Any:
    """How history columns come to pandas: yes/no with missing values, lists kept as Arrow lists."""
    if t == pa.bool_():
        return pd.BooleanDtype()
    if pa.types.is_list(t):
        return pd.ArrowDtype(t)
    return None


def _series(col: pa.Array, kind: str) -> pd.Series:
    """A past column as the facts reader would give it."""
    if kind == "number":
        return pd.Series(col.to_numpy(zero_copy_only=False), dtype=float)
    if kind == "boolean":
        return pd.Series(col.to_pandas(), dtype="boolean")
    return pd.Series(pd.arrays.ArrowStringArray(col.cast(pa.large_string())) if len(col) else
                     pd.array([], dtype="string"))


def _check_writable(path: Path) -> None:
    """Before a run reads any fact: the history and its folder can be written (DuckDB writes a
    journal, `<name>.wal`, beside the file), or a message now instead of a failure after the work."""
    folder = path.absolute().parent
    if not folder.is_dir():
        raise _problem(f"the folder of {path} does not exist", "create it first")
    if path.exists() and not os.access(path, os.W_OK):
        raise _problem(f"the history {path} is read-only: kam cannot record a period in it",
                       "make it writable (chmod u+w), or pass another --history")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _problem(f"cannot write the history {path}: its folder {folder} is read-only (DuckDB keeps a "
                       f"journal, {path.name}.wal, beside the file while it writes)",
                       "make the folder writable, or keep the history in a folder you can write to")


_OTHER_DATABASES = {b"SQLite format 3\x00": "a SQLite database", b"PAR1": "a Parquet file", b"PK\x03\x04": "a zip file"}


def _check_not_other_database(path: Path) -> None:
    """A file that is plainly something else is named as such (DuckDB would try to load a reader for it)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(16)
    except OSError:
        return
    for magic, what in _OTHER_DATABASES.items():
        if head.startswith(magic):
            raise _problem(f"{path} is {what}, not a DuckDB history file", "pass the file written by "
                           "`kam run --history`, or a new name to start a history")


def _threads() -> set[int]:
    """The ids of this process's threads (none where the system does not list them)."""
    try:
        return {int(t) for t in os.listdir("/proc/self/task")}
    except OSError:
        return set()


def _yield_to_run(threads: set[int]) -> None:
    """Lower the scheduling priority of the threads that record a history. The recording runs beside
    the run (on a 2-core machine the run itself keeps about one core busy) and only has to be done by
    the end: at equal priority it took half the CPU from the texts and files and slowed them by 60%;
    at low priority it fills the idle core instead. (Linux sets priorities per thread; elsewhere this
    does nothing.)"""
    for tid in threads:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 10)
        except (OSError, AttributeError):
            pass


def settle(path: Path) -> None:
    """Settle a history that a killed run was recording into (opening it for writing does)."""
    if Path(path).exists():
        History.open(path, write=True).close()


class Recorder:
    """Records one run's period while the run goes on: each entity's rows as soon as it is decided,
    in one background thread (DuckDB sorts, compresses and writes while the engine decides the next
    entity, renders the texts and writes the files), all in one transaction that `commit` ends right
    before the output folder is swapped in, with a note of that output set that `finish` removes
    once it is in place (see `History._settle`)."""

    def __init__(self, history: History, period: str, options: dict[str, Any], replace: bool = False):
        self.history = history
        self.period = period
        self.label = history.label_for(period)
        self.options = options
        self.replace = replace
        self.past = Past()
        self.seconds = 0.0  # time the recording thread was busy
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._rows: dict[str, int] = {}
        self._committed = False
        _ = history.w  # the recording connection is made here, before its thread starts (DuckDB's own rule)
        self._thread = threading.Thread(target=self._work, name="kam-history", daemon=True)
        self._thread.start()
        self._queue.put(lambda: history.begin(period, self.label, replace))

    def _work(self) -> None:
        _yield_to_run({threading.get_native_id()})
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue  # after a failure the rest is skipped; wait() reports it
            t0 = time.perf_counter()
            try:
                job()
            except BaseException as exc:  # handed to the main thread by wait()
                self._error = exc
                self.history.rollback()
            finally:
                self.seconds = round(self.seconds + time.perf_counter() - t0, 4)

    def decided(self, pl: Plan, r: EntityResult) -> None:
        """An entity is decided: its rows can be written."""
        self._rows[r.entity] = r.ctx.n
        self._queue.put(lambda: self.history.insert_entity(pl, r, self.label))

    def finished(self, result: "RunResult", inputs: list[dict[str, Any]]) -> None:
        """Every entity is decided: the run's own row closes the period."""
        self.past = result.past
        self._queue.put(lambda: self.history.insert_run(result.plan, result.results, self.label, inputs,
                                                        self.options))

    def wait(self, raise_error: bool = True) -> None:
        """Wait until everything submitted is written; raise the recording's error (once) unless told not to."""
        import duckdb

        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if raise_error and self._error is not None:
            error, self._error = self._error, None
            if isinstance(error, duckdb.Error):
                raise _problem(f"cannot record period {self.period} in the history {self.history.path}: "
                               f"{str(error).splitlines()[0]}") from error
            raise error

    def commit(self, out: Path, manifest_sha256: str) -> None:
        """Everything is staged: commit the period with the note of its output set (folder and manifest)."""
        from ..batch.write import fault_point

        self.wait()
        self.history.commit_pending(self.period, self.label, out, manifest_sha256)
        self._committed = True
        fault_point("history-committed")

    def finish(self) -> None:
        """The output set is in place: the period is recorded for good."""
        self.history.finish_pending()
        self._committed = False

    def abandon(self) -> None:
        """The run failed: nothing of the period stays, unless its output set is in place already."""
        self.wait(raise_error=False)
        if self._committed:
            self.history._settle()
            self._committed = False
        else:
            self.history.rollback()

    def summary(self) -> dict[str, Any]:
        """What the manifest says of the history."""
        return {"file": str(self.history.path), "period": self.period, "replaced": self.replace,
                "previous_periods": self.past.periods, "notes": self.past.notes, "rows": self._rows}
