"""What `previous()` and `streak()` read: per entity, the values of earlier periods aligned with this
run's rows (by id, through the sorted id hashes), with notes on what is missing and why."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from ..batch.result import Past
from ..language.plan import EntityPlan, Plan
from .base import HistoryBase
from .tables import _SQL_TYPES, HASH, PERIOD, ROW, keys_name, quote, table_name


def needs_past(pl: Plan) -> bool:
    """Whether any entity of the plan reads earlier periods."""
    return any(ep.past for ep in pl.entities)


class PastReading(HistoryBase):
    """The earlier values a run reads."""

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

    def gone_since(self, entity: str, period: str, key: str, current: pd.Series, columns: list[str]) -> pd.DataFrame:
        """The entities recorded in `period` that are not among `current` (the ids of this run), with
        those of `columns` the history holds: who left, as `kam changes` counts them."""
        have = self.columns(entity)
        if key not in have:
            return pd.DataFrame()
        cols = [key] + [c for c in dict.fromkeys(columns) if c in have and c != key]
        table = self._arrow(f"SELECT {', '.join(map(quote, cols))} FROM {quote(table_name(entity))} "
                            f"WHERE {PERIOD} = ?", [period])
        frame = table.to_pandas()
        left = ~frame[key].astype(str).isin(set(current.astype(str)))
        return frame[left.to_numpy()].reset_index(drop=True)

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
                out[r.key] = past_series(col, r.kind)
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


def past_series(col: pa.Array, kind: str) -> pd.Series:
    """A past column as the facts reader would give it."""
    if kind == "number":
        return pd.Series(col.to_numpy(zero_copy_only=False), dtype=float)
    if kind == "boolean":
        return pd.Series(col.to_pandas(), dtype="boolean")
    return pd.Series(pd.arrays.ArrowStringArray(col.cast(pa.large_string())) if len(col) else
                     pd.array([], dtype="string"))
