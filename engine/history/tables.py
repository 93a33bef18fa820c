"""What a recorded period holds: the columns of `<entity>_history` (facts, joined values, features,
decided values, rule ids, quota ranks, conflicts) made from a run's results, and a period's decisions
and because texts made again from those columns with the policies of that period."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..batch.evaluate import CONFLICT, NO_RULE, DecisionResult, EntityResult, FactEnv, ListVec, Vec, \
    collected, column_to_vec, vector_arrow
from ..language.errors import InputError, Location, Problem
from ..language.model import Decision
from ..language.plan import DeriveStep, EntityPlan, Plan
from ..language.types import Type

FORMAT = "2"  # 2: `<entity>_keys` holds a hash of each id (1: the ids themselves)
RUNS = "kam_runs"
META = "kam_meta"
PERIOD = "kam_period"
ROW = "kam_row"  # the row's place in its period, as the facts listed it
HASH = "kam_hash"  # `key_hashes` of an id: what `<entity>_keys` is sorted by
PENDING = "pending"  # kam_meta: a period recorded whose output set is not yet known to be in place
CONFLICTS = "kam_conflicts"  # per row, the two rules of each decision that conflicted (JSON), else null
QUOTA_COLUMNS = ("quota_rank", "quota_size", "quota_limit", "quota_tie")
_SQL_TYPES = {"number": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN"}


def history_problem(message: str, hint: str = "", where: str = "command line", code: str = "history") -> InputError:
    """A problem with a history (exit 2)."""
    return InputError(Problem(code, message, Location(where), hint))


def table_name(entity: str) -> str:
    """An entity's history: its facts and what was decided, one row per entity and period."""
    return f"{entity}_history"


def keys_name(entity: str) -> str:
    """Where each id of an entity is, per period: (kam_period, kam_hash, kam_row), sorted by the hash."""
    return f"{entity}_keys"


def quote(name: str) -> str:
    """A SQL identifier (policy names are lowercase words, but quoting costs nothing)."""
    return '"' + name.replace('"', '""') + '"'


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
        raise history_problem(f"the {ep.entity} history cannot hold two columns named {', '.join(clash)}",
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
