"""The questions a history answers directly: the rows of an entity, an id's rows across periods, and
their because texts rendered again with each period's policies."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

from ..language.plan import Plan
from . import ids
from .base import HistoryBase, RunInfo
from .tables import HASH, PERIOD, ROW, keys_name, quote, render_reasons, table_name


class Reading(HistoryBase):
    """Queries of the recorded rows."""

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
                                      [int(ids.key_hashes([key])[0])]).fetchall()
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


def _pandas_type(t: pa.DataType) -> Any:
    """How history columns come to pandas: yes/no with missing values, lists kept as Arrow lists."""
    if t == pa.bool_():
        return pd.BooleanDtype()
    if pa.types.is_list(t):
        return pd.ArrowDtype(t)
    return None
