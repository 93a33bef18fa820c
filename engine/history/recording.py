"""Recording a period: its rows and its run in one transaction, committed with a note of the output
set it belongs to, and that note settled once the set is in place (or taken back if it never was)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..batch.evaluate import EntityResult
from ..language.plan import Plan
from ..language.version import __version__
from .base import HistoryBase
from .tables import HASH, META, PENDING, PERIOD, ROW, RUNS, Column, entity_columns, entity_schema, history_problem, \
    quote, table_name, values_table

if TYPE_CHECKING:
    import duckdb

    from ..batch.result import RunResult


class Recording(HistoryBase):
    """Writing periods into the history (open with write=True)."""

    def check_new(self, period: str, replace: bool) -> None:
        """Before a run reads any fact: refuse a period that is recorded already, unless replaced."""
        if self.run(period) is not None and not replace:
            raise history_problem(f"period {period} is already in the history {self.path}",
                                  "pass --replace to record it again (its old decisions are dropped), or another "
                                  "--period")

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
                raise history_problem(f"period {period} is already in the history {self.path}",
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
