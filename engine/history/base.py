"""The state every part of a history shares: its connections, the recorded runs, the columns of its
tables, the ids of a run hashed once. `History` (engine.history.store) is made of this base, the
queries (`reading`), what previous() reads (`past`) and the recording of a period (`recording`)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..language.errors import did_you_mean
from ..language.plan import Plan
from . import ids
from .tables import RUNS, history_problem, table_name

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb


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



class HistoryBase:
    """One history file's connections and what its parts share."""

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

    def _tables(self, con: "duckdb.DuckDBPyConnection | None" = None) -> set[str]:
        return {r[0] for r in (con or self.con).execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}

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
            raise history_problem(f"the history {self.path} has no period `{period}`",
                                  did_you_mean(period, known) or (f"recorded periods: {', '.join(known)}" if known
                                                                 else "nothing is recorded yet"))
        return found

    def before(self, period: str | None, back: int) -> list[str]:
        """Up to `back` recorded periods before `period` (as text; None: after the last), most recent first."""
        return [p for p in reversed(self.periods()) if period is None or p < period][:back]

    def hashed(self, entity: str, keys: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """The `key_hashes` of an entity's ids and the order that sorts them, worked out once per run
        (reading the past and recording the period both need them)."""
        if isinstance(keys, pa.ChunkedArray):
            keys = keys.combine_chunks()
        with self._hashing:
            found = self._hashes.get(entity)
            if found is None or len(found[0]) != len(keys) or not found[0].equals(keys):
                hashes = ids.key_hashes(keys)
                found = self._hashes[entity] = (keys, hashes, np.argsort(hashes))
        return found[1], found[2]
